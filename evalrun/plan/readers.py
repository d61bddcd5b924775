"""Dataset readers: a file (or a saved Hugging Face dataset) → rows, one at a time.

Each reader knows one format and nothing else: it yields `(number, values)` for every record,
where `number` is the record's 1-based line (CSV, JSONL, JSON) or record number (Parquet, a
Hugging Face dataset) and `values` a mapping that may nest. A malformed record is a DatasetError
naming the file and the line or record. Nothing after the reader sees a file format, and no
reader holds more than one batch of records: memory stays flat in the size of the file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, cast

from evalrun.errors import DatasetError

__all__ = ["FORMATS", "Reader", "format_of", "make_reader"]

csv.field_size_limit(1 << 27)  # long documents in a cell are legitimate eval inputs

FORMATS = ("csv", "jsonl", "json", "parquet", "hf")
Record = tuple[int, dict[str, Any]]
_SPACES = re.compile(r"[ \t\r\n]*")


def format_of(path: Path) -> str:
    """The format a file's name says (`.csv`, `.jsonl`, `.jsonl.gz`, `.json`, `.parquet`); CSV
    for any other name, as before there were other formats."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        return "json"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


def _text_codec(encoding: str) -> str:
    # utf-8-sig: a byte-order mark must not end up in the first column's (or key's) name.
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def first_bad_line(path: Path, encoding: str) -> int:
    """The first line of a file that is not valid `encoding` text (0 if none is found)."""
    decoder = codecs.getincrementaldecoder(_text_codec(encoding))()
    with _open_binary(path) as raw:
        for number, data in enumerate(raw, start=1):
            try:
                decoder.decode(data)
            except UnicodeDecodeError:
                return number
    return 0


@dataclass(frozen=True)
class Reader:
    """One dataset file in one format; `unit` names a record's number in messages."""

    path: Path
    encoding: str = "utf-8"
    unit: ClassVar[str] = "line"
    # Every record has every column, as text: plain placeholders were checked with the header.
    flat: ClassVar[bool] = False

    def header(self) -> tuple[str, ...] | None:
        """The file's declared columns, checked (CSV), or None when records carry their own keys."""
        return None

    def records(self) -> Iterator[Record]:
        """Every record with its number, in file order."""
        raise NotImplementedError

    def digest(self) -> str:
        """SHA-256 of what the dataset is made of (the file's bytes)."""
        digest = hashlib.sha256()
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def where(self, number: int) -> str:
        return f"{self.path}: {self.unit} {number}"


# -- CSV ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvReader(Reader):
    """A CSV file with a header row; a quoted field may span lines (its first line names it)."""

    flat: ClassVar[bool] = True

    def _open(self) -> IO[str]:
        return self.path.open(encoding=_text_codec(self.encoding), newline="")

    def header(self) -> tuple[str, ...]:
        with self._open() as f:
            first = next(csv.reader(f, strict=True), None)
        if first is None or not any(cell.strip() for cell in first):
            raise DatasetError(f"{self.path}: the file is empty; expected a header row and at least one data row")
        header = tuple(cell.strip() for cell in first)
        for index, name in enumerate(header):
            if not name:
                raise DatasetError(f"{self.path}: line 1: column {index + 1} has no name")
            if header.index(name) != index:
                raise DatasetError(f"{self.path}: line 1: column name {name!r} appears twice")
        return header

    def records(self) -> Iterator[Record]:
        with self._open() as f:
            reader = csv.reader(f, strict=True)
            first = next(reader, None)
            header = tuple(cell.strip() for cell in first or ())
            last_line = reader.line_num
            for record in reader:
                first_line, last_line = last_line + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if len(record) != len(header):
                    raise DatasetError(
                        f"{self.path}: line {first_line}: {len(record)} fields, but the header has {len(header)} "
                        f"(a stray comma, or a value with a comma that needs quotes?)"
                    )
                yield first_line, dict(zip(header, record, strict=True))


# -- JSON Lines ---------------------------------------------------------------------------------
def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: expected a JSON object (a row), got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class JsonlReader(Reader):
    """One JSON object per line (`.jsonl`, gzip-compressed as `.jsonl.gz`); blank lines are skipped."""

    def records(self) -> Iterator[Record]:
        codec = _text_codec(self.encoding)
        with _open_binary(self.path) as raw:
            for number, data in enumerate(raw, start=1):
                try:
                    line = data.decode(codec if number == 1 else self.encoding)
                except UnicodeDecodeError:
                    raise DatasetError(
                        f"{self.path}: line {number}: not valid {self.encoding} text; set `dataset.encoding`"
                    ) from None
                if not line.strip():
                    continue
                try:
                    # Without its newline: a record cut short is an unterminated string, not a
                    # string holding the line's own newline ("invalid control character").
                    value = json.loads(line.rstrip("\r\n"))
                except ValueError as exc:
                    raise DatasetError(f"{self.path}: line {number}: not valid JSON ({_reason(exc)})") from None
                yield number, _object(value, f"{self.path}: line {number}")


def _reason(exc: ValueError) -> str:
    """What is wrong in a JSONL line and where in it (json's message, which may end in " at")."""
    if not isinstance(exc, json.JSONDecodeError):
        return str(exc)
    return f"{exc.msg.removesuffix(' at').removesuffix(':')} at column {exc.colno}"


