"""The local token approximation used for estimates and budget reservations when the endpoint
cannot count. It is the simulator's documented rule (`evalrun.sim.tokens`), so estimates made
offline agree with what the simulator then reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalrun.sim.tokens import count_request_tokens, count_text_tokens

__all__ = ["estimate_input_tokens", "estimate_text_tokens"]


def estimate_text_tokens(text: str) -> int:
    return count_text_tokens(text)


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens of a Messages body under the local rule."""
    return count_request_tokens(body)
