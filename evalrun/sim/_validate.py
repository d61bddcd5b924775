"""Request validation in the real API's words (pydantic-style `loc: message` strings)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from evalrun.messages_api import (
    BODY_FIELDS,
    COUNT_TOKENS_FIELDS,
    IMAGE_MEDIA_TYPES,
    SAMPLING_PARAMS,
    is_image_of_type,
)
from evalrun.models import ModelInfo
from evalrun.sim._errors import SimError, invalid
from evalrun.sim._thinking import check_thinking_model, check_thinking_request
from evalrun.tokens import MAX_PDF_PAGES, pdf_pages

__all__ = ["check_model_rules", "validate_request"]

_BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
# "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
_MEDIA_TYPE_CHOICES = " or ".join(
    (", ".join(f"'{t}'" for t in IMAGE_MEDIA_TYPES[:-1]), f"'{IMAGE_MEDIA_TYPES[-1]}'")
)
_TTLS = ("5m", "1h")
# A document's source types, with the media type each must name (none for url and content).
_DOCUMENT_SOURCES = {"base64": "application/pdf", "text": "text/plain", "url": "", "content": ""}
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_TOOL_FIELDS = frozenset({
    "type", "name", "description", "input_schema", "cache_control", "strict", "input_examples",
    "allowed_callers", "defer_loading", "eager_input_streaming",
})  # fmt: skip
_TOOL_CHOICES = ("auto", "any", "tool", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_range(name: str, value: Any, low: float, high: float | None) -> None:
    if not _is_number(value):
        raise invalid(f"{name}: Input should be a valid number")
    if value < low:
        raise invalid(f"{name}: Input should be greater than or equal to {low:g}")
    if high is not None and value > high:
        raise invalid(f"{name}: Input should be less than or equal to {high:g}")


def _check_cache_control(loc: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise invalid(f"{loc}: Input should be a valid dictionary")
    if value.get("type") != "ephemeral":
        raise invalid(f"{loc}.type: Input should be 'ephemeral'")
    if "ttl" in value and value["ttl"] not in _TTLS:
        raise invalid(f"{loc}.ttl: Input should be '5m' or '1h'")


def _check_image_source(loc: str, source: Any) -> None:
    if not isinstance(source, Mapping):
        raise invalid(
            f"{loc}: Field required" if source is None else f"{loc}: Input should be a valid dictionary"
        )
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise invalid(f"{loc}.base64.media_type: Input should be {_MEDIA_TYPE_CHOICES}")
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid(
                f"{loc}.base64.data: Field required"
                if data is None
                else f"{loc}.base64.data: Input should be a valid string"
            )
        try:
            head = base64.b64decode(data[:32], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{loc}.base64.data: Invalid base64 data") from None
        if not is_image_of_type(head, media_type):
            kind_name = media_type.split("/")[1]
            raise invalid(
                f"{loc}.base64.data: The image was specified using the {media_type} media type, "
                f"but does not appear to be a valid {kind_name} image"
            )
    elif kind == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise invalid(f"{loc}.url.url: Field required")
        if not url.startswith(("http://", "https://")):
            raise invalid(f"{loc}.url.url: Input should be a valid URL")
    else:
        raise invalid(
            f"{loc}: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'base64', 'url', 'file'"
        )


def _check_document_source(loc: str, source: Any) -> None:
    if not isinstance(source, Mapping):
        raise invalid(f"{loc}: Field required" if source is None else f"{loc}: Input should be a valid dictionary")
    kind = source.get("type")
    if kind not in _DOCUMENT_SOURCES:
        tags = ", ".join(f"'{t}'" for t in _DOCUMENT_SOURCES)
        raise invalid(f"{loc}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid(f"{loc}.url.url: Input should be a valid URL")
        return
    if kind == "content":
        if not isinstance(source.get("content"), str | list):
            raise invalid(f"{loc}.content.content: Field required")
        return
    media_type = _DOCUMENT_SOURCES[kind]
    if source.get("media_type") != media_type:
        raise invalid(f"{loc}.{kind}.media_type: Input should be '{media_type}'")
    if not isinstance(source.get("data"), str):
        raise invalid(f"{loc}.{kind}.data: Field required")
    if kind == "base64":
        pages = pdf_pages(source["data"])
        if pages is None:
            raise invalid(f"{loc}.base64.data: The PDF specified was not valid.")
        if pages > MAX_PDF_PAGES:
            raise invalid(f"{loc}.base64.data: A maximum of {MAX_PDF_PAGES} PDF pages may be provided.")


def _check_document(loc: str, block: Mapping[str, Any]) -> None:
    _check_document_source(f"{loc}.source", block.get("source"))
    for key in ("title", "context"):
        if block.get(key) is not None and not isinstance(block[key], str):
            raise invalid(f"{loc}.{key}: Input should be a valid string")
    citations = block.get("citations")
    if citations is not None and not (isinstance(citations, Mapping) and isinstance(citations.get("enabled", False), bool)):
        raise invalid(f"{loc}.citations: Input should be a valid dictionary")
    extra = set(block) - {"type", "source", "title", "context", "citations", "cache_control"}
    if extra:
        raise invalid(f"{loc}.{sorted(extra)[0]}: Extra inputs are not permitted")


def _check_block(loc: str, block: Any, *, system: bool = False) -> None:
    if not isinstance(block, Mapping):
        raise invalid(f"{loc}: Input should be a valid dictionary or object to extract fields from")
    kind = block.get("type")
    allowed = ("text",) if system else _BLOCK_TYPES
    if kind not in allowed:
        if kind is None:
            raise invalid(f"{loc}: Unable to extract tag using discriminator 'type'")
        tags = ", ".join(f"'{t}'" for t in allowed)
        raise invalid(
            f"{loc}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}"
        )
    if "cache_control" in block and block["cache_control"] is not None:
        _check_cache_control(f"{loc}.cache_control", block["cache_control"])
    if kind == "text":
        if "text" not in block:
            raise invalid(f"{loc}.text: Field required")
        if not isinstance(block["text"], str):
            raise invalid(f"{loc}.text: Input should be a valid string")
        extra = set(block) - {"type", "text", "cache_control", "citations"}
        if extra:
            raise invalid(f"{loc}.{sorted(extra)[0]}: Extra inputs are not permitted")
    elif kind == "image":
        _check_image_source(f"{loc}.source", block.get("source"))
    elif kind == "document":
        _check_document(loc, block)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        loc = f"messages.{i}"
        if not isinstance(message, Mapping):
            raise invalid(f"{loc}: Input should be a valid dictionary or object to extract fields from")
        for key in ("role", "content"):
            if key not in message:
                raise invalid(f"{loc}.{key}: Field required")
        extra = set(message) - {"role", "content"}
        if extra:
            raise invalid(f"{loc}.{sorted(extra)[0]}: Extra inputs are not permitted")
        if message["role"] not in ("user", "assistant"):
            raise invalid(f"{loc}.role: Input should be 'user' or 'assistant'")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(f"{loc}.content.{j}", block)
        elif not isinstance(content, str):
            raise invalid(f"{loc}.content: Input should be a valid string or a valid list")
    if messages[0]["role"] != "user":
        raise invalid('messages: first message must use the "user" role')
    last = messages[-1]
    if last["role"] == "assistant":
        content = last["content"]
        tail = content if isinstance(content, str) else None
        if isinstance(content, list) and content and content[-1].get("type") == "text":
            tail = content[-1]["text"]
        if tail and tail[-1].isspace():
            raise invalid("messages: final assistant content cannot end with trailing whitespace")


def _check_system(system: Any) -> None:
    if isinstance(system, list):
        for j, block in enumerate(system):
            _check_block(f"system.{j}", block, system=True)
    elif not isinstance(system, str):
        raise invalid("system: Input should be a valid string or a valid list")


def _check_output_config(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise invalid("output_config: Input should be a valid dictionary")
    extra = set(value) - {"effort", "format"}
    if extra:
        raise invalid(f"output_config.{sorted(extra)[0]}: Extra inputs are not permitted")
    fmt = value.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, Mapping):
        raise invalid("output_config.format: Input should be a valid dictionary")
    if fmt.get("type") != "json_schema":
        raise invalid("output_config.format.type: Input should be 'json_schema'")
    if not isinstance(fmt.get("schema"), Mapping):
        raise invalid(
            "output_config.format.schema: Field required"
            if "schema" not in fmt
            else "output_config.format.schema: Input should be a valid dictionary"
        )


def _check_tools(tools: Any) -> list[str]:
    """Validate custom tool definitions; returns their names."""
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names: list[str] = []
    for i, tool in enumerate(tools):
        loc = f"tools.{i}"
        if not isinstance(tool, Mapping):
            raise invalid(f"{loc}: Input should be a valid dictionary or object to extract fields from")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise invalid(
                f"{loc}.type: only custom tools are supported by the evalrun simulator, got '{kind}'"
            )
        loc += ".custom"
        for key in ("name", "input_schema"):
            if key not in tool:
                raise invalid(f"{loc}.{key}: Field required")
        extra = set(tool) - _TOOL_FIELDS
        if extra:
            raise invalid(f"{loc}.{sorted(extra)[0]}: Extra inputs are not permitted")
        name = tool["name"]
        if not isinstance(name, str):
            raise invalid(f"{loc}.name: Input should be a valid string")
        if not _TOOL_NAME.fullmatch(name):
            raise invalid(f"{loc}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if "description" in tool and not isinstance(tool["description"], str):
            raise invalid(f"{loc}.description: Input should be a valid string")
        schema = tool["input_schema"]
        if not isinstance(schema, Mapping):
            raise invalid(f"{loc}.input_schema: Input should be a valid dictionary")
        if "type" not in schema:
            raise invalid(f"{loc}.input_schema.type: Field required")
        if schema["type"] != "object":
            raise invalid(f"{loc}.input_schema.type: Input should be 'object'")
        if tool.get("cache_control") is not None:
            _check_cache_control(f"{loc}.cache_control", tool["cache_control"])
        names.append(name)
    if len(set(names)) != len(names):
        raise invalid("tools: Tool names must be unique.")
    return names


def _check_tool_choice(choice: Any, names: list[str], thinking: Any) -> None:
    if not isinstance(choice, Mapping):
        raise invalid("tool_choice: Input should be a valid dictionary or object to extract fields from")
    kind = choice.get("type")
    if kind is None:
        raise invalid("tool_choice: Unable to extract tag using discriminator 'type'")
    if kind not in _TOOL_CHOICES:
        tags = ", ".join(f"'{t}'" for t in _TOOL_CHOICES)
        raise invalid(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}"
        )
    allowed = {"type", "name", "disable_parallel_tool_use"} if kind == "tool" else {"type"}
    if kind in ("auto", "any"):
        allowed.add("disable_parallel_tool_use")
    extra = set(choice) - allowed
    if extra:
        raise invalid(f"tool_choice.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted")
    flag = choice.get("disable_parallel_tool_use")
    if flag is not None and not isinstance(flag, bool):
        raise invalid(f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean")
    if kind == "tool":
        if "name" not in choice:
            raise invalid("tool_choice.tool.name: Field required")
        if not isinstance(choice["name"], str):
            raise invalid("tool_choice.tool.name: Input should be a valid string")
    if kind != "none" and not names:
        raise invalid("tool_choice may only be specified while providing tools.")
    if kind == "tool" and choice["name"] not in names:
        raise invalid(f"tool_choice.tool.name: Tool '{choice['name']}' not found in the provided tools.")
    thinking_on = isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")
    if thinking_on and kind in ("any", "tool"):
        raise invalid("Thinking may not be enabled when tool_choice forces tool use.")


def _check_head(body: Any, *, removed: frozenset[str], count_tokens: bool) -> None:
    """The body is an object with only known fields, the required ones, a model and max_tokens."""
    if not isinstance(body, Mapping):
        raise invalid("Input should be a valid dictionary or object to extract fields from")
    allowed = (COUNT_TOKENS_FIELDS if count_tokens else BODY_FIELDS) - removed
    extra = [key for key in body if key not in allowed]
    if extra:
        raise invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    required = ("model", "messages") if count_tokens else ("model", "max_tokens", "messages")
    for key in required:
        if key not in body:
            raise invalid(f"{key}: Field required")
    if not isinstance(body["model"], str):
        raise invalid("model: Input should be a valid string")
    if not count_tokens:
        if not _is_int(body["max_tokens"]):
            raise invalid("max_tokens: Input should be a valid integer")
        if body["max_tokens"] < 1:
            raise invalid("max_tokens: Input should be greater than or equal to 1")


def _check_sampling(body: Mapping[str, Any]) -> None:
    """temperature, top_p, top_k, stop_sequences, stream and metadata."""
    if body.get("temperature") is not None:
        _check_range("temperature", body["temperature"], 0, 1)
    if body.get("top_p") is not None:
        _check_range("top_p", body["top_p"], 0, 1)
    if body.get("top_k") is not None:
        if not _is_int(body["top_k"]):
            raise invalid("top_k: Input should be a valid integer")
        _check_range("top_k", body["top_k"], 0, None)
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    if body.get("stream"):
        raise invalid("stream: streaming is not supported by the evalrun simulator")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise invalid("metadata: Input should be a valid dictionary")


def _check_options(body: Mapping[str, Any]) -> None:
    """tools, tool_choice, output_config and a top-level cache_control."""
    names = _check_tools(body["tools"]) if body.get("tools") is not None else []
    if body.get("tool_choice") is not None:
        _check_tool_choice(body["tool_choice"], names, body.get("thinking"))
    if body.get("output_config") is not None:
        _check_output_config(body["output_config"])
    if body.get("cache_control") is not None:
        _check_cache_control("cache_control", body["cache_control"])


def validate_request(body: Any, *, removed: frozenset[str], count_tokens: bool = False) -> None:
    """Raise a 400 `SimError` for the first problem in a Messages (or count_tokens) body.

    `removed` names the parameters the request's API version no longer has.
    """
    _check_head(body, removed=removed, count_tokens=count_tokens)
    _check_messages(body["messages"])
    if "system" in body:
        _check_system(body["system"])
    _check_sampling(body)
    _check_options(body)
    check_thinking_request(body)


def check_model_rules(body: Mapping[str, Any], info: ModelInfo) -> None:
    """Raise the 404 or 400 the named model gives this (already well-formed) request."""
    if not info.known:
        raise SimError(404, "not_found_error", f"model: {body['model']}")
    sent = {name for name in SAMPLING_PARAMS if body.get(name) is not None}
    for name in SAMPLING_PARAMS:
        if name in sent and name in info.refuses:
            raise invalid(f"`{name}` is deprecated for this model.")
    for group in info.exclusive:
        if group <= sent:
            names = sorted(group, key=SAMPLING_PARAMS.index)
            listed = " and ".join(f"`{n}`" for n in names)
            raise invalid(f"{listed} cannot both be specified for this model. Please use only one.")
    check_thinking_model(body, info)
    if info.prefill is False and body["messages"][-1]["role"] == "assistant":
        raise invalid(
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )
