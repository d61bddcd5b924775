"""Results and summaries as pandas frames, and the report files of a run folder.

Reports are always rebuilt from the store: `build_reports(folder)` is what `evalrun run` calls at
the end and what `evalrun report` calls on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from evalrun.cost import stored_cost
from evalrun.errors import StoreError
from evalrun.models import Price
from evalrun.reports.html import render_html
from evalrun.results.compare import compare
from evalrun.results.scoring import make_scorer
from evalrun.spec import ScorerSpec
from evalrun.stats import wilson_interval
from evalrun.store.run_store import STORE_NAME, Store

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "build_reports",
    "load_results",
    "results_frame",
    "summary_frame",
]

RESULT_COLUMNS = [
    "model", "model_id", "prompt", "row_id", "repeat", "answer_mode", "response_text", "answer", "target",
    "correct", "status", "stop_reason", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_read_input_tokens", "cost_usd", "latency_s", "attempts", "error",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "model", "prompt", "answer_mode", "n", "answered", "unparsed", "errors", "correct", "accuracy", "ci_low",
    "ci_high", "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
    "cost_usd", "cost_per_correct_usd", "cost_per_1k_rows_usd", "latency_p50_s", "latency_p95_s", "pending",
]  # fmt: skip
# The comparison columns shown in the Markdown report and by `evalrun compare`.
COMPARISON_TABLE_COLUMNS = [
    "group", "a", "b", "n", "acc_a", "acc_b", "diff", "diff_ci_low", "diff_ci_high", "p_mcnemar", "p_holm",
]  # fmt: skip
_TOKEN_COLUMNS = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]


def _price(raw: Mapping[str, Any] | None) -> Price | None:
    return Price(**raw) if raw else None


def results_frame(rows: list[dict[str, Any]], settings: Mapping[str, Any]) -> pd.DataFrame:
    """One row per planned cell, scored. `settings` is what the run stored (scorer, prices)."""
    scorer = make_scorer(ScorerSpec.model_validate(settings["scorer"]))
    prices = {label: _price(p) for label, p in (settings.get("prices") or {}).items()}
    records = []
    for row in rows:
        status = row["status"]
        record: dict[str, Any] = {
            "model": row["model"],
            "model_id": row["model_id"],
            "prompt": row["prompt"],
            "row_id": row["row_id"],
            "repeat": row["repeat"],
            "answer_mode": row["answer_mode"],
            "response_text": row["text"] or "",
            "answer": "",
            "target": row["target"],
            "correct": False,
            "stop_reason": row["stop_reason"] or "",
            "latency_s": row["latency_s"] if row["latency_s"] is not None else math.nan,
            "attempts": row["attempts"] or 0,
            "error": row["error"] or "",
        }
        for column in _TOKEN_COLUMNS:
            record[column] = int(row[column] or 0)
        if status is None:
            record["status"] = "pending"
            record["error"] = "not sent yet"
        elif status == "ok":
            score = scorer(row["text"] or "", row["target"])
            record["answer"] = score.answer or ""
            record["correct"] = score.correct
            record["status"] = score.status
        else:
            record["status"] = "error"
        record["cost_usd"] = stored_cost(prices.get(row["model"]), row) if status is not None else 0.0
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)
    frame["repeat"] = frame["repeat"].astype("int64")
    frame["correct"] = frame["correct"].astype(bool)
    return frame


def _modes(series: pd.Series) -> str:
    return "+".join(sorted(set(series)))


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model × prompt. accuracy = correct / n over every sent cell; Wilson 95 % CI."""
    rows = []
    for (model, prompt), group in results.groupby(["model", "prompt"], sort=False):
        sent = group[group["status"] != "pending"]
        n = len(sent)
        correct = int(sent["correct"].sum())
        low, high = wilson_interval(correct, n)
        latency = sent["latency_s"].dropna()
        cost = sent["cost_usd"].sum(min_count=1) if not sent["cost_usd"].isna().any() else math.nan
        rows.append(
            {
                "model": model,
                "prompt": prompt,
                "answer_mode": _modes(group["answer_mode"]),
                "n": n,
                "answered": int((sent["status"] != "error").sum()),
                "unparsed": int((sent["status"] == "unparsed").sum()),
                "errors": int((sent["status"] == "error").sum()),
                "correct": correct,
                "accuracy": correct / n if n else math.nan,
                "ci_low": low,
                "ci_high": high,
                **{column: int(sent[column].sum()) for column in _TOKEN_COLUMNS},
                "cost_usd": cost if n else 0.0,
                "cost_per_correct_usd": cost / correct if correct and not math.isnan(cost) else math.nan,
                "cost_per_1k_rows_usd": cost / n * 1000 if n and not math.isnan(cost) else math.nan,
                "latency_p50_s": float(latency.quantile(0.5)) if len(latency) else math.nan,
                "latency_p95_s": float(latency.quantile(0.95)) if len(latency) else math.nan,
                "pending": int((group["status"] == "pending").sum()),
            }
        )
    return pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS)


