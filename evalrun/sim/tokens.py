"""The token rule, re-exported: it lives in `evalrun.tokens`, which the product imports without
the simulator. Kept so that `from evalrun.sim.tokens import ...` goes on working."""

from __future__ import annotations

from evalrun.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    Unit,
    count_request_tokens,
    count_text_tokens,
    cut_to_tokens,
    request_units,
)

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "Unit",
    "count_request_tokens",
    "count_text_tokens",
    "cut_to_tokens",
    "request_units",
]
