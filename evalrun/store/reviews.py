"""Human reviews in the run store, and the paged reads the viewer needs.

A review is appended (never updated) as one row of `reviews` (migration `m003_reviews`): the
cell's key (model label, prompt, row id, repeat), a verdict (`correct` / `wrong`) or a grade on
the judge's scale, a note, the reviewer and the time. The latest review of a cell counts; the
history stays. `ReviewMethods` is mixed into `Store`, so every SQL statement stays in the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.errors import StoreError
from evalrun.store._cells_sql import cells_select
from evalrun.store._sqlite import now

__all__ = ["VERDICTS", "CellFilter", "CellKey", "Review", "ReviewMethods"]

VERDICTS = ("correct", "wrong")
CellKey = tuple[str, str, str, int]  # (model label, prompt, row id, repeat)
_REVIEW_COLUMNS = "id, model, prompt, row_id, repeat, verdict, grade, note, reviewer, created_at"


@dataclass(frozen=True, slots=True)
class Review:
    """One human review of one cell: a verdict or a grade (exactly one of them), a note, who, when."""

    id: int
    model: str
    prompt: str
    row_id: str
    repeat: int
    verdict: str | None
    grade: str | None
    note: str
    reviewer: str
    created_at: str

    @property
    def key(self) -> CellKey:
        return (self.model, self.prompt, self.row_id, self.repeat)

    def as_json(self) -> dict[str, Any]:
        """The review as the API and `evalrun reviews --csv` show it."""
        return {name: getattr(self, name) for name in _REVIEW_COLUMNS.split(", ")}


@dataclass(frozen=True, slots=True)
class CellFilter:
    """Which cells a page holds: SQL narrows by what the store knows (model, prompt, row, answered
    or not, reviewed); the outcome of a scored cell is filtered by the caller."""

    model: str | None = None
    prompt: str | None = None
    row_id: str | None = None
    answered: bool = False  # only cells with a reply
    reviewed: bool = False  # only cells with a human review

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("c.model", self.model), ("c.prompt", self.prompt), ("c.row_id", self.row_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.answered:
            clauses.append("r.status = 'ok'")
        if self.reviewed:
            clauses.append(
                "EXISTS (SELECT 1 FROM reviews v WHERE v.model = c.model AND v.prompt = c.prompt"
                " AND v.row_id = c.row_id AND v.repeat = c.repeat)"
            )
        return " AND ".join(clauses) or "1", params


def _store_error(exc: sqlite3.Error, path: Path, what: str) -> StoreError:
    """One line for a failed review read or write (a busy store says so: try again)."""
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreError(f"{path}: the store is busy (an evalrun is writing it); try again")
    if "readonly" in str(exc):
        return StoreError(f"{path}: {what}: the run folder is read-only")
    return StoreError(f"{path}: {what} ({exc})")


class ReviewMethods:
    """The store's named reads and writes of reviews (mixed into `Store`)."""

    path: Path
    _db: sqlite3.Connection

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:  # pragma: no cover - Store's
        raise NotImplementedError

    def add_review(
        self, key: CellKey, *, verdict: str | None, grade: str | None, note: str, reviewer: str
    ) -> Review:
        """Append one review (one statement: its own transaction) and return it as stored."""
        model, prompt, row_id, repeat = key
        stamp = now()
        try:
            cursor = self._db.execute(
                "INSERT INTO reviews (model, prompt, row_id, repeat, verdict, grade, note, reviewer, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, prompt, row_id, int(repeat), verdict, grade, note, reviewer, stamp),
            )
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path, "cannot store the review") from None
        return Review(int(cursor.lastrowid or 0), model, prompt, row_id, int(repeat), verdict, grade, note, reviewer, stamp)

    def reviews(self) -> list[Review]:
        """Every review ever given, oldest first (the history)."""
        return [Review(*row) for row in self.query(f"SELECT {_REVIEW_COLUMNS} FROM reviews ORDER BY id")]

    def latest_reviews(self) -> dict[CellKey, Review]:
        """The review that counts for each reviewed cell: its latest."""
        rows = self.query(
            f"SELECT {_REVIEW_COLUMNS} FROM reviews WHERE id IN"
            " (SELECT max(id) FROM reviews GROUP BY model, prompt, row_id, repeat)"
        )
        return {review.key: review for review in (Review(*row) for row in rows)}

    def review_state(self) -> str:
        """Changes whenever a review is added (for report freshness and caches)."""
        (count, top) = self.query("SELECT count(*), coalesce(max(id), 0) FROM reviews")[0]
        return f"{count}:{top}"

    def has_cell(self, key: CellKey) -> bool:
        """Whether the plan holds this cell."""
        model, prompt, row_id, repeat = key
        rows = self.query(
            "SELECT 1 FROM cells WHERE model = ? AND prompt = ? AND row_id = ? AND repeat = ? LIMIT 1",
            (model, prompt, row_id, int(repeat)),
        )
        return bool(rows)

    def cells_page(self, where: CellFilter, *, after_seq: int = -1, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Cells in plan order (as `iter_cells` reads them) matching `where`, from plan position
        `after_seq` on, skipping `offset` of them: one page, never the whole store."""
        clause, params = where.where()
        try:
            cursor = self._db.execute(
                cells_select() + f" WHERE c.seq > ? AND {clause} ORDER BY c.seq LIMIT ? OFFSET ?",
                (after_seq, *params, limit, offset),
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path, "cannot read the run store") from None

    def count_matching_cells(self, where: CellFilter) -> int:
        """How many cells match `where` (a count, no cell read)."""
        clause, params = where.where()
        (count,) = self.query(
            "SELECT count(*) FROM cells c LEFT JOIN responses r ON r.key = c.request_key WHERE " + clause, params
        )[0]
        return int(count)

    def variants(self) -> list[tuple[str, str]]:
        """The (model, prompt) pairs the plan holds, in plan order."""
        rows = self.query("SELECT model, prompt, min(seq) AS first FROM cells GROUP BY model, prompt ORDER BY first")
        return [(model, prompt) for model, prompt, _ in rows]
