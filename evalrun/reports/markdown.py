"""report.md: the summary, the paired comparison, totals, errors and settings, as Markdown."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from evalrun.reports.baseline import baseline_markdown
from evalrun.reports.frontier import frontier_markdown
from evalrun.reports.md_table import fmt_value as _fmt
from evalrun.reports.md_table import markdown_table
from evalrun.reports.report import Report
from evalrun.reports.reviewed import human_review_lines
from evalrun.reports.trend import trend_markdown
from evalrun.results.summary import UNRELIABLE_ERROR_RATE

__all__ = ["COMPARISON_TABLE_COLUMNS", "MARKDOWN_SECTIONS", "SUMMARY_TABLE_COLUMNS", "markdown_table", "render_markdown"]

SUMMARY_TABLE_COLUMNS = [
    "model", "prompt", "answer_mode", "n", "cells", "correct", "accuracy", "ci_low", "ci_high", "ci_method",
    "unparsed", "errors", "error_rate", "cost_usd", "cost_per_correct_usd",
]  # fmt: skip
# The comparison columns shown in the Markdown report and by `evalrun compare`.
COMPARISON_TABLE_COLUMNS = [
    "group", "a", "b", "n", "acc_a", "acc_b", "diff", "diff_ci_low", "diff_ci_high", "p_value", "test", "p_holm",
]  # fmt: skip
AGREEMENT_COLUMNS = [
    "model", "prompt", "judge_agreement_n", "judge_agreement", "judge_agreement_low", "judge_agreement_high",
    "judge_kappa", "judge_kappa_low", "judge_kappa_high",
]  # fmt: skip
CI_METHODS = {
    "wilson": "Wilson interval (one 0/1 answer per row)",
    "clt": "t interval over per-row means",
    "clt-cluster": "cluster-robust t interval",
}


def _summary_rows(report: Report) -> list[dict[str, Any]]:
    rows = []
    for row in report.summary:
        shown = dict(row)
        if not row["reliable"] and row["n"]:
            shown["accuracy"] = f"⚠ {_fmt(row['accuracy'])} (unreliable: {row['error_rate']:.0%} errors)"
        rows.append(shown)
    return rows


def _stopped_lines(settings: Mapping[str, Any]) -> list[str]:
    """Why the last run stopped early, when it did (the store adds `stopped` to the settings)."""
    reason = (settings.get("stopped") or {}).get("reason")
    return [f"> **STOPPED:** {reason}", ""] if reason else []


def retry_advice(stopped: bool) -> str:
    """What to do about a failed run. A run stopped for a cause (an unknown model, a refused key)
    fails the same way when run again as it is: the cause, said in the STOPPED banner, comes first."""
    if stopped:
        return "Fix what stopped the run (above), then run the same command again: it sends only what is missing."
    return "Run the same command again to retry the failed requests."


def render_markdown(report: Report) -> str:
    """report.md of a `Report`: its sections (`MARKDOWN_SECTIONS`) in order."""
    lines: list[str] = []
    for section in MARKDOWN_SECTIONS:
        lines += section(report)
    return "\n".join(lines) + "\n"


def _head(report: Report) -> list[str]:
    lines = [f"# {report.settings.get('name', 'experiment')}", ""]
    if report.simulated:
        lines += ["> **endpoint: simulator** — these scores come from evalrun's simulator, not from a model.", ""]
    stopped = _stopped_lines(report.settings)
    lines += stopped
    if report.failure:
        lines += [f"> **FAILED RUN:** {report.failure}. {retry_advice(bool(stopped))}", ""]
    return lines


def _summary(report: Report) -> list[str]:
    methods = sorted({row["ci_method"] for row in report.summary if row["ci_method"]})
    reducer = report.settings.get("reducer") or "mean"
    interval = (
        "ci_low–ci_high is the 95 % interval: " + "; ".join(CI_METHODS.get(m, m) for m in methods) + "."
        if methods
        else "No interval: nothing was answered."
    )
    lines = [
        markdown_table(_summary_rows(report), SUMMARY_TABLE_COLUMNS), "",
        "n is the number of dataset rows with at least one answer (the unit of evidence); cells counts the "
        "answered cells behind them, and correct counts cells (a row × repeat), not rows. Accuracy is over "
        "answered cells only: a failed request is never counted as a wrong answer. Repeats of a row are "
        f"reduced to one value per row first (reducer: {reducer}). " + interval,
        f"A model × prompt with more than {UNRELIABLE_ERROR_RATE:.0%} of its requests failed is marked unreliable.",
        "",
    ]  # fmt: skip
    if report.clusters is not None:
        lines += [
            f"Rows are grouped into {report.totals['clusters']} clusters (dataset.cluster): intervals and tests are "
            "cluster-robust and the bootstrap resamples whole clusters.",
            "",
        ]
    mixed = sorted({row["answer_mode"] for row in report.summary})
    if len(mixed) > 1:
        lines += [
            f"> **Warning:** cells were asked in different answer modes ({', '.join(mixed)}); comparisons across "
            "modes compare the asking as well as the model or prompt.",
            "",
        ]
    return lines


def _comparison(report: Report) -> list[str]:
    if not report.comparison:
        return []
    return [
        f"## Paired comparison by {report.comparison_by}",
        "",
        markdown_table(report.comparison, [*COMPARISON_TABLE_COLUMNS, "modes_differ"]),
        "",
        "diff = acc_b − acc_a over the rows both answered (n rows); 95 % paired bootstrap interval over rows "
        "(or clusters), or the t interval when there are too many to resample; the test is exact McNemar "
        "where each row is one 0/1 answer, a paired t-test on per-row means otherwise (cluster-robust with "
        "clusters); p_holm adjusts across the table.",
        "",
    ]


def _totals(report: Report) -> list[str]:
    totals, settings = report.totals, report.settings
    cost = totals["cost_usd"]
    unknown = totals["cost_unknown"]
    lines = ["## Totals", ""]
    lines += [
        f"- rows: {totals['rows']:,}; cells: {totals['cells']:,} ({totals['answered']:,} answered, "
        f"{totals['errors']:,} failed, {totals['pending']:,} not sent); distinct requests: {totals['requests']:,}",
        f"- answered from the shared response cache (not paid again): {totals['from_cache']:,}",
        f"- input tokens: {totals['input_tokens']:,}; output tokens: {totals['output_tokens']:,}; "
        f"cache writes: {totals['cache_creation_input_tokens']:,}; cache reads: {totals['cache_read_input_tokens']:,}",
        *_savings(totals),
        f"- cost of the answers: ${cost:.4f}"
        + (f" (plus {unknown:,} answers of unknown cost)" if unknown else "")
        + f"; paid by this run folder in all: {_paid(totals['spent_usd'], unknown)}"
        + f" (prices as of {settings.get('prices_as_of', 'unknown')})",
        *human_review_lines(report.tallies),
        "",
    ]
    return lines + _grader(report, lines)


def _grader(report: Report, totals: list[str]) -> list[str]:
    """The grader's line (into the totals, before their blank line) and its agreement with people."""
    judge = report.settings.get("judge")
    if not judge:
        return []
    judge_cost = sum(t.judge_cost_usd for t in report.tallies)
    judge_in = sum(t.judge_tokens["input"] for t in report.tallies)
    judge_out = sum(t.judge_tokens["output"] for t in report.tallies)
    totals[-1:-1] = [
        f"- grader {judge['label']} ({judge['model']}, asked in {judge['mode']} mode): input tokens {round(judge_in):,}; "
        f"output tokens {round(judge_out):,}; cost ${judge_cost:.4f} (in the folder's total above, not in the answers' cost)"
    ]
    if not any("judge_kappa" in row for row in report.summary):
        return []
    return [
        "Agreement of the grader with the human grades (the `human` column and reviews in `evalrun view`; "
        "judge_agreement_from_column and judge_agreement_from_reviews count each): judge_agreement is the share of "
        "cells graded alike (95 % Wilson interval); judge_kappa is Cohen's κ with its 95 % interval.",
        "",
        markdown_table(report.summary, AGREEMENT_COLUMNS),
        "",
    ]


