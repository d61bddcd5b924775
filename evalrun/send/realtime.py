"""The real-time sender: one POST /v1/messages per request, paced per lane, retried on the SDK's schedule.

One dispatcher per model takes requests from the run loop, waits for its lane's pacer, and only
then starts a task for the request: there are never more tasks than requests the pace lets
through (plus those sleeping before a retry), however high the concurrency ceiling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import anyio

from evalrun.errors import ApiError, MalformedReplyError, PermanentApiError, RateLimitError, TransientApiError
from evalrun.send.client import MessagesClient, attempt_timeout
from evalrun.send.clock import Clock, SystemClock
from evalrun.send.limits import Pacer, Ticket
from evalrun.send.sender import Request, RequestSource, backoff_delay
from evalrun.store.records import Outcome

__all__ = ["RealtimeSender"]

# The pacing text is for a human: a few times a second is enough.
_STATUS_EVERY_S = 0.2
# Until a model has answered once, an attempt waits at most this long (unless request_timeout
# says otherwise): an endpoint that accepts and never answers is found out in minutes, not after
# a schedule of 10-minute attempts.
FIRST_ANSWER_TIMEOUT_S = 50.0


class RealtimeSender:
    """Sends each request on its own, through the pacer of its lane (endpoint × key × model class)."""

    def __init__(
        self,
        *,
        clients: Mapping[str, MessagesClient],
        lanes: Mapping[str, str],
        pacer: Pacer,
        backoff: Callable[[int, float | None], float] = backoff_delay,
        clock: Clock | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.clients = clients
        self.lanes = lanes
        self.pacer = pacer
        self.backoff = backoff
        self.clock = clock or SystemClock()
        self.attempt_timeout = attempt_timeout  # None: sized to each request's max_tokens
        self._status = ""
        self._status_at = 0.0
        self._answered: set[str] = set()  # models that have answered once

    def status(self) -> str:
        now = time.monotonic()
        if now - self._status_at >= _STATUS_EVERY_S:
            self._status_at = now
            self._status = self.pacer.status()
        return self._status

    async def run(self, source: RequestSource) -> None:
        async with anyio.create_task_group() as sends:
            async with anyio.create_task_group() as dispatchers:
                watcher = anyio.CancelScope()

                async def stop_dispatching() -> None:
                    # A stop cancels the dispatchers waiting on the pace; requests in flight go on.
                    with watcher:
                        await source.halted.wait()
                        dispatchers.cancel_scope.cancel()

                sends.start_soon(stop_dispatching)
                for model in source.models:
                    dispatchers.start_soon(self._dispatch, model, source, sends)
            watcher.cancel()

    async def _dispatch(self, model: str, source: RequestSource, tg: anyio.abc.TaskGroup) -> None:
        lane = self.lanes[model]
        while (request := await source.take(model)) is not None:
            try:
                ticket = await self.pacer.acquire(lane, input_tokens=request.input_tokens, max_tokens=request.max_tokens)
            except BaseException:
                await _deliver_unsent(source, request)
                raise
            if source.stopped(model):  # stopped while this one waited for the pace: not sent
                self.pacer.release(lane, ticket=ticket)
                await _deliver_unsent(source, request)
                continue
            tg.start_soon(self._send, request, source, ticket)

    async def send_one(self, request: Request, source: RequestSource) -> None:
        """Send one request now, paced and retried (the batch sender's real-time fallback)."""
        await self._send(request, source, None)

    async def _send(self, request: Request, source: RequestSource, ticket: Ticket | None) -> None:
        """Send `request` until it has a final outcome; `ticket` when its first send is already
        granted by the pacer."""
        lane = self.lanes[request.model]
        client = self.clients[request.model]
        attempts = 0
        while True:
            attempts += 1
            if ticket is None:
                ticket = await self.pacer.acquire(lane, input_tokens=request.input_tokens, max_tokens=request.max_tokens)
            started = time.monotonic()
            timeout = self.attempt_timeout
            if timeout is None and request.model not in self._answered:
                timeout = min(attempt_timeout(request.max_tokens), FIRST_ANSWER_TIMEOUT_S)
            try:
                response = await client.create(request.payload, timeout=timeout, max_tokens=request.max_tokens)
            except RateLimitError as exc:
                self.pacer.release(lane, ticket=ticket)
                self.pacer.rate_limited(lane, exc.retry_after)
                error: ApiError = exc
            except MalformedReplyError as exc:
                self.pacer.release(lane, ticket=ticket)
                await source.deliver(request, _failed(request, exc, attempts, retryable=True, raw=exc.raw), exc)
                return
            except TransientApiError as exc:
                self.pacer.release(lane, ticket=ticket)
                if exc.status == 529 or exc.error_type == "overloaded_error":
                    self.pacer.overloaded(lane, exc.retry_after)
                error = exc
            except PermanentApiError as exc:
                self.pacer.release(lane, ticket=ticket)
                await source.deliver(request, _failed(request, exc, attempts), exc)
                return
            except BaseException:
                self.pacer.release(lane, ticket=ticket)
                raise
            else:
                self._answered.add(request.model)
                usage = response.message.get("usage") or {}
                output = usage.get("output_tokens")
                self.pacer.release(
                    lane,
                    rate_limits=response.rate_limits,
                    output_tokens=output if isinstance(output, int) else request.max_tokens,
                    max_tokens=request.max_tokens,
                    latency_s=response.latency_s,
                    ticket=ticket,
                )
                outcome = Outcome(
                    key=request.key,
                    status="ok",
                    message=response.message,
                    latency_s=response.latency_s,
                    attempts=attempts,
                    request_id=response.request_id,
                    simulated=response.simulated,
                )
                await source.deliver(request, outcome, None)
                return
            assert isinstance(error, TransientApiError)
            if not source.retry(request, error, attempts):
                outcome = _failed(request, error, attempts, retryable=True, latency=time.monotonic() - started)
                await source.deliver(request, outcome, error)
                return
            await self.clock.wait(source.halted, self.backoff(attempts, error.retry_after))
            if source.halted.is_set():
                await source.deliver(request, _failed(request, error, attempts, retryable=True), error)
                return
            ticket = await self.pacer.acquire(lane, input_tokens=request.input_tokens, max_tokens=request.max_tokens)
            if source.stopped(request.model):  # the model was stopped while this one waited
                self.pacer.release(lane, ticket=ticket)
                await source.deliver(request, _failed(request, error, attempts, retryable=True), error)
                return


def _failed(
    request: Request,
    error: ApiError,
    attempts: int,
    *,
    retryable: bool = False,
    raw: str | None = None,
    latency: float | None = None,
) -> Outcome:
    message = str(error) if attempts == 1 or not retryable else f"gave up after {attempts} attempts: {error}"
    return Outcome(
        key=request.key,
        status="error",
        error=message,
        error_type=error.error_type or ("malformed_reply" if raw is not None else "transient" if retryable else None),
        http_status=error.status,
        retryable=retryable,
        attempts=attempts,
        request_id=error.request_id,
        raw=raw,
        latency_s=latency,
    )


async def _deliver_unsent(source: RequestSource, request: Request) -> None:
    # Taken but never sent (the run was cancelled while it waited for the pace): hand it back
    # as not sent, so the run loop releases what it reserved for it.
    with anyio.CancelScope(shield=True):
        await source.deliver(request, Outcome(key=request.key, status="unsent", attempts=0), None)
