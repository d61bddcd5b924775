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

import math

import anyio

from evalrun.errors import BudgetExceeded, DeadlineReached, RunInterrupted, RunStopped
from evalrun.gctune import fewer_collections
from evalrun.plan.grid import Plan, PlanChunk
from evalrun.send.handout import HandOut
from evalrun.send.outcomes import OutcomeHandling, capability_refusal
from evalrun.send.run_state import HOPELESS_AFTER, SENT_MARK, UNCONFIRMED_KEY
from evalrun.send.run_stats import RunStats

# The run's parts: its state (`run_state.py`), handing requests out (`handout.py`), what each
# outcome means (`outcomes.py`), its counters (`run_stats.py`). Names other modules import from
# here stay here.
__all__ = ["HOPELESS_AFTER", "UNCONFIRMED_KEY", "RunStats", "Runner", "capability_refusal", "deadline_grace"]


def deadline_grace(deadline_s: float) -> float:
    """How long requests in flight at the deadline may still take: a tenth of the deadline,
    between 1 and 30 s."""
    return min(30.0, max(1.0, deadline_s / 10))


class Runner(HandOut, OutcomeHandling):
    """Runs one plan through one sender. Implements `RequestSource` for the sender (its
    constructor and state: `RunState`)."""

    # -- public ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop handing out requests; those in flight finish and are stored (Ctrl-C)."""
        self._stop_requested = True
        self._notify()

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
            if SENT_MARK in text:  # counted now: requests held at the pace were not sent
                raise RunStopped(text.replace(SENT_MARK, self._sent_note()), model=getattr(self._fatal, "model", None))
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

    def _last_seq(self) -> int:
        return self.plan.total_cells - 1

    # -- the deadline --------------------------------------------------------------------------
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
