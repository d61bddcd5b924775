"""The Python API: the same engine as the CLI, for scripts and notebooks.

    import evalrun
    run = evalrun.run("experiment.yaml", sim=True, limit=20)
    run.status, run.cost_usd        # "complete", 0.0123
    run.summary                     # a DataFrame, equal to summary.csv

`run()` is synchronous and works where an event loop is already running (a Jupyter cell): the
run then goes on in a worker thread with a loop of its own. `await arun(...)` in async code.

What raises and what returns. A run that went to its end, or stopped at a limit it was given,
returns a `Run` whose `status` says how it ended (`complete`, `failed cells`, `stopped at
budget`, `stopped at deadline`, `interrupted`): it is a finished run with a report, and running
it again resumes. Whatever keeps a run from starting or from going on raises from the exception
tree (`evalrun.errors`): a bad spec or dataset (`SpecError`, `DatasetError`), a missing key, a
folder that holds another experiment, a key the API refuses or a model it does not know
(`RunStopped`, its `model` says which). Nothing raises `SystemExit`.

More functions (`diff`, `gate`, ...) are added here as one function each, next to `compare`.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from evalrun.errors import (
    BudgetExceeded,
    DeadlineReached,
    NotARunFolder,
    RunFailed,
    RunInterrupted,
    SpecError,
)

if TYPE_CHECKING:
    import pandas as pd

    from evalrun.engine.costing import Estimate
    from evalrun.engine.prepare import SpecInput
    from evalrun.send.runner import Runner, RunStats

__all__ = ["Run", "arun", "compare", "estimate", "run"]

T = TypeVar("T")

# A run's stored status → (what `Run.status` says, the CLI's exit code for it).
_STATUSES: dict[str, tuple[str, int]] = {
    "complete": ("complete", 0),
    "failed cells": ("failed cells", 4),
    "budget": ("stopped at budget", 3),
    "deadline": ("stopped at deadline", 5),
    "stopped": ("stopped", 1),
    "interrupted": ("interrupted", 130),
    "failed": ("failed", 1),
    "aborted": ("aborted", 1),
    "running": ("running", 0),
}


@dataclass(frozen=True)
class Run:
    """A run folder and how its last run ended. The tables are read from the folder's CSV files
    when first asked for (pandas loads then), so they equal what `pd.read_csv` gives for them."""

    folder: Path
    status: str
    exit_code: int
    cost_usd: float
    stop_reason: str | None = None
    message: str | None = None  # the one line the CLI would end with, for a run that did not complete
    warnings: tuple[str, ...] = ()
    _frames: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        """The run folder `folder` as it is now (its last run's status; nothing is changed)."""
        return _open(Path(folder))

    @property
    def report_html(self) -> Path:
        """The folder's report.html."""
        return self.folder / "report.html"

    @property
    def report_md(self) -> Path:
        """The folder's report.md."""
        return self.folder / "report.md"

    @property
    def results(self) -> pd.DataFrame:
        """One row per cell: results.csv."""
        return self._table("results.csv")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per model × prompt: summary.csv."""
        return self._table("summary.csv")

    @property
    def comparison(self) -> pd.DataFrame | None:
        """The paired comparisons (comparison.csv), None when the run has nothing to compare."""
        if not (self.folder / "comparison.csv").exists():
            return None
        return self._table("comparison.csv")

    def _table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        if name not in self._frames:
            path = self.folder / name
            if not path.exists():
                raise NotARunFolder(f"{path}: not written (run `evalrun report {self.folder}` to rebuild the reports)")
            self._frames[name] = pd.read_csv(path)
        frame: pd.DataFrame = self._frames[name].copy()
        return frame


def _open(folder: Path, *, message: str | None = None, warnings: tuple[str, ...] = ()) -> Run:
    from evalrun.reports.build import open_run

    store, _settings = open_run(folder, readonly=True) if _current(folder) else open_run(folder)
    with store:
        runs = store.runs()
        stored = str(runs[-1]["status"]) if runs else "running"
        stop = store.last_stop()
        spent = store.spent_usd()
    status, code = _STATUSES.get(stored, (stored, 1))
    reason = str(stop["reason"]) if stop else None
    return Run(folder, status, code, spent, stop_reason=reason, message=message, warnings=warnings)


def _current(folder: Path) -> bool:
    """Whether the folder's store needs no migration (so it can be read touching nothing)."""
    from evalrun.errors import StoreError
    from evalrun.store.run_store import Store

    try:
        Store.open_readonly(folder).close()
    except StoreError:
        return False
    return True


def run(
    spec: SpecInput,
    *,
    sim: bool = False,
    out: str | Path | None = None,
    limit: int | None = None,
    batch: bool | None = None,
    budget: float | None = None,
    deadline: float | str | None = None,
    fresh: bool = False,
    cache: bool = True,
    progress: Callable[[RunStats], None] | None = None,
) -> Run:
    """Run an experiment (a spec file, a spec mapping or an `Experiment`) and return its `Run`.

    `sim` sends to the built-in simulator; `out` is the run folder (default
    reports/<name>/<plan id>/ under the current folder); `limit` the first N rows; `batch` sends
    through the Message Batches API (None: as the spec says); `budget` in USD and `deadline` (seconds
    or "30m") stop the run cleanly; `fresh` forgets stored answers (and sets a different
    experiment's store aside); `cache=False` skips the shared response cache; `progress` is
    called with the run loop's counters. See the module docstring for what raises.
    """
    runners: list[Runner] = []

    def stop() -> None:
        for runner in runners[-1:]:
            runner.request_stop()

    return _sync(
        lambda: _arun(spec, sim=sim, out=out, limit=limit, batch=batch, budget=budget, deadline=deadline,
                      fresh=fresh, cache=cache, progress=progress, on_runner=runners.append),
        on_interrupt=stop,
    )  # fmt: skip


async def arun(
    spec: SpecInput,
    *,
    sim: bool = False,
    out: str | Path | None = None,
    limit: int | None = None,
    batch: bool | None = None,
    budget: float | None = None,
    deadline: float | str | None = None,
    fresh: bool = False,
    cache: bool = True,
    progress: Callable[[RunStats], None] | None = None,
) -> Run:
    """`run` for async code: `await evalrun.arun(...)`."""
    return await _arun(spec, sim=sim, out=out, limit=limit, batch=batch, budget=budget, deadline=deadline,
                       fresh=fresh, cache=cache, progress=progress)  # fmt: skip


async def _arun(
    spec: SpecInput,
    *,
    sim: bool,
    out: str | Path | None,
    limit: int | None,
    batch: bool | None,
    budget: float | None,
    deadline: float | str | None,
    fresh: bool,
    cache: bool,
    progress: Callable[[RunStats], None] | None,
    on_runner: Callable[[Runner], None] | None = None,
) -> Run:
    from evalrun.engine.options import RunOptions
    from evalrun.engine.prepare import prepare
    from evalrun.engine.run import run_prepared

    prepared = prepare(spec, out=out, limit=limit, sim=sim, batch=batch)
    options = RunOptions(
        fresh=fresh, use_cache=cache, budget_usd=_budget(budget), deadline_s=_seconds(deadline),
        on_progress=progress, on_runner=on_runner,
    )
    try:
        result = await run_prepared(prepared, options)
    except RunFailed as failed:
        return _open(prepared.folder, message=str(failed), warnings=_warnings_of(failed.result))
    except (BudgetExceeded, DeadlineReached, RunInterrupted) as stopped:
        return _open(prepared.folder, message=str(stopped))
    return _open(prepared.folder, warnings=tuple(result.warnings))


def _warnings_of(result: object) -> tuple[str, ...]:
    return tuple(getattr(result, "warnings", ()) or ())


def _budget(value: float | None) -> float | None:
    if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value <= 0):
        raise SpecError(f"budget: {value!r} is not a positive amount of USD")
    return value


