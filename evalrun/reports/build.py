"""The report files of a run folder, always rebuilt from its store in one streaming pass.

`build_reports(folder)` is what `evalrun run` calls at the end and what `evalrun report` calls on
its own. Cells are read from the store in chunks, scored once, streamed to the results writers
(CSV, Parquet) and tallied; the report writers (summary and comparison CSVs, Markdown, HTML)
then get one `Report` built from the tallies. Every file is written beside its final name and
renamed into place only when all of them were written, so a failed write (a full disk) leaves
the previous reports and is reported as a failure, never as success.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalrun import __version__
from evalrun.errors import NotARunFolder, StoreError
from evalrun.gctune import fewer_collections
from evalrun.reports.frontier import frontier_rows
from evalrun.results.summary import compare_tallies, summarize
from evalrun.results.tally import RepeatTally, ResultsPass, VariantTally, repeat_pass
from evalrun.spec import ScorerSpec
from evalrun.store.run_store import STORE_NAME, Store

__all__ = ["Report", "analyze", "build_reports", "default_comparison_by", "load_results", "open_run", "report_state"]

_CHUNK = 5000


@dataclass
class Report:
    """Everything the report writers need, built from the tallies (never from all cells at once)."""

    folder: Path
    settings: Mapping[str, Any]
    tallies: list[VariantTally]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]] | None
    comparison_by: str | None
    repeats: dict[tuple[str, str], RepeatTally]
    columns: list[str]
    simulated: bool
    clusters: np.ndarray | None = None
    choices: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    frontier: list[dict[str, Any]] = field(default_factory=list)  # evalrun.reports.frontier

    @property
    def failure(self) -> str | None:
        """Why the run's accuracy cannot be trusted as a whole, or None."""
        sent = self.totals["answered"] + self.totals["errors"]
        if self.totals["cells"] and self.totals["answered"] == 0:
            if self.totals["errors"]:
                return f"every request failed ({self.totals['errors']} errors): there is no accuracy to report"
            return "nothing was answered yet: there is no accuracy to report"
        if sent and self.totals["errors"] / sent > 0.5:
            return f"most requests failed ({self.totals['errors']} of {sent}): the accuracy rests on the few answered"
        return None


