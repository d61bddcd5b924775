"""Summaries and paired comparisons over per-row values: the row is the unit of evidence.

Each model × prompt's cells were reduced to one value per dataset row (the mean over its
answered repeats, or the majority vote's correctness); intervals, tests and Holm use those rows,
cluster-robust when the dataset names clusters. Accuracy is over *answered* cells: a failed
request is never a wrong answer, and where nothing was answered accuracy is empty, never 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evalrun.results.agreement import cohen_kappa
from evalrun.results.stats import holm, mean_interval, paired_compare
from evalrun.results.tally import TOKEN_COLUMNS, RepeatTally, VariantTally
from evalrun.spec import ScorerSpec

__all__ = [
    "COMPARISON_COLUMNS",
    "SUMMARY_COLUMNS",
    "UNRELIABLE_ERROR_RATE",
    "compare_tallies",
    "row_values",
    "summarize",
]

# A model × prompt with more of its sent requests failed than this has its accuracy marked unreliable.
UNRELIABLE_ERROR_RATE = 0.05

SUMMARY_COLUMNS = [
    "model", "prompt", "answer_mode", "n", "cells", "answered", "unparsed", "refusals", "truncated_thinking", "errors",
    "error_rate", "pending", "correct", "accuracy", "ci_low", "ci_high", "ci_method", "clusters", "reliable",
    *TOKEN_COLUMNS, "mean_thinking_tokens", "cost_usd",
    "paid_usd", "from_cache", "cost_per_correct_usd", "cost_per_1k_rows_usd", "latency_p50_s", "latency_p95_s",
]  # fmt: skip
COMPARISON_COLUMNS = [
    "by", "group", "a", "b", "n", "clusters", "cells_a", "cells_b", "acc_a", "acc_b", "diff", "diff_ci_low",
    "diff_ci_high", "ci_method", "p_value", "test", "p_holm", "p_mcnemar", "only_a_correct", "only_b_correct",
    "mode_a", "mode_b", "modes_differ", "note",
]  # fmt: skip


def row_values(
    tally: VariantTally, *, reducer: str = "mean", repeats: RepeatTally | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(row indexes, one value per row) for a model × prompt: rows with at least one answer."""
    rows, means = tally.row_means()
    if reducer == "majority" and repeats is not None and repeats.majority_correct is not None:
        return rows, repeats.majority_correct[rows]
    return rows, means


def _modes(tally: VariantTally) -> str:
    return "+".join(sorted(tally.modes))


def summarize(
    tallies: Sequence[VariantTally],
    *,
    clusters: np.ndarray | None = None,
    reducer: str = "mean",
    repeats: Mapping[tuple[str, str], RepeatTally] | None = None,
    confidence: float = 0.95,
    scorer: ScorerSpec | None = None,
) -> list[dict[str, Any]]:
    """One summary row per model × prompt (see the README for every column). A fields scorer adds
    `accuracy_<field>`; a judge scorer the grader's tokens and cost, and its agreement with a
    human grade column."""
    out = []
    for tally in tallies:
        rows, values = row_values(tally, reducer=reducer, repeats=(repeats or {}).get((tally.model, tally.prompt)))
        estimate = mean_interval(values, clusters=clusters[rows] if clusters is not None else None, confidence=confidence)
        n = int(rows.size)
        error_rate = tally.errors / tally.sent if tally.sent else math.nan
        cost = _cost(tally)
        latency = np.frombuffer(tally.latencies, dtype=np.float64) if len(tally.latencies) else np.empty(0)
        out.append(
            {
                "model": tally.model,
                "prompt": tally.prompt,
                "answer_mode": _modes(tally),
                "n": n,
                "cells": tally.cells,
                "answered": tally.answered,
                "unparsed": tally.unparsed,
                "refusals": tally.refused,
                "truncated_thinking": tally.truncated_thinking,
                "errors": tally.errors,
                "error_rate": error_rate,
                "pending": tally.pending,
                "correct": tally.correct,
                "accuracy": estimate.mean if n else math.nan,
                "ci_low": estimate.low,
                "ci_high": estimate.high,
                "ci_method": estimate.method if n else "",
                "clusters": estimate.clusters if estimate.clusters is not None else math.nan,
                "reliable": bool(n) and not error_rate > UNRELIABLE_ERROR_RATE,
                **{column: round(tally.tokens[column]) for column in TOKEN_COLUMNS},
                "mean_thinking_tokens": _mean_thinking(tally),
                "cost_usd": cost,
                # Unknown (no price for the model), never $0.
                "paid_usd": math.nan if tally.answered and tally.cost_unknown == tally.answered else tally.paid_usd,
                "from_cache": tally.from_cache,
                **_per_unit_costs(cost, tally.correct, n),
                "latency_p50_s": float(np.quantile(latency, 0.5)) if latency.size else math.nan,
                "latency_p95_s": float(np.quantile(latency, 0.95)) if latency.size else math.nan,
                **_scorer_columns(tally, scorer, confidence),
            }
        )
    return out


def _cost(tally: VariantTally) -> float:
    """What the answered cells cost; unknown (NaN) when none has a price, never $0."""
    cost = tally.cost_usd if tally.answered and tally.cost_unknown < tally.answered else math.nan
    if tally.cost_unknown == tally.answered and tally.answered:
        cost = math.nan
    return cost


def _per_unit_costs(cost: float, correct: int, n: int) -> dict[str, float]:
    known = not math.isnan(cost)
    return {
        "cost_per_correct_usd": cost / correct if correct and known else math.nan,
        "cost_per_1k_rows_usd": cost / n * 1000 if n and known else math.nan,
    }


def _mean_thinking(tally: VariantTally) -> float:
    """Thinking tokens per answered cell (empty when nothing was answered)."""
    return tally.thinking_tokens / tally.answered if tally.answered else math.nan


