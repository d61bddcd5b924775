"""The Message Batches sender: requests packed into batches at half the price, polled, collected.

Behind the same seam as the real-time sender, so probing, learning, the budget (a batch's
worst case is reserved before it is submitted), the deadline and progress come from the run
loop unchanged. What is particular to batches:

* A batch is committed to the store *before* it is submitted and given its id the moment the
  API answers, so a killed run re-attaches to its batches instead of paying for them twice. A
  batch whose creation has an unknown outcome (the reply was lost, or the id never reached the
  store) is looked for among the account's batches by its content — the custom_ids of an ended
  batch's results — never by its size alone, before anything is sent again.
* Results are read from the configured endpoint's origin only; a download that keeps failing is
  tried a bounded number of times and the batch is left for the next run; results that are gone
  (404) send the batch's requests again, once.
* `custom_id` is the request key (64 hex characters, within `^[a-zA-Z0-9_-]{1,64}$`).
* Polling backs off from `poll_s` to `poll_max_s`; results are streamed from `results_url` in
  any order and mapped back by `custom_id`.
* `errored` (transient kinds), `expired` and `canceled` requests are sent again — in a new batch,
  or in real time with a fallback sender — within the run's retry budget; an invalid request
  is recorded against its row like any 400.
* Ctrl-C leaves the batches running (the next run re-attaches) unless `cancel_on_exit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from evalrun.errors import (
    ApiError,
    AuthError,
    DatasetError,
    MalformedReplyError,
    PermanentApiError,
    TransientApiError,
)
from evalrun.send.client import MessagesClient, validate_message
from evalrun.send.clock import Clock, SystemClock
from evalrun.send.realtime import RealtimeSender
from evalrun.send.sender import Request, RequestSource
from evalrun.store.records import Outcome
from evalrun.store.run_store import PendingRequest, Store

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_REQUESTS", "BatchSender"]

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
_ENVELOPE_BYTES = 200  # custom_id, keys and punctuation around each request's params
_CLOCK_SLACK_S = 300.0  # a batch's created_at may be this far before our clock said it was sent
_RESULT_TRIES = 8  # downloads of an ended batch's results before this run leaves it to the next


@dataclass
class _Batch:
    id: str
    client: MessagesClient
    requests: dict[str, Request]
    submitted: float
    counts: dict[str, int] = field(default_factory=dict)
    reattached_usd: float = 0.0
    locating: bool = False  # its creation's outcome is unknown: it is being looked for
    since: float = 0.0  # epoch seconds: it cannot have been created before


class BatchSender:
    """Sends requests as Message Batches (see the module docstring)."""

    def __init__(
        self,
        *,
        clients: Mapping[str, MessagesClient],
        store: Store,
        fallback: RealtimeSender | None = None,
        cancel_on_exit: bool = False,
        poll_s: float = 0.5,
        poll_max_s: float = 60.0,
        max_requests: int = MAX_BATCH_REQUESTS,
        max_bytes: int = MAX_BATCH_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self.clients = clients
        self.store = store
        self.fallback = fallback
        self.cancel_on_exit = cancel_on_exit
        self.poll_s = poll_s
        self.poll_max_s = poll_max_s
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.clock = clock or SystemClock()
        self._open: dict[str, _Batch] = {}
        self._attempts: dict[str, int] = {}
        self._retry: list[Request] = []
        self._resent: set[str] = set()  # sent again because their batch was gone
        self.notes: list[str] = []  # what the user should know about a batch (shown on the progress line)
        self._turnarounds: list[float] = []
        self._started = time.monotonic()
        self._wake = anyio.Event()
        self.submitted = 0  # batches created by this run

    # -- progress ------------------------------------------------------------------------------
    def status(self) -> str:
        line = self._status()
        return f"{line}; {self.notes[-1]}" if self.notes and line else (line or (self.notes[-1] if self.notes else ""))

    def _status(self) -> str:
        if not self._open and not self._turnarounds:
            return ""
        totals: dict[str, int] = {}
        for batch in self._open.values():
            for name, count in batch.counts.items():
                totals[name] = totals.get(name, 0) + count
        shown = ", ".join(f"{name} {count}" for name, count in totals.items() if count)
        parts = [f"{len(self._open)} batch{'es' if len(self._open) != 1 else ''} open" + (f" ({shown})" if shown else "")]
        parts.append(f"elapsed {_clock_time(time.monotonic() - self._started)}")
        if self._turnarounds:
            parts.append(f"typical turnaround {_clock_time(statistics.median(self._turnarounds))}")
        return ", ".join(parts)

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, source: RequestSource) -> None:
        await self._reattach(source)
        async with anyio.create_task_group() as tg:
            for batch in list(self._open.values()):
                if batch.locating:
                    tg.start_soon(self._locate, batch, batch.since, source, tg)
                else:
                    tg.start_soon(self._poll, batch, source, tg)
            while True:
                if source.halted.is_set():
                    await self._halt(source)
                    tg.cancel_scope.cancel()
                    return
                requests = self._retry + source.take_ready(self.max_requests)
                self._retry = []
                if requests:
                    for client, group in self._groups(requests):
                        for chunk in self._pack(group):
                            await self._submit(client, chunk, source, tg)
                    continue
                if not self._open and source.finished():
                    return
                await self._wait(source)

    async def _wait(self, source: RequestSource) -> None:
        wake = self._wake
        async with anyio.create_task_group() as waiters:

            async def on_source() -> None:
                if not await source.wait_ready() and self._open:
                    # Nothing more will be handed out, at once and for good, while batches are
                    # still open (all of them, when re-attached after a restart): only a batch
                    # or a halt can give the loop something to do, else it would spin until
                    # the batches end. With none open, the loop decides (it may be finished).
                    await source.halted.wait()
                waiters.cancel_scope.cancel()

            async def on_batch() -> None:
                await wake.wait()
                waiters.cancel_scope.cancel()

            waiters.start_soon(on_source)
            waiters.start_soon(on_batch)
        if wake.is_set():
            self._wake = anyio.Event()

    def _kick(self) -> None:
        self._wake.set()

    async def _halt(self, source: RequestSource) -> None:
        if not (self.cancel_on_exit and source.stopping):
            return  # the batches keep running; the next run re-attaches to them
        with anyio.CancelScope(shield=True):
            for batch in list(self._open.values()):
                try:
                    await batch.client.cancel_batch(batch.id)
                except ApiError:
                    continue

    # -- packing and submitting ------------------------------------------------------------------
    def _groups(self, requests: list[Request]) -> list[tuple[MessagesClient, list[Request]]]:
        """One group per client (endpoint × key × API version): a batch goes to one of them."""
        groups: dict[int, tuple[MessagesClient, list[Request]]] = {}
        for request in requests:
            client = self.clients[request.model]
            groups.setdefault(id(client), (client, []))[1].append(request)
        return list(groups.values())

    def _pack(self, requests: list[Request]) -> list[list[Request]]:

        chunks: list[list[Request]] = [[]]
        size = 0
        for request in requests:
            length = len(request.payload) + _ENVELOPE_BYTES
            if chunks[-1] and (len(chunks[-1]) >= self.max_requests or size + length > self.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(request)
            size += length
        return [c for c in chunks if c]

    async def _submit(
        self, client: MessagesClient, requests: list[Request], source: RequestSource, tg: anyio.abc.TaskGroup
    ) -> None:
        local = f"submitting-{uuid.uuid4().hex}"
        models = ",".join(sorted({r.model for r in requests}))
        reserved = sum(source.worst_case(r) for r in requests)
        self.store.add_batch(
            local, endpoint=client.base_url, models=models, reserved_usd=reserved,
            requests=[(r.key, r.model, r.max_tokens, r.input_tokens) for r in requests],
        )  # fmt: skip
        for request in requests:
            self._attempts[request.key] = self._attempts.get(request.key, 0) + 1
        since = time.time() - _CLOCK_SLACK_S
        try:
            with anyio.CancelScope(shield=True):  # once sent, the id must reach the store
                created = await client.create_batch([{"custom_id": r.key, "params": r.body} for r in requests])
                self.store.set_batch_id(local, created["id"])
        except ApiError as error:
            if isinstance(error, TransientApiError) and not error.connection:
                # The server may have created it and the reply was lost: look for it (by its
                # custom_ids) before anything is sent again.
                batch = _Batch(id=local, client=client, requests={r.key: r for r in requests}, submitted=time.monotonic())
                self._open[local] = batch
                tg.start_soon(self._locate, batch, since, source, tg)
                return
            self.store.drop_batch(local)
            for request in requests:
                await self._failed(request, error, source, tg)
            return
        self.submitted += 1
        batch = _Batch(id=created["id"], client=client, requests={r.key: r for r in requests}, submitted=time.monotonic())
        batch.counts = _counts(created)
        self._open[batch.id] = batch
        tg.start_soon(self._poll, batch, source, tg)

    # -- re-attaching after a restart -------------------------------------------------------------
    async def _reattach(self, source: RequestSource) -> None:
        for row in self.store.open_batches():
            client = self._client_for(row["endpoint"], row["models"])
            if client is None:
                continue
            batch_id = row["id"]
            requests = {p.key: _request_of(p) for p in self.store.batch_requests(batch_id)}
            batch = _Batch(id=batch_id, client=client, requests=requests, submitted=time.monotonic(),
                           reattached_usd=float(row["reserved_usd"] or 0.0), locating=row["status"] == "submitting",
                           since=datetime.fromisoformat(row["created_at"]).timestamp() - _CLOCK_SLACK_S)  # fmt: skip
            source.hold(batch.reattached_usd)
            self._open[batch_id] = batch

    def _close(self, batch: _Batch, source: RequestSource) -> None:
        """The batch is no longer open here: what an earlier run had reserved for it goes back."""
        self._open.pop(batch.id, None)
        if batch.reattached_usd:
            source.release_hold(batch.reattached_usd)

    def _client_for(self, endpoint: str, models: str) -> MessagesClient | None:
        for label in models.split(","):
            client = self.clients.get(label)
            if client is not None:
                return client
        return next((c for c in self.clients.values() if c.base_url == endpoint), None)

    async def _locate(self, batch: _Batch, since: float, source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        """A batch whose creation may or may not have reached the server (the reply was lost, or
        a run was killed before the id was stored): find it among the account's batches by its
        content — the custom_ids of an ended batch's results are this batch's request keys —
        never by its size alone. While a batch that could be it is still in progress, wait for it
        to end and look again. Only when none can be is it sent again."""
        local, delay = batch.id, self.poll_s
        while not source.halted.is_set():
            try:
                found, waiting = await self._search(batch, since)
            except PermanentApiError:
                found, waiting = None, False  # the endpoint cannot list batches: nothing to find
            except ApiError:
                found, waiting = None, True
            if found is not None:
                self.store.set_batch_id(local, found)
                self._open.pop(local, None)
                batch.id, batch.locating = found, False
                self._open[found] = batch
                tg.start_soon(self._poll, batch, source, tg)
                return
            if not waiting:
                self.store.drop_batch(local)
                self._close(batch, source)  # a reattached one held its worst case: given back
                never = TransientApiError("the batch was never created (no batch of the account holds these requests)")
                for request in batch.requests.values():
                    await self._failed(request, never, source, tg)
                self._kick()
                return
            await self.clock.sleep(delay)
            delay = min(delay * 1.5, self.poll_max_s)

    async def _search(self, batch: _Batch, since: float) -> tuple[str | None, bool]:
        """(the id of the account's batch holding exactly `batch`'s requests, or None; whether a
        batch that could hold them is still in progress)."""
        known = {b["id"] for b in self.store.open_batches()}
        listed = await batch.client.list_batches(limit=100)
        waiting = False
        for item in listed.get("data") or []:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or item["id"] in known:
                continue
            if _epoch(item.get("created_at")) < since or sum(_counts(item).values()) not in (0, len(batch.requests)):
                continue
            if item.get("processing_status") != "ended":
                waiting = True
                continue
            ids = await self._result_ids(batch, item)
            if ids == set(batch.requests):
                return item["id"], False
        return None, waiting

    async def _result_ids(self, batch: _Batch, item: Mapping[str, Any]) -> set[Any] | None:
        """The custom_ids of an ended batch's results, or None when they cannot be read. A
        results_url on another host is not followed (the key goes to the configured endpoint
        only); the API's own results path on the configured endpoint is read instead — were the
        candidate skipped, a batch that is this one would be created and paid for again."""
        own = f"/v1/messages/batches/{item['id']}/results"
        for url in dict.fromkeys((str(item.get("results_url") or own), own)):
            try:
                return {line.get("custom_id") async for line in batch.client.batch_results(url)}
            except PermanentApiError:
                continue
        return None

    # -- polling and collecting -------------------------------------------------------------------
    async def _poll(self, batch: _Batch, source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        delay = self.poll_s
        while True:
            try:
                state = await batch.client.get_batch(batch.id)
            except TransientApiError:
                state = {}
            except ApiError as error:
                await self._gone(batch, error, source, tg)
                return
            if state:
                batch.counts = _counts(state)
            if state.get("processing_status") == "ended":
                break
            await self.clock.sleep(delay)
            delay = min(delay * 1.5, self.poll_max_s)
        await self._collect(batch, state, source, tg)

    async def _gone(self, batch: _Batch, error: ApiError, source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        """The server no longer knows the batch (deleted, expired from its listing, another key):
        its requests are sent again, once, with the reason; a refused key stays what it is."""
        self.store.drop_batch(batch.id)
        self._close(batch, source)
        if not isinstance(error, AuthError):
            self.notes.append(f"batch {batch.id} is gone ({error.message}): its {len(batch.requests)} requests are sent again")
            error = TransientApiError(
                f"the server no longer knows batch {batch.id} ({error.message}); its requests are sent again",
                error_type="batch_gone",
            )
        for request in batch.requests.values():
            ended: ApiError = error
            if isinstance(error, TransientApiError) and request.key in self._resent:
                ended = PermanentApiError(f"{error.message} (already sent again once: not again)", error_type="batch_gone")
            self._resent.add(request.key)
            await self._failed(request, ended, source, tg)
        self._kick()

    async def _collect(self, batch: _Batch, state: Mapping[str, Any], source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        seen: set[str] = set()
        url = state.get("results_url") or f"/v1/messages/batches/{batch.id}/results"
        delay = self.poll_s
        for attempt in range(1, _RESULT_TRIES + 1):
            try:
                async for line in batch.client.batch_results(str(url)):
                    custom_id = line.get("custom_id")
                    request = batch.requests.get(custom_id) if isinstance(custom_id, str) else None
                    if request is None or custom_id in seen:
                        continue
                    seen.add(request.key)
                    await self._result(request, line.get("result"), batch.client, source, tg)
                break
            except TransientApiError as error:
                if attempt == _RESULT_TRIES or source.halted.is_set():
                    await self._leave(batch, seen, error, source)
                    return
                # The results file broke off: read it again, later each time.
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.poll_max_s)
            except AuthError as error:
                await self._leave(batch, seen, error, source)
                return
            except PermanentApiError as error:
                if error.status == 404:  # the results are gone: its requests go again, once
                    await self._gone(batch, error, source, tg)
                    return
                await self._leave(batch, seen, error, source)  # e.g. a results_url on another host
                return
        for key, request in batch.requests.items():
            if key not in seen:
                missing = TransientApiError("the batch ended without a result for this request")
                await self._failed(request, missing, source, tg)
        self.store.set_batch_status(batch.id, "collected")
        self._close(batch, source)
        self._turnarounds.append(time.monotonic() - batch.submitted)
        self._kick()

    async def _leave(self, batch: _Batch, seen: set[str], error: ApiError, source: RequestSource) -> None:
        """The results of an ended batch cannot be read now: this run stops trying, and the batch
        stays in the store (its requests are not sent again) for the next run to collect."""
        self._close(batch, source)
        note = PermanentApiError(
            f"the results of batch {batch.id} could not be read ({error.message}); the batch is kept: "
            "run again to collect them (nothing is sent again)",
            status=error.status,
            error_type="batch_results",
        )
        for key, request in batch.requests.items():
            if key not in seen:
                outcome = _failed_outcome(request, note, self._attempts.get(key, 1))
                await source.deliver(request, dataclasses.replace(outcome, retryable=True), None)
        self._kick()

    async def _result(
        self, request: Request, result: Any, client: MessagesClient, source: RequestSource, tg: anyio.abc.TaskGroup
    ) -> None:
        attempts = self._attempts.get(request.key, 1)
        kind = result.get("type") if isinstance(result, dict) else None
        if kind == "succeeded":
            message = result.get("message")
            problem = validate_message(message)
            if problem is not None:
                import json

                malformed = MalformedReplyError(f"malformed batch result: {problem}", raw=client.scrub(json.dumps(result)))
                outcome = Outcome(key=request.key, status="error", error=str(malformed), error_type="malformed_reply",
                                  retryable=True, attempts=attempts, raw=malformed.raw, source="batch")  # fmt: skip
                await source.deliver(request, outcome, malformed)
                return
            outcome = Outcome(key=request.key, status="ok", message=message, attempts=attempts, source="batch",
                              simulated=client.talks_to_simulator, request_id=message.get("id"))  # fmt: skip
            await source.deliver(request, outcome, None)
            return
        error: ApiError
        if kind == "errored":
            error = client.error_from_object(result.get("error"))
        elif kind in ("expired", "canceled"):
            error = TransientApiError(f"the batch request {kind}", error_type=kind)
        else:
            error = TransientApiError("the batch result has no recognised type", error_type="malformed_result")
        await self._failed(request, error, source, tg)

    async def _failed(self, request: Request, error: ApiError, source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        attempts = self._attempts.get(request.key, 1)
        if isinstance(error, TransientApiError) and not source.stopping and source.retry(request, error, attempts):
            if self.fallback is not None:
                tg.start_soon(self.fallback.send_one, request, source)
            else:
                self._retry.append(request)
                self._kick()
            return
        await source.deliver(request, _failed_outcome(request, error, attempts), error)


def _failed_outcome(request: Request, error: ApiError, attempts: int) -> Outcome:
    retryable = not isinstance(error, PermanentApiError)
    return Outcome(
        key=request.key,
        status="error",
        error=str(error) if attempts == 1 else f"gave up after {attempts} attempts: {error}",
        error_type=error.error_type,
        http_status=error.status,
        retryable=retryable,
        attempts=attempts,
        source="batch",
    )


def _request_of(pending: PendingRequest) -> Request:
    import json

    from evalrun.plan.render import materialize

    body = json.loads(pending.body_json)
    with contextlib.suppress(DatasetError):  # an image gone since: needed only if it is sent again
        body = materialize(body)
    return Request(key=pending.key, model=pending.model, body=body, max_tokens=pending.max_tokens,
                   input_tokens=pending.input_tokens)  # fmt: skip


def _counts(batch: Mapping[str, Any]) -> dict[str, int]:
    counts = batch.get("request_counts")
    if not isinstance(counts, dict):
        return {}
    return {k: int(v) for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}


def _epoch(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"

