"""report.html: one self-contained page — summary, charts, comparisons, diagnostics, settings, and
a row explorer to read every cell's request and reply.

The file has no external references (no stylesheet, script, font or image fetched from
anywhere), so it can be mailed or archived and still open offline. Every user-supplied text goes
through ``html.escape`` here, and through ``textContent`` in the explorer's script.

Layout rules: tables fit the page width (secondary columns fold into a "more columns" table),
every rate is a percentage, chart labels sit in a column beside the chart so they cannot overlap,
and a failed run gets a red banner instead of an accuracy. The explorer's data and its
addressable state (``#explore?...``) are described in `evalrun.reports.explorer` and in
``static/explorer.js``.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import IO, Any, Literal
from urllib.parse import quote

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from evalrun.reports.frontier import frontier_html
from evalrun.results.diagnostics import letter_distribution, outcome_rates
from evalrun.results.stats import wilson_interval
from evalrun.results.tally import diagnostics_frame

__all__ = ["explore_link", "render_html", "render_report", "write_html", "write_report"]

_PERCENT = re.compile(r"^(accuracy|ci_low|ci_high|acc_a|acc_b|mean_accuracy|majority_accuracy|consistency_rate)$|_rate$|_share$|^accuracy_")
_POINTS = re.compile(r"^diff(_ci_low|_ci_high)?$")
_PVALUE = re.compile(r"^p_")
_MONEY = re.compile(r"(^|_)(cost|usd)(_|$)")
_SECONDS = re.compile(r"^latency|_s$")


def _static(name: str) -> str:
    return resources.files("evalrun.reports").joinpath("static", name).read_text(encoding="utf-8")


def _esc(value: object) -> str:
    return html.escape(str(value))


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def _fmt(column: str, value: object) -> str:
    """Human-readable text for one value, chosen by the column's name."""
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


def _pct(value: object, digits: int = 1) -> str:
    return "—" if _is_missing(value) else f"{100 * float(value):.{digits}f}%"  # type: ignore[arg-type]


def explore_link(**state: str | tuple[str, str]) -> str:
    """The href of an explorer view, e.g. ``explore_link(model="m", by="prompt", disagree=("a", "b"))``.

    Values are percent-encoded; the two names of ``disagree`` are encoded one by one and joined by
    a literal comma (so a name may itself contain a comma)."""
    parts = []
    for key, value in state.items():
        if not value:
            continue
        if isinstance(value, tuple):
            a, b = value
            parts.append(f"disagree={quote(a, safe='')},{quote(b, safe='')}")
        else:
            parts.append(f"{key}={quote(str(value), safe='')}")
    return "#explore" + ("?" + "&".join(parts) if parts else "")


# -- tables ------------------------------------------------------------------------------------
Cell = Callable[[Mapping[str, Any]], str]
_NOWRAP = 24


def _grid(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str | Cell]], *,
          row_class: Callable[[Mapping[str, Any]], str] | None = None, caption: str = "") -> str:
    """An HTML table: ``columns`` are (header HTML, "text"|"num", key or a function returning HTML)."""
    if not rows:
        return '<p class="note">No rows.</p>'
    head = "".join(f'<th class="{kind}" scope="col">{title}</th>' for title, kind, _ in columns)
    body = []
    for row in rows:
        cls = row_class(row) if row_class else ""
        tds = []
        for _, kind, how in columns:
            if callable(how):
                content, cls_ = how(row), kind
            else:
                text = _fmt(how, row.get(how))
                # Short names stay on one line (a browser would break "few-shot" at its hyphen).
                content, cls_ = _esc(text), f"{kind} nw" if kind == "text" and len(text) <= _NOWRAP else kind
            tds.append(f'<td class="{cls_}">{content}</td>')
        body.append(f'<tr{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{"".join(tds)}</tr>')
    cap = f"<caption class=\"note\">{caption}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _frame_table(frame: pd.DataFrame, *, cell: Callable[[str, object], str | None] | None = None) -> str:
    """Every column of ``frame``, formatted by name; ``cell`` may return trusted HTML for a column."""
    if frame.empty:
        return '<p class="note">No rows.</p>'
    text = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])}

    def how(col: str) -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            custom = cell(col, row.get(col)) if cell else None
            return custom if custom is not None else _esc(_fmt(col, row.get(col)))
        return render

    columns = [(_esc(str(c).replace("_", " ")), "text" if c in text else "num", how(str(c))) for c in frame.columns]
    return _grid(frame.to_dict("records"), columns)


def _label(row: Mapping[str, Any]) -> str:
    return " · ".join(str(row[c]) for c in ("model", "prompt") if c in row and not _is_missing(row[c]))


def _unreliable(row: Mapping[str, Any]) -> bool:
    return row.get("reliable") is False or row.get("reliable") is np.False_