def open_run(folder: Path, *, readonly: bool = False) -> tuple[Store, dict[str, Any]]:
    """A run folder's store and the settings of its last run (`readonly`: touch nothing)."""
    if not folder.exists():
        raise NotARunFolder(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotARunFolder(f"{folder}: not a folder")
    if not (folder / STORE_NAME).exists():
        raise NotARunFolder(f"{folder}: not a run folder: no {STORE_NAME} here (give reports/<name>/<run>/)")
    store = Store.open_readonly(folder) if readonly else Store.open(folder, create=False)
    settings = store.last_settings()
    if not settings:
        store.close()
        raise StoreError(f"{folder}: the store has no run recorded")
    return store, settings


def default_comparison_by(tallies: list[VariantTally]) -> str | None:
    """Prompts compared within each model when there are several prompts, else models."""
    if len({t.prompt for t in tallies}) > 1:
        return "prompt"
    if len({t.model for t in tallies}) > 1:
        return "model"
    return None


def _clusters(store: Store, rows: int) -> np.ndarray | None:
    codes = np.full(rows, -1, dtype=np.int64)
    seen: dict[str, int] = {}
    any_cluster = False
    for row_seq, cluster in store.query("SELECT row_seq, cluster FROM rows ORDER BY row_seq"):
        if cluster is None:
            continue
        any_cluster = True
        codes[row_seq] = seen.setdefault(cluster, len(seen))
    return codes if any_cluster else None


def analyze(
    store: Store,
    settings: Mapping[str, Any],
    *,
    folder: Path,
    sink: Any = None,
    seed: int = 0,
    with_requests: bool = False,
) -> Report:
    """Score every cell once (streaming records and cells to `sink.write(records, cells)`) and
    build the Report."""
    results = ResultsPass.of_run(settings, store)
    rows = results.rows
    for chunk in store.iter_cells(chunk=_CHUNK, with_requests=with_requests):
        records = list(results.records(chunk))
        if sink is not None:
            sink.write(records, chunk)
    tallies = [t for t in results.tallies.values() if t.cells]
    repeats: dict[tuple[str, str], RepeatTally] = {}
    if results.max_repeat > 0:
        repeats = repeat_pass(store.iter_cells(chunk=_CHUNK, order="row"), results.score, rows=rows)
    clusters = _clusters(store, rows)
    reducer = str(settings.get("reducer") or "mean")
    scorer = ScorerSpec.model_validate(settings["scorer"])
    summary = summarize(tallies, clusters=clusters, reducer=reducer, repeats=repeats, scorer=scorer)
    by = default_comparison_by(tallies)
    comparison = (
        compare_tallies(tallies, by=by, clusters=clusters, reducer=reducer, repeats=repeats, seed=seed)
        if by is not None
        else None
    )
    totals: dict[str, Any] = {
        "cells": sum(t.cells for t in tallies),
        "answered": sum(t.answered for t in tallies),
        "errors": sum(t.errors for t in tallies),
        "pending": sum(t.pending for t in tallies),
        "from_cache": sum(t.from_cache for t in tallies),
        "paid_usd": sum(t.paid_usd for t in tallies),
        "cost_usd": sum(t.cost_usd for t in tallies),
        "cost_unknown": sum(t.cost_unknown for t in tallies),
        "uncached_usd": sum(t.uncached_usd for t in tallies),
        "realtime_usd": sum(t.realtime_usd for t in tallies),
        "rows": rows,
        "clusters": int(clusters.max() + 1) if clusters is not None else None,
        "requests": store.request_count(),
        "spent_usd": store.spent_usd(),
    }
    for column in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        totals[column] = round(sum(t.tokens[column] for t in tallies))
    return Report(
        folder=folder,
        settings=settings,
        tallies=tallies,
        summary=summary,
        comparison=comparison,
        comparison_by=by,
        repeats=repeats,
        columns=results.columns,
        simulated=settings.get("endpoint") == "simulator" or results.simulated > 0,
        clusters=clusters,
        choices=list(scorer.choices or ()) if scorer.type == "choice" else [],
        totals=totals,
        frontier=frontier_rows(tallies, summary, clusters=clusters, reducer=reducer, repeats=repeats),
    )


def report_state(store: Store) -> str:
    """Changes whenever anything a report shows could have changed."""
    (count, top) = store.query("SELECT count(*), coalesce(max(rowid), 0) FROM responses")[0]
    (cells,) = store.query("SELECT count(*) FROM cells")[0]
    return f"{count}:{top}:{cells}:{store.meta().get('plan_fingerprint', '')}:{__version__}"


def build_reports(
    folder: str | Path,
    *,
    force: bool = True,
    parallel_cells: int | None = None,
    spawn_explorer: Callable[[Path, Path], Any] | None = None,
) -> Path:
    """Write every report file into the run folder. With `force=False` nothing is rewritten
    when the store has not changed since the reports were last written. From `parallel_cells`
    cells on (default `PARALLEL_CELLS`), the explorer's pass runs in a second process, started
    by `spawn_explorer(folder, scratch)` (default `ExplorerProcess.start`)."""
    from evalrun.reports.explorer import ExplorerResults, hand_over
    from evalrun.reports.explorer_process import PARALLEL_CELLS, ExplorerProcess, explore
    from evalrun.reports.writers import REPORT_WRITERS, RESULTS_WRITERS, Staged

    folder = Path(folder)
    store, settings = open_run(folder)
    child: ExplorerProcess | None = None
    with store:
        state = report_state(store)
        names = [w.filename for w in RESULTS_WRITERS if w.available()]
        names += [w.filename for w in REPORT_WRITERS if w.available() and w.filename != "comparison.csv"]
        if not force and store.meta().get("reports_state") == state and all((folder / n).exists() for n in names):
            return folder
        staged = Staged(folder)
        try:
            writers = [w for w in RESULTS_WRITERS if w.available()]
            (cells,) = store.query("SELECT count(*) FROM cells")[0]
            if cells >= (PARALLEL_CELLS if parallel_cells is None else parallel_cells):
                child = (spawn_explorer or ExplorerProcess.start)(folder, staged.scratch("explorer"))
                if child is not None:
                    writers = [w for w in writers if not isinstance(w, ExplorerResults)]
            sinks = [w.open(staged) for w in writers]
            results = ResultsPass(settings, rows=0, variants=[])  # for the columns only
            columns = results.columns
            for sink in sinks:
                sink.begin(columns)
            with fewer_collections():
                report = analyze(
                    store, settings, folder=folder, sink=_Fanout(sinks),
                    with_requests=any(w.needs_requests for w in writers),
                )  # fmt: skip
                for sink in sinks:
                    sink.close()
                if child is not None:
                    built: Any = child.result()
                    if built is None:  # the child failed: the explorer's pass here, after all
                        sink = ExplorerResults().open(staged)
                        explore(store, settings, sink)
                        built = sink
                    hand_over(staged, built)
                for writer in REPORT_WRITERS:
                    writer.write(staged, report)
            staged.commit()
        except OSError as exc:
            if child is not None:
                child.stop()
            staged.abandon()
            raise StoreError(f"{folder}: cannot write the reports ({exc.strerror or exc}); nothing was lost: "
                             f"free space and run `evalrun report {folder}`") from None
        except BaseException:
            if child is not None:
                child.stop()
            staged.abandon()
            raise
        with contextlib.suppress(StoreError):
            store.set_meta(reports_state=state)
    return folder


class _Fanout:
    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def write(self, records: list[dict[str, Any]], cells: list[dict[str, Any]]) -> None:
        for sink in self.sinks:
            sink.write(records, cells)


def iter_records(folder: str | Path) -> Iterator[dict[str, Any]]:
    """Every cell's result record (a results.csv row as a dict), streamed from the store."""
    store, settings = open_run(Path(folder))
    with store:
        results = ResultsPass.of_run(settings, store)
        for chunk in store.iter_cells(chunk=_CHUNK):
            yield from results.records(chunk)


def load_results(folder: str | Path) -> Any:
    """The per-cell results of a run folder as a pandas DataFrame, rebuilt from its store."""
    import pandas as pd

    store, settings = open_run(Path(folder))
    with store:
        results = ResultsPass.of_run(settings, store)
        records = [record for chunk in store.iter_cells(chunk=_CHUNK) for record in results.records(chunk)]
    frame = pd.DataFrame.from_records(records, columns=results.columns)
    frame["repeat"] = frame["repeat"].astype("int64")
    frame["correct"] = frame["correct"].astype("boolean")  # empty (<NA>) where there is no answer
    return frame


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))
