"""`evalrun runs [DIR]`: the run folders under a folder, newest first — what a user scans to find
yesterday's run (`--name NAME`: one experiment's history, in `evalrun.reports.history`).

A run folder is a folder holding `store.sqlite` (or, listed with that problem, one holding report
files but no store), searched to three levels below DIR (`reports/<name>/<run>/`). Each is read
through `open_run` and the settings of its last run; accuracy per model × prompt comes from its
summary.csv when that was written from the store as it is now, and is recomputed from the store
otherwise. A folder that cannot be read is listed with its problem, never a traceback.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from evalrun.store.run_store import RUN_FAILED_CELLS, STORE_NAME

__all__ = ["RunInfo", "find_run_folders", "format_runs", "list_runs", "read_run"]

_REPORT_FILES = ("report.md", "results.csv", "summary.csv", "report.html")
_DEPTH = 3


@dataclass
class RunInfo:
    """One run folder as `evalrun runs` lists it; `problem` says why it could not be read."""

    folder: str
    name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str | None = None
    runs: int = 0
    endpoint: str | None = None
    simulated: bool = False
    cells: int | None = None
    cells_done: int | None = None
    spent_usd: float | None = None
    failure: str | None = None
    stop_reason: str | None = None  # why the last run stopped early, as its store recorded it
    stop_model: str | None = None
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for row in out["accuracy"]:
            for key in ("accuracy", "ci_low", "ci_high"):
                if isinstance(row.get(key), float) and math.isnan(row[key]):
                    row[key] = None
        return out


def find_run_folders(root: Path, depth: int = _DEPTH) -> Iterator[Path]:
    """Folders at most `depth` levels below `root` (root included) that look like run folders."""
    def walk(folder: Path, level: int) -> Iterator[Path]:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        names = {e.name for e in entries}
        if STORE_NAME in names or any(n in names for n in _REPORT_FILES):
            yield folder
            return
        if level >= depth:
            return
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in ("__pycache__", "node_modules"):
                yield from walk(entry, level + 1)

    yield from walk(root, 0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _endpoint(settings: Mapping[str, Any]) -> str | None:
    endpoint = settings.get("endpoint")
    if isinstance(endpoint, list | tuple):
        return ", ".join(map(str, endpoint)) or None
    return str(endpoint) if endpoint else None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _count(value: Any) -> int:
    number = _float(value)
    return int(number) if math.isfinite(number) else 0


def _fresh_summary(store: Any, folder: Path) -> list[dict[str, Any]] | None:
    """summary.csv's rows when it was written from the store as it is now, else None."""
    from evalrun.reports.build import report_state

    path = folder / "summary.csv"
    if not path.exists() or store.meta().get("reports_state") != report_state(store):
        return None
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_run(folder: Path) -> RunInfo:
    """One run folder's name, date, endpoint, progress, cost and accuracy per model × prompt."""
    from evalrun.reports.build import Report, analyze, open_run

    info = RunInfo(folder=str(folder))
    if not (folder / STORE_NAME).exists():
        info.problem = f"no {STORE_NAME} (report files only): nothing to read"
        return info
    try:
        store, settings = open_run(folder, readonly=True)
    except Exception as exc:  # an unreadable folder is listed with its problem
        info.problem = _first_line(exc)
        return info
    try:
        with store:
            info.name = str(settings.get("name") or folder.name)
            info.endpoint = _endpoint(settings)
            info.simulated = settings.get("endpoint") == "simulator" or store.any_simulated()
            info.stop_reason, info.stop_model = _stop_of(settings)
            runs = store.runs()
            info.runs = len(runs)
            if runs:
                info.started_at, info.finished_at, info.status = (
                    runs[-1]["started_at"], runs[-1]["finished_at"], runs[-1]["status"])  # fmt: skip
            counts = store.plan_counts()
            info.cells, info.cells_done = int(counts["cells"]), int(counts["cells_done"])
            info.spent_usd = float(store.spent_usd())
            rows = _fresh_summary(store, folder)
            if rows is not None:
                totals = {
                    "cells": sum(_count(r.get("cells")) for r in rows),
                    "answered": sum(_count(r.get("answered")) for r in rows),
                    "errors": sum(_count(r.get("errors")) for r in rows),
                    "pending": sum(_count(r.get("pending")) for r in rows),
                }
                report = Report(folder=folder, settings=settings, tallies=[], summary=rows, comparison=None,
                                comparison_by=None, repeats={}, columns=[], simulated=info.simulated, totals=totals)  # fmt: skip
            else:
                report = analyze(store, settings, folder=folder)
            info.failure = report.failure
            if info.status == "complete" and (report.totals.get("errors") or report.totals.get("pending")):
                # Written before `failed cells` existed: such a run was recorded as complete.
                info.status = RUN_FAILED_CELLS
            for row in report.summary:
                info.accuracy.append({
                    "model": str(row.get("model")),
                    "prompt": str(row.get("prompt")),
                    "accuracy": _float(row.get("accuracy")),
                    "ci_low": _float(row.get("ci_low")),
                    "ci_high": _float(row.get("ci_high")),
                    "n": _count(row.get("n")),
                    "reliable": str(row.get("reliable")).lower() in ("true", "1"),
                })  # fmt: skip
    except Exception as exc:  # a damaged or foreign store: say so and go on with the others
        info.problem = _first_line(exc)
    return info


