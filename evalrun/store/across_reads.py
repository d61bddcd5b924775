"""The store's reads for comparing runs (`evalrun diff`, `gate`, `runs --name`): lean streams of
rows, scored cells and request bodies. A mixin of `Store`, kept apart so the store module stays
small; its SQL stays in `evalrun/store/`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalrun.errors import StoreError

__all__ = ["AcrossReads"]


class AcrossReads:
    """Read-only streams over a run store (`Store` provides `_db` and `path`)."""

    _db: sqlite3.Connection
    path: Path

    def _stream(self, sql: str, params: tuple[Any, ...] = (), *, chunk: int) -> Iterator[list[Any]]:
        try:
            cursor = self._db.execute(sql, params)
            while batch := cursor.fetchmany(chunk):
                yield batch
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the run store ({exc})") from None

    def iter_outcomes(
        self, *, chunk: int = 5000, values: bool = False, judged: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Every planned cell with just what scoring it needs (its answer, target, request key;
        `values`: the row's values; `judged`: its grading), in no particular order: the lean
        read `evalrun diff` streams instead of `iter_cells`' wide rows."""
        names = ["model", "prompt", "model_id", "row_seq", "row_id", "repeat", "answer_mode", "request_key", "target",
                 "status", "text", "stop_reason", "message_json", "output_tokens", "simulated"]  # fmt: skip
        names += ["values_json"] if values else []
        names += ["judge_status", "judge_text", "judge_error"] if judged else []
        sql = (
            "SELECT c.model, c.prompt, c.model_id, c.row_seq, c.row_id, c.repeat, c.answer_mode, c.request_key,"
            " w.target, r.status, r.text, r.stop_reason, r.message_json, r.output_tokens, r.simulated"
            + (", w.values_json" if values else "")
            + (", j.status, j.text, j.error" if judged else "")
            + " FROM cells c JOIN rows w ON w.row_seq = c.row_seq LEFT JOIN responses r ON r.key = c.request_key"
            + (" LEFT JOIN responses j ON j.key = c.judge_key" if judged else "")
        )
        for batch in self._stream(sql, chunk=chunk):
            yield [dict(zip(names, row, strict=True)) for row in batch]

    def iter_request_bodies(self, model: str, *, chunk: int = 5000) -> Iterator[list[tuple[str, str]]]:
        """(request key, body) of a model label's answer requests."""
        yield from self._stream("SELECT key, body_json FROM requests WHERE model = ? AND stage = 'answer'", (model,),
                                chunk=chunk)  # fmt: skip

    def iter_rows(self, *, chunk: int = 5000) -> Iterator[list[tuple[int, str, str | None, str]]]:
        """The stored dataset rows as (row_seq, row_id, cluster, values_json), in row order."""
        yield from self._stream("SELECT row_seq, row_id, cluster, values_json FROM rows ORDER BY row_seq", chunk=chunk)
