"""The answer key: which reply is right for which question, matched from the request text."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalrun.errors import DatasetError

__all__ = ["AnswerKey", "KeyRow", "letter_of", "normalize"]

_WORD = re.compile(r"\w+")
_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Whitespace collapsed to single spaces, so a template's line breaks do not hide a match."""
    return _SPACE.sub(" ", text).strip()


def letter_of(target: str) -> str | None:
    """The option letter a target names (`"C"`, `"(c)"`, `"C."`), or None for free text."""
    match = _LETTER.fullmatch(target.strip())
    return match.group(1).upper() if match else None


@dataclass(frozen=True)
class KeyRow:
    """One answer-key row: its id (if any), the right answer and its question cells."""

    id: str | None
    target: str
    key: str  # the longest non-answer cell, normalized: what must appear in the request
    cells: tuple[str, ...]  # every non-answer cell, normalized, for breaking ties


@dataclass(frozen=True)
class AnswerKey:
    """Right answers for a dataset, looked up by request text or by row id.

    A request matches a row when the row's longest non-answer cell (its question, normally)
    appears in the request's user text, whitespace-normalized; when several rows match, the
    longest such cell wins, then the row with the most of its other cells present. A row also
    matches when its id equals the request's `metadata.user_id`.
    """

    rows: tuple[KeyRow, ...]
    _by_anchor: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Index each row under the longest word of its key: a request can then only match rows
        # whose anchor is one of its own words, so lookup costs O(words), not O(rows).
        anchors: dict[str, list[int]] = {}
        for index, row in enumerate(self.rows):
            words = _WORD.findall(row.key)
            if words:
                anchors.setdefault(max(words, key=len), []).append(index)
        object.__setattr__(self, "_by_anchor", {w: tuple(ix) for w, ix in anchors.items()})
        object.__setattr__(self, "_by_id", {row.id: i for i, row in enumerate(self.rows) if row.id})

    @classmethod
    def from_rows(
        cls, rows: Sequence[Mapping[str, str]], target_column: str, id_column: str | None = None
    ) -> AnswerKey:
        """A key from dataset rows; `target_column` holds the right answers."""
        built = []
        for number, row in enumerate(rows, start=1):
            if target_column not in row:
                raise DatasetError(f"answer key row {number}: no column {target_column!r}")
            cells = tuple(
                sorted(
                    (normalize(str(v)) for k, v in row.items() if k not in (target_column, id_column) and v),
                    key=len,
                    reverse=True,
                )
            )
            row_id = str(row[id_column]) if id_column and row.get(id_column) not in (None, "") else None
            built.append(
                KeyRow(
                    id=row_id,
                    target=str(row[target_column]).strip(),
                    key=cells[0] if cells else "",
                    cells=cells,
                )
            )
        return cls(rows=tuple(built))

    @classmethod
    def from_csv(cls, path: str | Path, column: str, id_column: str | None = None) -> AnswerKey:
        """A key from a CSV file with a header row; `column` holds the right answers."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                fields = reader.fieldnames or []
                rows = list(reader)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read answer key ({exc.strerror})") from exc
        for name in (column, id_column):
            if name is not None and name not in fields:
                raise DatasetError(f"{path}: no column {name!r} (columns: {', '.join(fields)})")
        return cls.from_rows(rows, column, id_column)

    def match(self, text: str, row_id: str | None = None) -> KeyRow | None:
        """The row a request belongs to, from its user text (or `metadata.user_id`), or None."""
        if row_id is not None and row_id in self._by_id:
            return self.rows[self._by_id[row_id]]
        text = normalize(text)
        best: KeyRow | None = None
        best_score = (-1, -1)
        for word in set(_WORD.findall(text)):
            for index in self._by_anchor.get(word, ()):
                row = self.rows[index]
                if row.key in text:
                    score = (len(row.key), sum(len(c) for c in row.cells if c in text))
                    if score > best_score:
                        best, best_score = row, score
        return best

    def targets(self) -> tuple[str, ...]:
        """Every row's right answer, in row order."""
        return tuple(row.target for row in self.rows)