def list_runs(root: Path) -> list[RunInfo]:
    """Every run folder under `root`, newest first (folders that could not be read last)."""
    found = [read_run(folder) for folder in find_run_folders(root)]
    return sorted(found, key=lambda r: (r.problem is None, r.started_at or "", r.folder), reverse=True)


def _when(stamp: str | None) -> str:
    if not stamp:
        return "—"
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def _accuracy_lines(info: RunInfo) -> list[str]:
    if info.problem or not info.accuracy:
        return ["—"]
    if info.failure is not None:
        return ["— (the run failed)"]
    lines = []
    for row in info.accuracy:
        value = row["accuracy"]
        text = "—" if math.isnan(value) else f"{100 * value:.1f}%" + ("" if row["reliable"] else " ⚠ unreliable")
        lines.append(f"{row['model']} · {row['prompt']}: {text}")
    return lines


def _status(info: RunInfo) -> str:
    if info.problem:
        return "unreadable"
    status = info.status or "—"
    if info.failure:
        verdict = "FAILED" if "every request failed" in info.failure or "nothing was answered" in info.failure \
            else "MOSTLY FAILED"
        # A run that stopped (at a 404, a budget, a deadline) says so, as `--json` does.
        return verdict if status in ("—", "complete", RUN_FAILED_CELLS) else f"{status} ({verdict})"
    return status


def _rel(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _stop_of(settings: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Why the last run stopped early and the model that stopped it (the store adds `stopped`)."""
    stopped = settings.get("stopped") or {}
    return stopped.get("reason"), stopped.get("model")


def _stopped_lines(info: RunInfo) -> list[str]:
    return [f"stopped: {info.stop_reason}"] if info.stop_reason and not info.problem else []


def _table_row(info: RunInfo) -> list[list[str]]:
    """One run's cells of the `runs` table, each a list of lines."""
    cells = f"{info.cells_done:,}/{info.cells:,}" if info.cells is not None and info.cells_done is not None else "—"
    spent = f"${info.spent_usd:,.4f}" if info.spent_usd is not None else "—"
    last = [_rel(info.folder)]
    if info.problem:
        last.append(f"cannot read it: {info.problem}")
    elif info.failure:
        last.append(f"failed: {info.failure}")
    last += _stopped_lines(info)
    return [[_when(info.started_at)], [info.name or "—"], [info.endpoint or "—"], [_status(info)], [cells], [spent],
            _accuracy_lines(info), last]  # fmt: skip


def format_runs(runs: Sequence[RunInfo], root: Path) -> str:
    """A plain-text table, one run per block of lines (one line per model × prompt)."""
    if not runs:
        return f"no run folders under {root}"
    header = ["started", "name", "endpoint", "status", "cells done", "spent", "accuracy (model · prompt)", "folder"]
    table = [_table_row(info) for info in runs]
    widths = [max(len(header[i]), *(len(line) for row in table for line in row[i])) for i in range(len(header) - 1)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[-1]]
    for row in table:
        height = max(len(cell) for cell in row)
        for n in range(height):
            parts = [(cell[n] if n < len(cell) else "").ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
            out.append(("  ".join(parts) + "  " + (row[-1][n] if n < len(row[-1]) else "")).rstrip())
    if any(info.simulated for info in runs if not info.problem):
        out.append("")
        out.append("endpoint simulator: scores from evalrun's simulator, not from a model.")
    return "\n".join(out)
