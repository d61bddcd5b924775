"""Paired comparisons between prompt variants or between models.

Two variants are compared only on the ``(row_id, repeat)`` cells both answered
(status "ok" or "unparsed"), so an outage on one side never counts as a wrong
answer; cells in any other status (error, or pending in an unfinished run) are
left out.
Sign convention: ``diff = acc_b - acc_a``; with a baseline, ``a`` is the
baseline, so a positive ``diff`` means the variant beat the baseline.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import pandas as pd

from evalrun.stats import holm, mcnemar_exact, paired_bootstrap_ci

__all__ = ["COMPARISON_COLUMNS", "compare"]

COMPARISON_COLUMNS: list[str] = [
    "by",
    "group",
    "a",
    "b",
    "n",
    "acc_a",
    "acc_b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "only_a_correct",
    "only_b_correct",
    "p_mcnemar",
    "p_holm",
    "mode_a",
    "mode_b",
    "modes_differ",
]

_REQUIRED = ("model", "prompt", "row_id", "repeat", "answer_mode", "correct", "status")
_KEY = ["row_id", "repeat"]
# Listing the answered statuses (rather than "not error") keeps pending cells of an
# unfinished run out of the pairing.
_ANSWERED = ("ok", "unparsed")


def _as_bool(values: pd.Series) -> pd.Series:
    """Correctness as plain bools, whether it came from memory or from a CSV."""
    if values.dtype == bool:
        return values
    text = values.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).astype(bool)


def _mode(cells: pd.DataFrame) -> str:
    # A variant normally has one answer mode; if cells disagree (e.g. the mode was
    # changed between resumed runs) show them all so the mismatch is visible.
    modes = sorted({str(m) for m in cells["answer_mode"].dropna()})
    return "+".join(modes)  # same separator as report.summary_frame


def _side(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (row_id, repeat); on duplicates the last row wins (a resumed run)."""
    side = cells.loc[cells["status"].isin(_ANSWERED), [*_KEY, "correct"]]
    return side.drop_duplicates(subset=_KEY, keep="last")


def _pair_row(
    by: str, group: str, a: str, b: str, cells_a: pd.DataFrame, cells_b: pd.DataFrame,
    *, confidence: float, n_boot: int, seed: int,
) -> dict[str, object]:
    paired = _side(cells_a).merge(_side(cells_b), on=_KEY, suffixes=("_a", "_b"), validate="one_to_one")
    ca = paired["correct_a"].to_numpy(dtype=float)
    cb = paired["correct_b"].to_numpy(dtype=float)
    n = int(ca.size)
    only_a = int(((ca == 1) & (cb == 0)).sum())
    only_b = int(((ca == 0) & (cb == 1)).sum())
    acc_a = float(ca.mean()) if n else math.nan
    acc_b = float(cb.mean()) if n else math.nan
    low, high = paired_bootstrap_ci(ca, cb, confidence=confidence, n_boot=n_boot, seed=seed)
    mode_a, mode_b = _mode(cells_a), _mode(cells_b)
    return {
        "by": by,
        "group": group,
        "a": a,
        "b": b,
        "n": n,
        "acc_a": acc_a,
        "acc_b": acc_b,
        "diff": acc_b - acc_a,
        "diff_ci_low": low,
        "diff_ci_high": high,
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        # No shared answered cells means no evidence at all, not "no difference".
        "p_mcnemar": mcnemar_exact(only_a, only_b) if n else math.nan,
        "p_holm": math.nan,
        "mode_a": mode_a,
        "mode_b": mode_b,
        "modes_differ": mode_a != mode_b,
    }


def compare(
    results: pd.DataFrame,
    *,
    by: Literal["prompt", "model"],
    baseline: str | None = None,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired accuracy comparisons of the ``by`` variants within each ``group``.

    ``group`` is the other dimension (the model when ``by="prompt"``, the prompt
    when ``by="model"``). Without ``baseline`` every pair ``a < b`` (sorted by
    name) is compared; with it, ``a`` is the baseline and ``b`` each other
    variant. ``diff = acc_b - acc_a`` with a paired percentile bootstrap CI,
    exact McNemar p-values and Holm adjustment across all rows of the call.
    ``modes_differ`` flags pairs asked in different answer modes. Every pair uses
    the same bootstrap ``seed``, so the result is deterministic.
    """
    if by not in ("prompt", "model"):
        raise ValueError(f"by must be 'prompt' or 'model', got {by!r}")
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"results is missing column(s): {', '.join(missing)}")
    other = "model" if by == "prompt" else "prompt"

    frame = results.loc[:, list(_REQUIRED)].copy()
    for col in ("model", "prompt", "row_id", "answer_mode", "status"):
        frame[col] = frame[col].astype("string").fillna("")
    frame["repeat"] = pd.to_numeric(frame["repeat"]).astype("int64")
    frame["correct"] = _as_bool(frame["correct"])

    known = sorted(frame[by].unique())
    if baseline is not None and baseline not in known:
        raise ValueError(f"baseline {baseline!r} is not a known {by}; known: {', '.join(map(repr, known))}")

    rows: list[dict[str, object]] = []
    for group in sorted(frame[other].unique()):
        in_group = frame[frame[other] == group]
        cells = {str(v): g for v, g in in_group.groupby(by, sort=True)}
        variants = sorted(cells)
        if baseline is None:
            pairs = list(itertools.combinations(variants, 2))
        elif baseline in cells:
            pairs = [(baseline, v) for v in variants if v != baseline]
        else:
            pairs = []
        for a, b in pairs:
            rows.append(
                _pair_row(by, str(group), a, b, cells[a], cells[b],
                          confidence=confidence, n_boot=n_boot, seed=seed)
            )

    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if out.empty:
        return out.astype({"n": "int64", "only_a_correct": "int64", "only_b_correct": "int64",
                           "modes_differ": bool})
    out["p_holm"] = holm(out["p_mcnemar"].astype(float).tolist())
    out = out.sort_values(["group", "a", "b"], kind="stable", ignore_index=True)
    return out.astype({"n": "int64", "only_a_correct": "int64", "only_b_correct": "int64",
                       "acc_a": float, "acc_b": float, "diff": float, "modes_differ": bool})