def _accuracy_cell(withheld: bool) -> Cell:
    def render(row: Mapping[str, Any]) -> str:
        acc = row.get("accuracy")
        if withheld and not _is_missing(acc):
            return '<span class="bad">withheld</span><span class="sub">the run failed</span>'
        if _is_missing(acc):
            sent = row.get("answered", row.get("n"))
            return "—" + ('<span class="sub">nothing answered</span>' if not sent else "")
        text = f"<strong>{_pct(acc)}</strong>"
        low, high = row.get("ci_low"), row.get("ci_high")
        if not (_is_missing(low) or _is_missing(high)):
            method = row.get("ci_method") or "95 % interval"
            text += f'<span class="sub" title="{_esc(method)}">{_pct(low)}–{_pct(high)}</span>'
        if _unreliable(row):
            text = f'<span class="bad" title="more than 5 % of its requests failed">⚠ {text} unreliable</span>'
        return text
    return render


def _errors_cell(row: Mapping[str, Any]) -> str:
    errors = row.get("errors")
    if _is_missing(errors):
        return "—"
    text = f"{int(errors):,}"  # type: ignore[arg-type]
    rate = row.get("error_rate")
    if not _is_missing(rate) and errors:
        text += f'<span class="sub">{_pct(rate)} of sent</span>'
    if errors and _unreliable(row):
        return f'<span class="bad">{text}</span>'
    return text


def _answered_cell(row: Mapping[str, Any]) -> str:
    answered, cells = row.get("answered"), row.get("cells")
    if _is_missing(answered):
        return "—"
    return f"{int(answered):,}" + (f" / {int(cells):,}" if not _is_missing(cells) else "")  # type: ignore[arg-type]


def _latency_cell(row: Mapping[str, Any]) -> str:
    p50, p95 = row.get("latency_p50_s"), row.get("latency_p95_s")
    if _is_missing(p50):
        return "—"
    return f"{float(p50):.2f}" + (f" / {float(p95):.2f}" if not _is_missing(p95) else "") + " s"  # type: ignore[arg-type]


def _read_cell(row: Mapping[str, Any]) -> str:
    href = explore_link(model=str(row.get("model", "")), prompt=str(row.get("prompt", "")))
    return f'<a href="{_esc(href)}">read rows</a>'


_SECONDARY = [
    ("ci_method", "interval method"), ("clusters", "clusters"), ("pending", "not sent"),
    ("input_tokens", "input tokens"), ("output_tokens", "output tokens"),
    ("cache_creation_input_tokens", "cache write tokens"), ("cache_read_input_tokens", "cache read tokens"),
    ("paid_usd", "paid by this folder"), ("from_cache", "from shared cache"),
    ("cost_per_1k_rows_usd", "cost per 1k rows"),
]  # fmt: skip
_MAIN = {"model", "prompt", "answer_mode", "n", "cells", "answered", "unparsed", "errors", "error_rate", "correct",
         "accuracy", "ci_low", "ci_high", "reliable", "cost_usd", "cost_per_correct_usd", "latency_p50_s",
         "latency_p95_s"}  # fmt: skip


def _summary_section(summary: Sequence[Mapping[str, Any]], *, withheld: bool, explorer: bool) -> str:
    def has(column: str) -> bool:
        return any(column in row and not _is_missing(row[column]) for row in summary)

    columns: list[tuple[str, str, str | Cell]] = [("model", "text", "model"), ("prompt", "text", "prompt")]
    if has("answer_mode"):
        columns.append(("answer mode", "text", "answer_mode"))
    columns.append(('<abbr title="dataset rows with at least one answer: the unit of evidence">rows</abbr>', "num", "n"))
    columns.append(("accuracy<span class=\"sub\">95 % interval</span>", "num", _accuracy_cell(withheld)))
    if has("correct"):
        columns.append(("correct", "num", "correct"))
    if has("answered"):
        columns.append(("answered / cells", "num", _answered_cell))
    if has("unparsed"):
        columns.append(('<abbr title="replied, but no answer could be read from the reply: counted wrong">unparsed</abbr>',
                        "num", "unparsed"))  # fmt: skip
    if has("errors"):
        columns.append(('<abbr title="requests that got no reply; never counted as wrong answers">errors</abbr>', "num",
                        _errors_cell))  # fmt: skip
    if has("cost_usd"):
        columns.append(("cost", "num", "cost_usd"))
    if has("cost_per_correct_usd"):
        columns.append(("cost per correct", "num", "cost_per_correct_usd"))
    if has("latency_p50_s"):
        columns.append(("latency p50 / p95", "num", _latency_cell))
    if explorer:
        columns.append(("", "text", _read_cell))

    def row_class(row: Mapping[str, Any]) -> str:
        return "bad" if _unreliable(row) or (_is_missing(row.get("accuracy")) and row.get("errors")) else ""

    parts = [_grid(summary, columns, row_class=row_class)]
    secondary = [(key, title) for key, title in _SECONDARY if has(key)]
    extra = [c for row in summary for c in row if c not in _MAIN and c not in dict(_SECONDARY)]
    secondary += [(c, c.replace("_", " ")) for c in dict.fromkeys(extra)]
    if secondary:
        more: list[tuple[str, str, str | Cell]] = [("model", "text", "model"), ("prompt", "text", "prompt")]
        more += [(_esc(title), "text" if key == "ci_method" else "num", key) for key, title in secondary]
        parts.append(f'<details class="more"><summary>More columns ({_esc(", ".join(t for _, t in secondary))})</summary>'
                     f"{_grid(summary, more)}</details>")  # fmt: skip
    return "".join(parts)


