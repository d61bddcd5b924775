"""The worker pool: schedules cells, paces, retries, guards the budget, writes every result.

Flow: cells not yet in the store → one probe per (model, prompt) → everything else through a
bounded pool. A probe exists so that a model that refuses something (prefill, a sampling
parameter) refuses it once, not once per row; what it refused is learned, the model's cells are
re-planned, and the run goes on.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio

from evalrun.cost import usage_cost, worst_case_usd
from evalrun.errors import (
    ApiError,
    AuthError,
    BudgetExceeded,
    PermanentApiError,
    RateLimitError,
    RunInterrupted,
    RunStopped,
    SpecError,
    TransientApiError,
)
from evalrun.models import SAMPLING_PARAMS
from evalrun.plan.grid import Cell, Learned, Plan
from evalrun.send.client import ApiResponse, MessagesClient, reply_text
from evalrun.send.limits import Pacer
from evalrun.store.run_store import Outcome, Store
from evalrun.tokens import estimate_input_tokens

__all__ = ["RunStats", "Runner"]

# Consecutive identical permanent errors, with no success, after which a model is hopeless.
HOPELESS_AFTER = 5
_PREFILL_REFUSAL = re.compile(r"prefill", re.IGNORECASE)
_PARAM_REFUSAL = re.compile(r"deprecated|not supported|not permitted|cannot both|cannot be used|unsupported|may only", re.I)


@dataclass
class RunStats:
    """Live counters for the progress line; the CLI reads them, the runner writes them."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    spent_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    pacing: str = ""
    backing_off_s: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.skipped) / elapsed if elapsed > 0 else 0.0


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """The official SDK's schedule (0.5·2^n s, at most 8 s, up to 25 % jitter), never below retry-after."""
    base = min(0.5 * 2 ** max(attempt - 1, 0), 8.0) * (1 - 0.25 * random.random())
    return max(base, retry_after or 0.0)


def _capability_refusal(error: ApiError, cell: Cell) -> tuple[bool, frozenset[str]] | None:
    """(prefill refused, sampling params refused) if a 400 says the model refuses a feature."""
    if not isinstance(error, PermanentApiError) or error.status != 400:
        return None
    message = error.message
    ends_with_assistant = cell.body["messages"][-1]["role"] == "assistant"
    if ends_with_assistant and _PREFILL_REFUSAL.search(message):
        return True, frozenset()
    named = [p for p in SAMPLING_PARAMS if p in cell.body and re.search(rf"\b{p}\b", message)]
    if named and _PARAM_REFUSAL.search(message):
        if len(named) > 1 and "temperature" in named:
            named = [p for p in named if p != "temperature"]  # "cannot both": keep temperature
        return False, frozenset(named)
    return None


