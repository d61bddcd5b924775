"""Values made fit for JSON: a NaN or an infinity (pandas' and numpy's "no value") becomes null."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["json_safe"]


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float, at any depth of dicts and lists, replaced by None
    (JSON has no NaN: `json.dumps` would write a token other parsers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
