"""Diagnostics over the per-cell results frame: what went wrong, and how.

All functions are pure and return one row per model × prompt (or per model ×
prompt × letter). Only cells with status "ok" or "unparsed" answered the
question, so the answer-based diagnostics (letters, confusion, repeats) use just
those; ``outcome_rates`` also counts errors. Any other status (e.g. "pending" in
an unfinished run) is left out everywhere.

The input is either one row per cell (``load_results``) or, for the reports of a
large run, one row per distinct combination with a ``count`` column: the
letter, outcome and confusion tables weight each row by it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["OTHER", "UNPARSED", "confusion_matrix", "letter_distribution", "outcome_rates", "repeat_summary"]

UNPARSED = "unparsed"
"""Label for cells that answered but whose answer could not be parsed."""
OTHER = "other"
"""Label for parsed answers (or gold values) that are not among the choices."""

_GROUP = ["model", "prompt"]
_ANSWERED = ("ok", "unparsed", "refused")


def _prepare(results: pd.DataFrame, needed: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in needed if c not in results.columns]
    if missing:
        raise ValueError(f"results is missing column(s): {', '.join(missing)}")
    frame = results.loc[:, list(dict.fromkeys([*needed, *(["count"] if "count" in results.columns else [])]))].copy()
    if "count" not in frame.columns:
        frame["count"] = 1
    for col in frame.columns:
        if col == "count":
            frame[col] = pd.to_numeric(frame[col]).astype("int64")
            continue
        if col in ("repeat",):
            frame[col] = pd.to_numeric(frame[col]).astype("int64")
        elif col == "correct":
            frame[col] = _as_bool(frame[col])
        else:
            frame[col] = frame[col].astype("string").fillna("").str.strip()
    return frame


def _as_bool(values: pd.Series) -> pd.Series:
    """Correctness as plain bools, whether it came from memory or from a CSV."""
    if values.dtype == bool:
        return values
    text = values.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).astype(bool)


def _groups(frame: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = frame[_GROUP].drop_duplicates().sort_values(_GROUP, kind="stable")
    return [(str(m), str(p)) for m, p in pairs.itertuples(index=False)]


def _predicted(frame: pd.DataFrame, choices: Sequence[str]) -> pd.Series:
    """Predicted label per cell: a choice, ``OTHER``, or ``UNPARSED``."""
    unparsed = (frame["status"] == "unparsed") | (frame["answer"] == "")
    label = frame["answer"].where(frame["answer"].isin(list(choices)), OTHER)
    return label.where(~unparsed, UNPARSED)


def _labels(choices: Sequence[str], extra_other: bool) -> list[str]:
    return [*choices, *([OTHER] if extra_other else []), UNPARSED]


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


def letter_distribution(results: pd.DataFrame, choices: Sequence[str]) -> pd.DataFrame:
    """Predicted vs gold letter counts and shares per model × prompt (position bias).

    Columns: ``model, prompt, letter, predicted, predicted_share, gold, gold_share``.
    Letters are the choices in order, then ``"other"`` (only when some answer or
    gold value falls outside the choices) and ``"unparsed"``. Shares are over the
    answered cells of that model × prompt, so each share column sums to 1.
    """
    frame = _prepare(results, [*_GROUP, "status", "answer", "target"])
    answered = frame[frame["status"].isin(_ANSWERED)].assign(pred=lambda f: _predicted(f, choices))
    gold = answered["target"].where(answered["target"].isin(list(choices)), OTHER)
    answered = answered.assign(gold=gold)
    has_other = bool((answered["pred"] == OTHER).any() or (answered["gold"] == OTHER).any())
    labels = _labels(choices, has_other)

    rows = []
    for model, prompt in _groups(frame):
        cells = answered[(answered["model"] == model) & (answered["prompt"] == prompt)]
        total = int(cells["count"].sum())
        pred_counts = cells.groupby("pred")["count"].sum()
        gold_counts = cells.groupby("gold")["count"].sum()
        for letter in labels:
            p = int(pred_counts.get(letter, 0))
            g = int(gold_counts.get(letter, 0))
            rows.append((model, prompt, letter, p, _share(p, total), g, _share(g, total)))
    return pd.DataFrame(
        rows, columns=["model", "prompt", "letter", "predicted", "predicted_share", "gold", "gold_share"]
    )


def outcome_rates(results: pd.DataFrame) -> pd.DataFrame:
    """How cells ended, per model × prompt.

    Columns: ``model, prompt, n, unparsed, refusals, max_tokens, errors`` and the
    matching ``*_rate`` columns. Every rate is over all ``n`` sent cells (errors
    included) so the rates are directly comparable with each other.
    """
    frame = _prepare(results, [*_GROUP, "status", "stop_reason"])
    frame = frame[frame["status"].isin([*_ANSWERED, "error"])]
    weight = frame["count"]
    flags = pd.DataFrame(
        {
            "model": frame["model"],
            "prompt": frame["prompt"],
            "n": weight,
            "unparsed": (frame["status"] == "unparsed").astype("int64") * weight,
            "refusals": (frame["stop_reason"] == "refusal").astype("int64") * weight,
            "max_tokens": (frame["stop_reason"] == "max_tokens").astype("int64") * weight,
            "errors": (frame["status"] == "error").astype("int64") * weight,
        }
    )
    out = flags.groupby(_GROUP, sort=True, as_index=False).sum()
    for count, rate in (("unparsed", "unparsed_rate"), ("refusals", "refusal_rate"),
                        ("max_tokens", "max_tokens_rate"), ("errors", "error_rate")):
        out[rate] = out[count] / out["n"]
    return out.reset_index(drop=True)


def confusion_matrix(results: pd.DataFrame, choices: Sequence[str]) -> pd.DataFrame:
    """Gold × predicted counts per model × prompt over answered cells.

    Columns: ``model, prompt, gold``, one column per choice, ``"other"`` (only
    when needed) and ``"unparsed"``. One row per gold choice (plus ``"other"``
    when some gold value is not a choice), zeros included.
    """
    frame = _prepare(results, [*_GROUP, "status", "answer", "target"])
    answered = frame[frame["status"].isin(_ANSWERED)]
    pred = _predicted(answered, choices)
    gold = answered["target"].where(answered["target"].isin(list(choices)), OTHER)
    has_other = bool((pred == OTHER).any() or (gold == OTHER).any())
    columns = _labels(choices, has_other)
    gold_rows = [*choices, *([OTHER] if (gold == OTHER).any() else [])]
    counts = (
        pd.DataFrame(
            {"model": answered["model"], "prompt": answered["prompt"], "gold": gold, "pred": pred,
             "count": answered["count"]}
        )
        .groupby(["model", "prompt", "gold", "pred"])["count"]
        .sum()
        .to_dict()
    )
    rows = []
    for model, prompt in _groups(frame):
        for g in gold_rows:
            rows.append([model, prompt, g, *(int(counts.get((model, prompt, g, p), 0)) for p in columns)])
    return pd.DataFrame(rows, columns=["model", "prompt", "gold", *columns])


_REPEAT_COLUMNS = ["model", "prompt", "rows", "repeats", "mean_accuracy", "majority_accuracy", "consistency_rate"]


def repeat_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Agreement across repeats per model × prompt, for groups with more than one repeat.

    - ``rows``: rows with at least one answered repeat; ``repeats``: most answered
      repeats of any row.
    - ``mean_accuracy``: mean over rows of the row's accuracy over its answered repeats.
    - ``majority_accuracy``: share of rows whose majority vote over *parsed* answers
      is correct (its correctness is that of the earliest repeat giving the
      winning answer). Ties go to the tied answer that appeared in the earliest
      repeat. A row with no parsed answer counts as wrong.
    - ``consistency_rate``: among rows with two or more answered repeats, the share
      whose repeats all gave the same answer (an unparsed reply counts as its own
      distinct answer); NaN when no row has two.

    Returns an empty frame (with these columns) when every cell has one repeat.
    """
    frame = _prepare(results, [*_GROUP, "row_id", "repeat", "status", "answer", "correct"])
    answered = frame[frame["status"].isin(_ANSWERED)].sort_values([*_GROUP, "row_id", "repeat"], kind="stable")
    keys = [*_GROUP, "row_id"]
    per_row = answered.groupby(keys, sort=True).agg(
        cells=("repeat", "size"), accuracy=("correct", "mean")
    )
    multi = per_row.groupby(level=[0, 1])["cells"].max()
    multi = multi[multi > 1]
    if multi.empty:
        return pd.DataFrame({c: pd.Series(dtype="object" if c in _GROUP else "float64") for c in _REPEAT_COLUMNS})

    # Majority vote: count each parsed answer per row, then order candidates by
    # count (desc) and earliest repeat (asc) so the first candidate is the winner.
    parsed = answered[(answered["status"] == "ok") & (answered["answer"] != "")]
    votes = (
        parsed.groupby([*keys, "answer"], sort=True)
        .agg(count=("repeat", "size"), first_repeat=("repeat", "min"))
        .reset_index()
        .sort_values([*keys, "count", "first_repeat"], ascending=[True, True, True, False, True], kind="stable")
        .drop_duplicates(subset=keys, keep="first")
    )
    winners = votes.merge(
        answered[[*keys, "repeat", "correct"]], left_on=[*keys, "first_repeat"], right_on=[*keys, "repeat"]
    ).set_index(keys)["correct"]
    per_row["majority_correct"] = winners.reindex(per_row.index, fill_value=False).astype(bool)

    outcome = answered["answer"].where(answered["status"] == "ok", "\x00" + UNPARSED)
    distinct = answered.assign(outcome=outcome).groupby(keys, sort=True)["outcome"].nunique()
    per_row["consistent"] = (distinct == 1).astype(float).where(per_row["cells"] > 1, np.nan)

    grouped = per_row.groupby(level=[0, 1], sort=True)
    out = pd.DataFrame(
        {
            "rows": grouped.size(),
            "repeats": grouped["cells"].max(),
            "mean_accuracy": grouped["accuracy"].mean(),
            "majority_accuracy": grouped["majority_correct"].mean(),
            "consistency_rate": grouped["consistent"].mean(),
        }
    )
    out = out.loc[multi.index].reset_index()
    return out[_REPEAT_COLUMNS]
