"""A single self-contained HTML report: tables plus inline SVG charts.

The file has no external references (no scripts, stylesheets, fonts or images
fetched from anywhere), so it can be mailed or archived and still open offline.
All user-supplied text goes through ``html.escape``.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evalrun.results.diagnostics import letter_distribution, outcome_rates
from evalrun.results.stats import wilson_interval
from evalrun.results.tally import diagnostics_frame

__all__ = ["render_html", "render_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#1f2328;line-height:1.4}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.75rem 0 .4rem;border-bottom:1px solid #d0d7de}
p.note{color:#57606a;font-size:.85rem;margin:.2rem 0 .6rem}
.banner{background:#fff4d6;border:1px solid #d4a72c;padding:.6rem .9rem;border-radius:6px;font-weight:600}
.banner.failed{background:#ffebe9;border-color:#cf222e;color:#82071e}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.8rem;font-variant-numeric:tabular-nums}
th,td{padding:.2rem .55rem;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0}
th.text,td.text{text-align:left}
tr.warn td{background:#fff8e6}
span.flag{color:#9a6700;font-weight:600}
.chart svg{max-width:100%;height:auto}
.chart svg *{stroke-linejoin:round}
""".strip()

_PERCENT = re.compile(r"^(accuracy|ci_low|ci_high|acc_a|acc_b|mean_accuracy|majority_accuracy|consistency_rate)$|_rate$|_share$")
_POINTS = re.compile(r"^diff(_ci_low|_ci_high)?$")
_PVALUE = re.compile(r"^p_")
_MONEY = re.compile(r"(^|_)(cost|usd)(_|$)")
_SECONDS = re.compile(r"^latency|_s$")


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(column: str, value: object) -> str:
    """Human-readable text for one cell, chosen by the column's name."""
    if _is_missing(value):
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if _PERCENT.search(column):
            return f"{100 * v:.1f}%"
        if _POINTS.search(column):
            return f"{100 * v:+.1f} pp"
        if _PVALUE.search(column):
            return "<0.0001" if v < 1e-4 else f"{v:.4f}"
        if _MONEY.search(column):
            return f"${v:,.4f}"
        if _SECONDS.search(column):
            return f"{v:.2f} s"
        return f"{v:,.0f}" if v.is_integer() else f"{v:,.4g}"
    return str(value)


def _table(frame: pd.DataFrame, *, cell: Callable[[str, object], str | None] | None = None,
           warn_rows: Sequence[bool] | None = None) -> str:
    """An escaped HTML table of ``frame``; ``cell`` may return trusted HTML for a column."""
    if frame.empty:
        return '<p class="note">No rows.</p>'
    text_cols = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
                 or pd.api.types.is_bool_dtype(frame[c])}
    head = "".join(
        f'<th class="{"text" if c in text_cols else "num"}">{html.escape(str(c).replace("_", " "))}</th>'
        for c in frame.columns
    )
    body = []
    for i, record in enumerate(frame.itertuples(index=False, name=None)):
        cls = ' class="warn"' if warn_rows is not None and warn_rows[i] else ""
        tds = []
        for col, value in zip(frame.columns, record, strict=True):
            custom = cell(str(col), value) if cell else None
            content = custom if custom is not None else html.escape(_fmt(str(col), value))
            tds.append(f'<td class="{"text" if col in text_cols else "num"}">{content}</td>')
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


_STRIP = [
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.S),
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
    # matplotlib's page-wide `*{...}` rule would leak out of an inline SVG.
    re.compile(r"<style[^>]*>.*?</style>\s*", re.S),
    # Namespace declarations are not needed for SVG inlined in HTML5, and they are
    # the only URLs matplotlib writes once the metadata is gone.
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
]


def _svg(fig: Figure, prefix: str) -> str:
    """Inline SVG markup for ``fig`` with ids namespaced by ``prefix``."""
    buf = io.StringIO()
    # Text stays text (small, selectable); a fixed hash salt keeps ids reproducible.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buf.getvalue()
    for pattern in _STRIP:
        svg = pattern.sub("", svg)
    # Two inline SVGs share one id space; prefix every id and local reference.
    svg = re.sub(r'(\bid="|url\(#|href="#)', rf"\g<1>{prefix}-", svg)
    return f'<div class="chart" role="img">{svg.strip()}</div>'


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # explicit non-interactive canvas; pyplot state is never touched
    return fig


def _labels(summary: pd.DataFrame) -> list[str]:
    parts = [c for c in ("model", "prompt") if c in summary.columns]
    return [" · ".join(str(v) for v in row) for row in summary[parts].itertuples(index=False, name=None)]


