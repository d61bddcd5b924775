"""report.html's charts: accuracy with its intervals, and accuracy against cost, as inline SVG
drawn by matplotlib's non-interactive canvas (pyplot state is never touched)."""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from evalrun.reports.html_kit import esc, is_missing, unreliable, variant_label
from evalrun.results.stats import wilson_interval

__all__ = ["accuracy_chart", "cost_chart", "spread_labels"]

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
    return f'<div class="chart" id="chart-{prefix}" role="img" aria-label="{esc(title)}">{svg.strip()}</div>'


def _figure(width: float, height: float, *, layout: Literal["constrained"] | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)  # explicit non-interactive canvas; pyplot state is never touched
    return fig


def _chart_label(row: Mapping[str, Any], width: int = 34) -> str:
    """A variant's name for a chart: "model · prompt" on one line when short, else model and prompt
    on lines of their own, wrapped (never cut: the part that tells two variants apart may be anywhere)."""
    label = variant_label(row)
    if len(label) <= width + 6:
        return label
    lines = []
    for part in (str(row[c]) for c in ("model", "prompt") if c in row and not is_missing(row[c])):
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


def accuracy_chart(summary: pd.DataFrame) -> str:
    """Accuracy by variant, bars with 95 % whiskers, unreliable ones in red."""
    if "accuracy" not in summary.columns or summary.empty:
        return '<p class="note">No accuracy column in the summary.</p>'
    acc = pd.to_numeric(summary["accuracy"]).to_numpy(dtype=float)
    low, high = _intervals(summary)
    labels = [_chart_label(r) for r in summary.to_dict("records")]
    bad = np.array([unreliable(r) for r in summary.to_dict("records")], dtype=bool)
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


def cost_chart(summary: pd.DataFrame) -> str:
    """Accuracy against the total cost of the answers, labels in a column beside the plot."""
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