# -- a JSON array -------------------------------------------------------------------------------
class _Buffer:
    """A window on a text stream for decoding one JSON value after another, counting lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.text, self.pos, self.line, self.eof = stream, "", 0, 1, False
        self.chunk = 1 << 16

    def fill(self) -> bool:
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.text = self.text[self.pos :] + data
        self.pos = 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.text.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        """The next non-space character ('' at the end), with the spaces before it consumed."""
        while True:
            self.advance(_SPACES.match(self.text, self.pos).end())  # type: ignore[union-attr]
            if self.pos < len(self.text) or not self.fill():
                return self.text[self.pos : self.pos + 1]


@dataclass(frozen=True)
class JsonReader(Reader):
    """A JSON array of objects, decoded one object at a time (never the whole file at once)."""

    def records(self) -> Iterator[Record]:
        with _open_binary(self.path) as raw, codecs.getreader(_text_codec(self.encoding))(raw) as stream:
            buffer = _Buffer(cast(IO[str], stream))
            if buffer.peek() != "[":
                raise DatasetError(f"{self.path}: line {buffer.line}: expected a JSON array of objects ('[' first)")
            buffer.advance(buffer.pos + 1)
            decoder = json.JSONDecoder()
            if buffer.peek() == "]":
                return
            while True:
                buffer.peek()  # the spaces before a record
                line = buffer.line
                value = self._decode(buffer, decoder)
                yield line, _object(value, f"{self.path}: line {line}")
                after = buffer.peek()
                buffer.advance(buffer.pos + 1)
                if after == "]":
                    break
                if after != ",":
                    raise DatasetError(f"{self.path}: line {buffer.line}: expected ',' or ']' after a row")
            if buffer.peek():
                raise DatasetError(f"{self.path}: line {buffer.line}: text after the end of the array")

    def _decode(self, buffer: _Buffer, decoder: json.JSONDecoder) -> Any:
        while True:
            try:
                value, end = decoder.raw_decode(buffer.text, buffer.pos)
            except json.JSONDecodeError as exc:
                if buffer.eof or not buffer.fill():
                    line = buffer.line + buffer.text.count("\n", buffer.pos, exc.pos)
                    raise DatasetError(f"{self.path}: line {line}: not valid JSON ({exc.msg})") from None
                buffer.chunk *= 2  # a long record: read more at a time
                continue
            buffer.advance(end)
            return value


# -- Parquet ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetReader(Reader):
    """A Parquet file, read in record batches with pyarrow (nested columns become objects and lists)."""

    unit: ClassVar[str] = "record"

    def _file(self) -> Any:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetError(
                f"{self.path}: reading Parquet needs pyarrow, which is not installed "
                f"(pip install 'evalrun[parquet]')"
            ) from None
        try:
            return pq.ParquetFile(self.path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DatasetError(f"{self.path}: not a readable Parquet file ({exc})") from None

    def header(self) -> tuple[str, ...]:
        return tuple(self._file().schema_arrow.names)

    def records(self) -> Iterator[Record]:
        number = 0
        for batch in self._file().iter_batches(batch_size=2048):
            for values in batch.to_pylist():
                number += 1
                yield number, values


# -- a saved Hugging Face dataset -----------------------------------------------------------------
@dataclass(frozen=True)
class HfReader(Reader):
    """A Hugging Face dataset saved with `save_to_disk` (memory-mapped Arrow; never downloaded)."""

    split: str | None = None
    unit: ClassVar[str] = "record"

    def _dataset(self) -> Any:
        try:
            hf = importlib.import_module("datasets")
            load_from_disk, dataset_dict = hf.load_from_disk, hf.DatasetDict
        except (ImportError, AttributeError):
            raise DatasetError(
                f"{self.path}: dataset.hf reads a Hugging Face dataset saved with save_to_disk and needs the "
                f"`datasets` package, which is not installed (pip install datasets); evalrun never downloads one"
            ) from None
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: no saved Hugging Face dataset here (dataset.hf names its folder)")
        try:
            loaded = load_from_disk(str(self.path))
        except (OSError, ValueError, FileNotFoundError) as exc:
            raise DatasetError(f"{self.path}: not a saved Hugging Face dataset ({exc})") from None
        if isinstance(loaded, dataset_dict):
            splits = sorted(loaded)
            if self.split is None and len(splits) == 1:
                return loaded[splits[0]]
            if self.split not in loaded:
                raise DatasetError(
                    f"{self.path}: dataset.split {self.split!r} is not one of the saved splits ({', '.join(splits)})"
                )
            return loaded[self.split]
        return loaded

    def header(self) -> tuple[str, ...]:
        return tuple(self._dataset().column_names)

    def records(self) -> Iterator[Record]:
        for number, values in enumerate(self._dataset(), start=1):
            yield number, dict(values)

    def digest(self) -> str:
        digest = hashlib.sha256(f"split={self.split}\n".encode())
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(self.path)).encode() + b"\0")
            with file.open("rb") as raw:
                while chunk := raw.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()


_READERS: dict[str, Callable[..., Reader]] = {
    "csv": CsvReader,
    "jsonl": JsonlReader,
    "json": JsonReader,
    "parquet": ParquetReader,
    "hf": HfReader,
}


def make_reader(path: Path, *, format: str | None = None, encoding: str = "utf-8", split: str | None = None) -> Reader:
    """The reader for a dataset: the format given, or the one its name says."""
    kind = format or format_of(path)
    if kind == "hf":
        return HfReader(path, encoding, split=split)
    return _READERS[kind](path, encoding)
