"""The Message Batches API, in memory: create, retrieve, list, cancel, delete and results.

Time drives a batch. Request `i` of `n` is due `batch_seconds * (i + 1) / n` after creation,
and due requests are processed (in request order, through the same validation, prompt cache
and reply generation as `/v1/messages`) whenever the batch is next looked at. The batch ends
`batch_seconds` after creation; its results are then shuffled (seeded) into one JSONL file.
Before processing, each request may instead end `errored` (an `api_error` or
`overloaded_error`, at `batch_error_rate`) or `expired` (at `batch_expire_rate`). A request
that fails validation ends `errored` with the message a real-time request would get.

Cancelling marks every request not yet processed `canceled` and the batch `canceling`; it ends
a tenth of `batch_seconds` later (at its normal end at the latest).
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evalrun.sim._errors import SimError, invalid
from evalrun.sim._jsonio import dumps
from evalrun.sim.config import SimConfig

__all__ = ["MAX_BATCH_BYTES", "Batch", "BatchStore", "Processor"]

MAX_BATCH_BYTES = 256 * 1024 * 1024
_MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_EXPIRY_SECONDS = 24 * 3600
_CANCEL_FRACTION = 0.1
_FAULTS = (("api_error", "Internal server error"), ("overloaded_error", "Overloaded"))
_log = logging.getLogger(__name__)

# (params, anthropic-version) -> the Message; raises SimError for a request the API refuses.
Processor = Callable[[Any, str], dict[str, Any]]


@dataclass
class _Request:
    custom_id: str
    params: Any
    due: float
    result: dict[str, Any] | None = None


@dataclass
class Batch:
    """One Message Batch and where its processing stands."""

    id: str
    ordinal: int
    version: str
    created: float
    ends: float
    requests: list[_Request]
    rng: random.Random
    processed: int = 0
    cancel_initiated: float | None = None
    ended: float | None = None
    results: bytes | None = field(default=None, repr=False)

    def status(self) -> str:
        if self.ended is not None:
            return "ended"
        return "in_progress" if self.cancel_initiated is None else "canceling"


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _error_result(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": message}}}


def _check_requests(body: Any) -> list[tuple[str, Any]]:
    """The (custom_id, params) pairs of a create body; a 400 for a malformed one."""
    if not isinstance(body, Mapping):
        raise invalid("Input should be a valid dictionary or object to extract fields from")
    extra = set(body) - {"requests"}
    if extra:
        raise invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    if "requests" not in body:
        raise invalid("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > _MAX_REQUESTS:
        raise invalid(
            f"requests: List should have at most {_MAX_REQUESTS} items after validation, not {len(requests)}"
        )
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        loc = f"requests.{i}"
        if not isinstance(request, Mapping):
            raise invalid(f"{loc}: Input should be a valid dictionary or object to extract fields from")
        for key in ("custom_id", "params"):
            if key not in request:
                raise invalid(f"{loc}.{key}: Field required")
        extra = set(request) - {"custom_id", "params"}
        if extra:
            raise invalid(f"{loc}.{sorted(extra)[0]}: Extra inputs are not permitted")
        custom_id = request["custom_id"]
        if not isinstance(custom_id, str):
            raise invalid(f"{loc}.custom_id: Input should be a valid string")
        if not _CUSTOM_ID.fullmatch(custom_id):
            raise invalid(f"{loc}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise invalid(f"requests: custom_id '{custom_id}' is used more than once; it must be unique.")
        seen.add(custom_id)
        if not isinstance(request["params"], Mapping):
            raise invalid(f"{loc}.params: Input should be a valid dictionary")
        out.append((custom_id, request["params"]))
    return out


class BatchStore:
    """Every batch of one simulator, in creation order. Single-threaded, like the app."""

    def __init__(self, config: SimConfig, process: Processor, clock: Callable[[], float] = time.time):
        self.config = config
        self.process = process
        self.clock = clock
        self._batches: dict[str, Batch] = {}
        self._created = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, body: Any, version: str) -> Batch:
        """A new batch from a create body (400 for a malformed one); processing starts now."""
        pairs = _check_requests(body)
        now = self.clock()
        seconds = self.config.batch_seconds
        count = len(pairs)
        requests = [
            _Request(custom_id, params, now + seconds * (i + 1) / count)
            for i, (custom_id, params) in enumerate(pairs)
        ]
        ordinal = self._created
        self._created += 1
        batch = Batch(
            id="msgbatch_" + uuid.uuid4().hex[:24],
            ordinal=ordinal,
            version=version,
            created=now,
            ends=now + seconds,
            requests=requests,
            rng=random.Random(f"{self.config.seed}:batch:{ordinal}"),
        )
        self._batches[batch.id] = batch
        self.advance(batch)
        return batch

    def get(self, batch_id: str) -> Batch:
        """The batch, brought up to date; 404 when there is none."""
        batch = self._batches.get(batch_id)
        if batch is None:
            raise SimError(404, "not_found_error", f"No Message Batch with id '{batch_id}'.")
        self.advance(batch)
        return batch

    def advance(self, batch: Batch) -> None:
        """Process every request due by now, and end the batch when its time has come."""
        if batch.ended is not None:
            return
        now = self.clock()
        requests = batch.requests
        while batch.processed < len(requests) and requests[batch.processed].due <= now:
            request = requests[batch.processed]
            if request.result is None:  # not canceled
                request.result = self._run(batch, request)
            request.params = None  # processed: the body is no longer needed
            batch.processed += 1
        if now >= batch.ends:
            self._end(batch)

    def _run(self, batch: Batch, request: _Request) -> dict[str, Any]:
        config = self.config
        draw = batch.rng.random()
        if draw < config.batch_error_rate:
            return _error_result(*_FAULTS[batch.rng.randrange(len(_FAULTS))])
        if draw < config.batch_error_rate + config.batch_expire_rate:
            return {"type": "expired"}
        try:
            message = self.process(request.params, batch.version)
        except SimError as exc:
            return _error_result(exc.error_type, exc.message)
        except Exception:  # a simulator bug: one errored request, not a batch that never ends
            _log.exception("batch %s: request %r failed", batch.id, request.custom_id)
            return _error_result(*_FAULTS[0])
        return {"type": "succeeded", "message": message}

    def _end(self, batch: Batch) -> None:
        batch.ended = batch.ends
        for request in batch.requests[batch.processed :]:
            request.result = request.result or {"type": "canceled"}
            request.params = None
        batch.processed = len(batch.requests)
        lines = [dumps({"custom_id": r.custom_id, "result": r.result}) for r in batch.requests]
        random.Random(f"{self.config.seed}:batch-order:{batch.ordinal}").shuffle(lines)
        batch.results = b"\n".join(lines) + b"\n"

    def cancel(self, batch_id: str) -> Batch:
        """Cancel what is not processed yet; an ended or canceling batch is returned as it is."""
        batch = self.get(batch_id)
        if batch.status() != "in_progress":
            return batch
        now = self.clock()
        batch.cancel_initiated = now
        for request in batch.requests[batch.processed :]:
            request.result = {"type": "canceled"}
            request.params = None
        batch.ends = min(batch.ends, now + self.config.batch_seconds * _CANCEL_FRACTION)
        self.advance(batch)
        return batch

    def delete(self, batch_id: str) -> dict[str, Any]:
        """Delete an ended batch (400 while it is still processing)."""
        batch = self.get(batch_id)
        if batch.ended is None:
            raise invalid(
                f"Message Batch {batch_id} cannot be deleted while it is processing; cancel it first."
            )
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        """The results file of an ended batch (400 while it is still processing)."""
        batch = self.get(batch_id)
        if batch.results is None:
            raise invalid(
                f"Message Batch {batch_id} has not finished processing; its results are not available yet."
            )
        return batch.results

    # -- views -------------------------------------------------------------------------------

    def view(self, batch: Batch, base_url: str) -> dict[str, Any]:
        """The `message_batch` object, with `results_url` on `base_url` once it has ended."""
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended is None:
            counts["processing"] = len(batch.requests)
        else:
            for request in batch.requests:
                counts[request.result["type"] if request.result else "processing"] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status(),
            "request_counts": counts,
            "created_at": _rfc3339(batch.created),
            "ended_at": _rfc3339(batch.ended),
            "expires_at": _rfc3339(batch.created + _EXPIRY_SECONDS),
            "cancel_initiated_at": _rfc3339(batch.cancel_initiated),
            "archived_at": None,
            "results_url": (
                f"{base_url}/v1/messages/batches/{batch.id}/results" if batch.ended is not None else None
            ),
        }

    def page(
        self, base_url: str, *, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> dict[str, Any]:
        """One page of the list, most recent first, with the SDK's pagination fields."""
        newest_first = sorted(self._batches.values(), key=lambda b: b.ordinal, reverse=True)
        ids = [b.id for b in newest_first]
        if after_id is not None:
            start = ids.index(after_id) + 1 if after_id in ids else len(ids)
            chosen = newest_first[start : start + limit]
            more = start + limit < len(ids)
        elif before_id is not None:
            end = ids.index(before_id) if before_id in ids else 0
            chosen = newest_first[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            chosen = newest_first[:limit]
            more = limit < len(ids)
        for batch in chosen:
            self.advance(batch)
        return {
            "data": [self.view(b, base_url) for b in chosen],
            "has_more": more,
            "first_id": chosen[0].id if chosen else None,
            "last_id": chosen[-1].id if chosen else None,
        }