class Runner:
    """Runs one plan against its endpoints. `replan(learned)` rebuilds the plan after learning."""

    def __init__(
        self,
        *,
        plan: Plan,
        store: Store,
        clients: Mapping[str, MessagesClient],
        replan: Callable[[Mapping[str, Learned]], Plan],
        concurrency: int = 64,
        max_retries: int = 6,
        budget_usd: float | None = None,
        spent_before_usd: float = 0.0,
        on_progress: Callable[[RunStats], None] | None = None,
        pacer: Pacer | None = None,
        backoff: Callable[[int, float | None], float] = backoff_delay,
    ) -> None:
        self.plan = plan
        self.store = store
        self.clients = clients
        self.replan = replan
        self.max_retries = max_retries
        self.backoff = backoff
        self.budget_usd = budget_usd
        self.pacer = pacer or Pacer(max_concurrency=concurrency)
        self.concurrency = concurrency
        self.on_progress = on_progress or (lambda stats: None)
        self.stats = RunStats(spent_usd=spent_before_usd)
        self.learned: dict[str, Learned] = dict(store.learned())
        self._models = {m.label: m for m in plan.models}
        self._pending: deque[Cell] = deque()
        self._in_flight: dict[str, Cell] = {}
        self._reserved_usd = 0.0
        self._stop: BaseException | None = None
        self._budget_hit = False
        self._hopeless: dict[str, tuple[str, int]] = {}
        self._succeeded: set[str] = set()
        self._stop_requested = False
        self._probing = False
        self._lanes = _lane_names(plan, clients)
        self._status_at = 0.0
        self._finished = anyio.Event()

    # -- public ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop scheduling; requests in flight finish and are stored (Ctrl-C)."""
        self._stop_requested = True

    async def run(self) -> RunStats:
        """Send every cell the store lacks. Raises RunStopped or BudgetExceeded when it stops early."""
        finished = self.store.finished_keys()
        todo = [c for c in self.plan.cells if c.key not in finished]
        self.stats.total = len(self.plan.cells)
        self.stats.done = self.stats.skipped = len(self.plan.cells) - len(todo)
        self.on_progress(self.stats)
        probes: dict[tuple[str, str], Cell] = {}
        for cell in todo:
            probes.setdefault((cell.model, cell.prompt), cell)
        self._pending.extend(probes.values())
        self._probing = True
        await self._drain(workers=len(probes))
        self._probing = False
        if self._stop is None and not self._stop_requested and not self._budget_hit:
            finished = self.store.finished_keys()
            self._pending = deque(c for c in self.plan.cells if c.key not in finished)
            await self._drain(workers=self.concurrency)
        if self._stop is not None:
            raise self._stop
        if self._stop_requested:
            finished = self.store.finished_keys()
            left = sum(1 for c in self.plan.cells if c.key not in finished)
            raise RunInterrupted(f"interrupted: {left} cells not yet answered; run the same command again to resume")
        if self._budget_hit:
            raise BudgetExceeded(
                f"stopped at the budget: ${self.stats.spent_usd:.4f} of ${self.budget_usd:.4f} spent, "
                f"{self.stats.total - self.stats.done} cells left; run again with a higher budget to finish"
            )
        return self.stats

    # -- scheduling --------------------------------------------------------------------------
    async def _drain(self, *, workers: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, min(workers, len(self._pending)))):
                tg.start_soon(self._worker)

    def _next_cell(self) -> Cell | None:
        if self._stop is not None or self._stop_requested or self._budget_hit:
            return None
        # A model that reaches HOPELESS_AFTER stops the run (`_stop`), so there is nothing to filter here.
        return self._pending.popleft() if self._pending else None

    async def _worker(self) -> None:
        while (cell := self._next_cell()) is not None:
            worst = self._reserve(cell)
            while worst is None and self._in_flight:
                # It may fit once what is in flight has cost what it really costs (usually far
                # less than its worst case): wait for one to finish, then ask again.
                await self._finished.wait()
                worst = self._reserve(cell)
            if worst is None:
                self._budget_hit = True
                self._pending.appendleft(cell)
                return
            self._in_flight[cell.key] = cell
            try:
                await self._send(cell)
            finally:
                self._in_flight.pop(cell.key, None)
                self._reserved_usd -= worst
                self._finished.set()
                self._finished = anyio.Event()

    def _reserve(self, cell: Cell) -> float | None:
        """Reserve the cell's worst-case cost against the budget; None if it does not fit."""
        if self.budget_usd is None:
            return 0.0
        model = self._models[cell.model]
        worst = worst_case_usd(
            model.info.price,
            input_tokens=estimate_input_tokens(cell.body),
            max_tokens=cell.max_tokens,
            cached=_wants_cache(cell.body),
        )
        if math.isnan(worst):
            worst = 0.0  # unpriced models were refused a budget before the run began
        if self.stats.spent_usd + self._reserved_usd + worst > self.budget_usd:
            return None
        self._reserved_usd += worst
        return worst

    # -- one cell ----------------------------------------------------------------------------
    async def _send(self, cell: Cell) -> None:
        model = self._models[cell.model]
        client = self.clients[cell.model]
        lane = self._lanes[cell.model]
        input_estimate = estimate_input_tokens(cell.body)
        attempts = 0
        try:
            # A plain loop rather than tenacity: the same schedule, a fraction of the CPU per request.
            while True:
                attempts += 1
                try:
                    response = await self._attempt(lane, client, cell, input_estimate)
                    break
                except TransientApiError as exc:
                    if attempts > self.max_retries:
                        raise
                    self._count_retry()
                    await anyio.sleep(self.backoff(attempts, exc.retry_after))
        except AuthError as exc:
            self._stop = RunStopped(
                f"{cell.model}: the API refused the key ({exc}); check ANTHROPIC_API_KEY"
                f"{' or ' + model.api_key_env if model.api_key_env else ''}. Nothing more was sent."
            )
            return
        except PermanentApiError as exc:
            self._permanent(cell, exc, attempts)
            return
        except TransientApiError as exc:
            # Retries exhausted: recorded, and sent again by the next run.
            self.store.record(
                cell.key,
                Outcome(
                    status="error",
                    error=f"gave up after {attempts} attempts: {exc}",
                    error_type=exc.error_type or "transient",
                    http_status=exc.status,
                    retryable=True,
                    attempts=attempts,
                    request_id=exc.request_id,
                ),
            )
            self.stats.errors += 1
            self._progress(cell)
            return
        message = response.message
        cost = usage_cost(model.info.price, message.get("usage") or {})
        if not math.isnan(cost):
            self.stats.spent_usd += cost
        self.store.record(
            cell.key,
            Outcome(
                status="ok",
                message=message,
                text=reply_text(message),
                latency_s=response.latency_s,
                attempts=attempts,
                request_id=response.request_id,
            ),
        )
        self._succeeded.add(cell.model)
        self._progress(cell)

    async def _attempt(self, lane: str, client: MessagesClient, cell: Cell, input_estimate: int) -> ApiResponse:
        """One paced request: the lane learns from its headers, its latency, or its failure."""
        await self.pacer.acquire(lane, input_tokens=input_estimate, max_tokens=cell.max_tokens)
        try:
            response = await client.create(cell.body)
        except RateLimitError as exc:
            self.pacer.release(lane)
            self.pacer.rate_limited(lane, exc.retry_after)
            self.stats.rate_limited += 1
            raise
        except TransientApiError as exc:
            self.pacer.release(lane)
            if exc.status == 529:
                self.pacer.overloaded(lane, exc.retry_after)
            raise
        except BaseException:
            self.pacer.release(lane)
            raise
        usage = response.message.get("usage") or {}
        self.pacer.release(
            lane,
            rate_limits=response.rate_limits,
            output_tokens=int(usage.get("output_tokens") or 0),
            max_tokens=cell.max_tokens,
            latency_s=response.latency_s,
        )
        return response

    def _count_retry(self) -> None:
        self.stats.retries += 1

    def _progress(self, cell: Cell) -> None:
        self.stats.done += 1
        now = time.monotonic()
        if now - self._status_at >= 0.2 or self.stats.done >= self.stats.total:
            # The pacing text is for a human: a few times a second is enough.
            self._status_at = now
            self.stats.pacing = self.pacer.status()
        self.stats.backing_off_s = self.pacer.backing_off()
        self.on_progress(self.stats)

    def _permanent(self, cell: Cell, exc: PermanentApiError, attempts: int) -> None:
        if exc.status == 404 and exc.error_type == "not_found_error":
            self._stop = RunStopped(
                f"{cell.model}: the API does not know model {cell.model_id!r} (404: {exc.message}); "
                f"check the name in the spec. Nothing more was sent."
            )
            return
        refusal = _capability_refusal(exc, cell)
        if refusal is not None:
            self._adapt(cell, exc, prefill=refusal[0], params=refusal[1])
            return
        self.store.record(
            cell.key,
            Outcome(
                status="error",
                error=str(exc),
                error_type=exc.error_type,
                http_status=exc.status,
                attempts=attempts,
                request_id=exc.request_id,
            ),
        )
        self.stats.errors += 1
        if cell.model not in self._succeeded:
            last, count = self._hopeless.get(cell.model, ("", 0))
            self._hopeless[cell.model] = (exc.message, count + 1 if exc.message == last else 1)
            if self._hopeless[cell.model][1] >= HOPELESS_AFTER:
                self._stop = RunStopped(
                    f"{cell.model}: the first {HOPELESS_AFTER} requests all failed with the same error "
                    f"({exc}); fix the spec and run again. Nothing more was sent."
                )
        self._progress(cell)

    def _adapt(self, cell: Cell, exc: ApiError, *, prefill: bool, params: frozenset[str]) -> None:
        """A model refused a feature: remember it, re-plan its cells, queue the replacements."""
        old = self.learned.get(cell.model, Learned())
        new = Learned(
            prefill_refused=old.prefill_refused or prefill, refused_params=old.refused_params | params
        )
        if new == old:
            # Already adapted (a request sent before we learned): its replacement is queued.
            return
        self.learned[cell.model] = new
        try:
            plan = self.replan(self.learned)
        except SpecError as error:
            self._stop = RunStopped(f"{cell.model}: refused the request ({exc.message}); {error}")
            return
        self.store.save_learned(cell.model, new)
        self.store.save_plan(plan.cells)
        self.plan = plan
        finished = self.store.finished_keys()
        busy = set(self._in_flight)
        replacements = [c for c in plan.cells if c.model == cell.model and c.key not in finished and c.key not in busy]
        if self._probing:
            # Still probing: send one new probe per prompt of this model, not the whole model.
            firsts: dict[str, Cell] = {}
            for c in replacements:
                firsts.setdefault(c.prompt, c)
            replacements = list(firsts.values())
        self._pending = deque(c for c in self._pending if c.model != cell.model)
        self._pending.extendleft(reversed(replacements))


def _lane_names(plan: Plan, clients: Mapping[str, MessagesClient]) -> dict[str, str]:
    """Each model's lane: endpoint × key × model class, named as briefly as stays unambiguous."""
    keys: dict[int, int] = {}
    idents = {}
    for m in plan.models:
        client = clients.get(m.label)
        key = keys.setdefault(id(client), len(keys) + 1)
        idents[m.label] = (m.endpoint, key, m.info.family if m.info.known else m.spec.name)
    endpoints = {e for e, _, _ in idents.values()}
    several_keys = len({(e, k) for e, k, _ in idents.values()}) > len(endpoints)
    names = {}
    for label, (endpoint, key, family) in idents.items():
        name = family
        if len(endpoints) > 1:
            name += f"@{endpoint}"
        if several_keys:
            name += f" key{key}"
        names[label] = name
    return names


def _wants_cache(body: Mapping[str, object]) -> bool:
    return "cache_control" in body or '"cache_control"' in repr(body.get("messages")) or "cache_control" in repr(
        body.get("system")
    )
