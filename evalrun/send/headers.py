"""What a response's headers say about pacing: rate limits and how long to wait."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = ["RateLimitInfo", "retry_after_seconds"]

_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True)
class RateLimitInfo:
    """The `anthropic-ratelimit-*` headers of one response: limit, remaining, reset (epoch s)."""

    limits: dict[str, tuple[float | None, float | None, float | None]]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
        limits = {}
        for kind in _LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{kind}-"
            limit = headers.get(prefix + "limit")
            if limit is None:
                continue
            limits[kind] = (
                _number(limit),
                _number(headers.get(prefix + "remaining")),
                _epoch(headers.get(prefix + "reset")),
            )
        return cls(limits=limits)

    def get(self, kind: str) -> tuple[float | None, float | None, float | None]:
        return self.limits.get(kind, (None, None, None))

    def __bool__(self) -> bool:
        return bool(self.limits)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` wins over `retry-after` (seconds, or an HTTP date)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        from email.utils import parsedate_to_datetime

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None
