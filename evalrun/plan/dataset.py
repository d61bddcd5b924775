"""A dataset → rows, streamed: the id field, limit/sample, and checks that name the file, the line
(or record) and the field.

A dataset is read twice and never held: `scan_dataset` checks every record once (format, ids,
the fields there are) and decides which rows are selected; `iter_rows` streams the selected rows
again whenever they are needed. The format is the reader's business (`evalrun.plan.readers`):
from here on a row is a mapping, possibly nested. Memory does not grow with the file beyond a
small hash per id.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalrun.errors import DatasetError
from evalrun.plan.paths import FieldMissing, lookup, text_of
from evalrun.plan.readers import Reader, first_bad_line, make_reader

__all__ = ["Dataset", "Row", "scan_dataset"]

# Nested field paths remembered for the column checks; a wider schema is checked row by row.
_MAX_PATHS = 4096
_MAX_DEPTH = 6


@dataclass(frozen=True)
class Row:
    """One selected dataset row: its position among the selected rows, its id, its 1-based line
    (or record number) in the file, and its values by field (which may nest)."""

    seq: int
    id: str
    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    """A checked dataset and the rows selected from it (by `limit` / `sample`), streamed on demand."""

    path: Path
    columns: tuple[str, ...]  # the top-level fields, in the order first met
    id_column: str | None
    encoding: str
    count: int  # selected rows
    digest: str  # SHA-256 of the file's bytes
    limit: int | None = None
    chosen: frozenset[int] | None = None  # indexes among the file's data rows, when sampled
    reader: Reader | None = None
    # Every nested path seen (objects only, not list items) → whether it ever held an object.
    paths: Mapping[str, bool] = field(default_factory=dict)
    complete_paths: bool = True  # False when the schema was too wide to remember

    @property
    def unit(self) -> str:
        """What a row's number counts: `line` (text formats) or `record` (Parquet, Hugging Face)."""
        return self.reader.unit if self.reader is not None else "line"

    def where(self, row: Row) -> str:
        """`file: line N` (or `record N`) for messages about one row."""
        return f"{self.path}: {self.unit} {row.line}"

    def missing_field(self, path: str) -> str | None:
        """Why no row can have a value at `path` (a template's or the scorer's), as the end of a
        sentence (`is not a column of …`), or None when some rows may (each row is then checked
        as it is read)."""
        if path in self.columns or path in self.paths:
            return None
        parts = path.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            head = ".".join(parts[:cut])
            if head in self.columns or head in self.paths:
                if not self.paths.get(head, False) or not self.complete_paths:
                    return None  # a list (or a text cell holding JSON): its items are checked per row
                inner = dict.fromkeys(p[len(head) + 1 :].split(".")[0] for p in self.paths if p.startswith(head + "."))
                return f"is not in {self.path.name}: {head!r} has no field {parts[cut]!r} (it has {', '.join(inner)})"
        return f"is not a column of {self.path.name} (columns: {', '.join(self.columns)})"

    def require_columns(self, needed: Iterable[str], *, what: str) -> None:
        """Raise DatasetError naming the first field in `needed` the dataset does not have."""
        for column in needed:
            problem = self.missing_field(column)
            if problem is not None:
                raise DatasetError(f"{self.path}: {what} {column!r} {problem}")

    def __iter__(self) -> Iterator[Row]:
        return self.iter_rows()

    def iter_rows(self) -> Iterator[Row]:
        """The selected rows, in file order."""
        seq = 0
        for index, (line, values) in enumerate(self._reader().records()):
            if self.chosen is not None and index not in self.chosen:
                continue
            if self.limit is not None and seq >= self.limit:
                return
            yield Row(seq=seq, id=self._row_id(values, seq), line=line, values=values)
            seq += 1

    @property
    def rows(self) -> tuple[Row, ...]:
        """Every selected row at once (small datasets and tests; a run streams them)."""
        return tuple(self.iter_rows())

    def _reader(self) -> Reader:
        return self.reader if self.reader is not None else make_reader(self.path, encoding=self.encoding)

    def _row_id(self, values: dict[str, Any], seq: int) -> str:
        return str(seq + 1) if self.id_column is None else text_of(lookup(values, self.id_column)).strip()


