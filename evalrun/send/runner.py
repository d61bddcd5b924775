"""The run loop, written once against any sender: what may be sent, and what each outcome means.

Flow: the planner streams the plan into the store chunk by chunk while the sender takes
requests from here, model by model, in plan order. Before a request leaves:

* requests already answered — in this folder, or in the shared response cache — are skipped;
  identical requests are one row of the store, so they are sent once whatever cells share them;
* a model the table does not know sends the first request of each prompt alone (a probe), and
  every model has a small window in flight until its first success, so an error that will hit
  every row costs a handful of requests, not a concurrency window of them;
* the budget reserves the request's worst case; the deadline and a stop request are checked.

When an outcome arrives it is committed at once. A refusal of prefill or of a sampling
parameter is learned and the model re-planned; an error that hits every first request stops
the run (a wrong key, an unknown model, the same 400) or the model (an unreachable endpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import anyio

from evalrun.cost import counters_cost, usage_cost, worst_case_usd
from evalrun.errors import (
    ApiError,
    AuthError,
    BudgetExceeded,
    DatasetError,
    DeadlineReached,
    EvalrunError,
    PermanentApiError,
    RateLimitError,
    RunAborted,
    RunInterrupted,
    RunStopped,
    SpecError,
    StoreError,
    TransientApiError,
)
from evalrun.gctune import fewer_collections
from evalrun.messages_api import usage_counters
from evalrun.models import SAMPLING_PARAMS, Price
from evalrun.plan.grid import Plan, PlanChunk
from evalrun.plan.judge import JudgePlan
from evalrun.plan.render import FILE_SOURCE, materialize
from evalrun.send.clock import Clock, SystemClock
from evalrun.send.sender import Request, Sender
from evalrun.store.cache import ResponseCache
from evalrun.store.records import Outcome
from evalrun.store.run_store import Learned, PendingRequest, Store

__all__ = ["HOPELESS_AFTER", "UNCONFIRMED_KEY", "RunStats", "Runner", "deadline_grace"]

_SENT_MARK = "\x00sent\x00"  # where a stop's message says how many requests were sent
UNCONFIRMED_KEY = "unconfirmed_usd"  # store meta: worst case of requests abandoned at a deadline


def deadline_grace(deadline_s: float) -> float:
    """How long requests in flight at the deadline may still take: a tenth of the deadline,
    between 1 and 30 s."""
    return min(30.0, max(1.0, deadline_s / 10))


# Failures with no success first after which a model is hopeless; also how many requests a model
# may have in flight before its first success.
HOPELESS_AFTER = 5
# Attempts of a model that has never answered which may time out before it is stopped.
SILENT_AFTER = 3
_PAGE = 256
_CACHE_FLUSH = 64
_PROGRESS_EVERY_S = 0.2
_PREFILL_REFUSAL = re.compile(r"prefill", re.IGNORECASE)
_PARAM_REFUSAL = re.compile(r"deprecated|not supported|not permitted|cannot both|cannot be used|unsupported|may only", re.I)


@dataclass
class RunStats:
    """Live counters for the progress line; the CLI reads them, the run loop writes them."""

    cells: int = 0  # cells in the plan
    requests: int = 0  # requests this run has to answer (grows while the plan is written)
    answered: int = 0  # of those, sent by this run and answered by the API
    reattached: int = 0  # answered in batches an earlier (killed) run submitted, collected by this one
    from_cache: int = 0  # answered from the shared response cache
    errors: int = 0  # ended in an error in this run
    retries: int = 0
    rate_limited: int = 0
    spent_usd: float = 0.0  # what the run folder has spent in total
    spent_before_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    planning: bool = True
    pacing: str = ""
    oldest_wait_s: float = 0.0
    stopped_models: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.answered + self.reattached + self.from_cache + self.errors

    @property
    def total(self) -> int:
        return self.requests

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.answered + self.reattached + self.errors) / elapsed if elapsed > 0 else 0.0


@dataclass
class _Gate:
    """The first request of a group goes alone; the rest wait until its outcome is in."""

    open: bool = False
    opener: str | None = None


def capability_refusal(error: ApiError, body: Mapping[str, object]) -> tuple[bool, frozenset[str]] | None:
    """(prefill refused, sampling params refused) if a 400 says the model refuses a feature."""
    if not isinstance(error, PermanentApiError) or error.status != 400:
        return None
    message = error.message
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else {}
    if isinstance(last, dict) and last.get("role") == "assistant" and _PREFILL_REFUSAL.search(message):
        return True, frozenset()
    named = [p for p in SAMPLING_PARAMS if p in body and re.search(rf"\b{p}\b", message)]
    if named and _PARAM_REFUSAL.search(message):
        if len(named) > 1 and "temperature" in named:
            named = [p for p in named if p != "temperature"]  # "cannot both": keep temperature
        return False, frozenset(named)
    return None


class Runner:
    """Runs one plan through one sender. Implements `RequestSource` for the sender."""

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
        self._gates: dict[tuple[str, str], _Gate] = {}
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

    # -- public ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop handing out requests; those in flight finish and are stored (Ctrl-C)."""
        self._stop_requested = True
        self._notify()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> RunStats:
        """Send every request the store lacks. Raises RunStopped, BudgetExceeded, DeadlineReached
        or RunInterrupted when it stops early."""
        self.stats.planning = self._planning
        if not self._planning:
            self.stats.requests = self.store.count_pending(run_id=self.run_id, stage=self.stage)
            self.stats.cells = self.plan.total_cells
        self._progress()
        with fewer_collections():
            return await self._run()

    async def _run(self) -> RunStats:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            if self._planning:
                self._start_planner(tg, after_seq=-1)
            if self.deadline_at is not None:
                tg.start_soon(self._watch_deadline)
            try:
                await self.sender.run(self)
            finally:
                self._flush_cache()
                self._write_unstored()
            self._planner_cancel()
            tg.cancel_scope.cancel()
        self._progress(force=True)
        if self._fatal is not None:
            text = str(self._fatal)
            if _SENT_MARK in text:  # counted now: requests held at the pace were not sent
                raise RunStopped(text.replace(_SENT_MARK, self._sent_note()), model=getattr(self._fatal, "model", None))
            raise self._fatal
        if self._stop_requested:
            raise RunInterrupted(
                f"interrupted: {self._left()} requests not yet answered; run the same command again to resume"
            )
        if self._deadline_hit:
            abandoned = f" ({self._abandoned} abandoned in flight)" if self._abandoned else ""
            raise DeadlineReached(
                f"stopped at the deadline ({self.deadline_s:g} s): {self._left()} requests not yet answered"
                f"{abandoned}; run again to resume"
            )
        if self._budget_hit:
            unconfirmed = (
                f" (and up to ${self._unconfirmed_usd:.4f} for requests abandoned at a deadline)"
                if self._unconfirmed_usd
                else ""
            )
            raise BudgetExceeded(
                f"stopped at the budget: ${self.stats.spent_usd:.4f} of ${self.budget_usd:.4f} spent{unconfirmed}, "
                f"{self._left()} requests left; run again with a higher budget to finish"
            )
        return self.stats

    def _left(self) -> int:
        return self.store.count_pending(run_id=-1, stage=self.stage)

    # -- the planner ---------------------------------------------------------------------------
    def _start_planner(self, tg: anyio.abc.TaskGroup, *, after_seq: float, replan: str | None = None) -> None:
        scope = anyio.CancelScope()
        self._planner_scope = scope
        self._planning = self.stats.planning = True
        tg.start_soon(self._write_plan, scope, after_seq, replan)

    def _planner_cancel(self) -> None:
        if self._planner_scope is not None:
            self._planner_scope.cancel()

    async def _write_plan(self, scope: anyio.CancelScope, after_seq: float, replan: str | None) -> None:
        with scope:
            plan = self.plan
            if replan is not None and after_seq >= 0:
                # The re-planned model catches up to where the plan had got, then all go on together.
                for chunk in plan.chunks(models={replan}, until_seq=int(after_seq)):
                    self._write_chunk(chunk)
                    await anyio.sleep(0)
            for chunk in plan.chunks(after_seq=int(after_seq) if after_seq >= 0 else -1):
                if self.stats.cells == 0 and chunk.rows:
                    self.stats.cells = plan.total_cells
                self._write_chunk(chunk)
                self.stats.requests += len({r.key for r in chunk.requests})
                self._planned_seq = chunk.last_seq
                self._notify()
                await anyio.sleep(0)  # let the sender go between chunks
            if self.fingerprint is not None and isinstance(plan, Plan):
                self.store.finish_plan(self.fingerprint(plan))
            self._planned_seq = math.inf
            self._planning = self.stats.planning = False
            self.stats.cells = plan.total_cells
            self._notify()

    def _write_chunk(self, chunk: PlanChunk) -> None:
        if chunk.rows:
            self.store.add_rows(chunk.rows)
        self.store.add_cells(chunk.cells, chunk.requests)
        if chunk.links:
            self.store.link_judges(chunk.links)

    # -- RequestSource -------------------------------------------------------------------------
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

    async def take(self, model: str) -> Request | None:
        while True:
            if self._halted(model):
                return None
            pending = await self._peek(model)
            if pending is None:
                return None
            if pending.key in self._in_flight:
                self._buffers[model].popleft()
                continue
            if not self._may_send(model, pending):
                await self._wait_change()
                continue
            reserved = self._reserve(pending)
            if reserved is None:
                if self._in_flight:
                    # It may fit once what is in flight has cost what it really costs (usually far
                    # less than its worst case): wait for one to finish, then ask again.
                    await self._wait_change()
                    continue
                self._budget_hit = True
                self._notify()
                return None
            request = self._hand_out(model, pending, reserved)
            if request is not None:
                return request

    def _hand_out(self, model: str, pending: PendingRequest, reserved: float) -> Request | None:
        """Take `pending` off the buffer and count it in flight (None: it could not be built)."""
        self._buffers[model].popleft()
        request = self._request(pending)
        if request is None:
            self._reserved_usd -= reserved
            return None
        gate = self._gate_of(model, pending)
        if gate is not None and not gate.open:
            gate.opener = pending.key
        self._in_flight[pending.key] = (request, reserved, time.monotonic())
        self._in_flight_by_model[model] += 1
        return request

    def take_ready(self, limit: int) -> list[Request]:
        taken: list[Request] = []
        for model in self.models:
            while len(taken) < limit and not self._halted(model):
                pending = self._peek_now(model)
                if pending is None:
                    break
                if pending.key in self._in_flight:
                    self._buffers[model].popleft()
                    continue
                if not self._may_send(model, pending):
                    break
                reserved = self._reserve(pending)
                if reserved is None:
                    if not self._in_flight and not taken:
                        self._budget_hit = True
                        self._notify()
                    break
                request = self._hand_out(model, pending, reserved)
                if request is not None:
                    taken.append(request)
        return taken

    def _peek_now(self, model: str) -> PendingRequest | None:
        """Like `_peek`, without waiting for the planner."""
        buffer = self._buffers[model]
        while not buffer:
            if model in self._exhausted:
                return None
            if self._read_page(model):
                continue
            if not self._planning:
                self._exhausted.add(model)
            return None
        return buffer[0]

    def _read_page(self, model: str) -> bool:
        """Read `model`'s next page of pending requests into its buffer; False when none is stored yet."""
        page = self.store.pending(
            model, after_seq=self._cursor[model], limit=_PAGE, run_id=self.run_id, stage=self.stage
        )
        if not page:
            return False
        self._cursor[model] = page[-1].first_seq
        self._buffers[model].extend(self._from_cache(page))
        return True

    def finished(self) -> bool:
        """Nothing will be handed out any more and nothing is in flight."""
        if self._in_flight:
            return False
        if self._halted():
            return True
        return not self._planning and all(
            m in self._exhausted and not self._buffers[m] for m in self.models if m not in self.stats.stopped_models
        )

    async def wait_ready(self) -> bool:
        if self.finished():
            return False
        await self._wait_change()
        return not self.finished()

    def hold(self, usd: float) -> None:
        """Count money already committed elsewhere (a batch submitted by an earlier run) against the budget."""
        self._reserved_usd += usd

    def release_hold(self, usd: float) -> None:
        self._reserved_usd -= usd
        self._notify()

    @property
    def stopping(self) -> bool:
        """A stop was asked for (Ctrl-C), not a budget or deadline: batches may be cancelled."""
        return self._stop_requested

    def _request(self, pending: PendingRequest) -> Request | None:
        if FILE_SOURCE not in pending.body_json:
            # The stored body is the body as sent: its bytes go on the wire as they are.
            return Request(key=pending.key, model=pending.model, payload=pending.body_json.encode(),
                           max_tokens=pending.max_tokens, input_tokens=pending.input_tokens)  # fmt: skip
        try:
            body = materialize(json.loads(pending.body_json))
        except DatasetError as exc:
            # An image changed or vanished since planning: record it on the request, go on.
            self.store.record(
                Outcome(key=pending.key, status="error", error=str(exc), error_type="dataset", attempts=0),
                run_id=self.run_id,
            )
            self.stats.errors += 1
            return None
        return Request(
            key=pending.key,
            model=pending.model,
            body=body,
            max_tokens=pending.max_tokens,
            input_tokens=pending.input_tokens,
        )

    async def _peek(self, model: str) -> PendingRequest | None:
        """The next pending request of `model` in plan order, or None when it has no more."""
        while True:
            head = self._peek_now(model)
            if head is not None or model in self._exhausted:
                return head
            await self._wait_change()  # the planner has not stored the next page yet
            if self._halted(model):
                return None

    def _from_cache(self, page: list[PendingRequest]) -> list[PendingRequest]:
        """Record what the shared cache already holds (free); return the rest."""
        if self.cache is None:
            return page
        hits = self.cache.lookup([p.key for p in page])
        if not hits:
            return page
        self.store.record_many(hits.values(), run_id=self.run_id)
        for pending in page:
            if pending.key in hits:
                self._succeeded.add(pending.model)
                self._open_gate(pending.model, pending)
        self.stats.from_cache += len(hits)
        self._progress()
        return [p for p in page if p.key not in hits]

    def _gate_of(self, model: str, pending: PendingRequest) -> _Gate | None:
        """The first request of a cached prefix goes alone (parallel first requests would all
        miss the cache); so does the first of each prompt of a model the table does not know."""
        cached = pending.gate.startswith("cache:")
        if not cached and (model not in self._probe_models or model in self._succeeded):
            return None
        return self._gates.setdefault((model, pending.gate), _Gate())

    def _open_gate(self, model: str, pending: PendingRequest | Request) -> None:
        gate = self._gates.get((model, getattr(pending, "gate", "")))
        if gate is not None:
            gate.open = True

    def _may_send(self, model: str, pending: PendingRequest) -> bool:
        gate = self._gate_of(model, pending)
        if gate is not None and not gate.open and gate.opener is not None:
            return False
        if model in self._succeeded or not self.warmup:
            return True
        # Until a model has answered once: one request, then a few, so that an error that will hit
        # every row (a wrong key, an unknown model, an unreachable server) costs a handful.
        window = HOPELESS_AFTER if model in self._heard else 1
        if self._in_flight_by_model[model] >= window:
            return False
        gate = self._gate_of(model, pending)
        return gate is None or gate.open or gate.opener is None

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

    def _reserve(self, pending: PendingRequest) -> float | None:
        """Reserve the request's worst-case cost against the budget; None if it does not fit."""
        if self.budget_usd is None:
            return 0.0
        worst = self.worst_case(pending)
        if self.stats.spent_usd + self._unconfirmed_usd + self._reserved_usd + worst > self.budget_usd:
            return None
        self._reserved_usd += worst
        return worst

    def retry(self, request: Request, error: ApiError, attempts: int) -> bool:
        if isinstance(error, RateLimitError):
            self.stats.rate_limited += 1
        model = request.model
        if model not in self._heard:
            # A failed attempt is news too: open the small window, so that an endpoint refusing
            # every connection is found out in one round instead of one back-off schedule.
            self._heard.add(model)
            self._notify()
        if (
            isinstance(error, TransientApiError)
            and error.connection
            and model not in self._succeeded
            and self._count_failure(model, "connection")
        ):
            base = self._plans[model].base_url or "the simulator"
            self._stop_model(model, f"cannot reach {base}: {error.message} ({HOPELESS_AFTER} attempts, none answered)")
        if error.error_type == "timeout" and model not in self._succeeded:
            # Accepted and never answered in time: an endpoint that never answers is found out
            # after a few deadlines (the first attempts of a model go one at a time).
            self._timeouts[model] = self._timeouts.get(model, 0) + 1
            if self._timeouts[model] >= SILENT_AFTER:
                base = self._plans[model].base_url or "the simulator"
                self._stop_model(
                    model,
                    f"no answer from {base}: {error.message} ({SILENT_AFTER} attempts in a row, none answered; "
                    "set request_timeout if a first answer takes longer)",
                )
        if self._halted(model) or attempts > self.max_retries:
            return False
        self.stats.retries += 1
        if request.key not in self._in_flight:
            # A request of a re-attached batch goes again: from now on this run is sending it.
            self._in_flight[request.key] = (request, 0.0, time.monotonic())
            self._in_flight_by_model[model] += 1
        return True

    async def deliver(self, request: Request, outcome: Outcome, error: ApiError | None) -> None:
        entry = self._in_flight.pop(request.key, None)
        reserved = entry[1] if entry else 0.0
        self._reserved_usd -= reserved
        self._in_flight_by_model[request.model] -= 1 if entry else 0
        try:
            if outcome.status == "unsent":
                return
            self._heard.add(request.model)
            if error is not None and self._fatal_or_learned(request, error):
                self._unrecorded += 1  # sent, and not recorded (the run stops, or it is re-planned)
                return
            if outcome.status == "ok":
                self._answered(request, outcome, reattached=entry is None)
            else:
                self._errored(request, outcome, error)
            for gate in self._gates.values():
                if gate.opener == request.key:
                    gate.open = True
        finally:
            self._notify()
            self._progress()

    def _answered(self, request: Request, outcome: Outcome, *, reattached: bool) -> None:
        outcome = self._priced(request, outcome)
        if self.cache is not None and not outcome.simulated:
            # The folder's store is the record; the shared cache is written in batches.
            self._to_cache.append(outcome)
            if len(self._to_cache) >= _CACHE_FLUSH:
                self._flush_cache()
        if outcome.cost_usd is not None:
            self.stats.spent_usd += outcome.cost_usd
        if reattached:
            self.stats.reattached += 1  # never handed out here: an earlier run's batch sent it
        else:
            self.stats.answered += 1
        self._succeeded.add(request.model)
        self._failures.pop(request.model, None)
        self._keep(outcome)

    def _errored(self, request: Request, outcome: Outcome, error: ApiError | None) -> None:
        if outcome.raw is not None:
            # A malformed reply was paid for: what its usage says (else its worst case) counts.
            outcome = dataclasses.replace(outcome, cost_usd=self._raw_cost(request, outcome.raw))
            self.stats.spent_usd += outcome.cost_usd or 0.0
        self.stats.errors += 1
        if request.model not in self._succeeded and outcome.retryable:
            kind = error.message if error is not None else outcome.error or ""
            if self._count_failure(request.model, f"gave up: {kind}"):
                self._stop_model(
                    request.model,
                    f"its first {HOPELESS_AFTER} requests all failed ({outcome.error}); none answered",
                )
        self._keep(outcome)

    def _keep(self, outcome: Outcome) -> None:
        """Commit an outcome. When the store cannot be written (a full disk) sending stops at
        once: answers go to the shared cache now and are held here, to be written at the end if
        the store takes them by then; nothing paid for waits on a store that fails."""
        if self._unstored:
            self._unstored.append(outcome)
            self._flush_cache()
            return
        try:
            self.store.record(outcome, run_id=self.run_id)
        except StoreError as exc:
            self._unstored.append(outcome)
            self._flush_cache()
            self._fatal = RunAborted(f"{exc}; sending stopped at once")
            self._notify()

    def _write_unstored(self) -> None:
        """Try once more to store what a failing store did not take; say where it is if not."""
        if not self._unstored:
            return
        answers = sum(1 for o in self._unstored if o.status == "ok")
        try:
            self.store.record_many(self._unstored, run_id=self.run_id)
            self._unstored = []
            note = "the answers received since were stored at the end"
        except StoreError:
            where = "kept in the shared response cache" if self.cache is not None else "lost (no shared cache)"
            note = f"{answers} answers received since could not be stored: {where}; the next run takes them from there"
        assert self._fatal is not None
        self._fatal = RunAborted(f"{self._fatal} ({note})")

    def _raw_cost(self, request: Request, raw: str) -> float | None:
        """What a malformed reply cost by its own usage figures; its worst case when it has
        none that can be read (never a silent $0)."""
        try:
            usage = json.loads(raw).get("usage")
        except (ValueError, RecursionError, AttributeError):
            usage = None
        counts = usage_counters(usage)
        price = self._prices.get(request.model)
        readable = counts is not None and 0 < (counts.input_tokens or 0) < 10**9 and (counts.output_tokens or 0) < 10**9
        cost = counters_cost(price, counts) if counts is not None and readable else self.worst_case(request)
        return None if math.isnan(cost) else cost

    def _priced(self, request: Request, outcome: Outcome) -> Outcome:
        usage = (outcome.message or {}).get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
            return outcome  # no usage: the cost is unknown, never a silent $0
        cost = usage_cost(self._prices.get(request.model), usage)
        if math.isnan(cost):
            return outcome
        return dataclasses.replace(outcome, cost_usd=cost)

    def _fatal_or_learned(self, request: Request, error: ApiError) -> bool:
        """Handle an error that says something about the model rather than the row. True when
        the outcome must not be recorded (the run stops, or the model is re-planned)."""
        model = self._plans[request.model]
        if isinstance(error, AuthError):
            self._fatal = RunStopped(
                f"{model.label}: the API refused the key ({error}); check {model.key_variable}. "
                f"{_SENT_MARK}",
                model=model.label,
            )
            return True
        if not isinstance(error, PermanentApiError):
            return False
        if error.status == 404 and error.error_type == "not_found_error":
            self._fatal = RunStopped(
                f"{model.label}: the API does not know model {request.body.get('model')!r} (404 from "
                f"{model.base_url or 'the simulator'}: {error.message}); check the model name in the spec "
                f"(and base_url). {_SENT_MARK}",
                model=model.label,
            )
            return True
        refusal = capability_refusal(error, request.body) if self.replan is not None else None
        if refusal is not None:
            self._learn(request, error, prefill=refusal[0], params=refusal[1])
            return True
        if request.model not in self._succeeded and self._count_failure(request.model, error.message):
            self._fatal = RunStopped(
                f"{model.label}: its first {HOPELESS_AFTER} requests all failed with the same error ({error}); "
                f"fix the spec and run again. {_SENT_MARK}",
                model=model.label,
            )
        return False

    def _sent_note(self) -> str:
        sent = self.stats.answered + self.stats.errors + self._unrecorded
        return "Nothing more was sent." if sent <= 1 else f"{sent} requests were sent in all; nothing more will be."

    def _count_failure(self, model: str, kind: str) -> bool:
        last, count = self._failures.get(model, ("", 0))
        count = count + 1 if kind == last else 1
        self._failures[model] = (kind, count)
        return count >= HOPELESS_AFTER

    def _stop_model(self, model: str, reason: str) -> None:
        if model not in self.stats.stopped_models:
            self.stats.stopped_models[model] = reason
            self._notify()

    def _learn(self, request: Request, error: ApiError, *, prefill: bool, params: frozenset[str]) -> None:
        """A model refused a feature: remember it, re-plan its cells, send again."""
        label = request.model
        old = self.learned.get(label, Learned())
        new = Learned(prefill_refused=old.prefill_refused or prefill, refused_params=old.refused_params | params)
        if new == old:
            return  # sent before we learned: its replacement is already planned
        self.learned[label] = new
        assert self.replan is not None
        try:
            plan = self.replan(self.learned)
        except SpecError as spec_error:
            self._fatal = RunStopped(f"{label}: refused the request ({error.message}); {spec_error}", model=label)
            return
        self.store.save_learned(label, new)
        self.plan = plan
        self._planner_cancel()
        written = self._planned_seq
        self.store.drop_model_plan(label)
        self._buffers[label].clear()
        self._cursor[label] = -1
        self._exhausted.discard(label)
        for key in [k for k in self._gates if k[0] == label]:
            del self._gates[key]
        assert self._task_group is not None
        self._start_planner(
            self._task_group, after_seq=written if written != math.inf else self._last_seq(), replan=label
        )

    def _last_seq(self) -> int:
        return self.plan.total_cells - 1

    # -- waiting -------------------------------------------------------------------------------
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

    async def _watch_deadline(self) -> None:
        assert self.deadline_at is not None and self.deadline_s is not None
        await self.clock.sleep(max(0.0, self.deadline_at - self.clock.now()))
        # Still running (this task is cancelled when the sender returns): the deadline stops it,
        # also when what it waits for is not in `_in_flight` (a batch a killed run submitted).
        self._deadline_hit = True
        self._notify()
        # Requests in flight get a short grace, not their own timeout (up to 10 minutes each):
        # the deadline is the user's. Those still open then are abandoned — nothing of theirs is
        # stored, so the next run sends them again.
        await self.clock.sleep(deadline_grace(self.deadline_s))
        if self._in_flight:
            self._abandoned = len(self._in_flight)
            if self.warmup:  # real time (a batch goes on and is collected by the next run)
                lost = sum(self.worst_case(request) for request, _, _ in self._in_flight.values())
                if lost:
                    self._unconfirmed_usd += lost
                    self.store.set_meta(**{UNCONFIRMED_KEY: repr(self._unconfirmed_usd)})
            assert self._task_group is not None
            self._task_group.cancel_scope.cancel()

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