def _intervals(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if {"ci_low", "ci_high"} <= set(summary.columns):
        return (pd.to_numeric(summary["ci_low"]).to_numpy(dtype=float),
                pd.to_numeric(summary["ci_high"]).to_numpy(dtype=float))
    if {"correct", "n"} <= set(summary.columns):
        # Same denominator as the summary's accuracy (correct / n).
        bounds = [wilson_interval(int(k), int(n)) for k, n in zip(summary["correct"], summary["n"], strict=True)]
        return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    nan = np.full(len(summary), np.nan)
    return nan, nan.copy()


def _accuracy_chart(summary: pd.DataFrame) -> str:
    if "accuracy" not in summary.columns or summary.empty:
        return '<p class="note">No accuracy column in the summary.</p>'
    acc = pd.to_numeric(summary["accuracy"]).to_numpy(dtype=float)
    low, high = _intervals(summary)
    labels = _labels(summary)
    # Whisker lengths; a missing interval just draws no whisker.
    err = np.nan_to_num(np.vstack([np.clip(acc - low, 0, None), np.clip(high - acc, 0, None)]))
    fig = _figure(7.5, 0.9 + 0.32 * len(acc))
    ax = fig.add_subplot()
    y = np.arange(len(acc))
    ax.barh(y, np.nan_to_num(acc), xerr=err, color="#4c78a8", ecolor="#1f2328", capsize=3, height=0.6)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (bars) with confidence interval (whiskers)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, "acc")


