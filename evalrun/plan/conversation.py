"""A row's own conversation, system prompt and tools, checked against the Messages API's shape.

A field holding a list of turns (`{"role": "user", "content": "…"}`, content a string or a list
of blocks), a list of system text blocks, or a list of tool definitions is spliced into the
request where the variant names it. Each is checked here before anything is sent, so a bad row
is one clear line naming the row and the field, not a 400 on every request it makes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalrun.messages_api import IMAGE_MEDIA_TYPES
from evalrun.plan.paths import RowValueError, as_list

__all__ = ["check_order", "row_system", "row_tools", "row_turns"]

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_SOURCES = {
    "image": {"base64": IMAGE_MEDIA_TYPES, "url": ()},
    "document": {"base64": ("application/pdf",), "text": ("text/plain",), "url": (), "content": ()},
}
_ROLE_BLOCKS = {
    "user": ("text", "image", "document", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}


def _fail(path: str, where: str, problem: str) -> RowValueError:
    return RowValueError(f"field {path!r}, {where}: {problem}")


def _check_source(block: Mapping[str, Any], kind: str, path: str, where: str) -> None:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise _fail(path, where, f"a {kind} block needs a `source` object")
    allowed = _SOURCES[kind]
    source_type = source.get("type")
    if source_type not in allowed:
        raise _fail(path, where, f"a {kind} source's type is one of {', '.join(allowed)}, not {source_type!r}")
    if source_type == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _fail(path, where, f"a {kind} url source needs an http(s) `url`")
        return
    media = allowed[source_type]
    if media and source.get("media_type") not in media:
        raise _fail(path, where, f"a {source_type} {kind} source's media_type is one of {', '.join(media)}")
    if source_type != "content" and not isinstance(source.get("data"), str):
        raise _fail(path, where, f"a {source_type} {kind} source needs `data` as a string")


def _check_block(block: Any, role: str, path: str, where: str) -> None:
    if not isinstance(block, Mapping):
        raise _fail(path, where, f"a content block is an object, not {type(block).__name__}")
    kind = block.get("type")
    if kind not in _ROLE_BLOCKS[role]:
        raise _fail(path, where, f"a {role} turn takes {', '.join(_ROLE_BLOCKS[role])} blocks, not {kind!r}")
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _fail(path, where, "a text block needs `text` as a string")
    if kind in _SOURCES:
        _check_source(block, kind, path, where)
    if kind == "tool_use" and not (
        isinstance(block.get("id"), str) and isinstance(block.get("name"), str) and isinstance(block.get("input"), Mapping)
    ):
        raise _fail(path, where, "a tool_use block needs `id`, `name` and an `input` object")
    if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        raise _fail(path, where, "a tool_result block needs `tool_use_id`")


def _check_turn(turn: Any, path: str, index: int) -> None:
    where = f"turn {index}"
    if not isinstance(turn, Mapping):
        raise _fail(path, where, f"a turn is an object with role and content, not {type(turn).__name__}")
    extra = sorted(set(turn) - {"role", "content"})
    if extra or "content" not in turn:
        problem = f"unknown key {extra[0]!r}" if extra else "no `content`"
        raise _fail(path, where, f"{problem} (a turn has `role` and `content`)")
    role = turn.get("role")
    if role not in _ROLE_BLOCKS:
        raise _fail(path, where, f"role must be 'user' or 'assistant', got {role!r}")
    content = turn["content"]
    if isinstance(content, str):
        if not content.strip() and role == "user":
            raise _fail(path, where, "the content is empty")
        return
    if not isinstance(content, list) or not content:
        raise _fail(path, where, "content is a string or a non-empty list of blocks")
    for b, block in enumerate(content):
        _check_block(block, role, path, f"{where}, block {b}")


def _without_nulls(value: Any) -> Any:
    """A copy without null-valued keys: a Parquet struct column pads the keys a record lacks with null."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def row_turns(value: Any, *, path: str) -> list[dict[str, Any]]:
    """A row's turns, checked, as copies (the request must not share the row's objects)."""
    turns = _without_nulls(as_list(value, path=path))
    if not turns:
        raise RowValueError(f"field {path!r} holds no turns")
    for index, turn in enumerate(turns):
        _check_turn(turn, path, index)
    return list(turns)


def check_order(messages: list[dict[str, Any]]) -> None:
    """The assembled conversation starts with a user turn, as the API requires."""
    if not messages:
        raise RowValueError("the conversation has no turns")
    if messages[0].get("role") != "user":
        raise RowValueError("the conversation must start with a user turn (the row's turns start with an assistant's)")


def row_system(value: Any, *, path: str) -> str | list[dict[str, Any]]:
    """A row's system prompt: text, or a list of text blocks (checked)."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return value
    blocks = _without_nulls(as_list(value, path=path))
    for index, block in enumerate(blocks):
        if not (isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str)):
            raise _fail(path, f"block {index}", "a system prompt's blocks are text blocks ({type: text, text: …})")
    return list(blocks)


def row_tools(value: Any, *, path: str) -> list[dict[str, Any]]:
    """A row's tool definitions (checked: a name, an object input_schema)."""
    tools = _without_nulls(as_list(value, path=path))
    for index, tool in enumerate(tools):
        where = f"tool {index}"
        if not isinstance(tool, Mapping):
            raise _fail(path, where, f"a tool is an object, not {type(tool).__name__}")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise _fail(path, where, f"`name` must be 1–128 letters, digits, _ or -, got {name!r}")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            raise _fail(path, where, "`input_schema` must be a JSON schema object with type: object")
    return list(tools)