# -- charts ------------------------------------------------------------------------------------
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


def _svg(fig: Figure, prefix: str, title: str) -> str:
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
    return f'<div class="chart" id="chart-{prefix}" role="img" aria-label="{_esc(title)}">{svg.strip()}</div>'


def _figure(width: float, height: float, *, layout: Literal["constrained"] | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)  # explicit non-interactive canvas; pyplot state is never touched
    return fig


def _chart_label(row: Mapping[str, Any], width: int = 34) -> str:
    """A variant's name for a chart: "model · prompt" on one line when short, else model and prompt
    on lines of their own, wrapped (never cut: the part that tells two variants apart may be anywhere)."""
    label = _label(row)
    if len(label) <= width + 6:
        return label
    lines = []
    for part in (str(row[c]) for c in ("model", "prompt") if c in row and not _is_missing(row[c])):
        lines += textwrap.wrap(part, width, break_long_words=True, break_on_hyphens=True) or [""]
    return "\n".join(lines)


def _intervals(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    if {"ci_low", "ci_high"} <= set(summary.columns):
        return (pd.to_numeric(summary["ci_low"]).to_numpy(dtype=float),
                pd.to_numeric(summary["ci_high"]).to_numpy(dtype=float))
    if {"correct", "n"} <= set(summary.columns):
        bounds = [wilson_interval(int(k), int(n)) for k, n in zip(summary["correct"], summary["n"], strict=True)]
        return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    nan = np.full(len(summary), np.nan)
    return nan, nan.copy()


def _accuracy_chart(summary: pd.DataFrame) -> str:
    if "accuracy" not in summary.columns or summary.empty:
        return '<p class="note">No accuracy column in the summary.</p>'
    acc = pd.to_numeric(summary["accuracy"]).to_numpy(dtype=float)
    low, high = _intervals(summary)
    labels = [_chart_label(r) for r in summary.to_dict("records")]
    bad = np.array([_unreliable(r) for r in summary.to_dict("records")], dtype=bool)
    err = np.nan_to_num(np.vstack([np.clip(acc - low, 0, None), np.clip(high - acc, 0, None)]))
    lines = max(label.count("\n") + 1 for label in labels)
    step = max(0.34, 0.17 * lines + 0.08)  # inches per bar: room for the tallest label
    fig = _figure(6.4, 0.9 + step * len(acc))
    ax = fig.add_subplot()
    y = np.arange(len(acc))
    colors = ["#c4473a" if b else "#4c78a8" for b in bad]
    ax.barh(y, np.nan_to_num(acc), xerr=err, color=colors, ecolor="#1f2328", capsize=3, height=0.6)
    for yi, value in zip(y.tolist(), acc.tolist(), strict=True):
        ax.text(0.01, yi, "no answers" if math.isnan(value) else "", va="center", fontsize=8, color="#57606a")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("accuracy (bars) with its 95 % interval (whiskers); red: unreliable (more than 5 % errors)"
                  if bad.any() else "accuracy (bars) with its 95 % interval (whiskers)")  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, "acc", "accuracy by model and prompt")


