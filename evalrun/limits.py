"""Rate-limit pacing: token buckets fed by `anthropic-ratelimit-*` headers, a shared back-off per
lane (endpoint × model family), and a concurrency limit that adapts where no headers come.

A lane is what the API meters together: one key on one endpoint for one model class. Every
worker sending to a lane asks `acquire()` first, so the lane as a whole stays under its limits
and a 429 pauses the whole lane once instead of every worker discovering it on its own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import anyio

from evalrun.client import RateLimitInfo

__all__ = ["Lane", "Pacer", "TokenBucket"]


@dataclass
class TokenBucket:
    """A continuously refilled bucket: `rate` units per second, at most `capacity`."""

    rate: float
    capacity: float
    level: float
    updated: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` is available (0 if now)."""
        self.refill(now)
        amount = min(amount, self.capacity)  # a request larger than the bucket waits for a full one
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate if self.rate > 0 else math.inf

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= min(amount, self.capacity)


@dataclass
class Lane:
    """The pacing state of one endpoint × model family."""

    name: str
    max_concurrency: int
    concurrency: float
    in_flight: int = 0
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    paused_until: float = 0.0
    rate_limited: int = 0
    overloaded: int = 0
    has_headers: bool = False
    latency_floor: float = math.inf
    latency_recent: float = 0.0

    def status(self, now: float) -> str:
        parts = []
        requests = self.buckets.get("requests")
        if requests is not None:
            parts.append(f"limit {requests.rate * 60:,.0f} rpm")
        if self.paused_until > now:
            parts.append(f"backing off {self.paused_until - now:.1f}s")
        if not self.has_headers:
            parts.append(f"concurrency {int(self.concurrency)}")
        return ", ".join(parts)


_KINDS = {"requests": "requests", "input-tokens": "input", "output-tokens": "output"}


class Pacer:
    """Shared by every worker of a run; all of its methods run on the event loop thread."""

    def __init__(self, *, max_concurrency: int, initial_concurrency: int = 8) -> None:
        self.max_concurrency = max_concurrency
        self.initial_concurrency = min(initial_concurrency, max_concurrency)
        self._lanes: dict[str, Lane] = {}
        self._changed = anyio.Event()

    def lane(self, name: str) -> Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = Lane(name=name, max_concurrency=self.max_concurrency, concurrency=self.initial_concurrency)
            self._lanes[name] = lane
        return lane

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def acquire(self, name: str, *, input_tokens: int, max_tokens: int) -> None:
        """Wait until the lane may send one more request of this size, then count it in flight."""
        lane = self.lane(name)
        while True:
            now = time.monotonic()
            wait = max(0.0, lane.paused_until - now)
            if wait == 0.0:
                for kind, amount in (("requests", 1), ("input", input_tokens), ("output", max_tokens)):
                    bucket = lane.buckets.get(kind)
                    if bucket is not None:
                        wait = max(wait, bucket.wait_for(amount, now))
            if wait == 0.0 and lane.in_flight < max(1, int(lane.concurrency)):
                for kind, amount in (("requests", 1), ("input", input_tokens), ("output", max_tokens)):
                    bucket = lane.buckets.get(kind)
                    if bucket is not None:
                        bucket.take(amount, now)
                lane.in_flight += 1
                return
            changed = self._changed
            with anyio.move_on_after(wait if wait > 0 else 1.0):
                await changed.wait()

    def release(
        self,
        name: str,
        *,
        rate_limits: RateLimitInfo | None = None,
        output_tokens: int | None = None,
        max_tokens: int = 0,
        latency_s: float | None = None,
    ) -> None:
        """A request of the lane finished (any outcome)."""
        lane = self.lane(name)
        lane.in_flight = max(0, lane.in_flight - 1)
        now = time.monotonic()
        if output_tokens is not None and "output" in lane.buckets:
            # The output bucket was charged max_tokens up front; give back what was not used.
            bucket = lane.buckets["output"]
            bucket.refill(now)
            bucket.level = min(bucket.capacity, bucket.level + max(0, max_tokens - output_tokens))
        if rate_limits:
            self._learn(lane, rate_limits, now)
        elif latency_s is not None:
            self._adapt_concurrency(lane, latency_s)
        self._notify()

    def _learn(self, lane: Lane, info: RateLimitInfo, now: float) -> None:
        lane.has_headers = True
        lane.concurrency = lane.max_concurrency
        for header_kind, kind in _KINDS.items():
            limit, remaining, _reset = info.get(header_kind)
            if not limit:
                continue
            rate = limit / 60.0
            bucket = lane.buckets.get(kind)
            if bucket is None:
                # Start from what the server says is left; capacity is learned as we see it.
                level = remaining if remaining is not None else limit
                lane.buckets[kind] = TokenBucket(rate=rate, capacity=max(level, 1.0), level=level, updated=now)
                continue
            bucket.refill(now)
            bucket.rate = rate
            if remaining is not None:
                bucket.capacity = max(bucket.capacity, remaining)
                # Never trust the local level above the server's count.
                bucket.level = min(bucket.level, remaining)

    def _adapt_concurrency(self, lane: Lane, latency_s: float) -> None:
        # No headers (a local server): grow while latency stays near its floor, shrink when it climbs.
        lane.latency_floor = min(lane.latency_floor, latency_s)
        lane.latency_recent = latency_s if lane.latency_recent == 0 else 0.9 * lane.latency_recent + 0.1 * latency_s
        if lane.latency_recent > 2.0 * lane.latency_floor + 0.05:
            lane.concurrency = max(1.0, lane.concurrency * 0.9)
        else:
            lane.concurrency = min(float(lane.max_concurrency), lane.concurrency + 1.0)

    def rate_limited(self, name: str, retry_after: float | None) -> None:
        """A 429: pause the whole lane and slow its request bucket down."""
        lane = self.lane(name)
        lane.rate_limited += 1
        pause = retry_after if retry_after is not None else 1.0
        lane.paused_until = max(lane.paused_until, time.monotonic() + pause)
        requests = lane.buckets.get("requests")
        if requests is not None:
            requests.level = min(requests.level, 0.0)
        else:
            lane.concurrency = max(1.0, lane.concurrency / 2)
        self._notify()

    def overloaded(self, name: str, delay: float) -> None:
        """A 529 or 5xx: back off the lane without lowering its learned limits."""
        lane = self.lane(name)
        lane.overloaded += 1
        lane.paused_until = max(lane.paused_until, time.monotonic() + delay)
        self._notify()

    def status(self) -> str:
        now = time.monotonic()
        return "; ".join(f"{n}: {s}" for n, lane in self._lanes.items() if (s := lane.status(now)))

    def backing_off(self) -> float:
        """The longest pause still running on any lane, in seconds."""
        now = time.monotonic()
        return max((lane.paused_until - now for lane in self._lanes.values()), default=0.0)
