"""What may be sent now, model by model in plan order (the `RequestSource` half the sender asks):
pages of pending requests read from the store, answers the shared cache already holds, the first
request of a group sent alone, a small window until a model first answers, and each request's
worst case reserved against the budget before it leaves. A part of `Runner`."""

from __future__ import annotations

import json
import time

from evalrun.errors import DatasetError
from evalrun.plan.render import FILE_SOURCE, materialize
from evalrun.send.run_state import HOPELESS_AFTER, Gate, RunState
from evalrun.send.sender import Request
from evalrun.store.records import Outcome, PendingRequest

__all__ = ["HandOut"]

_PAGE = 256


class HandOut(RunState):
    """Handing requests out to the sender, and counting them in flight."""

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

    async def _peek(self, model: str) -> PendingRequest | None:
        """The next pending request of `model` in plan order, or None when it has no more."""
        while True:
            head = self._peek_now(model)
            if head is not None or model in self._exhausted:
                return head
            await self._wait_change()  # the planner has not stored the next page yet
            if self._halted(model):
                return None

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

    def _gate_of(self, model: str, pending: PendingRequest) -> Gate | None:
        """The first request of a cached prefix goes alone (parallel first requests would all
        miss the cache); so does the first of each prompt of a model the table does not know."""
        cached = pending.gate.startswith("cache:")
        if not cached and (model not in self._probe_models or model in self._succeeded):
            return None
        return self._gates.setdefault((model, pending.gate), Gate())

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

    def _reserve(self, pending: PendingRequest) -> float | None:
        """Reserve the request's worst-case cost against the budget; None if it does not fit."""
        if self.budget_usd is None:
            return 0.0
        worst = self.worst_case(pending)
        if self.stats.spent_usd + self._unconfirmed_usd + self._reserved_usd + worst > self.budget_usd:
            return None
        self._reserved_usd += worst
        return worst