def scan_dataset(
    path: Path,
    *,
    id_column: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    encoding: str = "utf-8",
    format: str | None = None,
    split: str | None = None,
) -> Dataset:
    """Check a dataset (CSV with a header row, JSONL, a JSON array, Parquet or a saved Hugging Face
    dataset), once, and select its rows. Every problem is a DatasetError naming the file, the line
    or record, and the field."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DatasetError(f"{path}: unknown encoding {encoding!r} (dataset.encoding)") from None
    reader = make_reader(path, format=format, encoding=encoding, split=split)
    try:
        digest = reader.digest()
        scan = _Scan(reader, id_column)
        scan.run()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, not a dataset file") from None
    except UnicodeDecodeError:
        line = first_bad_line(path, encoding)
        raise DatasetError(
            f"{path}: line {line}: not valid {encoding} text; set `dataset.encoding` in the spec "
            f"(e.g. encoding: latin-1 or cp1252)"
        ) from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    except EOFError as exc:  # a truncated .gz
        raise DatasetError(f"{path}: the file ends early ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    count = scan.count
    chosen = None
    if sample is not None and sample < count:
        chosen = frozenset(random.Random(seed).sample(range(count), sample))
        count = sample
    if limit is not None:
        count = min(count, limit)
    return Dataset(
        path=path,
        columns=tuple(scan.columns),
        id_column=id_column,
        encoding=encoding,
        count=count,
        digest=digest,
        limit=limit,
        chosen=chosen,
        reader=reader,
        paths=scan.paths,
        complete_paths=scan.complete,
    )


class _Scan:
    """One pass over every record: the fields there are, the number of rows, unique ids."""

    def __init__(self, reader: Reader, id_column: str | None) -> None:
        self.reader, self.id_column = reader, id_column
        self.columns: dict[str, None] = {}
        self.paths: dict[str, bool] = {}
        self.complete = True
        self.count = 0
        self.header = reader.header()

    def run(self) -> None:
        reader, id_column = self.reader, self.id_column
        if self.header is not None:
            self.columns = dict.fromkeys(self.header)
            if id_column is not None and id_column not in self.columns:
                raise DatasetError(
                    f"{reader.path}: id column {id_column!r} (dataset.id) is not in the file "
                    f"(columns: {', '.join(self.header)})"
                )
        # 64-bit hashes of the ids seen: a few bytes per row instead of the ids themselves.
        seen: set[int] = set()
        flat = reader.flat  # every record has the header's columns, as text: nothing nests
        for number, values in reader.records():
            if not flat:
                self._shape(values, "", 0)
            if id_column is not None:
                self._check_id(number, values, seen)
            self.count += 1
        if self.count == 0:
            what = "a header but no data rows" if self.header is not None and reader.unit == "line" else "no rows"
            raise DatasetError(f"{reader.path}: the file has {what}")

    def _shape(self, values: Mapping[str, Any], prefix: str, depth: int) -> None:
        if not prefix:
            for key in values:
                if key not in self.columns:
                    self.columns[key] = None
        if not self.complete:
            return
        for key, value in values.items():
            path = f"{prefix}{key}"
            nested = isinstance(value, Mapping)
            if path not in self.paths:
                if len(self.paths) >= _MAX_PATHS:
                    self.complete = False
                    return
                self.paths[path] = nested
            elif nested:
                self.paths[path] = True
            if nested and depth < _MAX_DEPTH:
                self._shape(value, path + ".", depth + 1)

    def _check_id(self, number: int, values: Mapping[str, Any], seen: set[int]) -> None:
        reader, id_column = self.reader, self.id_column
        assert id_column is not None
        try:
            row_id = text_of(lookup(values, id_column)).strip()
        except FieldMissing:
            raise DatasetError(f"{reader.where(number)}: no id field {id_column!r} (dataset.id)") from None
        if not row_id:
            raise DatasetError(f"{reader.where(number)}: column {id_column!r} (the id) is empty")
        fingerprint = int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=8).digest(), "big")
        if fingerprint in seen:
            earlier = _first_number_of(reader, id_column, row_id)
            if earlier != number:  # else two different ids share a hash: not a repeat
                raise DatasetError(
                    f"{reader.where(number)}: id {row_id!r} in column {id_column!r} repeats {reader.unit} {earlier}"
                )
        seen.add(fingerprint)


def _first_number_of(reader: Reader, id_column: str, row_id: str) -> int:
    for number, values in reader.records():
        try:
            if text_of(lookup(values, id_column)).strip() == row_id:
                return number
        except FieldMissing:
            continue
    return 0
