"""The store's Message Batches: each batch committed before it is submitted (a killed run finds
it again instead of paying twice), its status, and its requests. A mixin of `Store`, kept apart so
the store module stays small."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.store._sqlite import now
from evalrun.store.records import PendingRequest

__all__ = ["BatchLedger"]


class BatchLedger:
    """The batches a folder created (`Store` provides `_db`, `path`, `query` and `transaction`)."""

    _db: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

    def add_batch(
        self, local_id: str, *, endpoint: str, models: str, requests: Sequence[tuple[str, str, int, int]],
        reserved_usd: float,
    ) -> None:  # fmt: skip
        """Commit a batch before it is submitted: a killed run finds it again instead of paying twice.
        `requests` are (key, model label, max_tokens, input token estimate)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO batches (id, endpoint, model, status, created_at, requests, reserved_usd)"
                " VALUES (?, ?, ?, 'submitting', ?, ?, ?)",
                (local_id, endpoint, models, now(), len(requests), reserved_usd),
            )
            db.executemany(
                "INSERT INTO batch_requests (custom_id, batch_id, key, model, max_tokens, input_tokens)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ((key, local_id, key, model, max_tokens, tokens) for key, model, max_tokens, tokens in requests),
            )

    def set_batch_id(self, local_id: str, batch_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET id = ?, status = 'in_progress' WHERE id = ?", (batch_id, local_id))
            db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (batch_id, local_id))

    def drop_batch(self, batch_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def set_batch_status(self, batch_id: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches this folder created whose results are not all stored yet."""
        rows = self.query(
            "SELECT id, endpoint, model, status, created_at, requests, reserved_usd FROM batches"
            " WHERE status != 'collected' ORDER BY created_at"
        )
        names = ("id", "endpoint", "models", "status", "created_at", "requests", "reserved_usd")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def batch_requests(self, batch_id: str) -> list[PendingRequest]:
        """The requests of a batch (for re-attaching after a restart)."""
        rows = self.query(
            "SELECT b.key, coalesce(q.first_seq, -1), b.model, b.max_tokens, b.input_tokens,"
            " coalesce(q.body_json, '{}'), coalesce(q.gate, '') FROM batch_requests b"
            " LEFT JOIN requests q ON q.key = b.key WHERE b.batch_id = ?",
            (batch_id,),
        )
        return [PendingRequest(*row) for row in rows]
