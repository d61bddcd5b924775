"""A run folder's ledger: how each run ended and why it stopped (`runs.stop_reason`), the cells
an edited spec took out of the plan (`retired_cells`) and the counts a run ends with. A mixin of
`Store`, kept apart so the store module stays small."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.store._sqlite import now

__all__ = ["RunLedger"]

class RunLedger:
    """Runs' ends and stop reasons, retired cells and end-of-run counts (`Store` provides
    `_db`, `path`, `query` and `transaction`)."""

    _db: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

    def finish_run(self, run_id: int, status: str, *, stop_reason: str | None = None, stop_model: str | None = None) -> None:
        """End a run with its status and, when it stopped early, why (and which model stopped it)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, stop_reason = ?, stop_model = ? WHERE id = ?",
                (now(), status, stop_reason, stop_model, run_id),
            )

    def last_stop(self) -> dict[str, Any] | None:
        """The last run's status and why it stopped, when it stopped early; None otherwise (or
        for a store written before stop reasons were kept)."""
        try:
            rows = self._db.execute(
                "SELECT status, stop_reason, stop_model FROM runs ORDER BY id DESC LIMIT 1"
            ).fetchall()
        except sqlite3.Error:
            return None  # an older store read without migrating: no stop reasons in it
        if not rows or not rows[0][1]:
            return None
        status, reason, model = rows[0]
        return {"status": status, "reason": reason, "model": model}

    def clear_plan(self) -> None:
        """Forget the planned cells, requests and rows (responses are kept: they were paid for).
        The cells are kept in `retired_cells` first, for `retired_cells()` to list those a new
        plan does not have."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO retired_cells (model, prompt, row_id, repeat, request_key, retired_at)"
                " SELECT model, prompt, row_id, repeat, request_key, ? FROM cells",
                (now(),),
            )
            db.execute("DELETE FROM cells")
            db.execute("DELETE FROM requests")
            db.execute("DELETE FROM rows")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('plan_complete', '0')")

    def retired_cells(self) -> list[dict[str, Any]]:
        """Cells of an earlier plan of this folder that the current plan does not have, with
        whether their answer is stored (it stays: it was paid for)."""
        rows = self.query(
            "SELECT t.model, t.prompt, t.row_id, t.repeat, t.retired_at, r.status FROM retired_cells t"
            " LEFT JOIN responses r ON r.key = t.request_key"
            " WHERE NOT EXISTS (SELECT 1 FROM cells c WHERE c.model = t.model AND c.prompt = t.prompt"
            " AND c.row_id = t.row_id AND c.repeat = t.repeat) ORDER BY t.retired_at, t.model, t.prompt, t.row_id"
        )
        names = ("model", "prompt", "row_id", "repeat", "retired_at", "status")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def cell_identities(self) -> set[tuple[str, str, str, int]]:
        """Every planned cell as (model, prompt, row id, repeat)."""
        rows = self.query("SELECT model, prompt, row_id, repeat FROM cells")
        return {(str(m), str(p), str(r), int(k)) for m, p, r, k in rows}

    def answered_cell_count(self) -> int:
        """How many planned cells have an answer (what the grading stage grades)."""
        (count,) = self.query(
            "SELECT count(*) FROM cells c JOIN responses r ON r.key = c.request_key WHERE r.status = 'ok'"
        )[0]
        return int(count)

    def outcome_counts(self, run_id: int | None) -> dict[str, int]:
        """The cells by outcome (answered, failed, not_sent), those answered before run `run_id`,
        the ungraded and the graded requests, the unpriced answers, the distinct answered requests."""
        rows = self.query(
            "SELECT CASE WHEN r.key IS NULL THEN 'not_sent' WHEN r.status = 'ok' THEN 'answered' ELSE 'failed' END,"
            " count(*) FROM cells c LEFT JOIN responses r ON r.key = c.request_key GROUP BY 1"
        )
        (stored_before,) = self.query(
            "SELECT count(*) FROM cells c JOIN responses r ON r.key = c.request_key"
            " WHERE r.status = 'ok' AND coalesce(r.run_id, -1) != ?",
            (run_id if run_id is not None else -1,),
        )[0]
        (ungraded,) = self.query(
            "SELECT count(*) FROM cells c JOIN responses r ON r.key = c.request_key"
            " LEFT JOIN responses j ON j.key = c.judge_key WHERE r.status = 'ok'"
            " AND (SELECT count(*) FROM requests WHERE stage = 'judge') > 0 AND coalesce(j.status, '') != 'ok'"
        )[0]
        (unpriced,) = self.query(
            "SELECT count(*) FROM responses WHERE status = 'ok' AND source != 'cache' AND cost_usd IS NULL"
        )[0]
        (answered_requests,) = self.query(
            "SELECT count(DISTINCT c.request_key) FROM cells c JOIN responses r ON r.key = c.request_key"
            " WHERE r.status = 'ok'"
        )[0]
        counts = {
            "answered": 0, "failed": 0, "not_sent": 0, "stored_before": int(stored_before),
            "answered_requests": int(answered_requests), "ungraded": int(ungraded),
            "graded_requests": int(self.query("SELECT count(*) FROM requests WHERE stage = 'judge'")[0][0]), "unpriced": int(unpriced),
        }  # fmt: skip
        counts.update({str(k): int(v) for k, v in rows})
        return counts

    def cell_errors(self) -> list[tuple[str, int | None, str | None]]:
        """(error type, HTTP status, message) of every planned cell whose request failed."""
        rows = self.query(
            "SELECT coalesce(r.error_type, ''), r.http_status, r.error FROM cells c"
            " JOIN responses r ON r.key = c.request_key WHERE r.status != 'ok'"
        )
        return [(str(t), s, m) for t, s, m in rows]
