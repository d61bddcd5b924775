"""The store's plan: the dataset rows, cells and requests a run writes before it sends, the
grading links, and the reads that hand out what is still to send. A mixin of `Store`, kept apart
so the store module stays small."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.store._sqlite import FINAL
from evalrun.store.records import CellRecord, PendingRequest, RequestRecord, RowRecord

__all__ = ["PlanMethods"]


class PlanMethods:
    """Writing the plan and reading what is left of it (`Store` provides `_db`, `path`, `query`,
    `transaction`, `meta` and `set_meta`)."""

    _db: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def meta(self) -> dict[str, str]: ...

        def set_meta(self, **values: str) -> None: ...

    def plan_fingerprint(self) -> str | None:
        """The fingerprint of the stored plan when it was written completely, else None."""
        meta = self.meta()
        return meta.get("plan_fingerprint") if meta.get("plan_complete") == "1" else None

    def add_rows(self, rows: Iterable[RowRecord]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO rows (row_seq, row_id, line, cluster, target, values_json) VALUES (?, ?, ?, ?, ?, ?)",
                ((r.row_seq, r.row_id, r.line, r.cluster, r.target, r.values_json) for r in rows),
            )

    def add_cells(self, cells: Sequence[CellRecord], requests: Sequence[RequestRecord]) -> None:
        """Write a chunk of the plan in one transaction. A request already stored keeps its
        first (earliest) position."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO cells (seq, model, model_id, prompt, row_seq, row_id, repeat, answer_mode,"
                " request_key, max_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (c.seq, c.model, c.model_id, c.prompt, c.row_seq, c.row_id, c.repeat, c.answer_mode,
                     c.request_key, c.max_tokens)
                    for c in cells
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT OR IGNORE INTO requests (key, first_seq, model, stage, gate, max_tokens, input_tokens,"
                " body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (r.key, r.first_seq, r.model, r.stage, r.gate, r.max_tokens, r.input_tokens, r.body_json)
                    for r in requests
                ),
            )

    def link_judges(self, links: Sequence[tuple[int, str]]) -> None:
        """Record which grading request grades which cell."""
        with self.transaction() as db:
            db.executemany("UPDATE cells SET judge_key = ? WHERE seq = ?", ((key, seq) for seq, key in links))

    def clear_judges(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET judge_key = NULL")
            db.execute("DELETE FROM requests WHERE stage = 'judge'")

    def answered_cells(self, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Answered cells not yet linked to a grading request, in plan order."""
        cursor = self._db.execute(
            "SELECT c.seq, c.row_seq, w.values_json, w.target, r.text, r.message_json FROM cells c"
            " JOIN rows w ON w.row_seq = c.row_seq JOIN responses r ON r.key = c.request_key"
            " WHERE r.status = 'ok' AND c.judge_key IS NULL AND c.seq > ? ORDER BY c.seq LIMIT ?",
            (after_seq, limit),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def finish_plan(self, fingerprint: str) -> None:
        self.set_meta(plan_fingerprint=fingerprint, plan_complete="1")

    def drop_model_plan(self, model: str) -> None:
        """Forget one model's cells and requests before it is re-planned (after learning)."""
        with self.transaction() as db:
            db.execute("DELETE FROM cells WHERE model = ?", (model,))
            db.execute("DELETE FROM requests WHERE model = ? AND stage = 'answer'", (model,))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('plan_complete', '0')")

    def pending(self, model: str, *, after_seq: int, limit: int, run_id: int, stage: str = "answer") -> list[PendingRequest]:
        """The next requests of `model` with no final answer, in plan order. A request whose
        retries ran out in this run (`run_id`) is not handed out again until the next run."""
        rows = self.query(
            "SELECT q.key, q.first_seq, q.model, q.max_tokens, q.input_tokens, q.body_json, q.gate FROM requests q"
            " LEFT JOIN responses r ON r.key = q.key"
            " WHERE q.model = ? AND q.stage = ? AND q.first_seq > ?"
            " AND (r.key IS NULL OR (r.status != 'ok' AND r.retryable = 1 AND coalesce(r.run_id, -1) != ?))"
            " AND NOT EXISTS (SELECT 1 FROM batch_requests b JOIN batches t ON t.id = b.batch_id"
            " WHERE b.key = q.key AND t.status != 'collected')"
            " ORDER BY q.first_seq LIMIT ?",
            (model, stage, after_seq, run_id, limit),
        )
        return [PendingRequest(*row) for row in rows]

    def count_pending(self, *, run_id: int, stage: str | None = None) -> int:
        rows = self.query(
            "SELECT count(*) FROM requests q LEFT JOIN responses r ON r.key = q.key"
            " WHERE (r.key IS NULL OR (r.status != 'ok' AND r.retryable = 1 AND coalesce(r.run_id, -1) != ?))"
            + (" AND q.stage = ?" if stage else ""),
            (run_id, stage) if stage else (run_id,),
        )
        return int(rows[0][0])

    def plan_counts(self) -> dict[str, int]:
        """Cells, distinct requests, and how many of each have a final answer."""
        cells, cells_done = self.query(
            f"SELECT count(*), coalesce(sum(CASE WHEN r.key IS NOT NULL AND {FINAL} THEN 1 ELSE 0 END), 0)"
            " FROM cells c LEFT JOIN responses r ON r.key = c.request_key"
        )[0]
        requests, requests_done = self.query(
            f"SELECT count(*), coalesce(sum(CASE WHEN r.key IS NOT NULL AND {FINAL} THEN 1 ELSE 0 END), 0)"
            " FROM requests q LEFT JOIN responses r ON r.key = q.key WHERE q.stage = 'answer'"
        )[0]
        return {"cells": cells, "cells_done": cells_done, "requests": requests, "requests_done": requests_done}

    def request_count(self, stage: str = "answer") -> int:
        """How many distinct requests the plan holds for a stage (without joining the answers)."""
        (count,) = self.query("SELECT count(*) FROM requests WHERE stage = ?", (stage,))[0]
        return int(count)

    def request_body(self, key: str) -> str | None:
        rows = self.query("SELECT body_json FROM requests WHERE key = ?", (key,))
        return rows[0][0] if rows else None
