"""The cost–accuracy frontier of a run's configurations (model label × prompt): frontier.csv, a
chart and a sentence for report.md and report.html.

A configuration is **on the frontier** when no other one is at least as accurate and at most as
expensive, and strictly better in one of the two. The **recommended** configuration is the
cheapest whose accuracy is not significantly below the most accurate one's: a paired test
(`evalrun.results.stats.paired_compare`: exact McNemar on 0/1 rows, paired t otherwise,
cluster-robust with clusters) on the rows both answered, two-sided at α 0.05, not adjusted
for the several configurations tried (a conservative adjustment would only recommend cheaper
ones more often). Cost is cost per 1,000 rows from the stored usage at the run's prices.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evalrun.results.stats import paired_compare
from evalrun.results.summary import row_values
from evalrun.results.tally import RepeatTally, VariantTally

__all__ = ["ALPHA", "FRONTIER_COLUMNS", "FrontierCsv", "frontier_html", "frontier_markdown", "frontier_rows", "frontier_svg"]

ALPHA = 0.05
XMLNS = ' xmlns="http://www.w3.org/2000/svg"'
FRONTIER_COLUMNS = [
    "model", "prompt", "accuracy", "ci_low", "ci_high", "cost_per_1k_rows_usd", "mean_output_tokens", "on_frontier",
    "recommended", "reason",
]  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _name(row: Mapping[str, Any]) -> str:
    return f"{row['model']} / {row['prompt']}"


def _dominator(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A configuration at least as accurate and at most as expensive, better in one (or None)."""
    acc, cost = row["accuracy"], row["cost_per_1k_rows_usd"]
    for other in rows:
        if other is row or not (_finite(other["accuracy"]) and _finite(other["cost_per_1k_rows_usd"])):
            continue
        a, c = other["accuracy"], other["cost_per_1k_rows_usd"]
        if a >= acc and c <= cost and (a > acc or c < cost):
            return other
    return None


