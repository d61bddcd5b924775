"""`evalrun diff BASELINE CANDIDATE`: the paired change of every model × prompt two runs share.

Cells pair on (model label, prompt name, dataset row id, repeat). Each run's paired cells are
reduced to one value per row by its reducer — the mean of the answered repeats, or the majority
vote's correctness, with the very `repeat_pass` a run's own report uses — and the two runs' row
values go through `paired_compare` (bootstrap or t interval, exact McNemar / paired t /
cluster-robust t, clusters from the candidate's rows): the statistics of a within-run
comparison, with the baseline as `a` and the candidate as `b`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.across.pairing import (
    RowPairing,
    RunSide,
    VariantCells,
    body_digests,
    pair_rows,
    read_cells,
    two_runs,
)
from evalrun.errors import NothingInCommon
from evalrun.results.scoring import Score
from evalrun.results.stats import mean_interval, paired_compare
from evalrun.results.tally import repeat_pass

__all__ = ["DIFF_COLUMNS", "DiffResult", "diff", "diff_sides", "reduce_rows", "variant_accuracy"]

DIFF_COLUMNS = [
    "model", "prompt", "n", "clusters", "acc_base", "acc_cand", "diff", "diff_ci_low", "diff_ci_high", "ci_method",
    "p_value", "test", "flipped_up", "flipped_down", "prompt_changed", "changed_rows", "only_base_rows",
    "only_cand_rows", "note",
]  # fmt: skip


@dataclass
class DiffResult:
    """The paired change per model × prompt (`rows`, columns `DIFF_COLUMNS`), what it rests on,
    and the rows that flipped (`flips[(model, prompt)] = (row ids up, row ids down)`)."""

    baseline: Path
    candidate: Path
    rows: list[dict[str, Any]]
    pairing: RowPairing
    flips: dict[tuple[str, str], tuple[list[str], list[str]]] = field(default_factory=dict)
    simulated: bool = False
    baseline_name: str = ""
    candidate_name: str = ""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, model: str, prompt: str) -> dict[str, Any]:
        """The row of one model × prompt (KeyError when the two runs do not share it)."""
        for row in self.rows:
            if row["model"] == model and row["prompt"] == prompt:
                return row
        raise KeyError((model, prompt))

    def to_frame(self) -> Any:
        """The table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=DIFF_COLUMNS)


