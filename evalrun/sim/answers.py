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
    """One answer-key row: its id (if any), the right answer, its question cells and the right
    value of each answer field (JSON path in the answer object -> the dataset cell, as text)."""

    id: str | None
    target: str
    key: str  # the longest non-answer cell, normalized: what must appear in the request
    cells: tuple[str, ...]  # every non-answer cell, normalized, for breaking ties
    fields: tuple[tuple[str, str], ...] = ()  # (path, value); empty cells are left out

    def field_values(self) -> dict[str, str]:
        """The row's field values by JSON path."""
        return dict(self.fields)


@dataclass(frozen=True)
class AnswerKey:
    """Right answers for a dataset, looked up by request text or by row id.

    A request matches a row when the row's longest non-answer cell (its question, normally)
    appears in the request's user text, whitespace-normalized; when several rows match, the
    longest such cell wins, then the row with the most of its other cells present. A row also
    matches when its id equals the request's `metadata.user_id`. The answer cells (the target
    and every field column) take no part in matching.

    Field values answer extraction: when the simulator builds a tool input or structured
    output for a matched row, each property whose dotted path has a value in the row gets that
    value (converted to the property's type) with the model's skill as probability.
    """

    rows: tuple[KeyRow, ...]
    _by_anchor: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, int] = field(init=False, repr=False, compare=False)
    _by_path: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

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
        by_path: dict[str, dict[str, None]] = {}
        for row in self.rows:
            for path, value in row.fields:
                by_path.setdefault(path, {})[value] = None
        object.__setattr__(self, "_by_path", {p: tuple(v) for p, v in by_path.items()})

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, str]],
        target_column: str,
        id_column: str | None = None,
        *,
        fields: Mapping[str, str] | None = None,
    ) -> AnswerKey:
        """A key from dataset rows; `target_column` holds the right answers.

        `fields` maps a dotted JSON path in the answer object (`"city"`, `"address.zip"`) to
        the column holding its right value; those columns are not question cells.
        """
        fields = dict(fields or {})
        for path in fields:
            if not path or any(not part for part in path.split(".")):
                raise DatasetError(f"answer key: bad field path {path!r} (expected names joined by dots)")
        answer_columns = {target_column, id_column, *fields.values()}
        built = []
        for number, row in enumerate(rows, start=1):
            for column in (target_column, *fields.values()):
                if column not in row:
                    raise DatasetError(f"answer key row {number}: no column {column!r}")
            cells = tuple(
                sorted(
                    (normalize(str(v)) for k, v in row.items() if k not in answer_columns and v),
                    key=len,
                    reverse=True,
                )
            )
            row_id = str(row[id_column]) if id_column and row.get(id_column) not in (None, "") else None
            values = tuple(
                (path, str(row[column]).strip())
                for path, column in fields.items()
                if row[column] is not None and str(row[column]).strip()
            )
            built.append(
                KeyRow(
                    id=row_id,
                    target=str(row[target_column]).strip(),
                    key=cells[0] if cells else "",
                    cells=cells,
                    fields=values,
                )
            )
        return cls(rows=tuple(built))

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        column: str,
        id_column: str | None = None,
        *,
        fields: Mapping[str, str] | None = None,
    ) -> AnswerKey:
        """A key from a CSV file with a header row; `column` holds the right answers and
        `fields` maps answer paths to columns, as in `from_rows`."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                header = reader.fieldnames or []
                rows = list(reader)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read answer key ({exc.strerror})") from exc
        for name in (column, id_column, *(fields or {}).values()):
            if name is not None and name not in header:
                raise DatasetError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
        return cls.from_rows(rows, column, id_column, fields=fields)

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

    def field_values(self, path: str) -> tuple[str, ...]:
        """The distinct values the rows give the field at `path`, in row order."""
        return self._by_path.get(path, ())
