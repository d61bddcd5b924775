"""The local token approximation: a deterministic rule shared by the product and the simulator.

The product uses it for estimates and budget reservations when the endpoint cannot count; the
simulator (`evalrun.sim`) reports its usage under the same rule, so offline estimates agree
with what a simulated run then reports. This module imports only the standard library.

The rule (documented so that counts can be predicted by hand):

* Text: every run of up to four word characters (``\\w``) is one token, and every other
  non-space character is one token; whitespace is free. So ``"C"`` is 1 token, ``"The answer
  is (C)."`` is 8 (``The``, ``answ``, ``er``, ``is``, ``(``, ``C``, ``)``, ``.``), and English
  prose comes out near four characters per token.
* A request: the text of ``system`` and of every text block, plus ``MESSAGE_OVERHEAD`` tokens
  per message, ``IMAGE_TOKENS`` per image, and the compact JSON text of each tool definition
  and of any other block kind (tool_use, tool_result, ...).
* A document: ``PDF_PAGE_TOKENS`` per page of a PDF (its pages counted by their ``/Type /Page``
  objects, at least one), the text of a plain-text document, ``PDF_PAGE_TOKENS`` for a document
  given by URL (it is not fetched), plus its title and context.

The real tokenizer is not public; this rule only needs to be stable, cheap and roughly right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "IMAGE_TOKENS",
    "MAX_PDF_PAGES",
    "MESSAGE_OVERHEAD",
    "PDF_PAGE_TOKENS",
    "Unit",
    "count_pdf_pages",
    "count_request_tokens",
    "count_text_tokens",
    "cut_to_tokens",
    "estimate_input_tokens",
    "estimate_text_tokens",
    "pdf_pages",
    "request_units",
]

IMAGE_TOKENS = 1500  # about a 1,100 x 1,100 px image under the documented (w*h)/750 rule
MESSAGE_OVERHEAD = 3  # role markers around each turn
PDF_PAGE_TOKENS = 2000  # a page's text and its image (each PDF page is also seen as an image)
MAX_PDF_PAGES = 100  # the Messages API's limit per PDF
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")  # a page object, not the page tree (/Pages)

_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")

# (tokens, identity text for cache keys, the block's cache_control or None)
Unit = tuple[int, str, Mapping[str, Any] | None]


@lru_cache(maxsize=8192)
def count_text_tokens(text: str) -> int:
    """Tokens in `text` under the module's rule (a single letter is exactly one token)."""
    return len(_TOKEN.findall(text))


def cut_to_tokens(text: str, limit: int) -> tuple[str, bool]:
    """The longest prefix of `text` holding at most `limit` tokens, and whether it was cut."""
    if limit <= 0:
        return "", bool(_TOKEN.search(text))
    for seen, match in enumerate(_TOKEN.finditer(text), start=1):
        if seen == limit:
            end = match.end()
            return text[:end], _TOKEN.search(text, end) is not None
    return text, False


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def pdf_pages(data: str) -> int | None:
    """Pages of a base64 PDF (counted by their page objects, at least 1), or None when the data
    is not base64 or not a PDF."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(b"%PDF-"):
        return None
    return max(1, count_pdf_pages(raw))


def count_pdf_pages(raw: bytes) -> int:
    """A PDF's pages, counted by their page objects (0 when they sit in compressed object streams)."""
    return len(_PAGE.findall(raw))


def _document_unit(block: Mapping[str, Any], overhead: int) -> Unit:
    source = block.get("source")
    source = source if isinstance(source, Mapping) else {}
    kind, data = source.get("type"), source.get("data")
    if kind == "base64" and isinstance(data, str):
        tokens, ident = (pdf_pages(data) or 1) * PDF_PAGE_TOKENS, hashlib.sha256(data.encode()).hexdigest()
    elif kind == "text" and isinstance(data, str):
        tokens, ident = count_text_tokens(data), hashlib.sha256(data.encode()).hexdigest()
    elif kind == "url":
        tokens, ident = PDF_PAGE_TOKENS, str(source.get("url"))
    elif isinstance(source.get("sha256"), str):  # a planned file reference (evalrun.plan.files)
        tokens = int(source.get("tokens") or max(1, int(source.get("pages") or 1)) * PDF_PAGE_TOKENS)
        ident = str(source["sha256"])
    else:
        text = _dumps(source)
        tokens, ident = count_text_tokens(text), text
    for key in ("title", "context"):
        if isinstance(block.get(key), str):
            tokens += count_text_tokens(block[key])
    cache = block.get("cache_control")
    return tokens + overhead, "d:" + ident, cache if isinstance(cache, Mapping) else None


def _block_unit(block: Any, overhead: int) -> Unit:
    if isinstance(block, str):
        return count_text_tokens(block) + overhead, block, None
    if not isinstance(block, Mapping):
        return overhead, "", None
    kind = block.get("type")
    cache = block.get("cache_control")
    cache = cache if isinstance(cache, Mapping) else None
    if kind == "text":
        text = block.get("text")
        text = text if isinstance(text, str) else ""
        return count_text_tokens(text) + overhead, "t:" + text, cache
    if kind == "document":
        return _document_unit(block, overhead)
    if kind == "image":
        source = block.get("source")
        ident = (source.get("data") or source.get("url") or "") if isinstance(source, Mapping) else ""
        return IMAGE_TOKENS + overhead, "i:" + str(ident), cache
    text = _dumps({k: v for k, v in block.items() if k != "cache_control"})
    return count_text_tokens(text) + overhead, "j:" + text, cache


def request_units(body: Mapping[str, Any]) -> Iterator[Unit]:
    """The request's cacheable pieces in the API's cache order: tools, system, messages."""
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping):
            cache = tool.get("cache_control")
            text = _dumps({k: v for k, v in tool.items() if k != "cache_control"})
            yield count_text_tokens(text), "tool:" + text, cache if isinstance(cache, Mapping) else None
    system = body.get("system")
    if isinstance(system, str):
        if system:
            yield count_text_tokens(system), "s:" + system, None
    elif isinstance(system, list):
        for block in system:
            tokens, ident, cache = _block_unit(block, 0)
            yield tokens, "s" + ident, cache
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role"))
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        if not blocks:
            yield MESSAGE_OVERHEAD, role, None
        for index, block in enumerate(blocks):
            tokens, ident, cache = _block_unit(block, MESSAGE_OVERHEAD if index == 0 else 0)
            yield tokens, (role + ident) if index == 0 else ident, cache


def count_request_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages (or count_tokens) request body under the module's rule."""
    return sum(unit[0] for unit in request_units(body))


def estimate_text_tokens(text: str) -> int:
    """Tokens in `text` under the local rule (the product's name for `count_text_tokens`)."""
    return count_text_tokens(text)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages body under the local rule."""
    return count_request_tokens(body)