def _seconds(value: float | str | None) -> float | None:
    from evalrun.spec import parse_duration

    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SpecError(f"deadline: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"deadline: {value!r} is not a positive duration")
    return seconds


def estimate(
    spec: SpecInput,
    *,
    sim: bool = False,
    out: str | Path | None = None,
    limit: int | None = None,
    batch: bool | None = None,
    local: bool = False,
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    detect: float | None = None,
) -> Estimate:
    """What `run` would cost and how long it would take, before anything is sent (the fields of
    `evalrun estimate --json` as attributes: `cost_usd`, `requests`, `input_tokens`, `power`, ...)."""
    from evalrun.engine.estimating import estimate_prepared
    from evalrun.engine.prepare import prepare

    prepared = prepare(spec, out=out, limit=limit, sim=sim, batch=batch)
    return _sync(lambda: estimate_prepared(prepared, rpm=rpm, itpm=itpm, otpm=otpm, local=local, detect=detect))


def compare(
    folder: str | Path | Run,
    *,
    by: str = "prompt",
    baseline: str | None = None,
    seed: int = 0,
    write: bool = True,
) -> pd.DataFrame:
    """The paired comparison of a run folder's prompts (or models, `by="model"`) on the rows both
    answered, against `baseline` or every pair; written to its comparison.csv unless `write=False`."""
    import io

    import pandas as pd

    from evalrun.reports.writers import write_csv
    from evalrun.results.summary import COMPARISON_COLUMNS

    path = folder.folder if isinstance(folder, Run) else Path(folder)
    rows = comparison_rows(path, by=by, baseline=baseline, seed=seed, write=write)
    # Through the CSV form, so the frame equals comparison.csv read back (empty cells as NaN).
    text = io.StringIO()
    write_csv(text, COMPARISON_COLUMNS, rows)
    text.seek(0)
    return pd.read_csv(text)


def comparison_rows(
    folder: Path, *, by: str = "prompt", baseline: str | None = None, seed: int = 0, write: bool = True
) -> list[dict[str, Any]]:
    """`compare`'s rows as dicts (what the CLI prints); SpecError for an unknown `by` or baseline."""
    from evalrun.reports.build import analyze, open_run, writable
    from evalrun.reports.writers import write_csv
    from evalrun.results.summary import COMPARISON_COLUMNS, compare_tallies

    if by not in ("prompt", "model"):
        raise SpecError(f"by: {by!r} is not one of prompt, model")
    store, settings = open_run(folder)
    with store:
        report = analyze(store, settings, folder=folder)
    try:
        table = compare_tallies(
            report.tallies, by=by, clusters=report.clusters, baseline=baseline,
            reducer=str(settings.get("reducer") or "mean"), repeats=report.repeats, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise SpecError(f"baseline: {exc}") from None
    if table and write and writable(folder):  # a read-only folder is compared, not written to
        with (folder / "comparison.csv").open("w", encoding="utf-8", newline="") as handle:
            write_csv(handle, COMPARISON_COLUMNS, table)
    return table


def _sync(make: Callable[[], Coroutine[Any, Any, T]], *, on_interrupt: Callable[[], None] | None = None) -> T:
    """Run a coroutine to its end from synchronous code: on this thread when no event loop runs
    here, else (a notebook cell) on a worker thread with a loop of its own, this one waiting.
    A Ctrl-C (a notebook's interrupt) while it waits calls `on_interrupt` on the worker's loop
    (the run stops handing out requests) and waits for the run to store what is in flight."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def work() -> None:
        try:
            box["value"] = loop.run_until_complete(make())
        except BaseException as exc:  # handed back to the caller's thread as it was
            box["error"] = exc
        finally:
            loop.close()
            done.set()

    # Waited for on an Event, not by join(): an interrupted join() can take a live thread for ended.
    done = threading.Event()
    threading.Thread(target=work, name="evalrun-run", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        if on_interrupt is None or done.is_set():
            raise
        loop.call_soon_threadsafe(on_interrupt)
        done.wait()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
