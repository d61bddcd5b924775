"""`evalrun gate`: pass or fail a candidate run, each criterion a rule over the figures of a diff
(or of the candidate's own accuracy), stated with its figures so a failed build explains itself.

* `max_drop` D (with a baseline; default 0): a model × prompt fails when its whole paired
  interval lies below −D — a drop larger than D is *established*, not merely observed. An
  interval that cannot be computed establishes nothing (pass, said so).
* `non_inferior` D: passes only when the interval's lower bound is at least −D
  (non-inferiority shown); an interval that cannot be computed shows nothing (fail).
* `min_accuracy` A (with or without a baseline): fails when the candidate's accuracy (point
  estimate) is below A; its interval is given beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.across.diff import DiffResult, diff_sides, variant_accuracy
from evalrun.across.pairing import RunSide, open_side, read_cells, two_runs
from evalrun.errors import NothingInCommon

__all__ = ["Check", "GateResult", "gate"]


@dataclass(frozen=True)
class Check:
    """One criterion applied to one model × prompt: whether it passed, the rule and its figures."""

    model: str
    prompt: str
    criterion: str  # max-drop | non-inferior | min-accuracy
    passed: bool
    rule: str  # the rule, with its threshold
    figures: str  # the figures it was applied to, and the verdict in words


@dataclass
class GateResult:
    """Every check of a gate; `passed` when all of them passed. `diff` is the comparison the
    baseline criteria read (None without a baseline)."""

    candidate: Path
    baseline: Path | None
    checks: list[Check] = field(default_factory=list)
    diff: DiffResult | None = None
    simulated: bool = False

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)


def _pct(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:+.1f} pt"


def _acc(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def _interval(low: float, high: float, points: bool = True) -> str:
    if math.isnan(low) or math.isnan(high):
        return "[interval undefined]"
    if points:
        return f"[{100 * low:+.1f}, {100 * high:+.1f}] pt"
    return f"[{100 * low:.1f}%, {100 * high:.1f}%]"


def max_drop_check(row: dict[str, Any], drop: float) -> Check:
    """Fails when the whole paired interval lies below −`drop`."""
    low, high = float(row["diff_ci_low"]), float(row["diff_ci_high"])
    rule = f"fails when the whole 95% interval of the change lies below −{100 * drop:g} pt"
    base = f"change {_pct(row['diff'])} {_interval(low, high)} over {row['n']} rows ({row['test']}, p = {row['p_value']:.3g})"
    if math.isnan(high):
        return Check(row["model"], row["prompt"], "max-drop", True, rule, f"{base}: no interval, so no drop is established")
    if high < -drop:
        verdict = f"{base}: the interval's upper end is below −{100 * drop:g} pt — a drop larger than {100 * drop:g} pt is established"
        return Check(row["model"], row["prompt"], "max-drop", False, rule, verdict)
    return Check(row["model"], row["prompt"], "max-drop", True, rule,
                 f"{base}: a drop larger than {100 * drop:g} pt is not established")  # fmt: skip


def non_inferior_check(row: dict[str, Any], margin: float) -> Check:
    """Passes only when the interval's lower bound is at least −`margin`."""
    low, high = float(row["diff_ci_low"]), float(row["diff_ci_high"])
    rule = f"passes only when the 95% interval of the change lies above −{100 * margin:g} pt (lower end ≥ −{100 * margin:g} pt)"
    base = f"change {_pct(row['diff'])} {_interval(low, high)} over {row['n']} rows"
    if math.isnan(low):
        return Check(row["model"], row["prompt"], "non-inferior", False, rule, f"{base}: no interval, so nothing is shown")
    if low >= -margin:
        return Check(row["model"], row["prompt"], "non-inferior", True, rule,
                     f"{base}: non-inferior within {100 * margin:g} pt")  # fmt: skip
    return Check(row["model"], row["prompt"], "non-inferior", False, rule,
                 f"{base}: lower end {100 * low:+.1f} pt < −{100 * margin:g} pt — non-inferiority not shown")  # fmt: skip


def min_accuracy_check(model: str, prompt: str, estimate: Any, minimum: float) -> Check:
    """Fails when the accuracy's point estimate is below `minimum`."""
    rule = f"fails when the accuracy is below {100 * minimum:g}%"
    base = f"accuracy {_acc(estimate.mean)} {_interval(estimate.low, estimate.high, points=False)} over {estimate.n} rows"
    if estimate.n == 0 or math.isnan(estimate.mean):
        return Check(model, prompt, "min-accuracy", False, rule, f"{base}: nothing answered")
    if estimate.mean < minimum:
        return Check(model, prompt, "min-accuracy", False, rule, f"{base}: below {100 * minimum:g}%")
    return Check(model, prompt, "min-accuracy", True, rule, f"{base}: at least {100 * minimum:g}%")


def _side_clusters(side: RunSide) -> np.ndarray | None:
    codes = np.full(side.rows, -1, dtype=np.int64)
    seen: dict[str, int] = {}
    for chunk in side.store.iter_rows():
        for row_seq, _, cluster, _ in chunk:
            codes[row_seq] = seen.setdefault(cluster if cluster is not None else f"\x00{row_seq}", len(seen))
    return codes if any(c is not None and not c.startswith("\x00") for c in seen) else None


def _accuracy_checks(side: RunSide, minimum: float, only: set[tuple[str, str]] | None) -> list[Check]:
    clusters = _side_clusters(side)
    return [
        min_accuracy_check(model, prompt, variant_accuracy(side, variant, clusters=clusters), minimum)
        for (model, prompt), variant in side.variants.items()
        if only is None or (model, prompt) in only
    ]


def _check_thresholds(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be a proportion between 0 and 1, got {value!r}")


def gate(
    candidate: str | Path,
    baseline: str | Path | None = None,
    *,
    max_drop: float = 0.0,
    non_inferior: float | None = None,
    min_accuracy: float | None = None,
    seed: int = 0,
) -> GateResult:
    """Apply the criteria (see the module docstring) to every model × prompt of `candidate` —
    those it shares with `baseline` for the baseline criteria. Thresholds are proportions
    (0.02 is two points)."""
    _check_thresholds(max_drop=max_drop, non_inferior=non_inferior, min_accuracy=min_accuracy)
    candidate = Path(candidate)
    if baseline is None:
        if min_accuracy is None:
            raise ValueError("nothing to gate on: give a baseline, or a minimum accuracy")
        side = open_side(candidate)
        try:
            read_cells(side)
            if not side.variants:
                raise NothingInCommon(f"{candidate}: the run has no cells")
            return GateResult(candidate, None, _accuracy_checks(side, min_accuracy, None), simulated=side.simulated)
        finally:
            side.close()
    with two_runs(Path(baseline), candidate) as (base, cand):
        result = diff_sides(base, cand, seed=seed)
        checks: list[Check] = []
        accuracy = {}
        if min_accuracy is not None:
            accuracy = {(c.model, c.prompt): c for c in _accuracy_checks(cand, min_accuracy, None)}
        for row in result.rows:
            checks.append(max_drop_check(row, max_drop))
            if non_inferior is not None:
                checks.append(non_inferior_check(row, non_inferior))
            found = accuracy.pop((row["model"], row["prompt"]), None)
            if found is not None:
                checks.append(found)
        checks.extend(accuracy.values())  # variants the baseline did not have
    return GateResult(candidate, Path(baseline), checks, diff=result, simulated=result.simulated)
