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
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.errors import NotARunFolder, StoreError
from evalrun.gctune import fewer_collections
from evalrun.reports.frontier import frontier_rows
from evalrun.reports.report import Report
from evalrun.results.summary import compare_tallies, summarize
from evalrun.results.tally import RepeatTally, ResultsPass, VariantTally, repeat_pass
from evalrun.spec import ScorerSpec, parse_scorer
from evalrun.store.run_store import STORE_NAME, Store
from evalrun.version import __version__

__all__ = ["Report", "analyze", "build_reports", "default_comparison_by", "load_results", "open_run", "report_state"]

_CHUNK = 5000


def open_run(folder: Path, *, readonly: bool = False) -> tuple[Store, dict[str, Any]]:
    """A run folder's store and the settings of its last run (`readonly`: touch nothing)."""
    if not folder.exists():
        raise NotARunFolder(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotARunFolder(f"{folder}: not a folder")
    if not (folder / STORE_NAME).exists():
        raise NotARunFolder(f"{folder}: not a run folder: no {STORE_NAME} here (give reports/<name>/<run>/)")
    # A folder that cannot be written (a read-only copy, an archive) is read without a change.
    store = Store.open_readonly(folder) if readonly or not writable(folder) else Store.open(folder, create=False)
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
    for row_seq, cluster in store.row_clusters():
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
        repeats = repeat_pass(store.iter_cells(chunk=_CHUNK, order="row"), results.reviewed_counted_score, rows=rows)
    clusters = _clusters(store, rows)
    reducer = str(settings.get("reducer") or "mean")
    scorer = parse_scorer(settings["scorer"])
    summary = summarize(tallies, clusters=clusters, reducer=reducer, repeats=repeats, scorer=scorer)
    by = default_comparison_by(tallies)
    comparison = (
        compare_tallies(tallies, by=by, clusters=clusters, reducer=reducer, repeats=repeats, seed=seed)
        if by is not None
        else None
    )
    totals = _totals(store, tallies, rows, clusters)
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
        choices=report_choices(scorer, tallies),
        totals=totals,
        frontier=frontier_rows(tallies, summary, clusters=clusters, reducer=reducer, repeats=repeats),
    )


def report_choices(scorer: ScorerSpec, tallies: Sequence[VariantTally]) -> list[str]:
    """The letters the report's letter tables show: the scorer's choices, or, when each row
    letters its own options (`options`), A to the furthest letter a target or answer reached."""
    if scorer.type != "choice":
        return []
    if scorer.options is None:
        return list(scorer.choices or ())
    from evalrun.plan.paths import LETTERS

    seen = {x for t in tallies for (_, answer, target, _) in t.outcomes for x in (answer, target) if x in LETTERS}
    return list(LETTERS[: max((LETTERS.index(x) + 1 for x in seen), default=4)])


_SUMMED = ("cells", "answered", "errors", "pending", "from_cache", "paid_usd", "cost_usd", "cost_unknown",
           "uncached_usd", "realtime_usd")  # fmt: skip
_TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _totals(store: Store, tallies: list[VariantTally], rows: int, clusters: np.ndarray | None) -> dict[str, Any]:
    """The run's totals over every model × prompt."""
    totals: dict[str, Any] = {name: sum(getattr(t, name) for t in tallies) for name in _SUMMED}
    totals.update(
        rows=rows,
        clusters=int(clusters.max() + 1) if clusters is not None else None,
        requests=store.request_count(),
        spent_usd=store.spent_usd(),
    )
    for column in _TOKENS:
        totals[column] = round(sum(t.tokens[column] for t in tallies))
    return totals


def report_state(store: Store) -> str:
    """Changes whenever anything a report shows could have changed."""
    count, top = store.responses_mark()
    cells = store.count_cells()
    reviews = store.review_state()  # a human review changes the scores
    return f"{count}:{top}:{cells}:{store.meta().get('plan_fingerprint', '')}:{reviews}:{__version__}"