def frontier_rows(
    tallies: Sequence[VariantTally],
    summary: Sequence[Mapping[str, Any]],
    *,
    clusters: np.ndarray | None = None,
    reducer: str = "mean",
    repeats: Mapping[tuple[str, str], RepeatTally] | None = None,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """One row per configuration (see the module docstring), in the summary's order."""
    by_key = {(t.model, t.prompt): t for t in tallies}
    rows: list[dict[str, Any]] = []
    for entry in summary:
        tally = by_key[(entry["model"], entry["prompt"])]
        output = tally.tokens["output_tokens"] / tally.answered if tally.answered else math.nan
        rows.append({
            "model": entry["model"], "prompt": entry["prompt"], "accuracy": entry["accuracy"],
            "ci_low": entry["ci_low"], "ci_high": entry["ci_high"],
            "cost_per_1k_rows_usd": entry["cost_per_1k_rows_usd"], "mean_output_tokens": output,
            "on_frontier": False, "recommended": False, "reason": "",
        })  # fmt: skip
    ranked = [r for r in rows if _finite(r["accuracy"]) and _finite(r["cost_per_1k_rows_usd"])]
    reasons: dict[int, list[str]] = {id(r): [] for r in rows}
    ranked_ids = {id(r) for r in ranked}
    for row in rows:
        if id(row) not in ranked_ids:
            reasons[id(row)].append("no accuracy or no known cost: not ranked")
            continue
        beaten = _dominator(row, ranked)
        row["on_frontier"] = beaten is None
        if beaten is not None:
            reasons[id(row)].append(f"not on the frontier: {_name(beaten)} is at least as accurate and cheaper")
    if ranked:
        _recommend(ranked, reasons, by_key, clusters=clusters, reducer=reducer, repeats=repeats or {}, alpha=alpha)
    for row in rows:
        row["reason"] = "; ".join(reasons[id(row)])
    return rows


def _recommend(
    ranked: list[dict[str, Any]],
    reasons: dict[int, list[str]],
    tallies: Mapping[tuple[str, str], VariantTally],
    *,
    clusters: np.ndarray | None,
    reducer: str,
    repeats: Mapping[tuple[str, str], RepeatTally],
    alpha: float,
) -> None:
    best = max(ranked, key=lambda r: (r["accuracy"], -r["cost_per_1k_rows_usd"]))
    key_best = (best["model"], best["prompt"])
    rows_b, values_b = row_values(tallies[key_best], reducer=reducer, repeats=repeats.get(key_best))
    for row in sorted(ranked, key=lambda r: (r["cost_per_1k_rows_usd"], -r["accuracy"])):
        if row is best:
            row["recommended"] = True
            alone = "the only configuration" if len(ranked) == 1 else "the most accurate configuration"
            cheaper = "" if len(ranked) == 1 else "; every cheaper one is significantly less accurate"
            reasons[id(row)].insert(0, f"recommended: {alone} ({row['accuracy']:.3f}){cheaper}")
            break
        key = (row["model"], row["prompt"])
        rows_a, values_a = row_values(tallies[key], reducer=reducer, repeats=repeats.get(key))
        common, ia, ib = np.intersect1d(rows_a, rows_b, assume_unique=True, return_indices=True)
        test = paired_compare(
            values_a[ia], values_b[ib], clusters=clusters[common] if clusters is not None else None, n_boot=1000
        )
        # paired_compare's diff is best − this one; the text reads "this vs best", so its sign is this − best
        shown = f"difference {-test.diff:+.3f}, p = {test.p_value:.3g} ({test.test}, {common.size} shared rows)"
        if common.size and math.isfinite(test.p_value) and test.p_value < alpha and test.diff > 0:
            reasons[id(row)].append(f"significantly less accurate than the most accurate, {_name(best)}: {shown}")
            continue
        row["recommended"] = True
        reasons[id(row)].insert(0, (
            f"recommended: the cheapest configuration not significantly less accurate than the most accurate, "
            f"{_name(best)} ({row['accuracy']:.3f} vs {best['accuracy']:.3f}; {shown}; "
            f"${row['cost_per_1k_rows_usd']:.4f} vs ${best['cost_per_1k_rows_usd']:.4f} per 1,000 rows)"
        ))  # fmt: skip
        break
    chosen = next(r for r in ranked if r["recommended"])
    for row in ranked:
        if row["recommended"] or row["cost_per_1k_rows_usd"] < chosen["cost_per_1k_rows_usd"]:
            continue
        if row["cost_per_1k_rows_usd"] == chosen["cost_per_1k_rows_usd"]:
            reasons[id(row)].append(f"costs the same as the recommended {_name(chosen)}, which comes first in the spec")
            continue
        reasons[id(row)].append(
            f"costs more than the recommended {_name(chosen)} (${row['cost_per_1k_rows_usd']:.4f} vs "
            f"${chosen['cost_per_1k_rows_usd']:.4f} per 1,000 rows)"
        )


def _recommended(report: Any) -> Mapping[str, Any] | None:
    return next((r for r in report.frontier if r["recommended"]), None)


def frontier_sentence(report: Any) -> str:
    """The frontier in one sentence (empty with fewer than two configurations)."""
    rows = report.frontier
    chosen = _recommended(report)
    if len(rows) < 2 or chosen is None:
        return ""
    on = [r for r in rows if r["on_frontier"]]
    return (
        f"Recommended configuration: {_name(chosen)} — {chosen['reason'].removeprefix('recommended: ')}. "
        f"{len(on)} of {len(rows)} configurations are on the cost–accuracy frontier (no other is at least as "
        f"accurate and cheaper): {', '.join(_name(r) for r in on)}. Significance: paired test on the rows both "
        f"answered, α {ALPHA:g}, unadjusted; cost per 1,000 rows from the stored usage at the run's prices."
    )


def frontier_markdown(report: Any) -> list[str]:
    """The report.md section: the sentence, the table, and the chart file (frontier.svg)."""
    sentence = frontier_sentence(report)
    if not sentence:
        return []
    from evalrun.reports.md_table import markdown_table

    columns = ["model", "prompt", "accuracy", "cost_per_1k_rows_usd", "mean_output_tokens", "on_frontier", "recommended"]
    return [
        "## Cost and accuracy: the frontier", "", sentence, "", markdown_table(report.frontier, columns), "",
        "![accuracy against cost per 1,000 rows](frontier.svg)", "",
        "Every row with its reason: frontier.csv.", "",
    ]  # fmt: skip


def frontier_html(report: Any) -> list[tuple[str, str, str]]:
    """The report.html section as (anchor, title, HTML), or none with fewer than two configurations."""
    sentence = frontier_sentence(report)
    if not sentence:
        return []
    body = (
        f'<p class="note">{html.escape(sentence)}</p><figure>{frontier_svg(report.frontier, standalone=False)}'
        "<figcaption>Accuracy (95 % interval) against cost per 1,000 rows; the line joins the frontier, the ring "
        "marks the recommended configuration</figcaption></figure>"
    )
    return [("frontier", "Frontier", body)]


def frontier_svg(
    rows: Sequence[Mapping[str, Any]], *, width: int = 640, height: int = 360, standalone: bool = True
) -> str:
    """An SVG of accuracy against cost per 1,000 rows (log scale when costs span 20×); inline in
    HTML (`standalone=False`) it needs no namespace, so the page names no outside address."""
    points = [r for r in rows if _finite(r["accuracy"]) and _finite(r["cost_per_1k_rows_usd"])]
    if not points:
        return ""
    axes = _Axes([max(float(r["cost_per_1k_rows_usd"]), 1e-9) for r in points], width, height)
    parts = [
        f'<svg{XMLNS if standalone else ""} viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="accuracy against cost" font-family="sans-serif" font-size="11">',
        *axes.frame(),
    ]
    front = sorted((r for r in points if r["on_frontier"]), key=lambda r: r["cost_per_1k_rows_usd"])
    if len(front) > 1:
        path = " ".join(f"{axes.x(r['cost_per_1k_rows_usd']):.1f},{axes.y(r['accuracy']):.1f}" for r in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2a7" stroke-width="1.5"/>')
    # With several prompts a model label alone names several points: label them model / prompt.
    several_prompts = len({r["prompt"] for r in points}) > 1
    for row in points:
        parts += _point(row, axes, _name(row) if several_prompts else str(row["model"]))
    parts.append("</svg>")
    return "".join(parts)


class _Axes:
    """Where a cost and an accuracy sit on the chart."""

    left, right, top, bottom = 60, 20, 20, 40

    def __init__(self, costs: list[float], width: int, height: int) -> None:
        self.costs, self.width, self.height = costs, width, height
        self.log = max(costs) / min(costs) > 20
        self.lo, hi = self._scale(min(costs)), self._scale(max(costs))
        self.span = hi - self.lo or 1.0

    def _scale(self, cost: float) -> float:
        return math.log10(max(cost, 1e-9)) if self.log else cost

    def x(self, cost: float) -> float:
        return self.left + (self._scale(max(cost, 1e-9)) - self.lo) / self.span * (self.width - self.left - self.right)

    def y(self, accuracy: float) -> float:
        return self.top + (1 - accuracy) * (self.height - self.top - self.bottom)

    def frame(self) -> list[str]:
        w, h, left, bottom = self.width, self.height, self.left, self.bottom
        parts = [
            f'<line x1="{left}" y1="{h - bottom}" x2="{w - self.right}" y2="{h - bottom}" stroke="#888"/>',
            f'<line x1="{left}" y1="{self.top}" x2="{left}" y2="{h - bottom}" stroke="#888"/>',
            f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">cost per 1,000 rows (USD{", log scale" if self.log else ""})</text>',
            f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">accuracy</text>',
        ]
        parts += [f'<text x="{left - 6}" y="{self.y(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>' for t in (0, 0.25, 0.5, 0.75, 1)]
        parts += [
            f'<text x="{self.x(c):.1f}" y="{h - bottom + 14}" text-anchor="middle">${c:.4g}</text>'
            for c in (min(self.costs), max(self.costs))
        ]
        return parts


def _point(row: Mapping[str, Any], axes: _Axes, label: str) -> list[str]:
    """One configuration: its interval, its dot (green on the frontier), a ring if recommended, its label."""
    px, py = axes.x(row["cost_per_1k_rows_usd"]), axes.y(row["accuracy"])
    parts = []
    if _finite(row["ci_low"]) and _finite(row["ci_high"]):
        parts.append(f'<line x1="{px:.1f}" y1="{axes.y(row["ci_low"]):.1f}" x2="{px:.1f}" y2="{axes.y(row["ci_high"]):.1f}" stroke="#bbb"/>')
    colour = "#2a7" if row["on_frontier"] else "#999"
    parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"><title>{html.escape(_name(row))}: '
                 f'{row["accuracy"]:.3f}, ${row["cost_per_1k_rows_usd"]:.4f} per 1,000 rows</title></circle>')  # fmt: skip
    if row["recommended"]:
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="8" fill="none" stroke="#d60" stroke-width="2"/>')
    # Labels on the right half sit left of their point, so none runs off the chart; points off
    # the frontier are labelled below, those on it above.
    anchor, dx = ("end", -7) if px > axes.width / 2 else ("start", 7)
    dy = -6 if row["on_frontier"] else 14
    parts.append(f'<text x="{px + dx:.1f}" y="{py + dy:.1f}" text-anchor="{anchor}">{html.escape(label)}</text>')
    return parts


def _csv_value(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


class FrontierCsv:
    """frontier.csv (every configuration, with its reason) and frontier.svg (the chart report.md shows)."""

    filename = "frontier.csv"

    def available(self) -> bool:
        return True

    def write(self, staged: Any, report: Any) -> None:
        if not report.frontier:
            return
        with staged.path(self.filename).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(FRONTIER_COLUMNS)
            for row in report.frontier:
                writer.writerow([_csv_value(row[c]) for c in FRONTIER_COLUMNS])
        if len(report.frontier) > 1:
            staged.write_text("frontier.svg", frontier_svg(report.frontier))