def _open(folder: Path) -> tuple[Store, dict[str, Any]]:
    if not (folder / STORE_NAME).exists():
        raise StoreError(f"{folder}: no {STORE_NAME} here; give a run folder (reports/<name>/<run>/)")
    store = Store.open(folder, create=False)
    settings = store.last_settings()
    if not settings:
        store.close()
        raise StoreError(f"{folder}: the store has no run recorded")
    return store, settings


def load_results(folder: str | Path) -> pd.DataFrame:
    """The per-cell results of a run folder, rebuilt from its store."""
    store, settings = _open(Path(folder))
    with store:
        return results_frame(store.cell_rows(), settings)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_fmt(row[c]).replace("|", "\\|") for c in columns) + " |"
        for _, row in frame.iterrows()
    ]
    return "\n".join([header, rule, *body])


def _markdown(
    summary: pd.DataFrame, results: pd.DataFrame, settings: Mapping[str, Any], comparison: pd.DataFrame | None
) -> str:
    sent = results[results["status"] != "pending"]
    total_cost = sent["cost_usd"].sum(min_count=1) if not sent["cost_usd"].isna().any() else math.nan
    lines = [f"# {settings.get('name', 'experiment')}", ""]
    if settings.get("endpoint") == "simulator":
        lines += [
            "> **endpoint: simulator** — these scores come from evalrun's simulator, not from a model.",
            "",
        ]
    lines += [
        markdown_table(
            summary,
            [
                "model",
                "prompt",
                "answer_mode",
                "n",
                "correct",
                "accuracy",
                "ci_low",
                "ci_high",
                "unparsed",
                "errors",
                "cost_usd",
                "cost_per_correct_usd",
            ],
        ),
        "",
        "Accuracy is correct / n over every sent cell (errors and unparsed answers count as wrong); "
        "ci_low–ci_high is the 95 % Wilson interval.",
        "",
    ]
    mixed = sorted(set(summary["answer_mode"]))
    if len(mixed) > 1:
        lines += [
            f"> **Warning:** cells were asked in different answer modes ({', '.join(mixed)}); comparisons across "
            "modes compare the asking as well as the model or prompt.",
            "",
        ]
    if comparison is not None and not comparison.empty:
        lines += [
            f"## Paired comparison by {comparison['by'].iloc[0]}",
            "",
            markdown_table(comparison, [*COMPARISON_TABLE_COLUMNS, "modes_differ"]),
            "",
            "diff = acc_b − acc_a on the rows both answered; paired bootstrap 95 % interval; exact McNemar "
            "p-value, Holm-adjusted across the table.",
            "",
        ]
    lines += ["## Totals", ""]
    lines += [
        f"- cells: {len(results)} ({len(sent)} sent, {int((results['status'] == 'pending').sum())} pending)",
        f"- input tokens: {int(sent['input_tokens'].sum()):,}; output tokens: {int(sent['output_tokens'].sum()):,}; "
        f"cache writes: {int(sent['cache_creation_input_tokens'].sum()):,}; "
        f"cache reads: {int(sent['cache_read_input_tokens'].sum()):,}",
        f"- cost: {'unknown (a model has no price)' if math.isnan(total_cost) else f'${total_cost:.4f}'} "
        f"(prices as of {settings.get('prices_as_of', 'unknown')})",
        "",
        "## Settings",
        "",
    ]
    for key in (
        "name",
        "spec_path",
        "dataset",
        "endpoint",
        "api_versions",
        "models",
        "prompts",
        "repeats",
        "scorer",
        "budget_usd",
        "concurrency",
        "evalrun_version",
    ):
        if key in settings:
            value = settings[key]
            lines.append(f"- {key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    for warning in settings.get("warnings") or ():
        lines.append(f"- warning: {warning}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def default_comparison(results: pd.DataFrame) -> pd.DataFrame | None:
    """Prompts compared within each model when there are several prompts, else models."""
    sent = results[results["status"] != "pending"]
    if sent.empty:
        return None
    if sent["prompt"].nunique() > 1:
        return compare(sent, by="prompt")
    if sent["model"].nunique() > 1:
        return compare(sent, by="model")
    return None


def write_comparison(folder: Path, comparison: pd.DataFrame) -> Path:
    path = folder / "comparison.csv"
    _atomic_write(path, comparison.to_csv(index=False))
    return path


def build_reports(folder: str | Path) -> Path:
    """Write summary.csv, results.csv, comparison.csv, report.md and report.html into the run folder."""
    folder = Path(folder)
    store, settings = _open(folder)
    with store:
        results = results_frame(store.cell_rows(), settings)
    summary = summary_frame(results)
    comparison = default_comparison(results)
    choices = (
        settings.get("scorer", {}).get("choices")
        if settings.get("scorer", {}).get("type") == "choice"
        else None
    )
    try:
        _atomic_write(folder / "results.csv", results.to_csv(index=False))
        _atomic_write(folder / "summary.csv", summary.to_csv(index=False))
        if comparison is not None:
            write_comparison(folder, comparison)
        _atomic_write(folder / "report.md", _markdown(summary, results, settings, comparison))
        _atomic_write(
            folder / "report.html",
            render_html(
                summary=summary, results=results, comparison=comparison, settings=settings, choices=choices
            ),
        )
    except OSError as exc:
        raise StoreError(f"{folder}: cannot write the reports ({exc.strerror})") from None
    return folder