def writable(folder: Path) -> bool:
    """Whether the run folder and its store can be written (a read-only copy, an archive: not)."""
    return os.access(folder, os.W_OK) and os.access(folder / STORE_NAME, os.W_OK)


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
    by `spawn_explorer(folder, scratch)` (default `ExplorerProcess.start`). A read-only folder is
    read without a change; its reports cannot be rewritten (a StoreError says so)."""
    folder = Path(folder)
    store, settings = open_run(folder)
    with store:
        state = report_state(store)
        if not force and _up_to_date(store, folder, state):
            return folder
        if not writable(folder):
            raise StoreError(f"{folder}: the run folder is read-only, so its reports cannot be rewritten there; "
                             "copy the folder somewhere writable and run `evalrun report` on the copy")  # fmt: skip
        _write_reports(folder, store, settings, parallel_cells=parallel_cells, spawn_explorer=spawn_explorer)
        with contextlib.suppress(StoreError):
            store.set_meta(reports_state=state)
    return folder


def _up_to_date(store: Store, folder: Path, state: Any) -> bool:
    from evalrun.reports.writers import REPORT_WRITERS, RESULTS_WRITERS

    names = [w.filename for w in RESULTS_WRITERS if w.available()]
    names += [w.filename for w in REPORT_WRITERS if w.available() and w.filename != "comparison.csv"]
    return bool(store.meta().get("reports_state") == state and all((folder / n).exists() for n in names))


def _write_reports(
    folder: Path, store: Store, settings: dict[str, Any], *, parallel_cells: int | None,
    spawn_explorer: Callable[[Path, Path], Any] | None,
) -> None:  # fmt: skip
    """Stage every report file and commit them together; nothing half-written is left."""
    from evalrun.reports.explorer import ExplorerResults
    from evalrun.reports.explorer_process import PARALLEL_CELLS, ExplorerProcess
    from evalrun.reports.writers import RESULTS_WRITERS, Staged

    staged = Staged(folder)
    child: ExplorerProcess | None = None
    try:
        writers = [w for w in RESULTS_WRITERS if w.available()]
        if store.count_cells() >= (PARALLEL_CELLS if parallel_cells is None else parallel_cells):
            child = (spawn_explorer or ExplorerProcess.start)(folder, staged.scratch("explorer"))
            if child is not None:
                writers = [w for w in writers if not isinstance(w, ExplorerResults)]
        _stage(staged, store, settings, writers, child)
        staged.commit()
    except OSError as exc:
        if child is not None:
            child.stop()
        staged.abandon()
        raise StoreError(f"{folder}: cannot write the reports ({_why(exc)}); nothing was lost: "
                         f"free space and run `evalrun report {folder}`") from None
    except BaseException:
        if child is not None:
            child.stop()
        staged.abandon()
        raise


def _why(exc: OSError) -> str:
    """An OSError's reason in a few words (pyarrow's own carry `[errno N]` in a long message)."""
    found = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
    number = exc.errno or (int(found.group(1)) if found else None)
    return exc.strerror or (os.strerror(number) if number else str(exc))


def _stage(staged: Any, store: Store, settings: dict[str, Any], writers: list[Any], child: Any) -> None:
    """One streaming pass over the cells into the results writers, then the report writers."""
    from evalrun.reports.baseline import baseline_of
    from evalrun.reports.explorer import ExplorerResults, hand_over
    from evalrun.reports.explorer_process import explore
    from evalrun.reports.trend import trend_of
    from evalrun.reports.writers import REPORT_WRITERS

    sinks = [w.open(staged) for w in writers]
    columns = ResultsPass(settings, rows=0, variants=[]).columns  # for the columns only
    for sink in sinks:
        sink.begin(columns)
    with fewer_collections():
        report = analyze(
            store, settings, folder=staged.folder, sink=_Fanout(sinks),
            with_requests=any(w.needs_requests for w in writers),
        )  # fmt: skip
        report.baseline = baseline_of(staged.folder, store)
        report.trend = trend_of(staged.folder, settings, report.summary, (store.runs() or [{}])[-1].get("started_at"))
        for sink in sinks:
            sink.close()
        if child is not None:
            built: Any = child.result()
            if built is None:  # the child failed: the explorer's pass here, after all
                built = ExplorerResults().open(staged)
                explore(store, settings, built)
            hand_over(staged, built)
        for writer in REPORT_WRITERS:
            writer.write(staged, report)


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
