"""The report writers, as two lists: a new format is one class and one entry here.

Results writers get every cell's record, chunk by chunk (results.csv, results.parquet); report
writers get the finished `Report` (summary.csv, comparison.csv, report.md, report.html). All
write into a `Staged` folder: temporary files renamed into place together at the end.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import operator
import shutil
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from evalrun.reports.explorer import ExplorerResults
from evalrun.reports.frontier import FrontierCsv
from evalrun.reports.report import Report
from evalrun.results.summary import COMPARISON_COLUMNS, SUMMARY_COLUMNS

__all__ = ["REPORT_WRITERS", "RESULTS_WRITERS", "ReportWriter", "ResultsWriter", "Staged"]


class Staged:
    """Files written beside their final names, renamed into place only when all succeeded; and
    scratch folders for what writers spill while the pass runs, removed at the end either way."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: list[tuple[Path, Path]] = []
        self._scratch: list[Path] = []

    def scratch(self, name: str) -> Path:
        """An empty folder `.{name}.tmp.d` in the run folder (one a crash left behind is cleared)."""
        path = self.folder / f".{name}.tmp.d"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        self._scratch.append(path)
        return path

    def _clear_scratch(self) -> None:
        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch = []

    def path(self, name: str) -> Path:
        final = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        self._files.append((temporary, final))
        return temporary

    def write_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        self._clear_scratch()
        for temporary, final in self._files:
            temporary.replace(final)
        self._files = []

    def abandon(self) -> None:
        self._clear_scratch()
        for temporary, _ in self._files:
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._files = []


class ResultsSink(Protocol):
    """Gets every cell: `records` are the results.csv rows, `cells` the stored cells they were
    scored from (with the row's values, the request body and the whole reply), in the same order."""

    def begin(self, columns: list[str]) -> None: ...
    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


class ResultsWriter(Protocol):
    filename: str
    needs_requests: bool  # whether its sink reads `request_json` from the cells

    def available(self) -> bool: ...
    def open(self, staged: Staged) -> ResultsSink: ...


class ReportWriter(Protocol):
    filename: str

    def available(self) -> bool: ...
    def write(self, staged: Staged, report: Report) -> None: ...


