"""Rate-limit pacing: token buckets fed by `anthropic-ratelimit-*` headers, a shared back-off per
lane, and a concurrency limit that adapts where no headers come.

A lane is what the API meters together: one key on one endpoint for one model class. Every
worker sending to a lane asks `acquire()` first, so the lane as a whole stays under its limits
and a 429 pauses the whole lane once instead of every worker discovering it on its own.

Waiters queue per lane in arrival order and only the head of the queue sleeps on a timer; a
release wakes exactly the waiters it lets through, so a pool of hundreds of workers costs
O(1) per request instead of waking every worker on every reply.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import anyio

from evalrun.send.bucket import TokenBucket
from evalrun.send.client import RateLimitInfo
from evalrun.send.clock import Clock, SystemClock

__all__ = ["Lane", "Pacer", "Ticket", "TokenBucket"]

# A 429 slows the lane to this fraction of its learned limits; the pace climbs back linearly.
PACE_AFTER_429 = 0.9
PACE_RECOVERY_PER_S = 0.05
# Seconds of refill kept in reserve: requests reach the server with some jitter, and a bucket
# emptied exactly on our clock can be a request short on the server's.
RESERVE_S = 0.2
# A 529 pauses the lane for this long, doubling while they keep coming (limits stay as learned).
OVERLOAD_PAUSE_S = 0.25
OVERLOAD_PAUSE_MAX_S = 8.0
# Adaptive concurrency (no headers): latency "climbs" above this multiple of its floor plus slack.
LATENCY_CLIMB = 2.0
LATENCY_SLACK_S = 0.005
SLOW_START_GROWTH = 7.0  # added per success while latency is flat: ×8 per round trip
_WARMUP = 8  # samples before the latency floor is trusted


@dataclass
class _Waiter:
    need: tuple[tuple[str, float], ...]
    event: anyio.Event = field(default_factory=anyio.Event)
    ticket: Ticket | None = None  # set when granted


@dataclass(frozen=True)
class Ticket:
    """A granted send: when, and the lane's running totals of what it had sent, this included.
    A reply's rate-limit headers describe the server's bucket when it admitted the request; the
    ticket says how much has refilled and been sent since."""

    at: float
    taken: tuple[float, float, float]  # requests, input tokens, output tokens (max_tokens)


_TAKEN_INDEX = {"requests": 0, "input": 1, "output": 2}


@dataclass
class Lane:
    """The pacing state of one endpoint × key × model class."""

    name: str
    max_concurrency: int
    concurrency: float
    in_flight: int = 0
    answered: bool = False  # a reply has come back (until then, with probe_first, one at a time)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)  # learned per-minute limits
    paused_until: float = 0.0
    rate_limited: int = 0
    overloaded: int = 0
    overload_streak: int = 0
    has_headers: bool = False
    # The pace: the fraction of the learned limits we send at. Lowered by a 429, recovers with time.
    pace_floor: float = 1.0
    pace_since: float = 0.0
    # Adaptive concurrency without headers.
    slow_start: bool = True
    latency_samples: int = 0
    latency_floor: float = math.inf
    latency_recent: float = 0.0
    last_cut: float = 0.0
    # When the concurrency limit last held a send back (or was reached): replies that come back
    # together are all released before anything new is sent, so "the limit binds" must be
    # remembered for a round trip, not judged at each release.
    bound_at: float = -math.inf
    # Running totals of what was granted (requests, input tokens, max_tokens), for tickets.
    taken: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    # What was actually sent, for the progress line.
    sent: int = 0
    window_start: float = 0.0
    window_sent: int = 0
    send_rate: float = 0.0
    waiters: deque[_Waiter] = field(default_factory=deque)

    def pace(self, now: float) -> float:
        if self.pace_floor >= 1.0:
            return 1.0
        pace = self.pace_floor + (now - self.pace_since) * PACE_RECOVERY_PER_S
        if pace >= 1.0:
            self.pace_floor = 1.0
            return 1.0
        return pace

    def _count_send(self, now: float) -> None:
        self.sent += 1
        self.window_sent += 1
        elapsed = now - self.window_start
        if elapsed >= 2.0:
            self.send_rate = self.window_sent / elapsed
            self.window_start, self.window_sent = now, 0

    def status(self, now: float, *, with_pause: bool = True) -> str:
        parts = []
        requests = self.limits.get("requests")
        if requests is not None:
            parts.append(f"{self.send_rate * 60:,.0f}/{requests:,.0f} rpm")
        for kind, label in (("input", "itpm"), ("output", "otpm")):
            if kind in self.limits:
                parts.append(f"{label} {_short(self.limits[kind])}")
        pace = self.pace(now)
        if self.has_headers and pace < 1.0:
            parts.append(f"slowed to {pace:.0%}")
        if not self.has_headers and self.latency_samples:
            parts.append(
                f"{self.send_rate:,.0f} req/s, concurrency {int(self.concurrency)}/{self.max_concurrency}, "
                f"latency {self.latency_recent:.2f}s"
            )
        if with_pause and self.paused_until > now:
            parts.append(f"backing off {self.paused_until - now:.1f}s")
        return ", ".join(parts)


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


_KINDS = {"requests": "requests", "input-tokens": "input", "output-tokens": "output"}


class Pacer:
    """Shared by every worker of a run; all of its methods run on the event loop thread.

    With headers, the lane's buckets pace it (concurrency is only a ceiling); without, the
    lane's concurrency limit grows while latency stays flat and shrinks when it climbs.
    A lane without headers opens to the ceiling once the run's first request (which goes alone)
    has answered. Such a server is not the Anthropic API, which always sends them: it is a local
    server, a proxy or a fake, and a round trip spent ramping up costs a whole latency while one
    spent queued at the server costs a share of one; the latency control cuts the limit back
    within a round trip if the server queues. `initial_concurrency` starts lower (tests).
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        initial_concurrency: int | None = None,
        clock: Clock | None = None,
        probe_first: bool = False,
    ) -> None:
        # probe_first: a lane sends one request at a time until a reply comes back, whatever
        # the run loop does (a model answered from the shared cache skips its own warm-up), so
        # no lane bursts to its ceiling before it has seen the server's rate-limit headers.
        self.probe_first = probe_first
        self.max_concurrency = max_concurrency
        start = max_concurrency if initial_concurrency is None else initial_concurrency
        self.initial_concurrency = max(1, min(start, max_concurrency))
        self.clock: Clock = clock or SystemClock()
        self._lanes: dict[str, Lane] = {}

    def lane(self, name: str) -> Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = Lane(
                name=name,
                max_concurrency=self.max_concurrency,
                concurrency=self.initial_concurrency,
                window_start=self.clock.now(),
            )
            self._lanes[name] = lane
        return lane

    def in_flight(self, name: str) -> int:
        return self.lane(name).in_flight

    # -- sending -------------------------------------------------------------------------------
    async def acquire(self, name: str, *, input_tokens: int, max_tokens: int) -> Ticket:
        """Wait until the lane may send one more request of this size, then count it in flight.
        Hand the ticket back to `release` with the reply."""
        lane = self.lane(name)
        need = (("requests", 1.0), ("input", float(input_tokens)), ("output", float(max_tokens)))
        if not lane.waiters and self._wait(lane, need, self.clock.now()) == 0.0:
            return self._grant(lane, need, self.clock.now())
        waiter = _Waiter(need)
        lane.waiters.append(waiter)
        try:
            while True:
                delay = self._dispatch(lane)
                if waiter.ticket is not None:
                    return waiter.ticket
                if lane.waiters and lane.waiters[0] is waiter and delay > 0.0:
                    await self.clock.wait(waiter.event, delay)
                else:
                    await waiter.event.wait()
                if waiter.ticket is not None:
                    return waiter.ticket
                waiter.event = anyio.Event()
        except BaseException:
            if waiter.ticket is not None:
                lane.in_flight = max(0, lane.in_flight - 1)
            else:
                lane.waiters.remove(waiter)
            self._poke(lane)
            raise

    def _wait(self, lane: Lane, need: tuple[tuple[str, float], ...], now: float) -> float:
        """Seconds until `need` may go (0: now; inf: when a request finishes)."""
        wait = lane.paused_until - now
        if wait > 0.0:
            return wait
        wait = 0.0
        if lane.buckets:
            for kind, amount in need:
                bucket = lane.buckets.get(kind)
                if bucket is not None:
                    wait = max(wait, bucket.wait_for(amount, now))
        limit = int(lane.concurrency) if lane.answered or not self.probe_first else 1
        if wait == 0.0 and lane.in_flight >= max(1, limit):
            lane.bound_at = now
            return math.inf
        return wait

    def _grant(self, lane: Lane, need: tuple[tuple[str, float], ...], now: float) -> Ticket:
        if lane.buckets:
            for kind, amount in need:
                bucket = lane.buckets.get(kind)
                if bucket is not None:
                    bucket.take(amount, now)
        taken = lane.taken
        for kind, amount in need:
            taken[_TAKEN_INDEX[kind]] += amount
        lane.in_flight += 1
        if lane.in_flight >= int(lane.concurrency):
            lane.bound_at = now
        lane._count_send(now)
        return Ticket(at=now, taken=(taken[0], taken[1], taken[2]))

    def _dispatch(self, lane: Lane) -> float:
        """Let through every waiter at the head that may go now; the head's wait, else 0."""
        now = self.clock.now()
        granted = False
        while lane.waiters:
            head = lane.waiters[0]
            wait = self._wait(lane, head.need, now)
            if wait > 0.0:
                if granted:
                    head.event.set()  # a new head: wake it to time its own sleep
                return wait
            lane.waiters.popleft()
            head.ticket = self._grant(lane, head.need, now)
            granted = True
            head.event.set()
        return 0.0

    def _poke(self, lane: Lane) -> None:
        """Something changed: let through who may go, and wake the new head to re-time its sleep."""
        if lane.waiters:
            self._dispatch(lane)
            if lane.waiters:
                lane.waiters[0].event.set()

    def release(
        self,
        name: str,
        *,
        rate_limits: RateLimitInfo | None = None,
        output_tokens: int | None = None,
        max_tokens: int = 0,
        latency_s: float | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        """A request of the lane finished (any outcome). Pass what a success reported, and the
        request's ticket from `acquire`."""
        lane = self.lane(name)
        lane.in_flight = max(0, lane.in_flight - 1)
        now = self.clock.now()
        if output_tokens is not None or rate_limits:
            lane.answered = True
        if output_tokens is not None:
            lane.overload_streak = 0
            bucket = lane.buckets.get("output")
            if bucket is not None:
                # The output bucket was charged max_tokens up front; give back what was not used.
                bucket.give_back(max(0, max_tokens - output_tokens), now)
        if rate_limits:
            self._learn(lane, rate_limits, now, ticket)
        elif latency_s is not None and not lane.has_headers:
            self._adapt_concurrency(lane, latency_s, now)
        self._poke(lane)

    def _learn(self, lane: Lane, info: RateLimitInfo, now: float, ticket: Ticket | None = None) -> None:
        if not lane.has_headers:
            lane.has_headers = True
            lane.concurrency = lane.max_concurrency  # the buckets pace from here on
        pace = lane.pace(now)
        for header_kind, kind in _KINDS.items():
            limit, remaining, _reset = info.get(header_kind)
            if not limit:
                continue
            lane.limits[kind] = limit
            rate = limit / 60.0 * pace
            reserve = limit / 60.0 * RESERVE_S
            bucket = lane.buckets.get(kind)
            if bucket is None:
                # Start from what the server says is left; capacity is learned as we see it.
                level = remaining if remaining is not None else limit
                bucket = lane.buckets[kind] = TokenBucket(
                    rate=rate, capacity=max(level, 1.0), level=level - reserve, updated=now
                )
                continue
            bucket.refill(now)
            bucket.rate = rate
            if remaining is not None:
                bucket.capacity = max(bucket.capacity, remaining)
                # Never trust the local level above the server's count, brought forward from
                # when it admitted this request: what refilled since, less what we sent since.
                # (Taken as it stood, a count one round trip old stalled the lane after its
                # first burst.) Refill is counted from our send, a little before admission:
                # the reserve covers that.
                server = remaining
                if ticket is not None:
                    index = _TAKEN_INDEX[kind]
                    sent_since = lane.taken[index] - ticket.taken[index]
                    server = min(bucket.capacity, remaining + limit / 60.0 * (now - ticket.at) - sent_since)
                bucket.level = min(bucket.level, server - reserve)

    def _adapt_concurrency(self, lane: Lane, latency_s: float, now: float) -> None:
        # No headers (a local server): grow while latency stays near its floor, shrink when it climbs.
        lane.latency_samples += 1
        if lane.latency_samples == 1:
            lane.latency_recent = latency_s
        else:
            lane.latency_recent += 0.1 * (latency_s - lane.latency_recent)
        if lane.latency_samples >= _WARMUP:
            lane.latency_floor = min(lane.latency_floor, lane.latency_recent)
        target = LATENCY_CLIMB * lane.latency_floor + LATENCY_SLACK_S
        if lane.latency_recent > target:
            if now - lane.last_cut > lane.latency_recent:  # at most one cut per round trip
                # Cut in proportion to how far latency climbed: between 10 % and a half.
                factor = min(0.9, max(0.5, target / lane.latency_recent))
                lane.concurrency = max(1.0, lane.concurrency * factor)
                lane.slow_start = False
                lane.last_cut = now
        elif lane.in_flight + 1 >= int(lane.concurrency) or now - lane.bound_at <= 1.5 * max(lane.latency_recent, 0.01):
            # Grow only while the limit binds (or bound within the last round trip).
            step = SLOW_START_GROWTH if lane.slow_start else 2.0 / lane.concurrency
            lane.concurrency = min(float(lane.max_concurrency), lane.concurrency + step)

    # -- failures ----------------------------------------------------------------------------
    def rate_limited(self, name: str, retry_after: float | None) -> None:
        """A 429: pause the whole lane until `retry_after` and lower its pace."""
        lane = self.lane(name)
        lane.rate_limited += 1
        now = self.clock.now()
        pause = retry_after if retry_after is not None else 1.0
        lane.paused_until = max(lane.paused_until, now + pause)
        if lane.has_headers:
            pace = min(lane.pace(now), 1.0) * PACE_AFTER_429
            lane.pace_floor, lane.pace_since = max(pace, 0.25), now
            for kind, bucket in lane.buckets.items():
                bucket.refill(now)
                bucket.rate = lane.limits.get(kind, bucket.rate * 60.0) / 60.0 * lane.pace_floor
                if kind == "requests":
                    bucket.level = min(bucket.level, 0.0)
        else:
            lane.concurrency = max(1.0, lane.concurrency / 2)
            lane.slow_start = False
        self._poke(lane)

    def overloaded(self, name: str, retry_after: float | None = None) -> float:
        """A 529: pause the lane briefly, longer while they keep coming; learned limits stay.

        Returns the pause in seconds.
        """
        lane = self.lane(name)
        lane.overloaded += 1
        now = self.clock.now()
        pause = min(OVERLOAD_PAUSE_S * 2.0**lane.overload_streak, OVERLOAD_PAUSE_MAX_S)
        pause = max(pause, retry_after or 0.0)
        lane.overload_streak += 1
        lane.paused_until = max(lane.paused_until, now + pause)
        if not lane.has_headers:
            lane.concurrency = max(1.0, lane.concurrency * 0.9)
            lane.slow_start = False
        self._poke(lane)
        return pause

    # -- progress ------------------------------------------------------------------------------
    def status(self) -> str:
        """One line for the progress display: per lane, the pace against the learned limit."""
        now = self.clock.now()
        several = len(self._lanes) > 1
        return "; ".join(
            f"{n}: {s}" if several else s
            for n, lane in self._lanes.items()
            if (s := lane.status(now, with_pause=several))
        )

    def backing_off(self) -> float:
        """The longest pause still running on any lane, in seconds (0 when none)."""
        now = self.clock.now()
        return max([0.0, *(lane.paused_until - now for lane in self._lanes.values())])
