"""Facts about the Messages API that several modules need, written once.

The request body's fields (and which of them a spec may set, and which count_tokens takes), the
image media types with the leading bytes of each format, and the counters of a reply's `usage`.
The product reads these tables and so does the simulator (`evalrun.sim`), so the two cannot
drift apart. This module imports nothing of evalrun's: it is cheap to load from anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "BODY_FIELDS",
    "COUNT_TOKENS_FIELDS",
    "GENERATION_ONLY_FIELDS",
    "IMAGE_MEDIA_TYPES",
    "IMAGE_SIGNATURES",
    "SAMPLING_PARAMS",
    "SPEC_PARAMS",
    "USAGE_COLUMNS",
    "USAGE_COUNTERS",
    "Usage",
    "detect_image_type",
    "is_image_of_type",
    "usage_counters",
]

# -- the request body ---------------------------------------------------------------------------
# Every top-level field of a POST /v1/messages body.
BODY_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences",
    "metadata", "stream", "thinking", "tools", "tool_choice", "service_tier", "output_config",
    "cache_control", "container", "inference_geo", "speed", "mcp_servers", "context_management",
    "diagnostics", "user_profile_id", "workspace_id",
})  # fmt: skip
# The fields only generation takes: count_tokens refuses them.
GENERATION_ONLY_FIELDS = frozenset({
    "max_tokens", "stop_sequences", "metadata", "stream", "service_tier", "container", "inference_geo",
    "temperature", "top_p", "top_k", "speed",
})  # fmt: skip
# What POST /v1/messages/count_tokens accepts: a Messages body without the generation-only fields.
COUNT_TOKENS_FIELDS = BODY_FIELDS - GENERATION_ONLY_FIELDS
# The sampling parameters, in the order a refusal names them.
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
# Body fields a spec does not set under `params`: `model`, `messages` and `system` come from the
# spec's own keys; evalrun reads whole replies (no `stream`); the rest are account or preview
# settings a spec has no use for.
_NOT_SPEC_PARAMS = frozenset({
    "model", "messages", "system", "stream", "speed", "diagnostics", "user_profile_id", "workspace_id",
})  # fmt: skip
# The top-level body fields a spec may set under `params`.
SPEC_PARAMS = BODY_FIELDS - _NOT_SPEC_PARAMS

# -- images -------------------------------------------------------------------------------------
# The media types the API accepts for base64 image blocks, each with the leading bytes of its
# format: one tuple per variant of the format, of (offset, bytes) pairs that must all match.
IMAGE_SIGNATURES: dict[str, tuple[tuple[tuple[int, bytes], ...], ...]] = {
    "image/jpeg": (((0, b"\xff\xd8\xff"),),),
    "image/png": (((0, b"\x89PNG\r\n\x1a\n"),),),
    "image/gif": (((0, b"GIF87a"),), ((0, b"GIF89a"),)),
    "image/webp": (((0, b"RIFF"), (8, b"WEBP")),),
}
IMAGE_MEDIA_TYPES = tuple(IMAGE_SIGNATURES)


def is_image_of_type(data: bytes, media_type: str) -> bool:
    """Whether `data` (at least the file's first 12 bytes) starts like an image of `media_type`."""
    return any(
        all(data[offset : offset + len(magic)] == magic for offset, magic in variant)
        for variant in IMAGE_SIGNATURES.get(media_type, ())
    )


def detect_image_type(data: bytes) -> str | None:
    """The image media type from the file's first bytes (never from its name), or None."""
    return next((kind for kind in IMAGE_SIGNATURES if is_image_of_type(data, kind)), None)


# -- usage --------------------------------------------------------------------------------------
class Usage(NamedTuple):
    """The counters of a reply's `usage`, named (and ordered) as the run store's columns.

    `cache_creation_input_tokens` counts every cache write; `cache_creation_1h_input_tokens` the
    part written for an hour (None when the reply did not break the writes down), so the 5-minute
    writes are the difference.
    """

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    cache_creation_1h_input_tokens: int | None = None
    service_tier: str | None = None


USAGE_COLUMNS = Usage._fields
# The whole-number counters at the top of a reply's `usage` object.
USAGE_COUNTERS = USAGE_COLUMNS[:4]


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def usage_counters(usage: Any) -> Usage | None:
    """A reply's `usage` object as counters; None when there is no usage object.

    A counter the reply leaves out (or sends as something other than a number) is 0, except the
    1-hour cache writes, which stay None when the reply has no `cache_creation` breakdown.
    """
    if not isinstance(usage, Mapping):
        return None
    creation = usage.get("cache_creation")
    creation = creation if isinstance(creation, Mapping) else {}
    tier = usage.get("service_tier")
    return Usage(
        input_tokens=_count(usage.get("input_tokens")) or 0,
        output_tokens=_count(usage.get("output_tokens")) or 0,
        cache_creation_input_tokens=_count(usage.get("cache_creation_input_tokens")) or 0,
        cache_read_input_tokens=_count(usage.get("cache_read_input_tokens")) or 0,
        cache_creation_1h_input_tokens=_count(creation.get("ephemeral_1h_input_tokens")),
        service_tier=tier if isinstance(tier, str) else None,
    )


# The largest count a store column (SQLite INTEGER) holds; a larger "count" is not a reply.
MAX_COUNT = 2**63 - 1


def is_count(value: Any) -> bool:
    """A whole number ≥ 0 that a store column can hold."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _block_problem(index: int, block: Any) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return f"content[{index}] is not a content block"
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        return f"content[{index}] is a text block without text"
    if kind == "tool_use" and (not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict)):
        return f"content[{index}] is a tool_use block without a name and an input object"
    return None


def _usage_problem(usage: Any) -> str | None:
    if not isinstance(usage, dict):
        return "the reply's `usage` is not an object"
    for name in USAGE_COUNTERS:
        if usage.get(name) is not None and not is_count(usage[name]):
            return f"usage.{name} is not a whole number ≥ 0 (below 2^63)"
    creation = usage.get("cache_creation")
    if creation is not None and (
        not isinstance(creation, dict) or not all(is_count(v) for v in creation.values() if v is not None)
    ):
        return "usage.cache_creation is not an object of token counts"
    if usage.get("service_tier") is not None and not isinstance(usage["service_tier"], str):
        return "usage.service_tier is not a string"
    return None


def validate_message(payload: Any) -> str | None:
    """What is wrong with a Messages reply, or None when it has the documented shape."""
    if not isinstance(payload, dict):
        return "the reply is not a JSON object"
    if payload.get("type") not in (None, "message"):
        return f"the reply's type is {payload.get('type')!r}, not 'message'"
    content = payload.get("content")
    if not isinstance(content, list):
        return "the reply has no `content` list"
    for index, block in enumerate(content):
        problem = _block_problem(index, block)
        if problem is not None:
            return problem
    for name in ("stop_reason", "model", "id"):
        if payload.get(name) is not None and not isinstance(payload.get(name), str):
            return f"the reply's `{name}` is not a string"
    return None if payload.get("usage") is None else _usage_problem(payload["usage"])
