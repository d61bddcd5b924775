"""The store's reads for reports: every planned cell with its row and response (streamed in
chunks), counts, clusters, and the request bodies in the order written. A mixin of `Store`, kept
apart so the store module stays small."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.store._cells_sql import cells_select
from evalrun.store._sqlite import translate_sqlite_error

__all__ = ["ReportReads"]


class ReportReads:
    """Named reads for the reports (`Store` provides `_db`, `path` and `query`)."""

    _db: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def iter_cells(
        self, *, chunk: int = 5000, order: str = "seq", with_requests: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Every planned cell with its row and response, in chunks of dicts.

        `order="seq"` is plan order; `order="row"` groups each model × prompt's repeats of a row.
        `with_requests` adds `request_json`, the body that was sent (image files as references).
        """
        order_by = "c.seq" if order == "seq" else "c.model, c.prompt, c.row_seq, c.repeat"
        cursor = self._db.execute(cells_select(with_requests=with_requests) + f" ORDER BY {order_by}")
        names = [d[0] for d in cursor.description]
        try:
            while batch := cursor.fetchmany(chunk):
                yield [dict(zip(names, row, strict=True)) for row in batch]
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path) from None

    def cell_rows(self) -> list[dict[str, Any]]:
        """Every planned cell with its row and response, in plan order (small runs and tests)."""
        return [row for chunk in self.iter_cells() for row in chunk]

    # -- reading for reports: counts, clusters, request bodies (reporttrust) ----------------
    def count_cells(self) -> int:
        """How many cells the store plans."""
        return int(self.query("SELECT count(*) FROM cells")[0][0])

    def count_rows(self) -> int:
        """How many dataset rows the store holds (row positions are 0 … n − 1)."""
        return int(self.query("SELECT coalesce(max(row_seq) + 1, 0) FROM rows")[0][0])

    def row_clusters(self) -> list[tuple[int, str | None]]:
        """(row position, cluster) of every stored dataset row, in row order."""
        return list(self.query("SELECT row_seq, cluster FROM rows ORDER BY row_seq"))

    def responses_mark(self) -> tuple[int, int]:
        """(how many responses, the last one's rowid): changes whenever a response is stored."""
        count, top = self.query("SELECT count(*), coalesce(max(rowid), 0) FROM responses")[0]
        return int(count), int(top)

    def request_bodies_after(self, rowid: int, limit: int) -> list[tuple[int, str, str]]:
        """(rowid, key, body) of the next `limit` stored requests after `rowid`, in the order written."""
        return list(self.query(
            "SELECT rowid, key, body_json FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)))
