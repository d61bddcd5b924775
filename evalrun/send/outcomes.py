"""What each outcome means: retries, pricing (a malformed reply that was paid for too), a model
stopped or the run stopped by an error that hits every first request, a refused feature learned
and the model re-planned, and what happens when the store cannot be written (sending stops at
once; what arrives after is held, sent to the shared cache, and written at the end if it can be).
A part of `Runner`."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from evalrun.cost import counters_cost, usage_cost
from evalrun.errors import (
    ApiError,
    AuthError,
    PermanentApiError,
    RateLimitError,
    RunAborted,
    RunStopped,
    SpecError,
    StoreError,
    TransientApiError,
)
from evalrun.messages_api import usage_counters
from evalrun.models import SAMPLING_PARAMS
from evalrun.send.run_state import HOPELESS_AFTER, SENT_MARK, SILENT_AFTER, RunState
from evalrun.send.sender import Request
from evalrun.store.records import Outcome
from evalrun.store.run_store import Learned

if TYPE_CHECKING:
    import anyio.abc

__all__ = ["OutcomeHandling", "capability_refusal"]

_CACHE_FLUSH = 64
_PREFILL_REFUSAL = re.compile(r"prefill", re.IGNORECASE)
_PARAM_REFUSAL = re.compile(r"deprecated|not supported|not permitted|cannot both|cannot be used|unsupported|may only", re.I)


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


class OutcomeHandling(RunState):
    """The sender's outcomes, retries and failures (the planner's restart is `Runner`'s)."""

    if TYPE_CHECKING:

        def _start_planner(self, tg: anyio.abc.TaskGroup, *, after_seq: float, replan: str | None = None) -> None: ...

        def _planner_cancel(self) -> None: ...

        def _last_seq(self) -> int: ...

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

    def _priced(self, request: Request, outcome: Outcome) -> Outcome:
        usage = (outcome.message or {}).get("usage")
        if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
            return outcome  # no usage: the cost is unknown, never a silent $0
        cost = usage_cost(self._prices.get(request.model), usage)
        if math.isnan(cost):
            return outcome
        return dataclasses.replace(outcome, cost_usd=cost)

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

    def _fatal_or_learned(self, request: Request, error: ApiError) -> bool:
        """Handle an error that says something about the model rather than the row. True when
        the outcome must not be recorded (the run stops, or the model is re-planned)."""
        model = self._plans[request.model]
        if isinstance(error, AuthError):
            self._fatal = RunStopped(
                f"{model.label}: the API refused the key ({error}); check {model.key_variable}. "
                f"{SENT_MARK}",
                model=model.label,
            )
            return True
        if not isinstance(error, PermanentApiError):
            return False
        if error.status == 404 and error.error_type == "not_found_error":
            self._fatal = RunStopped(
                f"{model.label}: the API does not know model {request.body.get('model')!r} (404 from "
                f"{model.base_url or 'the simulator'}: {error.message}); check the model name in the spec "
                f"(and base_url). {SENT_MARK}",
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
                f"fix the spec and run again. {SENT_MARK}",
                model=model.label,
            )
        return False

    def _sent_note(self) -> str:
        sent = self.stats.answered + self.stats.errors + self._unrecorded
        return "Nothing more was sent." if sent <= 1 else f"{sent} requests were sent in all; nothing more will be."

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
