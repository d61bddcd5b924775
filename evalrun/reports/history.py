"""`evalrun runs --name NAME`: one experiment's run folders, oldest first, with accuracy and its
interval per model × prompt and the paired change from the run before (the same `diff` as
`evalrun diff PREVIOUS THIS`). A report's own "History" section is `evalrun.reports.trend`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalrun.errors import EvalrunError
from evalrun.jsonsafe import json_safe

__all__ = ["HistoryRun", "format_history", "history"]


@dataclass
class HistoryRun:
    """One run folder of the experiment: its accuracy per model × prompt (`variants`, each with
    `accuracy, ci_low, ci_high, n` and, from the second run on, the paired `change` from the
    run before: `diff, diff_ci_low, diff_ci_high, p_value, test, n`), or why there is none."""

    folder: str
    started_at: str | None
    status: str | None
    simulated: bool
    variants: list[dict[str, Any]] = field(default_factory=list)
    change_problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(json_safe(asdict(self)))


_CHANGE = ("diff", "diff_ci_low", "diff_ci_high", "p_value", "test", "n")


def history(root: Path, name: str, *, seed: int = 0) -> list[HistoryRun]:
    """The run folders under `root` whose experiment is `name`, oldest first."""
    from evalrun.across.diff import diff
    from evalrun.reports.runs import find_run_folders, read_run

    found = [info for info in map(read_run, find_run_folders(root)) if info.problem is None and info.name == name]
    found.sort(key=lambda info: (info.started_at or "", info.folder))
    out: list[HistoryRun] = []
    for index, info in enumerate(found):
        entry = HistoryRun(info.folder, info.started_at, info.status, info.simulated)
        changes: dict[tuple[str, str], dict[str, Any]] = {}
        if index:
            try:
                changes = {(r["model"], r["prompt"]): r for r in diff(Path(found[index - 1].folder), Path(info.folder), seed=seed)}
            except EvalrunError as exc:
                entry.change_problem = str(exc)
        for row in info.accuracy:
            variant = {k: row.get(k, math.nan) for k in ("model", "prompt", "accuracy", "ci_low", "ci_high", "n")}
            change = changes.get((row["model"], row["prompt"]))
            variant["change"] = {k: change[k] for k in _CHANGE} if change is not None else None
            entry.variants.append(variant)
        out.append(entry)
    return out


def _pct(value: Any) -> str:
    return "—" if not isinstance(value, int | float) or math.isnan(value) else f"{100 * value:.1f}%"


def _change(change: dict[str, Any] | None, first: bool) -> str:
    if first:
        return "first run"
    if change is None:
        return "change: — (not in the run before)"
    low, high = change["diff_ci_low"], change["diff_ci_high"]
    interval = "" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    return (f"change {100 * change['diff']:+.1f} pt{interval} ({change['test']}, p = {change['p_value']:.3g}, "
            f"n = {change['n']})")  # fmt: skip


def format_history(runs: list[HistoryRun], name: str) -> str:
    """A plain-text listing: one block per run, one line per model × prompt."""
    if not runs:
        return f"no run folders of experiment {name!r}"
    lines = [f"{name}: {len(runs)} run{'s' if len(runs) != 1 else ''}, oldest first"]
    for index, run in enumerate(runs):
        lines.append(f"{run.started_at or '—'}  {run.status or '—'}  {run.folder}")
        if run.change_problem:
            lines.append(f"  no paired change from the run before: {run.change_problem}")
        width = max((len(f"{v['model']} · {v['prompt']}") for v in run.variants), default=0)
        for v in run.variants:
            label = f"{v['model']} · {v['prompt']}".ljust(width)
            interval = "" if math.isnan(v["ci_low"]) else f" [{_pct(v['ci_low'])}, {_pct(v['ci_high'])}]"
            lines.append(f"  {label}  {_pct(v['accuracy'])}{interval}  {_change(v['change'], index == 0)}")
    if any(run.simulated for run in runs):
        lines.append("endpoint simulator: scores from evalrun's simulator, not from a model.")
    return "\n".join(lines)