def _majority(variant: VariantCells, rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The majority vote's correctness per row over the cells in `mask` (NaN: no cell answered),
    through the results' own `repeat_pass` (ties to the earliest repeat)."""
    answers = variant.answer[rows]
    correct = variant.correct[rows]

    def cells() -> Iterator[list[dict[str, Any]]]:
        # np.nonzero walks row by row, repeats in order: the grouping repeat_pass reads.
        yield [{"model": "", "prompt": "", "row_seq": int(i), "repeat": int(j),
                "answer": int(answers[i, j]), "correct": bool(correct[i, j] == 1)}
               for i, j in zip(*np.nonzero(mask), strict=True)]  # fmt: skip

    def score(cell: Mapping[str, Any]) -> Score:
        answer = cell["answer"]
        return Score(answer=str(answer) if answer >= 0 else None, correct=cell["correct"],
                     status="ok" if answer >= 0 else "unparsed")  # fmt: skip

    tally = repeat_pass(cells(), score, rows=int(rows.size)).get(("", ""))
    if tally is None or tally.majority_correct is None:
        return np.full(rows.size, np.nan)
    out = tally.majority_correct.copy()
    out[~mask.any(axis=1)] = np.nan
    return out


def reduce_rows(variant: VariantCells, rows: np.ndarray, planned: np.ndarray, reducer: str) -> np.ndarray:
    """One value per row (NaN: no answered cell) over the cells `planned` marks, by `reducer`."""
    scores = variant.score[rows][:, : planned.shape[1]]
    answered = planned & ~np.isnan(scores)
    if reducer == "majority":
        return _majority(variant, rows, answered)
    counts = answered.sum(axis=1)
    sums = np.where(answered, scores, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def variant_accuracy(side: RunSide, variant: VariantCells, *, clusters: np.ndarray | None = None) -> Any:
    """A run's accuracy for one model × prompt with its interval (a `MeanEstimate`): the reduced
    row values and `mean_interval`, as its summary computes them."""
    rows = np.arange(variant.score.shape[0])
    planned = variant.key != 0
    values = reduce_rows(variant, rows, planned, side.reducer)
    kept = ~np.isnan(values)
    return mean_interval(values[kept], clusters=clusters[kept] if clusters is not None else None)


def _keys_say_it(sides: tuple[RunSide, RunSide], base: VariantCells, cand: VariantCells) -> bool:
    """Whether equal request keys mean equal request texts: same endpoints, API version and
    model id (a key hashes them with the body). The simulator's port differs every run."""
    a, b = (side.settings for side in sides)
    label = cand.model
    return (
        a.get("endpoint") != "simulator"
        and a.get("endpoint") == b.get("endpoint")
        and (a.get("api_versions") or {}).get(label) == (b.get("api_versions") or {}).get(label)
        and base.model_ids == cand.model_ids
    )


def _prompt_changed(sides: tuple[RunSide, RunSide], base: VariantCells, cand: VariantCells,
                    keys: tuple[np.ndarray, np.ndarray]) -> bool:  # fmt: skip
    """Whether a paired cell was asked with another request text (the model id aside)."""
    key_base, key_cand = keys
    if _keys_say_it(sides, base, cand):
        return bool((key_base != key_cand).any())
    digests = body_digests(sides[0], base), body_digests(sides[1], cand)
    return any(
        digests[0].get(int(x)) != digests[1].get(int(y)) for x, y in zip(key_base.tolist(), key_cand.tolist(), strict=True)
    )


def _compare(
    sides: tuple[RunSide, RunSide], base: VariantCells, cand: VariantCells, pairing: RowPairing, seed: int
) -> tuple[dict[str, Any], tuple[list[str], list[str]]]:
    reducer = sides[1].reducer
    width = min(base.key.shape[1], cand.key.shape[1])
    key_base = base.key[pairing.base_seq][:, :width]
    key_cand = cand.key[pairing.cand_seq][:, :width]
    planned = (key_base != 0) & (key_cand != 0)  # a cell pair: planned in both runs
    values_base = reduce_rows(base, pairing.base_seq, planned, reducer)
    values_cand = reduce_rows(cand, pairing.cand_seq, planned, reducer)
    kept = ~np.isnan(values_base) & ~np.isnan(values_cand)
    vb, vc = values_base[kept], values_cand[kept]
    clusters = pairing.clusters[kept] if pairing.clusters is not None else None
    result = paired_compare(vb, vc, clusters=clusters, seed=seed)
    ids = np.asarray(pairing.row_ids, dtype=object)[kept]
    up, down = ids[vc > vb].tolist(), ids[vc < vb].tolist()
    notes = [result.note] if result.note else []
    if not kept.any():
        notes = ["no row was answered in both runs: nothing to compare"]
    if base.model_ids != cand.model_ids:
        notes.append(f"model changed: {'+'.join(sorted(base.model_ids))} → {'+'.join(sorted(cand.model_ids))}")
    if base.modes != cand.modes:
        notes.append(f"answer mode changed: {'+'.join(sorted(base.modes))} → {'+'.join(sorted(cand.modes))}")
    row = {
        "model": cand.model,
        "prompt": cand.prompt,
        "n": result.n,
        "clusters": result.clusters if result.clusters is not None else math.nan,
        "acc_base": result.mean_a,
        "acc_cand": result.mean_b,
        "diff": result.diff,
        "diff_ci_low": result.ci_low,
        "diff_ci_high": result.ci_high,
        "ci_method": result.ci_method,
        "p_value": result.p_value,
        "test": result.test,
        "flipped_up": len(up),
        "flipped_down": len(down),
        "prompt_changed": _prompt_changed(sides, base, cand, (key_base[planned], key_cand[planned])),
        "changed_rows": pairing.changed_rows,
        "only_base_rows": pairing.only_base_rows,
        "only_cand_rows": pairing.only_cand_rows,
        "note": "; ".join(n for n in [*notes, pairing.note] if n),
    }
    return row, (up, down)


def diff_sides(base: RunSide, cand: RunSide, *, seed: int = 0) -> DiffResult:
    """The comparison of two opened runs (cells read here). Raises NothingInCommon when they
    share no model × prompt with a row answered in both."""
    pairing = pair_rows(base, cand)
    read_cells(base)
    read_cells(cand)
    shared = [key for key in cand.variants if key in base.variants]
    if not shared:
        raise NothingInCommon(
            f"{base.folder} and {cand.folder} share no model × prompt "
            f"(baseline: {_names(base)}; candidate: {_names(cand)})"
        )
    if not pairing.row_ids:
        why = f"{pairing.changed_rows} changed, " if pairing.changed_rows else ""
        raise NothingInCommon(
            f"{base.folder} and {cand.folder} share no dataset row ({why}{pairing.only_base_rows} in the "
            f"baseline only, {pairing.only_cand_rows} in the candidate only)"
        )
    out = DiffResult(Path(base.folder), Path(cand.folder), [], pairing, simulated=base.simulated or cand.simulated,
                     baseline_name=base.name, candidate_name=cand.name)  # fmt: skip
    for key in shared:
        row, flips = _compare((base, cand), base.variants[key], cand.variants[key], pairing, seed)
        out.rows.append(row)
        out.flips[key] = flips
    if not any(row["n"] for row in out.rows):
        raise NothingInCommon(f"{base.folder} and {cand.folder}: no row was answered in both runs")
    return out


def _names(side: RunSide) -> str:
    return ", ".join(f"{m} · {p}" for m, p in side.variants) or "no cells"


def diff(baseline: str | Path, candidate: str | Path, *, seed: int = 0) -> DiffResult:
    """The paired change of every model × prompt two run folders share (the baseline is `a`, the
    candidate `b`: `diff = acc_cand − acc_base`). `result.to_frame()` gives a DataFrame."""
    with two_runs(Path(baseline), Path(candidate)) as (base, cand):
        return diff_sides(base, cand, seed=seed)
