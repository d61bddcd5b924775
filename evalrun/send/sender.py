"""The sender seam: requests in, outcomes out.

A `Sender` turns requests into outcomes: the real-time sender paces, retries and posts each one
(`realtime.py`); the Message Batches sender packs them into batches and polls (`batch.py`).
Everything that decides *what* may be sent — probing a model, learning a refusal, the budget,
the deadline, a hopeless model, progress — is written once, in the `RequestSource` the run
loop hands every sender (`runner.py`).
"""

from __future__ import annotations

import json
import random
from typing import Any, Protocol

import anyio

from evalrun.errors import ApiError
from evalrun.store.records import Outcome

__all__ = ["Request", "RequestSource", "Sender", "backoff_delay"]


class Request:
    """One request to send: its key, the model label it goes to, and the body as sent — held as
    the JSON bytes that go on the wire (the stored body needs no second encoding); `body` parses
    them when something needs to look inside (an error to read, a batch to pack)."""

    __slots__ = ("_body", "input_tokens", "key", "max_tokens", "model", "payload")

    def __init__(
        self,
        *,
        key: str,
        model: str,
        max_tokens: int,
        input_tokens: int,
        body: dict[str, Any] | None = None,
        payload: bytes | None = None,
    ) -> None:
        if payload is None:
            if body is None:
                raise ValueError("a request needs a body or its payload")
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self.key = key
        self.model = model
        self.max_tokens = max_tokens
        self.input_tokens = input_tokens  # the local estimate, for pacing
        self.payload = payload
        self._body = body

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = json.loads(self.payload)
        return self._body

    def __repr__(self) -> str:
        return f"Request(key={self.key[:12]}…, model={self.model!r})"


class RequestSource(Protocol):
    """What a sender sends, and where its outcomes go (implemented by the run loop)."""

    models: tuple[str, ...]
    halted: anyio.Event  # set once nothing more will be handed out (a stop, the budget, the deadline)

    async def take(self, model: str) -> Request | None:
        """The next request for `model` when it may be sent (None: nothing more for it)."""
        ...

    def take_ready(self, limit: int) -> list[Request]:
        """Every request that may be sent now, across models, without waiting (at most `limit`)."""
        ...

    async def wait_ready(self) -> bool:
        """Wait until something may have become ready; False when nothing more will be."""
        ...

    def stopped(self, model: str) -> bool:
        """Nothing more may be sent to `model` (the run or the model was stopped)."""
        ...

    def finished(self) -> bool:
        """Nothing will be handed out any more and nothing is in flight."""
        ...

    def worst_case(self, request: Request) -> float:
        """The most a request can cost, in USD (what the budget reserves for it)."""
        ...

    def hold(self, usd: float) -> None:
        """Count money committed outside this run (an earlier run's batch) against the budget."""
        ...

    def release_hold(self, usd: float) -> None: ...

    @property
    def stopping(self) -> bool:
        """The user asked to stop (as opposed to the budget or the deadline stopping the run)."""
        ...

    def retry(self, request: Request, error: ApiError, attempts: int) -> bool:
        """Whether a transient failure after `attempts` attempts may be tried again."""
        ...

    async def deliver(self, request: Request, outcome: Outcome, error: ApiError | None) -> None:
        """One request has ended (any outcome); `error` is what it ended with, if it failed."""
        ...


class Sender(Protocol):
    async def run(self, source: RequestSource) -> None:
        """Send what `source` hands out until it has nothing more; deliver every outcome."""
        ...

    def status(self) -> str:
        """One line about pacing or batches for the progress display ("" when nothing to say)."""
        ...


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """The official SDK's schedule (0.5·2^n s, at most 8 s, up to 25 % jitter), never below retry-after."""
    base = min(0.5 * 2.0 ** max(attempt - 1, 0), 8.0) * (1 - 0.25 * random.random())
    return max(base, retry_after or 0.0)