def _scorer_columns(tally: VariantTally, scorer: ScorerSpec | None, confidence: float) -> dict[str, Any]:
    if scorer is None:
        return {}
    out: dict[str, Any] = {}
    if tally.reviewed:  # cells a human reviewed in the viewer (`evalrun view`), scored by the human
        out.update(human_reviewed=tally.reviewed, human_overridden=tally.overridden)
    if scorer.type == "fields":
        for path in scorer.field_specs:
            out[f"accuracy_{path}"] = tally.field_correct[path] / tally.answered if tally.answered else math.nan
    if scorer.type == "judge":
        out["judge_input_tokens"] = round(tally.judge_tokens["input"])
        out["judge_output_tokens"] = round(tally.judge_tokens["output"])
        out["judge_cost_usd"] = tally.judge_cost_usd
        if scorer.human or tally.agreement_sources:
            pairs = [(judge, human) for (judge, human), count in tally.agreement.items() for _ in range(count)]
            agreement = cohen_kappa(
                [p[0] for p in pairs], [p[1] for p in pairs], labels=scorer.grade_labels, confidence=confidence
            )
            out.update(
                judge_agreement_n=agreement.n,
                judge_agreement=agreement.agreement,
                judge_agreement_low=agreement.agreement_low,
                judge_agreement_high=agreement.agreement_high,
                judge_kappa=agreement.kappa,
                judge_kappa_low=agreement.kappa_low,
                judge_kappa_high=agreement.kappa_high,
                # Where the human grades came from: the dataset's column, the viewer's reviews.
                judge_agreement_from_column=tally.agreement_sources["column"],
                judge_agreement_from_reviews=tally.agreement_sources["review"],
            )
    return out


def compare_tallies(
    tallies: Sequence[VariantTally],
    *,
    by: str,
    clusters: np.ndarray | None = None,
    baseline: str | None = None,
    reducer: str = "mean",
    repeats: Mapping[tuple[str, str], RepeatTally] | None = None,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Paired comparisons of the `by` variants (prompt or model) within each group of the other.

    Variants are taken in the order of `tallies` (the spec's order): without a baseline every
    pair a < b, with one `a` is the baseline. Two variants are compared on the rows both
    answered; `diff = acc_b − acc_a`. Holm adjusts the p-values across the whole table.
    """
    if by not in ("prompt", "model"):
        raise ValueError(f"by must be 'prompt' or 'model', got {by!r}")
    other = "model" if by == "prompt" else "prompt"
    known = list(dict.fromkeys(getattr(t, by) for t in tallies))
    if baseline is not None and baseline not in known:
        raise ValueError(f"baseline {baseline!r} is not a known {by}; known: {', '.join(map(repr, known))}")
    repeats = repeats or {}
    out: list[dict[str, Any]] = []
    for group in dict.fromkeys(getattr(t, other) for t in tallies):
        members = [t for t in tallies if getattr(t, other) == group]
        for a, b in _pairs(members, by, baseline):
            out.append(
                _pair(by, str(group), a, b, clusters=clusters, reducer=reducer, repeats=repeats,
                      confidence=confidence, n_boot=n_boot, seed=seed)
            )  # fmt: skip
    adjusted = holm([row["p_value"] for row in out])
    for row, p in zip(out, adjusted, strict=True):
        row["p_holm"] = p
    return out


def _pairs(members: list[VariantTally], by: str, baseline: str | None) -> list[tuple[VariantTally, VariantTally]]:
    """Every pair a < b in order, or the baseline against each other variant."""
    if baseline is None:
        return list(itertools.combinations(members, 2))
    base = [t for t in members if getattr(t, by) == baseline]
    return [(base[0], t) for t in members if getattr(t, by) != baseline] if base else []


def _pair(
    by: str,
    group: str,
    a: VariantTally,
    b: VariantTally,
    *,
    clusters: np.ndarray | None,
    reducer: str,
    repeats: Mapping[tuple[str, str], RepeatTally],
    confidence: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    rows_a, values_a = row_values(a, reducer=reducer, repeats=repeats.get((a.model, a.prompt)))
    rows_b, values_b = row_values(b, reducer=reducer, repeats=repeats.get((b.model, b.prompt)))
    common, index_a, index_b = np.intersect1d(rows_a, rows_b, assume_unique=True, return_indices=True)
    va, vb = values_a[index_a], values_b[index_b]
    result = paired_compare(
        va, vb, clusters=clusters[common] if clusters is not None else None,
        confidence=confidence, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    mode_a, mode_b = _modes(a), _modes(b)
    n = int(common.size)
    note = result.note
    if n == 0:
        note = "no row was answered by both: nothing to compare"
    return {
        "by": by,
        "group": group,
        "a": getattr(a, by),
        "b": getattr(b, by),
        "n": n,
        "clusters": result.clusters if result.clusters is not None else math.nan,
        "cells_a": int(a.row_n[common].sum()),
        "cells_b": int(b.row_n[common].sum()),
        "acc_a": result.mean_a,
        "acc_b": result.mean_b,
        "diff": result.diff,
        "diff_ci_low": result.ci_low,
        "diff_ci_high": result.ci_high,
        "ci_method": result.ci_method,
        "p_value": result.p_value,
        "test": result.test,
        "p_holm": math.nan,
        "p_mcnemar": result.p_value if result.test == "mcnemar-exact" else math.nan,
        "only_a_correct": result.only_a if result.only_a is not None else math.nan,
        "only_b_correct": result.only_b if result.only_b is not None else math.nan,
        "mode_a": mode_a,
        "mode_b": mode_b,
        "modes_differ": mode_a != mode_b,
        "note": note,
    }
