"""Templates and content: a prompt variant + a dataset row → Messages `system` and `messages`."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalrun.errors import DatasetError, TemplateError
from evalrun.messages_api import IMAGE_MEDIA_TYPES, detect_image_type
from evalrun.spec import ImageBlock, PromptSpec, TextBlock, Turn

__all__ = [
    "FILE_SOURCE",
    "IMAGE_TYPES",
    "Template",
    "detect_media_type",
    "has_image_files",
    "image_file_source",
    "key_view",
    "materialize",
    "prompt_placeholders",
    "render_system",
    "render_turns",
]

# The media types the Messages API accepts for image blocks (`evalrun.messages_api`).
IMAGE_TYPES = IMAGE_MEDIA_TYPES
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True)
class Template:
    """A `{column}` template, parsed once; `{{` and `}}` are literal braces."""

    source: str
    pieces: tuple[tuple[str, str | None], ...]  # (literal text, column to insert after it or None)

    @classmethod
    def parse(cls, source: str, *, where: str) -> Template:
        pieces: list[tuple[str, str | None]] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN.finditer(source):
            literal.append(source[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif token in ("{", "}"):
                raise TemplateError(
                    f"{where}: unmatched {token!r} at character {match.start() + 1}; "
                    f"write {token * 2!r} for a literal brace"
                )
            else:
                name = (match.group(1) or "").strip()
                if not name:
                    raise TemplateError(f"{where}: empty placeholder '{{}}'; write '{{{{}}}}' for literal braces")
                pieces.append(("".join(literal), name))
                literal = []
        literal.append(source[position:])
        pieces.append(("".join(literal), None))
        return cls(source=source, pieces=tuple(pieces))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for _, column in self.pieces if column is not None)

    def fill(self, values: dict[str, str]) -> str:
        out: list[str] = []
        for literal, column in self.pieces:
            out.append(literal)
            if column is not None:
                out.append(values[column])
        return "".join(out)


@lru_cache(maxsize=4096)
def _template(source: str, where: str) -> Template:
    return Template.parse(source, where=where)


def _templates_of(prompt: PromptSpec) -> list[tuple[str, str]]:
    """Every template string of a prompt variant with where it sits, for column checks."""
    found: list[tuple[str, str]] = []
    if isinstance(prompt.system, str):
        found.append((prompt.system, "system"))
    elif prompt.system:
        found += [(b.text, f"system.{i}.text") for i, b in enumerate(prompt.system)]
    for t, turn in enumerate(prompt.messages):
        if isinstance(turn.content, str):
            found.append((turn.content, f"messages.{t}.content"))
            continue
        for b, block in enumerate(turn.content):
            where = f"messages.{t}.content.{b}"
            if isinstance(block, TextBlock):
                found.append((block.text, f"{where}.text"))
            elif block.path is not None:
                found.append((block.path, f"{where}.path"))
            elif block.url is not None:
                found.append((block.url, f"{where}.url"))
    if prompt.prefill:
        found.append((prompt.prefill, "prefill"))
    return found


def prompt_placeholders(prompt: PromptSpec, *, where: str) -> dict[str, str]:
    """Each column a variant's templates name → the first key path that names it."""
    columns: dict[str, str] = {}
    for source, key in _templates_of(prompt):
        for column in _template(source, f"{where}.{key}").columns:
            columns.setdefault(column, f"{where}.{key}")
    return columns


def detect_media_type(data: bytes) -> str | None:
    """The image type from the file's first bytes (never from its name)."""
    return detect_image_type(data)


# An image file in a planned body: read (and base64-encoded) only when the request is sent, so
# a plan never holds image data. The request key covers the file's content hash, not its path.
FILE_SOURCE = "evalrun_file"
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # the Messages API's limit per base64 image


