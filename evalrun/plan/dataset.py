"""CSV → rows: the id column, limit/sample, and column checks that name the file, line and column."""

from __future__ import annotations

import codecs
import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evalrun.errors import DatasetError

__all__ = ["Dataset", "Row", "load_dataset"]

csv.field_size_limit(1 << 27)  # long documents in a cell are legitimate eval inputs


@dataclass(frozen=True)
class Row:
    """One dataset row: its id, its 1-based line in the file, and its values by column."""

    id: str
    line: int
    values: dict[str, str]


@dataclass(frozen=True)
class Dataset:
    """The rows to evaluate, in file order, and the file's header."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    id_column: str | None = None

    def require_columns(self, needed: Iterable[str], *, what: str) -> None:
        """Raise DatasetError naming the first column in `needed` the file does not have."""
        for column in needed:
            if column not in self.columns:
                raise DatasetError(
                    f"{self.path}: {what} needs column {column!r}, which the file does not have "
                    f"(columns: {', '.join(self.columns)})"
                )


def load_dataset(
    path: Path,
    *,
    id_column: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    encoding: str = "utf-8",
) -> Dataset:
    """Read a CSV with a header row. Every problem is a DatasetError naming file, line and column."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DatasetError(f"{path}: unknown encoding {encoding!r} (dataset.encoding)") from None
    try:
        # utf-8-sig: a spreadsheet's byte-order mark must not end up in the first column's name.
        with path.open(encoding="utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding, newline="") as f:
            records = list(csv.reader(f, strict=True))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not valid {encoding} text (byte {exc.start}); set `dataset.encoding` in the spec "
            f"(e.g. encoding: latin-1 or cp1252)"
        ) from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None

    if not records or not any(cell.strip() for cell in records[0]):
        raise DatasetError(f"{path}: the file is empty; expected a header row and at least one data row")
    header = tuple(cell.strip() for cell in records[0])
    for index, name in enumerate(header):
        if not name:
            raise DatasetError(f"{path}: line 1: column {index + 1} has no name")
        if header.index(name) != index:
            raise DatasetError(f"{path}: line 1: column name {name!r} appears twice")

    rows: list[Row] = []
    seen_ids: dict[str, int] = {}
    for number, record in enumerate(records[1:], start=2):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # blank line
        if len(record) != len(header):
            raise DatasetError(
                f"{path}: line {number}: {len(record)} fields, but the header has {len(header)} "
                f"(a stray comma, or a value with a comma that needs quotes?)"
            )
        values = dict(zip(header, record, strict=True))
        if id_column is None:
            row_id = str(len(rows) + 1)
        else:
            if id_column not in values:
                raise DatasetError(
                    f"{path}: id column {id_column!r} (dataset.id) is not in the file "
                    f"(columns: {', '.join(header)})"
                )
            row_id = values[id_column].strip()
            if not row_id:
                raise DatasetError(f"{path}: line {number}: column {id_column!r} (the id) is empty")
            if row_id in seen_ids:
                raise DatasetError(
                    f"{path}: line {number}: id {row_id!r} in column {id_column!r} repeats line {seen_ids[row_id]}"
                )
            seen_ids[row_id] = number
        rows.append(Row(id=row_id, line=number, values=values))
    if not rows:
        raise DatasetError(f"{path}: the file has a header but no data rows")

    if sample is not None and sample < len(rows):
        chosen = sorted(random.Random(seed).sample(range(len(rows)), sample))
        rows = [rows[i] for i in chosen]
    if limit is not None:
        rows = rows[:limit]
    return Dataset(path=path, columns=header, rows=tuple(rows), id_column=id_column)