def _fields(report: Report) -> list[str]:
    fields = [c for c in (report.summary[0] if report.summary else {}) if c.startswith("accuracy_")]
    if not fields:
        return []
    return [
        "## Accuracy by field",
        "",
        markdown_table(report.summary, ["model", "prompt", "accuracy", *fields]),
        "",
        "accuracy counts a cell right when every field is right; accuracy_<field> is each field's share of "
        "the answered cells (a reply without the expected tool call or JSON counts as wrong there).",
        "",
    ]


def _errors(report: Report) -> list[str]:
    kinds: Counter[str] = Counter()
    for tally in report.tallies:
        kinds.update(tally.error_kinds)
    if not kinds:
        return []
    lines = ["## Errors", ""]
    lines += [f"- {count:,} × {kind}" for kind, count in kinds.most_common(10)]
    return [*lines, "", "Failed requests are sent again by the next run of the same command.", ""]


def _settings(report: Report) -> list[str]:
    settings = report.settings
    lines = ["## Settings", ""]
    for key in ("name", "spec_path", "dataset", "endpoint", "api_versions", "models", "prompts", "repeats",
                "reducer", "scorer", "budget_usd", "concurrency", "evalrun_version"):  # fmt: skip
        if key in settings:
            value = settings[key]
            lines.append(f"- {key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    lines += [f"- warning: {warning}" for warning in settings.get("warnings") or ()]
    return lines


# report.md, top to bottom: a new section is a function of the `Report` returning its lines.
def _baseline(report: Report) -> list[str]:
    return baseline_markdown(getattr(report, "baseline", None))  # evalrun.reports.baseline


def _trend(report: Report) -> list[str]:
    return trend_markdown(getattr(report, "trend", []))  # evalrun.reports.trend


MARKDOWN_SECTIONS: list[Callable[[Report], list[str]]] = [
    _head, _summary, _comparison, frontier_markdown, _baseline, _trend, _totals, _fields, _errors, _settings,
]


def _savings(totals: Mapping[str, Any]) -> list[str]:
    """What prompt caching and the batch tier saved, against the same usage without them."""
    lines = []
    cost = totals["cost_usd"]
    uncached = totals.get("uncached_usd", 0.0)
    if uncached - cost > 1e-9:
        lines.append(
            f"- saved by prompt caching: ${uncached - cost:.4f} ({(uncached - cost) / uncached:.0%} of ${uncached:.4f}, "
            f"the same run with every cached token paid as input); cache writes cost 1.25× (5 m) or 2× (1 h) the "
            "input price, reads 0.1×"
        )
    realtime = totals.get("realtime_usd", 0.0)
    if realtime - cost > 1e-9 and realtime > 0:
        lines.append(f"- paid at the batch tier: ${cost:.4f} instead of ${realtime:.4f} in real time (half price)")
    return lines


def _paid(usd: float, unknown: int) -> str:
    if unknown and not usd:
        return "unknown (no price for its models)"
    return f"${usd:.4f}" + (" and the answers of unknown cost" if unknown else "")