def csv_value(value: Any) -> Any:
    """A value as a CSV spells it: NaN and None are empty."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value  # the csv module writes None as an empty field


def write_csv(handle: IO[str], columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_value(row.get(c)) for c in columns])


class _CsvSink:
    def __init__(self, path: Path) -> None:
        self.handle = path.open("w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self.columns: list[str] = []

    def begin(self, columns: list[str]) -> None:
        self.columns = columns
        self._row = operator.itemgetter(*columns)
        self.writer.writerow(columns)

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        # Records carry every column, missing values as None (written empty): take them by position.
        self.writer.writerows(map(self._row, records))

    def close(self) -> None:
        self.handle.close()


class CsvResults:
    """results.csv: one row per cell, streamed."""

    filename = "results.csv"
    needs_requests = False

    def available(self) -> bool:
        return True

    def open(self, staged: Staged) -> ResultsSink:
        return _CsvSink(staged.path(self.filename))


class _ParquetSink:
    _INTS: ClassVar[set[str]] = {"repeat", "attempts", "shared_by"}
    _BOOLS: ClassVar[set[str]] = {"correct", "correct_auto"}
    _FLOATS: ClassVar[set[str]] = {"score", "cost_usd", "latency_s", "input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens", "thinking_tokens"}  # fmt: skip

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None
        self.schema: Any = None
        self.columns: list[str] = []

    def begin(self, columns: list[str]) -> None:
        import pyarrow as pa

        self.columns = columns
        fields = []
        for name in columns:
            if name in self._INTS:
                kind = pa.int64()
            elif name in self._BOOLS:
                kind = pa.bool_()
            elif name in self._FLOATS or name.startswith("correct_"):
                kind = pa.float64()
            else:
                kind = pa.string()
            fields.append(pa.field(name, kind))
        # pandas metadata, so that `correct` reads back as a nullable boolean (and the counts as
        # nullable ints) whether or not a cell is unscored: not bool in one run and object in another.
        self.schema = pa.schema(fields, metadata=_pandas_metadata(fields))

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        if not records:
            return
        # Every record has every column: take them by position, then transpose in C.
        columns = zip(*map(operator.itemgetter(*self.columns), records), strict=True)
        arrays = []
        for field_, column in zip(self.schema, columns, strict=True):
            values = list(column)
            try:  # almost always the values are already of the column's type: arrow converts them in C
                arrays.append(pa.array(values, type=field_.type, from_pandas=True))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
            if pa.types.is_string(field_.type):
                values = [v if v is None or isinstance(v, str) else str(v) for v in values]
            elif pa.types.is_floating(field_.type):
                values = [v if v is None or isinstance(v, float) else float(v) for v in values]
            arrays.append(pa.array(values, type=field_.type, from_pandas=True))
        try:
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        except OSError:
            self._drop()
            raise

    def close(self) -> None:
        import pyarrow.parquet as pq

        try:
            if self.writer is None:
                pq.ParquetWriter(self.path, self.schema).close()
            else:
                self.writer.close()
        except OSError:
            self._drop()
            raise

    def _drop(self) -> None:
        """Give up a writer that failed (a full disk): closed here, quietly, so that its finalizer
        does not try again and print "Exception ignored … Traceback" after the clear error."""
        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
            writer.is_open = False


def _pandas_metadata(fields: list[Any]) -> dict[bytes, bytes]:
    """The `pandas` schema metadata pyarrow writes for a frame of these columns, with nullable
    dtypes for booleans and ints."""
    import pyarrow as pa

    def dtype(field_: Any) -> tuple[str, str]:
        if pa.types.is_boolean(field_.type):
            return "boolean", "boolean"
        if pa.types.is_integer(field_.type):
            return "int64", "Int64"
        if pa.types.is_floating(field_.type):
            return "float64", "float64"
        return "unicode", "object"

    columns = [{"name": f.name, "field_name": f.name, "pandas_type": dtype(f)[0], "numpy_type": dtype(f)[1],
                "metadata": None} for f in fields]  # fmt: skip
    meta = {"index_columns": [], "column_indexes": [], "columns": columns, "attributes": {},
            "creator": {"library": "evalrun"}, "pandas_version": "2.0.0"}  # fmt: skip
    return {b"pandas": json.dumps(meta).encode()}


class ParquetResults:
    """results.parquet: the same rows typed, for pandas, DuckDB and Spark (needs pyarrow)."""

    filename = "results.parquet"
    needs_requests = False

    def available(self) -> bool:
        return importlib.util.find_spec("pyarrow") is not None

    def open(self, staged: Staged) -> ResultsSink:
        return _ParquetSink(staged.path(self.filename))


class SummaryCsv:
    filename = "summary.csv"

    def available(self) -> bool:
        return True

    def write(self, staged: Staged, report: Report) -> None:
        with staged.path(self.filename).open("w", encoding="utf-8", newline="") as handle:
            write_csv(handle, summary_columns(report), report.summary)


def summary_columns(report: Report) -> list[str]:
    extra = [c for row in report.summary for c in row if c not in SUMMARY_COLUMNS]
    return SUMMARY_COLUMNS + list(dict.fromkeys(extra))


class ComparisonCsv:
    filename = "comparison.csv"

    def available(self) -> bool:
        return True

    def write(self, staged: Staged, report: Report) -> None:
        if report.comparison is None:
            return
        with staged.path(self.filename).open("w", encoding="utf-8", newline="") as handle:
            write_csv(handle, COMPARISON_COLUMNS, report.comparison)


class MarkdownReport:
    filename = "report.md"

    def available(self) -> bool:
        return True

    def write(self, staged: Staged, report: Report) -> None:
        from evalrun.reports.markdown import render_markdown

        staged.write_text(self.filename, render_markdown(report))


class HtmlReport:
    filename = "report.html"

    def available(self) -> bool:
        return True

    def write(self, staged: Staged, report: Report) -> None:
        from evalrun.reports.explorer import collected
        from evalrun.reports.html import write_report

        with staged.path(self.filename).open("w", encoding="utf-8", errors="replace") as handle:
            write_report(handle, report, explorer=collected(staged))


RESULTS_WRITERS: list[ResultsWriter] = [CsvResults(), ParquetResults(), ExplorerResults()]
REPORT_WRITERS: list[ReportWriter] = [SummaryCsv(), ComparisonCsv(), FrontierCsv(), MarkdownReport(), HtmlReport()]
