"""CSV → rows, streamed: the id column, limit/sample, and checks that name the file, line and column.

A dataset is read twice and never held: `scan_dataset` checks the whole file once (header,
field counts, ids) and decides which rows are selected; `iter_rows` streams the selected rows
again whenever they are needed. Memory does not grow with the file beyond a small hash per id.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from evalrun.errors import DatasetError

__all__ = ["Dataset", "Row", "scan_dataset"]

csv.field_size_limit(1 << 27)  # long documents in a cell are legitimate eval inputs


@dataclass(frozen=True)
class Row:
    """One selected dataset row: its position among the selected rows, its id, its 1-based first
    line in the file, and its values by column."""

    seq: int
    id: str
    line: int
    values: dict[str, str]


@dataclass(frozen=True)
class Dataset:
    """A checked CSV file and the rows selected from it (by `limit` / `sample`), streamed on demand."""

    path: Path
    columns: tuple[str, ...]
    id_column: str | None
    encoding: str
    count: int  # selected rows
    digest: str  # SHA-256 of the file's bytes
    limit: int | None = None
    chosen: frozenset[int] | None = None  # indexes among the file's data rows, when sampled

    def require_columns(self, needed: Iterable[str], *, what: str) -> None:
        """Raise DatasetError naming the first column in `needed` the file does not have."""
        for column in needed:
            if column not in self.columns:
                raise DatasetError(
                    f"{self.path}: {what} needs column {column!r}, which the file does not have "
                    f"(columns: {', '.join(self.columns)})"
                )

    def __iter__(self) -> Iterator[Row]:
        return self.iter_rows()

    def iter_rows(self) -> Iterator[Row]:
        """The selected rows, in file order."""
        seq = 0
        for index, line, values in _records(self.path, self.columns, self.encoding):
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

    def _row_id(self, values: dict[str, str], seq: int) -> str:
        return str(seq + 1) if self.id_column is None else values[self.id_column].strip()


def _open(path: Path, encoding: str) -> IO[str]:
    # utf-8-sig: a spreadsheet's byte-order mark must not end up in the first column's name.
    return path.open(encoding="utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding, newline="")


def _lines(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every non-blank record after the header; a quoted field may span lines."""
    last_line = reader.line_num
    for record in reader:
        first_line, last_line = last_line + 1, reader.line_num
        if record and not (len(record) == 1 and not record[0].strip()):
            yield first_line, record


def _records(path: Path, header: tuple[str, ...], encoding: str) -> Iterator[tuple[int, int, dict[str, str]]]:
    """(data row index, first line, values) of every non-blank data row; the file was checked."""
    with _open(path, encoding) as f:
        reader = csv.reader(f, strict=True)
        next(reader, None)
        for index, (first_line, record) in enumerate(_lines(reader)):
            yield index, first_line, dict(zip(header, record, strict=True))


def scan_dataset(
    path: Path,
    *,
    id_column: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    encoding: str = "utf-8",
) -> Dataset:
    """Check a CSV with a header row, once, and select its rows. Every problem is a DatasetError
    naming the file, line and column."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DatasetError(f"{path}: unknown encoding {encoding!r} (dataset.encoding)") from None
    digest = hashlib.sha256()
    try:
        with path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
        header, count = _check(path, id_column, encoding)
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
    chosen = None
    if sample is not None and sample < count:
        chosen = frozenset(random.Random(seed).sample(range(count), sample))
        count = sample
    if limit is not None:
        count = min(count, limit)
    return Dataset(
        path=path,
        columns=header,
        id_column=id_column,
        encoding=encoding,
        count=count,
        digest=digest.hexdigest(),
        limit=limit,
        chosen=chosen,
    )


def _check(path: Path, id_column: str | None, encoding: str) -> tuple[tuple[str, ...], int]:
    """The header and the number of data rows; raises DatasetError on the first bad line."""
    with _open(path, encoding) as f:
        reader = csv.reader(f, strict=True)
        first = next(reader, None)
        if first is None or not any(cell.strip() for cell in first):
            raise DatasetError(f"{path}: the file is empty; expected a header row and at least one data row")
        header = tuple(cell.strip() for cell in first)
        for index, name in enumerate(header):
            if not name:
                raise DatasetError(f"{path}: line 1: column {index + 1} has no name")
            if header.index(name) != index:
                raise DatasetError(f"{path}: line 1: column name {name!r} appears twice")
        id_index = None
        if id_column is not None:
            if id_column not in header:
                raise DatasetError(
                    f"{path}: id column {id_column!r} (dataset.id) is not in the file (columns: {', '.join(header)})"
                )
            id_index = header.index(id_column)
        # 64-bit hashes of the ids seen: a few bytes per row instead of the ids themselves.
        seen: set[int] = set()
        count = 0
        for first_line, record in _lines(reader):
            if len(record) != len(header):
                raise DatasetError(
                    f"{path}: line {first_line}: {len(record)} fields, but the header has {len(header)} "
                    f"(a stray comma, or a value with a comma that needs quotes?)"
                )
            if id_index is not None:
                row_id = record[id_index].strip()
                if not row_id:
                    raise DatasetError(f"{path}: line {first_line}: column {id_column!r} (the id) is empty")
                fingerprint = int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=8).digest(), "big")
                if fingerprint in seen:
                    earlier = _first_line_of(path, header, encoding, id_index, row_id)
                    if earlier != first_line:  # else two different ids share a hash: not a repeat
                        raise DatasetError(
                            f"{path}: line {first_line}: id {row_id!r} in column {id_column!r} repeats line {earlier}"
                        )
                seen.add(fingerprint)
            count += 1
    if count == 0:
        raise DatasetError(f"{path}: the file has a header but no data rows")
    return header, count


def _first_line_of(path: Path, header: tuple[str, ...], encoding: str, id_index: int, row_id: str) -> int:
    column = header[id_index]
    for _, line, values in _records(path, header, encoding):
        if values[column].strip() == row_id:
            return line
    return 0

