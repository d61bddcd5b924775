"""Templates and content: a prompt variant + a dataset row → Messages `system` and `messages`.

A placeholder names a field by path (`{question}`, `{doc.title}`, `{choices.0}`); `{choices|options}`
writes a list as lettered options. A placeholder alone where turns, a system prompt or tools go
splices in what the row holds there (`evalrun.plan.conversation`). Image and document files are
referred to until the request is sent (`evalrun.plan.files`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from evalrun.content import placeholder_field
from evalrun.errors import DatasetError, TemplateError
from evalrun.messages_api import IMAGE_MEDIA_TYPES, detect_image_type
from evalrun.plan.conversation import row_system, row_tools, row_turns
from evalrun.plan.files import (
    FILE_SOURCE,
    MAX_IMAGE_BYTES,
    document_file_source,
    image_file_source,
    key_view,
    materialize,
)
from evalrun.plan.paths import lookup, options_text, text_of
from evalrun.spec import DocumentBlock, ImageBlock, PromptSpec, RowTurns, TextBlock, Turn

__all__ = [
    "FILE_SOURCE",
    "IMAGE_TYPES",
    "MAX_IMAGE_BYTES",
    "Placeholder",
    "Template",
    "detect_media_type",
    "image_file_source",
    "key_view",
    "materialize",
    "prompt_placeholders",
    "render_system",
    "render_tools",
    "render_turns",
]

# The media types the Messages API accepts for image blocks (`evalrun.messages_api`).
IMAGE_TYPES = IMAGE_MEDIA_TYPES
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
FILTERS = ("options",)


@dataclass(frozen=True)
class Placeholder:
    """A field path, with a filter (`options`) or none."""

    path: str
    filter: str | None = None

    def render(self, values: Mapping[str, Any]) -> str:
        value = lookup(values, self.path)
        if self.filter == "options":
            return options_text(value, path=self.path)
        return text_of(value)


def _placeholder(text: str, *, where: str) -> Placeholder:
    name, bar, filter_name = (part.strip() for part in text.partition("|"))
    if not name:
        raise TemplateError(f"{where}: empty placeholder '{{}}'; write '{{{{}}}}' for literal braces")
    if any(not part for part in name.split(".")):
        raise TemplateError(f"{where}: {{{name}}} is not a field path (names joined by dots, e.g. doc.title)")
    if bar and filter_name not in FILTERS:
        raise TemplateError(f"{where}: {{{text.strip()}}}: unknown filter {filter_name!r} (filters: {', '.join(FILTERS)})")
    return Placeholder(name, filter_name or None)


@dataclass(frozen=True)
class Template:
    """A `{field}` template, parsed once; `{{` and `}}` are literal braces."""

    source: str
    pieces: tuple[tuple[str, Placeholder | None], ...]  # (literal text, placeholder after it or None)

    @classmethod
    def parse(cls, source: str, *, where: str) -> Template:
        pieces: list[tuple[str, Placeholder | None]] = []
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
                pieces.append(("".join(literal), _placeholder(match.group(1) or "", where=where)))
                literal = []
        literal.append(source[position:])
        pieces.append(("".join(literal), None))
        return cls(source=source, pieces=tuple(pieces))

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(p for _, p in self.pieces if p is not None)

    @property
    def columns(self) -> tuple[str, ...]:
        """The field paths the template reads."""
        return tuple(p.path for p in self.placeholders)

    def fill(self, values: Mapping[str, Any]) -> str:
        """The text for one row; a path the row lacks raises FieldMissing."""
        out: list[str] = []
        for literal, placeholder in self.pieces:
            out.append(literal)
            if placeholder is not None:
                out.append(placeholder.render(values))
        return "".join(out)


@lru_cache(maxsize=4096)
def _template(source: str, where: str) -> Template:
    return Template.parse(source, where=where)


def _block_templates(block: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(block, TextBlock):
        return [(block.text, f"{where}.text")]
    found = [(getattr(block, key), f"{where}.{key}") for key in ("path", "url") if getattr(block, key) is not None]
    if isinstance(block, DocumentBlock):
        found += [(getattr(block, key), f"{where}.{key}") for key in ("title", "context") if getattr(block, key)]
    return found


def _templates_of(prompt: PromptSpec) -> list[tuple[str, str]]:
    """Every template string of a prompt variant with where it sits, for column checks."""
    found: list[tuple[str, str]] = []
    if isinstance(prompt.system, str):
        found.append((prompt.system, "system"))
    elif prompt.system:
        found += [(b.text, f"system.{i}.text") for i, b in enumerate(prompt.system)]
    for t, turn in enumerate(prompt.messages):
        if isinstance(turn, RowTurns):
            found.append((turn.turns, f"messages.{t}"))
            continue
        if isinstance(turn.content, str):
            found.append((turn.content, f"messages.{t}.content"))
            continue
        for b, block in enumerate(turn.content):
            found += _block_templates(block, f"messages.{t}.content.{b}")
    if prompt.prefill:
        found.append((prompt.prefill, "prefill"))
    return found


def prompt_placeholders(prompt: PromptSpec, *, where: str) -> dict[str, str]:
    """Each field a variant's templates name → the first key path that names it."""
    columns: dict[str, str] = {}
    for source, key in _templates_of(prompt):
        for column in _template(source, f"{where}.{key}").columns:
            columns.setdefault(column, f"{where}.{key}")
    return columns


