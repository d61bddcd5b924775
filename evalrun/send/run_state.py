"""The run loop's shared state: what is planned, buffered, in flight, reserved and learned, and
the small helpers every part of the loop uses (halting, waking waiters, progress, the worst case of
a request, the shared cache's write-behind). `Runner` is built from it: `HandOut` (what may be sent
now), `OutcomeHandling` (what each outcome means) and the loop itself in `runner.py`."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import anyio

from evalrun.cost import worst_case_usd
from evalrun.errors import EvalrunError
from evalrun.models import Price
from evalrun.plan.grid import Plan
from evalrun.plan.judge import JudgePlan
from evalrun.send.clock import Clock, SystemClock
from evalrun.send.run_stats import RunStats
from evalrun.send.sender import Request, Sender
from evalrun.store.cache import ResponseCache
from evalrun.store.records import Outcome, PendingRequest
from evalrun.store.run_store import Learned, Store

__all__ = ["HOPELESS_AFTER", "SENT_MARK", "SILENT_AFTER", "UNCONFIRMED_KEY", "Gate", "RunState"]

SENT_MARK = "\x00sent\x00"  # where a stop's message says how many requests were sent
UNCONFIRMED_KEY = "unconfirmed_usd"  # store meta: worst case of requests abandoned at a deadline
# Failures with no success first after which a model is hopeless; also how many requests a model
# may have in flight before its first success.
HOPELESS_AFTER = 5
# Attempts of a model that has never answered which may time out before it is stopped.
SILENT_AFTER = 3
_PROGRESS_EVERY_S = 0.2


@dataclass
class Gate:
    """The first request of a group goes alone; the rest wait until its outcome is in."""

    open: bool = False
    opener: str | None = None


class RunState:
    """The state of one plan running through one sender (the constructor of `Runner`)."""

    def __init__(
        self,
        *,
        plan: Plan | JudgePlan,
        store: Store,
        run_id: int,
        sender: Sender,
        replan: Callable[[Mapping[str, Learned]], Plan] | None,
        fingerprint: Callable[[Plan], str] | None,
        stage: str = "answer",
        plan_stored: bool = False,
        cache: ResponseCache | None = None,
        max_retries: int = 6,
        budget_usd: float | None = None,
        deadline_s: float | None = None,
        clock: Clock | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        warmup: bool = True,
    ) -> None:
        self.plan = plan
        # Real time: one request, then a small window, until a model first answers. A batch
        # sender cannot pace that way (an error in a batch is not billed anyway).
        self.warmup = warmup
        self.store = store
        self.run_id = run_id
        self.sender = sender
        self.replan = replan
        self.fingerprint = fingerprint
        self.stage = stage
        self.cache = cache if cache is not None and cache.usable else None
        self.max_retries = max_retries
        self.budget_usd = budget_usd
        self.clock = clock or SystemClock()
        self.deadline_at = self.clock.now() + deadline_s if deadline_s else None
        self.deadline_s = deadline_s
        self.on_progress = on_progress or (lambda stats: None)
        self.models: tuple[str, ...] = tuple(m.label for m in plan.models)
        self._plans = {m.label: m for m in plan.models}
        self._prices: dict[str, Price | None] = {m.label: m.info.price for m in plan.models}
        self.learned: dict[str, Learned] = dict(plan.learned)
        spent = store.spent_usd()
        self.stats = RunStats(spent_usd=spent, spent_before_usd=spent)
        # Requests abandoned in flight at a deadline, at their worst case: the server may have
        # finished (and billed) them, with no record here. Counted against the budget only.
        self._unconfirmed_usd = float(store.meta().get(UNCONFIRMED_KEY) or 0.0)
        # Scheduling state.
        self._buffers: dict[str, deque[PendingRequest]] = {m: deque() for m in self.models}
        self._cursor: dict[str, int] = dict.fromkeys(self.models, -1)
        self._exhausted: set[str] = set()
        self._in_flight: dict[str, tuple[Request, float, float]] = {}  # key → (request, reserved USD, start)
        self._in_flight_by_model: dict[str, int] = dict.fromkeys(self.models, 0)
        self._gates: dict[tuple[str, str], Gate] = {}
        self._probe_models = {m.label for m in plan.models if not m.info.known} if replan is not None else set()
        self._succeeded: set[str] = set()
        self._heard: set[str] = set()  # models with at least one outcome
        self._failures: dict[str, tuple[str, int]] = {}
        self._timeouts: dict[str, int] = {}  # attempts timed out before the model first answered
        self._unrecorded = 0  # outcomes sent and not recorded (the run stopped, or a re-plan)
        self._unstored: list[Outcome] = []  # outcomes a failing store did not take
        self._reserved_usd = 0.0
        self._changed = anyio.Event()
        self.halted = anyio.Event()
        self._to_cache: list[Outcome] = []
        self._progress_at = 0.0
        # Stopping.
        self._stop_requested = False
        self._fatal: EvalrunError | None = None
        self._budget_hit = False
        self._deadline_hit = False
        self._abandoned = 0  # requests still in flight when the deadline's grace ran out
        # The planner.
        self._planning = not plan_stored
        self._planned_seq = -1 if not plan_stored else math.inf
        self._planner_scope: anyio.CancelScope | None = None
        self._replan_pending: str | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _halted(self, model: str | None = None) -> bool:
        return (
            self._stop_requested
            or self._fatal is not None
            or self._budget_hit
            or self._deadline_hit
            or (model is not None and model in self.stats.stopped_models)
        )

    def stopped(self, model: str) -> bool:
        return self._halted(model)

    def worst_case(self, request: Request | PendingRequest) -> float:
        """The most a request can cost (0 for an unpriced model: those cannot have a budget)."""
        body = request.body_json if isinstance(request, PendingRequest) else request.payload.decode()
        worst = worst_case_usd(
            self._prices.get(request.model),
            input_tokens=request.input_tokens,
            max_tokens=request.max_tokens,
            cached='"cache_control"' in body,
        )
        return 0.0 if math.isnan(worst) else worst

    def _count_failure(self, model: str, kind: str) -> bool:
        last, count = self._failures.get(model, ("", 0))
        count = count + 1 if kind == last else 1
        self._failures[model] = (kind, count)
        return count >= HOPELESS_AFTER

    def _stop_model(self, model: str, reason: str) -> None:
        if model not in self.stats.stopped_models:
            self.stats.stopped_models[model] = reason
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
        if self._halted() and not self.halted.is_set():
            self.halted.set()

    async def _wait_change(self) -> None:
        event = self._changed
        if self.deadline_at is not None:
            await self.clock.wait(event, max(0.0, self.deadline_at - self.clock.now()))
        else:
            await event.wait()

    def _flush_cache(self) -> None:
        if self.cache is not None and self._to_cache:
            self.cache.put(self._to_cache)
        self._to_cache = []

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._progress_at >= _PROGRESS_EVERY_S:
            # What only a person reads is refreshed a few times a second, not per request.
            self._progress_at = now
            self.stats.pacing = self.sender.status()
            self.stats.oldest_wait_s = max((now - start for _, _, start in self._in_flight.values()), default=0.0)
        self.on_progress(self.stats)

    def waiting_requests(self) -> Iterator[tuple[str, float]]:
        now = time.monotonic()
        for key, (_, _, start) in self._in_flight.items():
            yield key, now - start