def spread_labels(wanted: Sequence[float], gap: float, low: float = 0.0, high: float = 1.0) -> list[float]:
    """Positions as close to ``wanted`` as possible, at least ``gap`` apart, within [low, high]
    when they fit (above ``high`` otherwise). Order is kept."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [0.0] * len(wanted)
    previous = -math.inf
    for i in order:  # upwards: never closer than gap to the one below
        placed[i] = max(wanted[i], previous + gap, low)
        previous = placed[i]
    ceiling = high
    for i in reversed(order):  # downwards from the top, if the column ran over
        if placed[i] <= ceiling:
            break
        placed[i] = ceiling
        ceiling -= gap
    # The downward pass may have pushed some below the ones under them: one more upward pass.
    previous = -math.inf
    for i in order:
        placed[i] = max(placed[i], previous + gap)
        previous = placed[i]
    return placed


def _cost_chart(summary: pd.DataFrame) -> str:
    if not {"cost_usd", "accuracy"} <= set(summary.columns):
        return '<p class="note">No cost information in the summary.</p>'
    cost = pd.to_numeric(summary["cost_usd"]).to_numpy(dtype=float)
    acc = pd.to_numeric(summary["accuracy"]).to_numpy(dtype=float)
    keep = np.isfinite(cost) & np.isfinite(acc)
    if not keep.any():
        return '<p class="note">Cost unknown (no price for these models), so there is no cost chart.</p>'
    labels = [_chart_label(r, 30) for r, k in zip(summary.to_dict("records"), keep, strict=True) if k]
    xs, ys = cost[keep], acc[keep]
    # Labels go in a column right of the plot, each joined to its point by a thin line, spaced at
    # least the tallest label apart: they cannot overlap each other, the points or the axes.
    line_in = 8 * 1.5 / 72 * max(label.count("\n") + 1 for label in labels) + 0.03
    axes_h = max(2.8, line_in * len(labels) * 1.1)
    fig = _figure(6.4, axes_h + 0.9, layout=None)
    ax = fig.add_axes((0.12, 0.6 / (axes_h + 0.9), 0.52, axes_h / (axes_h + 0.9)))
    ax.scatter(xs, ys, color="#e45756", zorder=3, s=22)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(0, float(xs.max()) * 1.08 or 1.0)
    positions = spread_labels([float(v) / 1.05 for v in ys], gap=line_in / axes_h)
    for x, yv, label, pos in zip(xs, ys, labels, positions, strict=True):
        ax.annotate(label, xy=(float(x), float(yv)), xycoords="data", xytext=(1.04, pos), textcoords="axes fraction",
                    va="center", ha="left", fontsize=8, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#8c959f", "lw": 0.6, "shrinkA": 0, "shrinkB": 3})  # fmt: skip
    ax.set_xlabel("total cost of the answers (USD)")
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.4g}"))
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, "cost", "accuracy against total cost")


# -- comparisons -------------------------------------------------------------------------------
def _comparison_section(comparison: Sequence[Mapping[str, Any]], *, explorer: bool) -> str:
    def link(row: Mapping[str, Any], right: str = "") -> str:
        by = str(row.get("by") or "prompt")
        scope = {"model": str(row["group"])} if by == "prompt" else {"prompt": str(row["group"])}
        return explore_link(by=by, **scope, disagree=(str(row["a"]), str(row["b"])), right=right)

    def count(key: str, side: str) -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            value = row.get(key)
            text = _esc(_fmt(key, value))
            if explorer and not _is_missing(value) and value:
                return f'<a href="{_esc(link(row, str(row[side])))}" title="read these rows">{text}</a>'
            return text
        return render

    def diff(row: Mapping[str, Any]) -> str:
        text = f"<strong>{_esc(_fmt('diff', row.get('diff')))}</strong>"
        low, high = row.get("diff_ci_low"), row.get("diff_ci_high")
        if not (_is_missing(low) or _is_missing(high)):
            text += f'<span class="sub">[{_esc(_fmt("diff", low))}, {_esc(_fmt("diff", high))}]</span>'
        return text

    def p_value(row: Mapping[str, Any]) -> str:
        p = row.get("p_value", row.get("p_mcnemar"))
        test = row.get("test") or ("mcnemar-exact" if "p_mcnemar" in row else "")
        return _esc(_fmt("p_value", p)) + (f'<span class="sub">{_esc(test)}</span>' if test else "")

    def p_holm(row: Mapping[str, Any]) -> str:
        p = row.get("p_holm")
        text = _esc(_fmt("p_holm", p))
        return f"<strong>{text}</strong>" if not _is_missing(p) and float(p) < 0.05 else text  # type: ignore[arg-type]

    def modes(row: Mapping[str, Any]) -> str:
        a, b = row.get("mode_a"), row.get("mode_b")
        if _is_missing(a) or _is_missing(b):
            return "—"
        if row.get("modes_differ"):
            return f'<span class="flag">⚠ {_esc(a)} → {_esc(b)}</span>'
        return _esc(a)

    def read(row: Mapping[str, Any]) -> str:
        return f'<a href="{_esc(link(row))}">read disagreements</a>'

    by = str(comparison[0].get("by") or "prompt")
    columns: list[tuple[str, str, str | Cell]] = [
        ("within" if by == "prompt" else "prompt", "text", "group"), ("a", "text", "a"), ("b", "text", "b"),
        ('<abbr title="dataset rows both answered">rows</abbr>', "num", "n"),
        ("acc a", "num", "acc_a"), ("acc b", "num", "acc_b"),
        ("diff b − a<span class=\"sub\">95 % interval</span>", "num", diff),
        ("p", "num", p_value), ("p holm", "num", p_holm),
        ('<abbr title="rows only a got right (b wrong)">only a right</abbr>', "num", count("only_a_correct", "a")),
        ('<abbr title="rows only b got right (a wrong)">only b right</abbr>', "num", count("only_b_correct", "b")),
        ("answer mode", "text", modes),
    ]  # fmt: skip
    if explorer:
        columns.append(("", "text", read))
    if any(row.get("note") for row in comparison):
        columns.append(("note", "text", lambda row: _esc(row.get("note") or "")))
    note = (
        '<p class="note">Paired on the rows both sides answered, so acc a / acc b can differ from the summary. '
        "diff = accuracy of b − accuracy of a (positive: b scored higher) with a paired 95 % interval; p is the "
        "paired test named under it and p holm adjusts it for the number of comparisons (bold when below 0.05). "
        "⚠ marks pairs asked in different answer modes, so the prompt or model is not the only thing that changed."
        + (" The counts of rows only one side got right open those rows in the explorer." if explorer else "")
        + "</p>"
    )

    def row_class(row: Mapping[str, Any]) -> str:
        return "warn" if row.get("modes_differ") else ""

    return note + _grid(comparison, columns, row_class=row_class)


# -- diagnostics -------------------------------------------------------------------------------
def _letters_section(results: pd.DataFrame, choices: Sequence[str]) -> str:
    dist = letter_distribution(results, choices)
    if dist.empty:
        return '<p class="note">No answered cells.</p>'
    wide = dist.assign(
        cell=[f"{_pct(p, 0)} / {_pct(g, 0)}" for p, g in zip(dist["predicted_share"], dist["gold_share"], strict=True)]
    ).pivot(index=["model", "prompt"], columns="letter", values="cell")
    wide = wide[list(dict.fromkeys(dist["letter"]))].reset_index()
    wide.columns.name = None
    note = ('<p class="note">Share of answered cells predicting each letter / share whose gold answer is '
            "that letter. A predicted share well above the gold share suggests position bias.</p>")
    return note + _frame_table(wide)


def _outcomes_section(outcomes: pd.DataFrame, modes: Mapping[tuple[str, str], str], *, explorer: bool) -> str:
    rates = outcome_rates(outcomes)
    if rates.empty:
        return '<p class="note">No sent cells.</p>'

    def rate(count: str, share: str, status: str = "") -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            n = int(row[count])
            text = f"{_pct(row[share])}<span class=\"sub\">{n:,} of {int(row['n']):,}</span>"
            if n and explorer and status:
                href = explore_link(model=str(row["model"]), prompt=str(row["prompt"]), status=status)
                text = f'<a href="{_esc(href)}" title="read them">{text}</a>'
            return text
        return render

    def reading(row: Mapping[str, Any]) -> str:
        mode = modes.get((str(row["model"]), str(row["prompt"])), "")
        said = []
        if row["max_tokens"]:
            if "prefill" in mode and row["max_tokens_rate"] > 0.5:
                said.append("Stopping at max_tokens is expected here: a prefill answer is a few tokens long and "
                            "max_tokens is set to end the reply right after the letter.")
            else:
                said.append(f'<span class="flag">{_pct(row["max_tokens_rate"])} of replies were cut off at max_tokens</span>: '
                            "if answers are missing, raise max_tokens.")  # fmt: skip
        if row["unparsed"]:
            said.append(f"{int(row['unparsed']):,} replies had no answer the scorer could read (counted wrong).")
        if row["refusals"]:
            said.append(f'<span class="flag">{int(row["refusals"]):,} refusals</span>.')
        if row["errors"]:
            cls = "bad" if row["error_rate"] > 0.05 else "flag"
            said.append(f'<span class="{cls}">{int(row["errors"]):,} requests failed</span> (no reply; the next run '
                        "of the same command sends them again).")  # fmt: skip
        return " ".join(said) or '<span class="ok">Every reply ended normally.</span>'

    columns: list[tuple[str, str, str | Cell]] = [
        ("model", "text", "model"), ("prompt", "text", "prompt"),
        ("answer mode", "text", lambda row: _esc(modes.get((str(row["model"]), str(row["prompt"])), "—"))),
        ("sent", "num", "n"),
        ("unparsed", "num", rate("unparsed", "unparsed_rate", "unparsed")),
        ("refusals", "num", rate("refusals", "refusal_rate")),
        ("stopped at max_tokens", "num", rate("max_tokens", "max_tokens_rate")),
        ("errors", "num", rate("errors", "error_rate", "error")),
        ("what it means", "text", reading),
    ]  # fmt: skip
    note = ('<p class="note">How the sent cells ended, as a share of all sent cells: replies with no readable '
            "answer, refusals, replies that stopped at max_tokens, and requests with no reply at all.</p>")
    return note + _grid(rates.to_dict("records"), columns)


# -- settings ----------------------------------------------------------------------------------
_SETTINGS_ORDER = ["name", "description", "endpoint", "spec_path", "dataset", "rows", "cluster", "models", "modes",
                   "api_versions", "prompts", "params", "scorer", "repeats", "reducer", "budget_usd", "concurrency",
                   "max_retries", "prices", "prices_as_of", "evalrun_version", "warnings"]  # fmt: skip
_SETTINGS_LABELS = {"spec_path": "spec", "budget_usd": "budget (USD)", "api_versions": "API versions",
                    "modes": "answer modes", "prices": "prices (USD per million tokens)",
                    "prices_as_of": "prices as of", "evalrun_version": "evalrun", "model_labels": "model labels"}  # fmt: skip


def _value_html(value: Any, depth: int = 0) -> str:
    """A settings value as readable HTML: scalars as text, lists as lists, mappings as nested lists."""
    if value is None:
        return '<span class="note">none</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return f"<pre>{_esc(value)}</pre>" if "\n" in value else _esc(value)
    if isinstance(value, int | float):
        return _esc(_fmt("", value)) if not isinstance(value, float) or not value.is_integer() else _esc(f"{value:g}")
    if isinstance(value, Mapping):
        if not value:
            return '<span class="note">none</span>'
        def flat(v: Any) -> bool:
            return not isinstance(v, Mapping | list) or all(not isinstance(x, Mapping | list) for x in v)

        shown = {k: v for k, v in value.items() if v is not None}
        if all(flat(v) for v in shown.values()) and len(shown) <= 8:
            return ", ".join(f"{_esc(k)}: {_value_html(v, depth + 1)}" for k, v in shown.items())
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_value_html(v, depth + 1)}</dd>" for k, v in value.items())
        return f'<dl class="settings">{items}</dl>'
    if isinstance(value, list | tuple):
        if not value:
            return '<span class="note">none</span>'
        if all(not isinstance(v, Mapping | list) for v in value):
            return ", ".join(_value_html(v, depth + 1) for v in value)
        return "<ul>" + "".join(f"<li>{_value_html(v, depth + 1)}</li>" for v in value) + "</ul>"
    return _esc(value)


def _prompt_html(prompt: Mapping[str, Any]) -> str:
    parts = []
    system = prompt.get("system")
    if system:
        text = system if isinstance(system, str) else json.dumps(system, ensure_ascii=False, indent=1)
        parts.append(f'<div class="tpl"><span class="role">system</span><pre>{_esc(text)}</pre></div>')
    for message in prompt.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=1)
        parts.append(f'<div class="tpl"><span class="role">{_esc(message.get("role", ""))}</span><pre>{_esc(text)}</pre></div>')
    if prompt.get("prefill"):
        parts.append(f'<div class="tpl"><span class="role">prefill</span><pre>{_esc(prompt["prefill"])}</pre></div>')
    rest = {k: v for k, v in prompt.items() if k not in ("system", "messages", "prefill") and v not in (None, {}, [])}
    if rest:
        parts.append(_value_html(rest))
    return "".join(parts)


def _settings_section(settings: Mapping[str, Any]) -> str:
    if not settings:
        return '<p class="note">No settings recorded.</p>'
    found = settings.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    shown: dict[str, Any] = {}
    for key in _SETTINGS_ORDER:
        if key == "description" and spec.get("description"):
            shown[key] = spec["description"]
        elif key == "params" and spec.get("params"):
            shown[key] = spec["params"]
        elif key == "max_retries" and "max_retries" in spec:
            shown[key] = spec["max_retries"]
        elif key in settings:
            shown[key] = settings[key]
    for key, value in settings.items():
        if key not in shown and key != "spec":
            shown[key] = value
    items = []
    found = spec.get("prompts")
    templates: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    for key, value in shown.items():
        label = _esc(_SETTINGS_LABELS.get(key, key))
        if key == "prompts" and templates:
            body = "".join(f"<details><summary>{_esc(name)}</summary>{_prompt_html(p)}</details>"
                           for name, p in templates.items() if isinstance(p, Mapping))  # fmt: skip
        else:
            body = _value_html(value)
        items.append(f"<dt>{label}</dt><dd>{body}</dd>")
    raw = json.dumps(settings, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    return (f'<dl class="settings">{"".join(items)}</dl>'
            f'<details class="more"><summary>Everything recorded for the run (JSON)</summary>'
            f'<pre class="json">{_esc(raw)}</pre></details>')  # fmt: skip


# -- the page ----------------------------------------------------------------------------------
def render_report(report: Any, explorer: Any = None) -> str:
    """The report.html of a `Report` (see `evalrun.reports.build`) as a string; ``explorer`` is
    the explorer sink that saw the cells (`evalrun.reports.explorer.collected`), if any."""
    out = io.StringIO()
    write_report(out, report, explorer=explorer)
    return out.getvalue()


def write_report(out: IO[str], report: Any, explorer: Any = None) -> None:
    """Write the report.html of a `Report` into `out`, the explorer's data streamed from its spill."""
    summary = pd.DataFrame(report.summary)
    comparison = pd.DataFrame(report.comparison) if report.comparison is not None else None
    repeats = _repeat_frame(report)
    write_html(
        out,
        summary=summary,
        comparison=comparison,
        settings=report.settings,
        choices=report.choices or None,
        outcomes=diagnostics_frame(report.tallies),
        repeats=repeats,
        cells=report.totals["cells"],
        failure=report.failure,
        simulated=report.simulated,
        explorer=explorer,
        totals=report.totals,
        sections=frontier_html(report),
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


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


_DATA = object()  # where the explorer's data goes in the page's parts


def _explorer_section(explorer: Any, cells: int) -> list[Any]:
    from evalrun.reports.explorer import MAX_CELLS, MAX_TEXT_CHARS

    if explorer is None:
        return ['<p class="note">This page was built without the cells, so there is no row explorer; '
                "<code>evalrun report DIR</code> rebuilds it with them. results.csv has every cell.</p>"]  # fmt: skip
    meta = explorer.meta
    notes = []
    if meta.get("sampled"):
        seen = int(meta.get("seen_cells") or cells)
        notes.append(
            f'<p class="banner warn">This page holds a sample: every cell of {int(meta["rows"]):,} dataset rows '
            f"({int(meta['count']):,} of {seen:,} cells), the rows chosen by a seeded hash of their id "
            f"(seed {int(meta.get('sample_seed', 0))}), because the run is larger than a page holds "
            f"({MAX_CELLS:,} cells or {MAX_TEXT_CHARS // 1_000_000} million characters of text). Disagreements "
            "are complete within the sample. results.csv has every cell.</p>"
        )  # fmt: skip
    if meta.get("truncated"):
        notes.append(f'<p class="note">{int(meta["truncated"]):,} long texts are shortened here (their head and '
                     "tail, with a note of what was left out); results.csv has them whole.</p>")  # fmt: skip
    return [
        "".join(notes)
        + '<div id="explore-app"></div>'
        + '<noscript><p class="note">The row explorer needs JavaScript. results.csv has every cell.</p></noscript>'
        + '<script type="application/json" id="explorer-data">',
        _DATA,
        "</script>",
    ]


def render_html(**kwargs: Any) -> str:
    """The whole report as one self-contained HTML document (a string; see `write_html`)."""
    out = io.StringIO()
    write_html(out, **kwargs)
    return out.getvalue()


def write_html(
    out: IO[str],
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
    explorer: Any = None,
    totals: Mapping[str, Any] | None = None,
    sections: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Write the whole report into `out` as one self-contained HTML document.

    Sections: simulator banner (a simulated run), failure banner, summary table, accuracy chart
    with CI whiskers and cost against accuracy (both left out for a failed run), comparisons,
    the row explorer (when ``explorer``, an `ExplorerSink`, saw the cells: its data is streamed
    into the page from its spill), letter distribution (when
    ``choices`` is given), outcomes, repeat summary (when any cell was repeated), and the run
    settings. ``outcomes`` is the weighted outcome frame of the tallies.
    """
    title = str(settings.get("name") or "evalrun report")
    rows = _records(summary)
    withheld = failure is not None
    has_explorer = explorer is not None
    endpoint = settings.get("endpoint")
    meta = [f"{cells:,} cells (model × prompt × row × repeat)"]
    if endpoint:
        meta.insert(0, f"endpoint: {endpoint if isinstance(endpoint, str) else ', '.join(map(str, endpoint))}")  # type: ignore[call-overload]
    if totals and not _is_missing(totals.get("cost_usd")):
        meta.append(f"answers cost ${float(totals['cost_usd']):,.4f}")
    parts: list[Any] = [f'<header class="top"><h1>{_esc(title)}</h1><p class="meta">{_esc(" · ".join(meta))}</p></header>']
    nav = [("summary", "Summary")]
    if not withheld:
        nav.append(("accuracy", "Accuracy"))
        nav += [(anchor, title) for anchor, title, _ in sections]
    if comparison is not None:
        nav.append(("comparisons", "Comparisons"))
    if has_explorer:
        nav.append(("explore", "Rows"))
    if outcomes is not None and not outcomes.empty:
        nav.append(("outcomes", "Outcomes"))
    nav.append(("settings", "Settings"))
    parts.append('<nav class="toc">' + "".join(f'<a href="#{k}">{v}</a>' for k, v in nav) + "</nav>")
    if simulated or endpoint == "simulator":
        parts.append(
            '<p class="banner" role="alert">Simulated run: these answers came from the built-in simulator, '
            "not from a real model. The scores below are simulated and say nothing about model quality.</p>"
        )
    if failure:
        parts.append(
            f'<p class="banner failed" role="alert" id="failed">Failed run: {_esc(failure)}.'
            + ("" if "no accuracy" in failure else " Its accuracy is withheld.")
            + " Run the same command again to retry the failed requests"
            + ("; the Rows section shows each error." if has_explorer else ".") + "</p>"
        )
    unreliable = [_label(r) for r in rows if _unreliable(r) and r.get("n")]
    if unreliable and not failure:
        parts.append(f'<p class="banner failed">Unreliable: more than 5 % of the requests of {_esc(", ".join(unreliable))} '
                     "failed, so their accuracy rests on the rows that happened to succeed.</p>")  # fmt: skip

    parts.append('<section id="summary"><h2>Summary</h2>')
    parts.append(_summary_section(rows, withheld=withheld, explorer=has_explorer))
    parts.append('<p class="note">rows: dataset rows with at least one answer (the unit of evidence). Accuracy is '
                 "over answered cells (a failed request is never a wrong answer) with its 95 % interval below it; "
                 "“—” means nothing was answered. Latency is per request, cached answers left out.</p></section>")
    if not withheld:
        parts.append('<section id="accuracy"><h2>Accuracy</h2><div class="charts">')
        parts.append(f"<figure>{_accuracy_chart(summary)}<figcaption>Accuracy by model and prompt</figcaption></figure>")
        parts.append(f"<figure>{_cost_chart(summary)}<figcaption>Accuracy against the total cost of the answers"
                     "</figcaption></figure>")  # fmt: skip
        parts.append("</div></section>")
        parts += [f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>' for anchor, title, body in sections]
    if comparison is not None:
        parts.append('<section id="comparisons"><h2>Comparisons</h2>')
        records = _records(comparison)
        if not records:
            parts.append('<p class="note">Nothing to compare (fewer than two variants).</p>')
        elif not any(r.get("n") for r in records):
            parts.append('<p class="note">Nothing to compare: no dataset row was answered by both sides of any pair.</p>')
        else:
            if failure:
                parts.append('<p class="banner failed">The run failed: these comparisons rest on the few rows both '
                             "sides happened to answer.</p>")  # fmt: skip
            parts.append(_comparison_section(records, explorer=has_explorer))
        parts.append("</section>")
    if has_explorer:
        parts.append('<section id="explore"><h2>Rows</h2>')
        parts.append('<p class="note">Every cell: what was asked, what came back, the answer read from it and its score. '
                     "Filter by model, prompt, outcome or text, or pick two variants to see only the rows where one "
                     "was right and the other wrong. The address bar keeps the filter, so a link opens this view.</p>")
        parts.extend(_explorer_section(explorer, cells))
        parts.append("</section>")
    if outcomes is None or outcomes.empty:
        parts.append('<p class="note">No per-cell results, so no diagnostics.</p>')
    else:
        modes = {(str(r.get("model")), str(r.get("prompt"))): str(r.get("answer_mode") or "") for r in rows}
        parts.append('<section id="outcomes"><h2>Outcomes</h2>')
        parts.append(_outcomes_section(outcomes, modes, explorer=has_explorer))
        if choices:
            parts.append("<h3>Answer letters</h3>")
            parts.append(_letters_section(outcomes, choices))
        if repeats is not None and not repeats.empty:
            parts.append("<h3>Repeats</h3>")
            parts.append('<p class="note">Majority vote over parsed answers per row (ties go to the answer '
                         "seen in the earliest repeat); consistency is the share of rows whose repeats all "
                         "gave the same answer.</p>")
            parts.append(_frame_table(repeats))
        parts.append("</section>")
    parts.append('<section id="settings"><h2>Run settings</h2>')
    parts.append(_settings_section(settings))
    parts.append("</section>")
    version = settings.get("evalrun_version")
    parts.append(f"<footer>evalrun{f' {_esc(version)}' if version else ''} · rebuilt from the run's store.sqlite by "
                 "<code>evalrun report</code></footer>")  # fmt: skip
    script = f"<script>{_static('explorer.js')}</script>" if has_explorer else ""
    out.write(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_static('report.css')}</style></head>\n<body>\n"
    )
    for i, part in enumerate(parts):
        if part is _DATA:
            explorer.write_json(out)
            continue
        if i and parts[i - 1] is not _DATA:
            out.write("\n")
        out.write(part)
    out.write(f"\n{script}</body></html>\n")
