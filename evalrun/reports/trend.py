"""The "History" section of a report: the accuracy, with its interval, of the experiment's other
run folders beside this one (`reports/<name>/<run>/`), oldest first, read from their summary.csv
— the figures their own reports show; nothing is scored again. `evalrun runs --name NAME` (in
`evalrun.reports.history`) adds the paired change from each run to the next."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.errors import EvalrunError
from evalrun.store.run_store import Store

__all__ = ["TrendPoint", "trend_markdown", "trend_of", "trend_sections"]


@dataclass
class TrendPoint:
    """One run of the experiment in the trend: when, which folder, accuracy per model × prompt."""

    folder: str
    started_at: str
    accuracy: dict[str, tuple[float, float, float]]  # "model · prompt" → (accuracy, ci_low, ci_high)
    current: bool = False


def _summary_point(folder: Path, name: str) -> TrendPoint | None:
    """A sibling run folder of the experiment `name`, from its summary.csv: the figures its own
    report shows (no sibling is scored again while a report is built)."""
    if not (folder / "summary.csv").is_file():
        return None
    try:
        with Store.open_readonly(folder) as store:
            settings, runs = store.last_settings(), store.runs()
    except EvalrunError:
        return None
    if settings.get("name") != name or not runs:
        return None
    with (folder / "summary.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return TrendPoint(folder.name, str(runs[-1]["started_at"]), _accuracy(rows))


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    def number(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    return {f"{r['model']} · {r['prompt']}": (number(r["accuracy"]), number(r["ci_low"]), number(r["ci_high"]))
            for r in rows}  # fmt: skip


def trend_of(folder: Path, settings: Any, summary: list[dict[str, Any]], started_at: str | None) -> list[TrendPoint]:
    """The experiment's runs beside this one (the other run folders in its parent folder,
    `reports/<name>/`), oldest first, this run included; [] when it is the only one."""
    name = str(settings.get("name") or "")
    here = folder.resolve()
    try:
        siblings = sorted(p for p in folder.parent.iterdir() if p.is_dir() and p.resolve() != here)
    except OSError:
        return []
    points = [point for sibling in siblings if (point := _summary_point(sibling, name)) is not None]
    if not points:
        return []
    points.append(TrendPoint(folder.name, started_at or "", _accuracy(summary), current=True))
    return sorted(points, key=lambda p: (p.started_at, p.folder))


def _cell(value: tuple[float, float, float] | None) -> str:
    if value is None or math.isnan(value[0]):
        return "—"
    interval = "" if math.isnan(value[1]) else f" [{100 * value[1]:.1f}, {100 * value[2]:.1f}]"
    return f"{100 * value[0]:.1f}%{interval}"


def trend_markdown(points: list[TrendPoint]) -> list[str]:
    """report.md's "History" lines ([] with no other run)."""
    if not points:
        return []
    variants = list(dict.fromkeys(v for p in points for v in p.accuracy))
    lines = ["## History", "", "| run | started | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for p in points:
        label = f"**{p.folder}** (this run)" if p.current else p.folder
        lines.append(f"| {label} | {p.started_at} | " + " | ".join(_cell(p.accuracy.get(v)) for v in variants) + " |")
    return [*lines, "", "Accuracy with its 95 % interval, oldest run first, for the run folders of this experiment "
            "beside this one; `evalrun runs --name NAME` adds the paired change from each run to the next.", ""]


def trend_sections(points: list[TrendPoint]) -> list[tuple[str, str, str]]:
    """report.html's "History" section as (anchor, title, body) ([] with no other run)."""
    import html

    if not points:
        return []
    variants = list(dict.fromkeys(v for p in points for v in p.accuracy))
    head = "".join(f"<th>{html.escape(v)}</th>" for v in variants)
    current = ' class="current"'
    body = "".join(
        f"<tr{current if p.current else ''}><td>{html.escape(p.folder)}{' (this run)' if p.current else ''}"
        f"</td><td>{html.escape(p.started_at)}</td>"
        + "".join(f"<td>{html.escape(_cell(p.accuracy.get(v)))}</td>" for v in variants) + "</tr>"
        for p in points
    )
    table = (f"<table><thead><tr><th>run</th><th>started</th>{head}</tr></thead><tbody>{body}</tbody></table>"
             '<p class="note">Accuracy with its 95 % interval, oldest run first, for the run folders of this '
             "experiment beside this one; <code>evalrun runs --name NAME</code> adds the paired change from each "
             "run to the next.</p>")  # fmt: skip
    return [("history", "History", table)]