def _cost_chart(summary: pd.DataFrame) -> str:
    if not {"cost_usd", "accuracy"} <= set(summary.columns):
        return '<p class="note">No cost information in the summary.</p>'
    cost = pd.to_numeric(summary["cost_usd"]).to_numpy(dtype=float)
    acc = pd.to_numeric(summary["accuracy"]).to_numpy(dtype=float)
    keep = np.isfinite(cost) & np.isfinite(acc)
    if not keep.any():
        return '<p class="note">Cost unknown (no price for these models), so there is no cost chart.</p>'
    labels = [label for label, k in zip(_labels(summary), keep, strict=True) if k]
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    ax.scatter(cost[keep], acc[keep], color="#e45756", zorder=3)
    for x, yv, label in zip(cost[keep], acc[keep], labels, strict=True):
        ax.annotate(label, (x, yv), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("total cost (USD)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    # Headroom on the right so the point labels stay inside the axes.
    ax.set_xlim(0, float(cost[keep].max()) * 1.35 or 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, "cost")


_COMPARISON_ORDER = ["by", "group", "a", "b", "modes_differ", "answer_modes", "n", "acc_a", "acc_b", "diff",
                     "diff_ci", "only_a_correct", "only_b_correct", "p_mcnemar", "p_holm"]


def _comparison_view(comparison: pd.DataFrame) -> pd.DataFrame:
    """Fold the CI bounds and the two modes into one column each, flag first, so it fits a screen."""
    view = comparison.copy()
    if {"diff_ci_low", "diff_ci_high"} <= set(view.columns):
        view["diff_ci"] = [f"[{_fmt('diff', lo)}, {_fmt('diff', hi)}]"
                           for lo, hi in zip(view.pop("diff_ci_low"), view.pop("diff_ci_high"), strict=True)]
    if {"mode_a", "mode_b"} <= set(view.columns):
        view["answer_modes"] = [f"{ma} → {mb}" for ma, mb in zip(view.pop("mode_a"), view.pop("mode_b"), strict=True)]
    first = [c for c in _COMPARISON_ORDER if c in view.columns]
    return view[first + [c for c in view.columns if c not in first]]


def _comparison_section(comparison: pd.DataFrame) -> str:
    def cell(col: str, value: object) -> str | None:
        if col == "modes_differ":
            return '<span class="flag">⚠ modes differ</span>' if bool(value) else "same mode"
        if col == "p_holm" and not _is_missing(value) and float(value) < 0.05:  # type: ignore[arg-type]
            return f"<strong>{html.escape(_fmt(col, value))}</strong>"
        return None

    warn = comparison["modes_differ"].astype(bool).tolist() if "modes_differ" in comparison.columns else None
    note = (
        '<p class="note">Paired on the items both sides answered, so acc a / acc b can differ from the '
        "summary (which counts errors as wrong). diff = accuracy of b − accuracy of a (positive: b scored "
        "higher), with a paired bootstrap interval. p mcnemar is the exact McNemar test; p holm adjusts it "
        "for the number of comparisons (bold when below 0.05). Rows marked ⚠ compare different answer "
        "modes, so the prompt or model is not the only thing that changed.</p>"
    )
    return note + _table(_comparison_view(comparison), cell=cell, warn_rows=warn)


def _letters_section(results: pd.DataFrame, choices: Sequence[str]) -> str:
    dist = letter_distribution(results, choices)
    if dist.empty:
        return '<p class="note">No answered cells.</p>'
    wide = dist.assign(
        cell=[f"{_pct(p)} / {_pct(g)}"
              for p, g in zip(dist["predicted_share"], dist["gold_share"], strict=True)]
    ).pivot(index=["model", "prompt"], columns="letter", values="cell")
    wide = wide[list(dict.fromkeys(dist["letter"]))].reset_index()
    wide.columns.name = None
    note = ('<p class="note">Share of answered cells predicting each letter / share whose gold answer is '
            "that letter. A predicted share well above the gold share suggests position bias.</p>")
    return note + _table(wide)


def _pct(value: float) -> str:
    return "—" if _is_missing(value) else f"{100 * value:.0f}%"


def _settings_table(settings: Mapping[str, object]) -> str:
    rows = []
    for key, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        rows.append(f'<tr><th class="text">{html.escape(str(key))}</th><td class="text">{html.escape(text)}</td></tr>')
    if not rows:
        return '<p class="note">No settings recorded.</p>'
    return f'<div class="scroll"><table><tbody>{"".join(rows)}</tbody></table></div>'


def render_report(report: Any) -> str:
    """The report.html of a `Report` (see `evalrun.reports.build`)."""
    summary = pd.DataFrame(report.summary)
    comparison = pd.DataFrame(report.comparison) if report.comparison is not None else None
    repeats = _repeat_frame(report)
    return render_html(
        summary=summary,
        comparison=comparison,
        settings=report.settings,
        choices=report.choices or None,
        outcomes=diagnostics_frame(report.tallies),
        repeats=repeats,
        cells=report.totals["cells"],
        failure=report.failure,
        simulated=report.simulated,
    )


def _repeat_frame(report: Any) -> pd.DataFrame:
    rows = []
    for tally in report.tallies:
        repeats = report.repeats.get((tally.model, tally.prompt))
        if repeats is None or repeats.repeats < 2:
            continue
        answered, means = tally.row_means()
        majority = repeats.majority_correct[answered] if repeats.majority_correct is not None else np.array([])
        rows.append(
            {
                "model": tally.model,
                "prompt": tally.prompt,
                "rows": repeats.rows,
                "repeats": repeats.repeats,
                "mean_accuracy": float(means.mean()) if means.size else math.nan,
                "majority_accuracy": float(np.nanmean(majority)) if majority.size else math.nan,
                "consistency_rate": repeats.consistent / repeats.multi if repeats.multi else math.nan,
            }
        )
    return pd.DataFrame(rows)


def render_html(
    *,
    summary: pd.DataFrame,
    comparison: pd.DataFrame | None,
    settings: Mapping[str, object],
    choices: Sequence[str] | None = None,
    outcomes: pd.DataFrame | None = None,
    repeats: pd.DataFrame | None = None,
    cells: int = 0,
    failure: str | None = None,
    simulated: bool = False,
) -> str:
    """Render the whole report as one self-contained HTML document.

    Sections: simulator banner (a simulated run), failure banner, summary table, accuracy chart
    with CI whiskers, cost vs accuracy (skipped when no cost is known), comparisons, letter
    distribution (when ``choices`` is given), outcome rates, repeat summary (when any cell was
    repeated), and the run settings. ``outcomes`` is the weighted outcome frame of the tallies.
    """
    title = str(settings.get("name") or "evalrun report")
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if simulated or settings.get("endpoint") == "simulator":
        parts.append(
            '<p class="banner" role="alert">Simulated run: these answers came from the built-in simulator, '
            "not from a real model. The scores below are simulated and say nothing about model quality.</p>"
        )
    if failure:
        parts.append(
            f'<p class="banner failed" role="alert">Failed run: {html.escape(failure)}. '
            "Run the same command again to retry the failed requests.</p>"
        )
    parts.append(f'<p class="note">{cells:,} cells (model × prompt × row × repeat).</p>')

    parts.append("<h2>Summary</h2>")
    parts.append(_table(summary))
    if failure is None or (not summary.empty and summary["n"].sum() > 0):
        parts.append("<h2>Accuracy</h2>")
        parts.append(_accuracy_chart(summary))
        parts.append("<h2>Cost against accuracy</h2>")
        parts.append(_cost_chart(summary))
    if comparison is not None:
        parts.append("<h2>Comparisons</h2>")
        parts.append(_comparison_section(comparison) if not comparison.empty
                     else '<p class="note">Nothing to compare (fewer than two variants).</p>')
    if outcomes is None or outcomes.empty:
        parts.append('<p class="note">No per-cell results, so no diagnostics.</p>')
    else:
        if choices:
            parts.append("<h2>Answer letters</h2>")
            parts.append(_letters_section(outcomes, choices))
        parts.append("<h2>Outcomes</h2>")
        parts.append('<p class="note">Rates over all sent cells: unparsed replies, refusals, replies cut at '
                     "max_tokens, and errors (no reply at all).</p>")
        parts.append(_table(outcome_rates(outcomes)))
        if repeats is not None and not repeats.empty:
            parts.append("<h2>Repeats</h2>")
            parts.append('<p class="note">Majority vote over parsed answers per row (ties go to the answer '
                         "seen in the earliest repeat); consistency is the share of rows whose repeats all "
                         "gave the same answer.</p>")
            parts.append(_table(repeats))
    parts.append("<h2>Run settings</h2>")
    parts.append(_settings_table(settings))

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{chr(10).join(parts)}\n</body></html>\n"
    )
