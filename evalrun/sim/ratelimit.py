"""Token-bucket rate limits per model family: requests, input tokens and output tokens.

Each configured limit is a bucket refilled continuously at limit/60 per second.

* Capacity: with `burst` unset a bucket holds one minute's worth (capacity = the per-minute
  limit), like the real API. With `burst` set and `rpm` set, the request bucket holds `burst`
  requests and the token buckets hold the same fraction of a minute (`itpm * burst / rpm`).
  `burst` without `rpm` is ignored.
* Admission needs one request token, input tokens covering this request's charge (or the whole
  bucket, if the charge is larger than the bucket), and at least one output token. A rejected
  request is not charged; its `retry-after` is the ceiling of the longest wait, at least 1 s.
* Charges: the request and its input (`input_tokens + cache_creation_input_tokens`; cache reads
  are free, as on current models) on admission; the actual output tokens on completion, which
  may take the output bucket below zero until it refills.
* Headers carry the per-minute limit, the whole tokens left (not rounded to thousands, so small
  test limits stay readable) and the RFC 3339 time at which the bucket will be full again. The
  `tokens-*` trio repeats whichever of the input and output buckets has fewer tokens left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from evalrun.send.bucket import TokenBucket

__all__ = ["RateLimiter", "TokenBucket", "retry_after"]


@dataclass
class _Family:
    requests: TokenBucket | None
    input: TokenBucket | None
    output: TokenBucket | None


class RateLimiter:
    """The buckets of every model family, created on first use."""

    def __init__(
        self, *, rpm: float | None, itpm: float | None, otpm: float | None, burst: int | None
    ) -> None:
        self._rpm, self._itpm, self._otpm = rpm, itpm, otpm
        self._fraction = burst / rpm if burst is not None and rpm is not None else 1.0
        self._burst = burst
        self._families: dict[str, _Family] = {}
        self.enabled = any(v is not None for v in (rpm, itpm, otpm))

    def _family(self, name: str, now: float) -> _Family:
        family = self._families.get(name)
        if family is None:

            def bucket(limit: float | None, capacity: float | None = None) -> TokenBucket | None:
                if limit is None:
                    return None
                return TokenBucket.full(limit / 60.0, capacity or max(1.0, limit * self._fraction), now)

            family = _Family(
                requests=bucket(self._rpm, float(self._burst) if self._burst and self._rpm else None),
                input=bucket(self._itpm),
                output=bucket(self._otpm),
            )
            self._families[name] = family
        for b in (family.requests, family.input, family.output):
            if b is not None:
                b.refill(now)
        return family

    def admit(self, family_name: str, input_charge: int, now: float | None = None) -> float | None:
        """Charge one request and its input, or return the seconds to wait (nothing charged)."""
        if not self.enabled:
            return None
        now = time.monotonic() if now is None else now
        family = self._family(family_name, now)
        wait = 0.0
        if family.requests is not None:
            wait = max(wait, family.requests.wait_for(1, now))
        if family.input is not None:
            wait = max(wait, family.input.wait_for(input_charge, now))
        if family.output is not None:
            wait = max(wait, family.output.wait_for(1, now))
        if wait > 0:
            return wait
        if family.requests is not None:
            family.requests.charge(1, now)
        if family.input is not None:
            family.input.charge(input_charge, now)
        return None

    def charge_output(self, family_name: str, tokens: int, now: float | None = None) -> None:
        """Charge the output tokens of a finished request."""
        if self._otpm is None:
            return
        now = time.monotonic() if now is None else now
        family = self._family(family_name, now)
        assert family.output is not None
        family.output.charge(tokens, now)

    def headers(self, family_name: str, now: float | None = None) -> list[tuple[bytes, bytes]]:
        """The `anthropic-ratelimit-*` headers for the configured limits of one family."""
        if not self.enabled:
            return []
        now = time.monotonic() if now is None else now
        family = self._family(family_name, now)
        wall = datetime.now(UTC)
        out: list[tuple[bytes, bytes]] = []

        def add(name: str, limit: float | None, b: TokenBucket) -> None:
            reset = (wall + timedelta(seconds=math.ceil(b.seconds_to_full()))).strftime("%Y-%m-%dT%H:%M:%SZ")
            prefix = f"anthropic-ratelimit-{name}-"
            out.append(((prefix + "limit").encode(), _num(limit or 0.0)))
            out.append(((prefix + "remaining").encode(), str(max(0, math.floor(b.level))).encode()))
            out.append(((prefix + "reset").encode(), reset.encode()))

        if family.requests is not None:
            add("requests", self._rpm, family.requests)
        if family.input is not None:
            add("input-tokens", self._itpm, family.input)
        if family.output is not None:
            add("output-tokens", self._otpm, family.output)
        tightest = min(
            ((limit, b) for limit, b in ((self._itpm, family.input), (self._otpm, family.output)) if b is not None),
            key=lambda pair: pair[1].level,
            default=None,
        )
        if tightest is not None:
            add("tokens", *tightest)
        return out


def retry_after(seconds: float) -> int:
    """Whole seconds for a `retry-after` header: the ceiling, at least 1."""
    return max(1, math.ceil(seconds))


def _num(value: float) -> bytes:
    return (str(int(value)) if float(value).is_integer() else f"{value:g}").encode()