def prompt_templates(prompt: PromptSpec, *, where: str) -> list[Template]:
    """Every template of a variant, parsed (for checking each row's values once)."""
    return [_template(source, f"{where}.{key}") for source, key in _templates_of(prompt)]


def detect_media_type(data: bytes) -> str | None:
    """The image type from the file's first bytes (never from its name)."""
    return detect_image_type(data)


def _url(source: str, values: Mapping[str, Any], *, what: str, where: str) -> dict[str, str]:
    url = _template(source, where).fill(values).strip()
    if not url.startswith(("https://", "http://")):
        raise DatasetError(f"{where}: {what} URL {url!r} must start with https:// or http://")
    return {"type": "url", "url": url}


def _file(block: ImageBlock | DocumentBlock, values: Mapping[str, Any], *, base_dir: Path, where: str) -> dict[str, Any]:
    assert block.path is not None
    what = block.type
    raw = _template(block.path, where).fill(values).strip()
    path = base_dir / raw
    try:
        return document_file_source(path) if what == "document" else image_file_source(path)
    except FileNotFoundError:
        raise DatasetError(f"{where}: {what} file {raw!r} not found (looked at {path.absolute()})") from None
    except (IsADirectoryError, PermissionError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else exc.strerror
        raise DatasetError(f"{where}: {what} file {raw!r} cannot be used: {reason}") from None


def _file_block(
    block: ImageBlock | DocumentBlock, values: Mapping[str, Any], *, base_dir: Path, where: str
) -> dict[str, Any]:
    if block.url is not None:
        source: dict[str, Any] = _url(block.url, values, what=block.type, where=where)
    else:
        source = _file(block, values, base_dir=base_dir, where=where)
    out: dict[str, Any] = {"type": block.type, "source": source}
    if isinstance(block, DocumentBlock):
        for key in ("title", "context"):
            text = getattr(block, key)
            if text:
                out[key] = _template(text, f"{where}.{key}").fill(values)
        if block.citations:
            out["citations"] = {"enabled": True}
    if block.cache_control:
        out["cache_control"] = dict(block.cache_control)
    return out


def _text_block(block: TextBlock, values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": _template(block.text, where).fill(values)}
    if block.cache_control:
        out["cache_control"] = dict(block.cache_control)
    return out


def render_system(prompt: PromptSpec, values: Mapping[str, Any], *, where: str) -> str | list[dict[str, Any]] | None:
    """The `system` field for one row, or None. `system: "{field}"` alone takes the row's system
    prompt as it is: text, or a list of text blocks."""
    if prompt.system is None:
        return None
    if isinstance(prompt.system, str):
        field = placeholder_field(prompt.system)
        if field is not None:
            return row_system(lookup(values, field), path=field)
        return _template(prompt.system, f"{where}.system").fill(values)
    return [_text_block(b, values, where=f"{where}.system.{i}") for i, b in enumerate(prompt.system)]


def render_turns(
    turns: list[Turn | RowTurns], values: Mapping[str, Any], *, base_dir: Path, where: str, row_where: str
) -> list[dict[str, Any]]:
    """The `messages` list for one row. File paths are relative to `base_dir` (the dataset's
    folder); a `RowTurns` item is replaced by the row's own turns."""
    messages: list[dict[str, Any]] = []
    for t, turn in enumerate(turns):
        if isinstance(turn, RowTurns):
            messages.extend(row_turns(lookup(values, turn.field), path=turn.field))
            continue
        key = f"{where}.messages.{t}.content"
        if isinstance(turn.content, str):
            content: str | list[dict[str, Any]] = _template(turn.content, key).fill(values)
        else:
            content = [
                _text_block(b, values, where=f"{key}.{i}")
                if isinstance(b, TextBlock)
                else _file_block(b, values, base_dir=base_dir, where=f"{row_where}, {key}.{i}")
                for i, b in enumerate(turn.content)
            ]
        messages.append({"role": turn.role, "content": content})
    return messages


def render_tools(tools: Any, values: Mapping[str, Any]) -> Any:
    """`tools` for one row: `"{field}"` is the row's tool list; a `"{field}"` item in a list
    splices the row's tools in at that place; anything else is sent as written."""
    if isinstance(tools, str):
        field = placeholder_field(tools)
        return row_tools(lookup(values, field), path=field) if field is not None else tools
    if not isinstance(tools, list) or not any(isinstance(t, str) for t in tools):
        return tools
    out: list[Any] = []
    for tool in tools:
        field = placeholder_field(tool) if isinstance(tool, str) else None
        if field is None:
            out.append(tool)
        else:
            out.extend(row_tools(lookup(values, field), path=field))
    return out


def tools_fields(tools: Any) -> list[str]:
    """The fields whose per-row tools `render_tools` splices in."""
    items = [tools] if isinstance(tools, str) else tools if isinstance(tools, list) else []
    return [f for f in (placeholder_field(t) for t in items if isinstance(t, str)) if f is not None]


def fill_template(source: str, values: Mapping[str, Any], *, where: str) -> str:
    """Fill one template string (e.g. a prefill)."""
    return _template(source, where).fill(values)