@lru_cache(maxsize=4096)
def _image_file(path: Path, size: int, mtime_ns: int) -> dict[str, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        head = f.read(12)
        digest.update(head)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    media_type = detect_media_type(head)
    if media_type is None:
        raise ValueError("not a JPEG, PNG, GIF or WebP image")
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{size / 1e6:.1f} MB; the API takes images of at most 5 MB")
    return {"type": FILE_SOURCE, "path": str(path), "media_type": media_type, "sha256": digest.hexdigest()}


def image_file_source(path: Path) -> dict[str, str]:
    """A reference to an image file, checked (type from its bytes, size) and content-hashed."""
    stat = path.stat()
    if not path.is_file():
        raise IsADirectoryError(21, "is a folder, not a file")
    return dict(_image_file(path, stat.st_size, stat.st_mtime_ns))


def _image_block(block: ImageBlock, values: dict[str, str], *, base_dir: Path, where: str) -> dict[str, Any]:
    if block.url is not None:
        url = _template(block.url, where).fill(values).strip()
        if not url.startswith(("https://", "http://")):
            raise DatasetError(f"{where}: image URL {url!r} must start with https:// or http://")
        source: dict[str, str] = {"type": "url", "url": url}
    else:
        assert block.path is not None
        raw = _template(block.path, where).fill(values).strip()
        path = base_dir / raw
        try:
            source = image_file_source(path)
        except FileNotFoundError:
            raise DatasetError(f"{where}: image file {raw!r} not found (looked at {path.absolute()})") from None
        except (IsADirectoryError, PermissionError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else exc.strerror
            raise DatasetError(f"{where}: image file {raw!r} cannot be used: {reason}") from None
    out: dict[str, Any] = {"type": "image", "source": source}
    if block.cache_control:
        out["cache_control"] = dict(block.cache_control)
    return out


def _file_blocks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for message in body.get("messages") or ():
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "image":
                    source = block.get("source")
                    if isinstance(source, dict) and source.get("type") == FILE_SOURCE:
                        yield block


def has_image_files(body: dict[str, Any]) -> bool:
    return next(_file_blocks(body), None) is not None


def key_view(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the request key sees it: image files by content hash, not by path."""
    if not has_image_files(body):
        return body
    view = copy.deepcopy(body)
    for block in _file_blocks(view):
        block["source"] = {k: v for k, v in block["source"].items() if k != "path"}
    return view


def materialize(body: dict[str, Any]) -> dict[str, Any]:
    """The body as sent: image file references replaced by their base64 data."""
    if not has_image_files(body):
        return body
    sent = copy.deepcopy(body)
    for block in _file_blocks(sent):
        source = block["source"]
        path = Path(source["path"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path}: image file cannot be read any more ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != source["sha256"]:
            raise DatasetError(f"{path}: image file changed since the run was planned; run again to re-plan it")
        block["source"] = {
            "type": "base64",
            "media_type": source["media_type"],
            "data": base64.b64encode(data).decode("ascii"),
        }
    return sent


def _text_block(block: TextBlock, values: dict[str, str], *, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": _template(block.text, where).fill(values)}
    if block.cache_control:
        out["cache_control"] = dict(block.cache_control)
    return out


def render_system(prompt: PromptSpec, values: dict[str, str], *, where: str) -> str | list[dict[str, Any]] | None:
    """The `system` field for one row, or None."""
    if prompt.system is None:
        return None
    if isinstance(prompt.system, str):
        return _template(prompt.system, f"{where}.system").fill(values)
    return [_text_block(b, values, where=f"{where}.system.{i}") for i, b in enumerate(prompt.system)]


def render_turns(
    turns: list[Turn], values: dict[str, str], *, base_dir: Path, where: str, row_where: str
) -> list[dict[str, Any]]:
    """The `messages` list for one row. Image paths are relative to `base_dir` (the CSV's folder)."""
    messages: list[dict[str, Any]] = []
    for t, turn in enumerate(turns):
        key = f"{where}.messages.{t}.content"
        if isinstance(turn.content, str):
            content: str | list[dict[str, Any]] = _template(turn.content, key).fill(values)
        else:
            content = [
                _text_block(b, values, where=f"{key}.{i}")
                if isinstance(b, TextBlock)
                else _image_block(b, values, base_dir=base_dir, where=f"{row_where}, {key}.{i}")
                for i, b in enumerate(turn.content)
            ]
        messages.append({"role": turn.role, "content": content})
    return messages


def fill_template(source: str, values: dict[str, str], *, where: str) -> str:
    """Fill one template string (e.g. a prefill)."""
    return _template(source, where).fill(values)
