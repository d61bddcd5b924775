"""A local, deterministic approximation of input tokens, for estimates and budget reservations
when the endpoint cannot count (see README: token counting)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["estimate_input_tokens", "estimate_text_tokens"]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 8
IMAGE_TOKENS = 1600  # a typical ~1 megapixel image; the real count depends on its size


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for block in content or ():
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "image":
            total += IMAGE_TOKENS
        else:
            total += estimate_text_tokens(str(block.get("text", "")))
    return total


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """System + messages (+ a schema asked for), by characters; images at a flat rate."""
    total = REQUEST_OVERHEAD + _content_tokens(body.get("system"))
    for message in body.get("messages") or ():
        total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    config = body.get("output_config")
    if isinstance(config, Mapping) and config.get("format"):
        total += estimate_text_tokens(str(config["format"]))
    return total
