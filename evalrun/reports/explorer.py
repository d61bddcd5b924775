"""The row explorer of report.html: every cell's request, reply and score, embedded compactly.

`ExplorerResults` is a results writer: its sink sees every cell once during the report's
streaming pass and keeps what the explorer shows, in column lists with every text interned once
(a system prompt shared by 100,000 requests is stored once). `HtmlReport` picks the finished
payload up with `collected(staged)` and embeds it as one `<script type="application/json">`.

Memory and page size are bounded, whatever the size of the run:

* a text longer than its cap (`REPLY_CHARS`, `PART_CHARS`) keeps its head and tail with a note
  of how much was left out (results.csv and the store keep every character);
* at most `MAX_CELLS` cells and `MAX_TEXT_CHARS` characters of distinct text are embedded.
  Above either, the page holds a sample of dataset *rows* with every cell of each sampled row
  (all models, prompts and repeats, so disagreements between variants still show): a row is kept
  when a seeded hash of its id (`SAMPLE_SEED`) is below a threshold, and the threshold is halved
  (in hash order) whenever the kept cells outgrow a cap. The same store always gives the same
  sample;
* images are embedded once each (by sha256) as data: URLs, while each is at most
  `IMAGE_BYTES` and all together at most `IMAGES_TOTAL`; beyond that the page shows the path.
  Images given by URL are shown as links and never fetched.

The payload (format version 1) is documented in `payload()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGES_TOTAL",
    "IMAGE_BYTES",
    "MAX_CELLS",
    "MAX_TEXT_CHARS",
    "OUTCOMES",
    "PART_CHARS",
    "REPLY_CHARS",
    "SAMPLE_SEED",
    "ExplorerResults",
    "ExplorerSink",
    "collected",
    "payload_json",
]

MAX_CELLS = 100_000
MAX_TEXT_CHARS = 16_000_000
REPLY_CHARS = 4_000
PART_CHARS = 6_000
IMAGE_BYTES = 512 * 1024
IMAGES_TOTAL = 4 * 1024 * 1024
SAMPLE_SEED = 0

# The outcome of a cell, as the explorer filters it (index = code in the payload).
OUTCOMES = ("correct", "wrong", "unparsed", "error", "pending")
_CODE = {name: i for i, name in enumerate(OUTCOMES)}
_TOP = 1 << 64

# Numeric columns of the payload, by the results record field they come from.
_NUMBERS = {"it": "input_tokens", "ot": "output_tokens", "cw": "cache_creation_input_tokens",
            "cr": "cache_read_input_tokens", "n": "attempts"}  # fmt: skip
_STRINGS = ("r", "a", "t", "y", "e", "s", "d", "x", "f", "u")
_COLUMNS = ("m", "p", "k", "o", "q", "c", "l", "sc", *_NUMBERS, *_STRINGS)


def clip(text: str, cap: int) -> tuple[str, bool]:
    """`text` as embedded: at most about `cap` characters, its head and tail around a note."""
    if len(text) <= cap:
        return text, False
    head = cap * 3 // 4
    tail = cap - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[… {omitted:,} characters left out here; results.csv has the whole text …]\n{text[-tail:]}", True


def _row_hash(row_id: str) -> int:
    digest = hashlib.blake2b(f"{SAMPLE_SEED}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _number(value: Any, digits: int | None = None) -> float | int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if number.is_integer() and digits is None:
        return int(number)
    if digits is None:
        return number
    return float(f"{number:.{digits}g}")


def _outcome(record: Mapping[str, Any]) -> int:
    status = record.get("status")
    if status == "ok":
        return _CODE["correct"] if record.get("correct") is True else _CODE["wrong"]
    return _CODE.get(str(status), _CODE["error"])


# -- requests ----------------------------------------------------------------------------------
# A rendered request is a tuple of turns: (role, parts). Roles: "system", "user", "assistant",
# "prefill" (a final assistant turn: the reply continues it) and "note" (parameters, the output
# format, tools). A part is a text (str) or an image: ("img", sha256, path, media_type) for a file,
# ("url", url) for an image given by URL.
Part = str | tuple[str, ...]
Turn = tuple[str, tuple[Part, ...]]


def _block_parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [clip(content, PART_CHARS)[0]]
    parts: list[Part] = []
    for block in content if isinstance(content, list) else [content]:
        if not isinstance(block, Mapping):
            parts.append(clip(json.dumps(block, ensure_ascii=False, default=str), PART_CHARS)[0])
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(clip(block["text"], PART_CHARS)[0])
        elif kind == "image":
            source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
            if source.get("type") == "evalrun_file":
                parts.append(("img", str(source.get("sha256") or ""), str(source.get("path") or ""),
                              str(source.get("media_type") or "")))  # fmt: skip
            elif source.get("type") == "url":
                parts.append(("url", str(source.get("url") or "")))
            else:
                parts.append(f"[image: {source.get('type', 'unknown')} source, not embedded]")
        else:
            parts.append(clip(f"[{kind}] " + json.dumps({k: v for k, v in block.items() if k != "type"},
                                                       ensure_ascii=False, default=str), PART_CHARS)[0])  # fmt: skip
    return parts


_NOTE_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "thinking")


def render_request(body: Mapping[str, Any]) -> tuple[Turn, ...]:
    """A request body as the explorer shows it (the model id and image data left out)."""
    turns: list[Turn] = []
    system = body.get("system")
    if system:
        turns.append(("system", tuple(_block_parts(system))))
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role") or "user")
        if role == "assistant" and i == len(messages) - 1:
            role = "prefill"
        turns.append((role, tuple(_block_parts(message.get("content", "")))))
    notes = [f"{k}={json.dumps(body[k], ensure_ascii=False)}" for k in _NOTE_PARAMS if k in body]
    output = body.get("output_config")
    if isinstance(output, Mapping) and output.get("format") is not None:
        notes.append("output format: " + json.dumps(output["format"], ensure_ascii=False, sort_keys=True))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names = [str(t.get("name")) for t in tools if isinstance(t, Mapping)]
        notes.append("tools: " + ", ".join(names))
        if body.get("tool_choice") is not None:
            notes.append("tool_choice: " + json.dumps(body["tool_choice"], ensure_ascii=False, sort_keys=True))
    if notes:
        turns.append(("note", (clip(" · ".join(notes), PART_CHARS)[0],)))
    return tuple(turns)


def _reply(record: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
    """The reply as a reader wants it: its text, plus tool calls and thinking when it has them."""
    text = str(record.get("response_text") or "")
    raw = cell.get("message_json")
    if not raw or ('"tool_use"' not in raw and '"thinking"' not in raw):
        if not text and cell.get("raw"):
            return "[not a valid message] " + str(cell["raw"])
        return text
    try:
        message = json.loads(raw)
    except ValueError:
        return text
    pieces = []
    for block in message.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            pieces.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            pieces.append(f"[tool_use {block.get('name')}] " + json.dumps(block.get("input"), ensure_ascii=False))
        elif block.get("type") == "thinking":
            pieces.append(f"[thinking] {block.get('thinking') or ''}")
    return "\n".join(pieces)


def _error(record: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
    if record.get("status") == "pending":
        return "not sent yet"
    error = str(record.get("error") or "")
    if not error:
        return ""
    head = " ".join(str(v) for v in (cell.get("http_status"), cell.get("error_type")) if v)
    return f"{head}: {error}" if head and not error.startswith(head) else error


def _fields(record: Mapping[str, Any]) -> str:
    found = []
    for key, value in record.items():
        if key.startswith("correct_") and isinstance(value, bool | int | float) and not (
            isinstance(value, float) and math.isnan(value)
        ):
            found.append(f"{key[len('correct_'):]}:{int(bool(value))}")
    return ",".join(found)


# -- the sink ----------------------------------------------------------------------------------
class ExplorerSink:
    """Collects the cells the explorer embeds (see the module docstring for the caps)."""

    def __init__(self, *, max_cells: int = MAX_CELLS, max_text_chars: int = MAX_TEXT_CHARS) -> None:
        self.max_cells = max_cells
        self.max_text_chars = max_text_chars
        self.threshold = _TOP
        self.models: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.cols: dict[str, list[Any]] = {name: [] for name in (*_COLUMNS, "_seq", "_row", "_h")}
        self.requests: list[tuple[Turn, ...]] = []
        self._request_ids: dict[tuple[Turn, ...], int] = {}
        self._by_key: dict[str, int] = {}
        self._texts: set[str] = set()
        self.text_chars = 0
        self.seen_cells = 0
        self.dropped_cells = 0
        self.truncated = 0
        self.payload: dict[str, Any] | None = None

    # ResultsSink
    def begin(self, columns: list[str]) -> None:
        pass

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        for record, cell in zip(records, cells, strict=True):
            self._add(record, cell)
            if len(self.cols["m"]) > self.max_cells or self.text_chars > self.max_text_chars:
                self._shrink()

    def close(self) -> None:
        self.payload = self._payload()

    # internals
    def _text(self, value: Any, cap: int | None = None) -> str:
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        if cap is not None:
            text, cut = clip(text, cap)
            self.truncated += cut
        if text not in self._texts:
            self._texts.add(text)
            self.text_chars += len(text)
        return text

    def _request(self, cell: Mapping[str, Any]) -> int:
        key = str(cell.get("request_key") or "")
        found = self._by_key.get(key)
        if found is not None:
            return found
        raw = cell.get("request_json")
        if not raw:
            return -1
        try:
            body = json.loads(raw)
        except ValueError:
            return -1
        rendered = render_request(body) if isinstance(body, Mapping) else ()
        index = self._request_ids.get(rendered)
        if index is None:
            index = self._request_ids[rendered] = len(self.requests)
            self.requests.append(rendered)
            for _, parts in rendered:
                for part in parts:
                    for text in (part,) if isinstance(part, str) else part[1:]:
                        self._text(text)
        self._by_key[key] = index
        return index

    def _add(self, record: Mapping[str, Any], cell: Mapping[str, Any]) -> None:
        self.seen_cells += 1
        row_id = str(record["row_id"])
        digest = _row_hash(row_id)
        if digest >= self.threshold:
            self.dropped_cells += 1
            return
        cols = self.cols
        cols["_seq"].append(int(cell.get("seq") or 0))
        cols["_row"].append(int(cell.get("row_seq") or 0))
        cols["_h"].append(digest)
        cols["m"].append(self.models.setdefault(str(record["model"]), len(self.models)))
        cols["p"].append(self.prompts.setdefault(str(record["prompt"]), len(self.prompts)))
        cols["k"].append(int(record.get("repeat") or 0))
        cols["o"].append(_outcome(record))
        cols["q"].append(self._request(cell))
        cols["c"].append(_number(record.get("cost_usd"), 6))
        cols["l"].append(_number(record.get("latency_s"), 4))
        score = _number(record.get("score"), 4)
        cols["sc"].append(score if score is not None and 0 < score < 1 else None)
        for name, source in _NUMBERS.items():
            cols[name].append(_number(record.get(source)))
        cols["r"].append(self._text(row_id))
        cols["a"].append(self._text(record.get("answer"), PART_CHARS))
        cols["t"].append(self._text(record.get("target"), PART_CHARS))
        cols["y"].append(self._text(_reply(record, cell), REPLY_CHARS))
        cols["e"].append(self._text(_error(record, cell), PART_CHARS))
        cols["s"].append(self._text(record.get("stop_reason")))
        cols["d"].append(self._text(record.get("answer_mode")))
        cols["x"].append(self._text(record.get("explanation"), REPLY_CHARS))
        cols["f"].append(self._text(_fields(record)))
        cols["u"].append(self._text(record.get("source")))

    def _shrink(self) -> None:
        """Keep the half of the sampled rows with the lowest hashes; recount what is held."""
        hashes = sorted(set(self.cols["_h"]))
        if len(hashes) < 2:
            self.threshold = hashes[0] if hashes else 0
        else:
            self.threshold = hashes[len(hashes) // 2]
        keep = [i for i, h in enumerate(self.cols["_h"]) if h < self.threshold]
        self.dropped_cells += len(self.cols["_h"]) - len(keep)
        for name, values in self.cols.items():
            self.cols[name] = [values[i] for i in keep]
        used = sorted(set(self.cols["q"]) - {-1})
        renumber = {old: new for new, old in enumerate(used)}
        self.requests = [self.requests[i] for i in used]
        self._request_ids = {rendered: i for i, rendered in enumerate(self.requests)}
        self._by_key = {k: renumber[v] for k, v in self._by_key.items() if v in renumber}
        self.cols["q"] = [renumber.get(q, -1) for q in self.cols["q"]]
        self._texts = set()
        self.text_chars = 0
        for name in _STRINGS:
            for text in self.cols[name]:
                self._text(text)
        for rendered in self.requests:
            for _, parts in rendered:
                for part in parts:
                    for text in (part,) if isinstance(part, str) else part[1:]:
                        self._text(text)

    def _payload(self) -> dict[str, Any]:
        cols = self.cols
        count = len(cols["m"])
        # Reading order: dataset row, repeat, then the variants in the spec's order.
        order = sorted(range(count), key=lambda i: (cols["_row"][i], cols["k"][i], cols["m"][i], cols["p"][i]))
        strings: dict[str, int] = {"": 0}

        def sid(text: str) -> int:
            return strings.setdefault(text, len(strings))

        out: dict[str, list[Any]] = {}
        for name in _COLUMNS:
            values = cols[name]
            if name in _STRINGS:
                out[name] = [sid(values[i]) for i in order]
            else:
                out[name] = [values[i] for i in order]
        images: dict[str, dict[str, str]] = {}
        requests = []
        for rendered in self.requests:
            turns = []
            for role, parts in rendered:
                encoded: list[Any] = []
                for part in parts:
                    if isinstance(part, str):
                        encoded.append(sid(part))
                    elif part[0] == "img":
                        _, sha, path, media = part
                        images.setdefault(sha, {"path": path, "media_type": media})
                        encoded.append({"img": sha, "path": sid(path)})
                    else:
                        encoded.append({"url": sid(part[1])})
                turns.append([role, encoded])
            requests.append(turns)
        rows = len(set(cols["_row"]))
        return {
            "version": 1,
            "models": list(self.models),
            "prompts": list(self.prompts),
            "outcomes": list(OUTCOMES),
            "strings": list(strings),
            "requests": requests,
            "images": _embed_images(images),
            "cells": out,
            "count": count,
            "rows": rows,
            "seen_cells": self.seen_cells,
            "sampled": self.dropped_cells > 0,
            "sample_seed": SAMPLE_SEED,
            "truncated": self.truncated,
            "caps": {"cells": self.max_cells, "text_chars": self.max_text_chars, "reply_chars": REPLY_CHARS,
                     "part_chars": PART_CHARS, "image_bytes": IMAGE_BYTES, "images_total": IMAGES_TOTAL},
        }  # fmt: skip


def _embed_images(images: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """sha256 → data: URL for the images that fit the caps and still match their hash."""
    out: dict[str, str] = {}
    total = 0
    for sha, info in images.items():
        media = info.get("media_type", "")
        if not media.startswith("image/") or not sha:
            continue
        path = Path(info.get("path", ""))
        try:
            size = path.stat().st_size
            if size > IMAGE_BYTES or total + size > IMAGES_TOTAL:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            continue
        total += len(data)
        out[sha] = f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"
    return out


def payload_json(payload: Mapping[str, Any]) -> str:
    """The payload as JSON safe inside a `<script type="application/json">` element."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a reply: keep the page writable
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# -- the writer --------------------------------------------------------------------------------
_COLLECTED: weakref.WeakKeyDictionary[Any, ExplorerSink] = weakref.WeakKeyDictionary()


def collected(staged: Any) -> dict[str, Any] | None:
    """The explorer payload collected while writing into `staged`, if a sink ran for it."""
    sink = _COLLECTED.get(staged)
    return sink.payload if sink is not None else None


class ExplorerResults:
    """The explorer's data for report.html (its sink writes no file; `HtmlReport` embeds it)."""

    filename = "report.html"
    needs_requests = True

    def available(self) -> bool:
        return True

    def open(self, staged: Any) -> ExplorerSink:
        sink = ExplorerSink()
        _COLLECTED[staged] = sink
        return sink


def cell_count(payload: Mapping[str, Any] | None) -> int:
    return int(payload["count"]) if payload else 0


def names(payload: Mapping[str, Any] | None, kind: str) -> Sequence[str]:
    return list(payload[kind]) if payload else []
