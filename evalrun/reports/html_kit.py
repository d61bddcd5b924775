"""Building blocks of report.html's sections: value formatting by column name, escaping, the
explorer's link grammar and the table grid every section draws with."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

__all__ = [
    "Cell",
    "esc",
    "explore_link",
    "fmt",
    "frame_records",
    "frame_table",
    "grid",
    "is_missing",
    "pct",
    "static",
    "unreliable",
    "variant_label",
]  # fmt: skip

_PERCENT = re.compile(r"^(accuracy|ci_low|ci_high|acc_a|acc_b|mean_accuracy|majority_accuracy|consistency_rate)$|_rate$|_share$|^accuracy_")
_POINTS = re.compile(r"^diff(_ci_low|_ci_high)?$")
_PVALUE = re.compile(r"^p_")
_MONEY = re.compile(r"(^|_)(cost|usd)(_|$)")
_SECONDS = re.compile(r"^latency|_s$")


def static(name: str) -> str:
    """A file of the package's static folder (the page's stylesheet and script)."""
    return resources.files("evalrun.reports").joinpath("static", name).read_text(encoding="utf-8")


def esc(value: object) -> str:
    """`value` as HTML text."""
    return html.escape(str(value))


def is_missing(value: object) -> bool:
    """None, NA or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def fmt(column: str, value: object) -> str:
    """Human-readable text for one value, chosen by the column's name."""
    if is_missing(value):
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


def pct(value: object, digits: int = 1) -> str:
    """A share as a percentage ("—" when missing)."""
    return "—" if is_missing(value) else f"{100 * float(value):.{digits}f}%"  # type: ignore[arg-type]


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
NOWRAP = 24


def grid(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str | Cell]], *,
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
                text = fmt(how, row.get(how))
                # Short names stay on one line (a browser would break "few-shot" at its hyphen).
                content, cls_ = esc(text), f"{kind} nw" if kind == "text" and len(text) <= NOWRAP else kind
            tds.append(f'<td class="{cls_}">{content}</td>')
        body.append(f'<tr{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{"".join(tds)}</tr>')
    cap = f"<caption class=\"note\">{caption}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def frame_table(frame: pd.DataFrame, *, cell: Callable[[str, object], str | None] | None = None) -> str:
    """Every column of ``frame``, formatted by name; ``cell`` may return trusted HTML for a column."""
    if frame.empty:
        return '<p class="note">No rows.</p>'
    text = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])}

    def how(col: str) -> Cell:
        def render(row: Mapping[str, Any]) -> str:
            custom = cell(col, row.get(col)) if cell else None
            return custom if custom is not None else esc(fmt(col, row.get(col)))
        return render

    columns = [(esc(str(c).replace("_", " ")), "text" if c in text else "num", how(str(c))) for c in frame.columns]
    return grid(frame.to_dict("records"), columns)


def variant_label(row: Mapping[str, Any]) -> str:
    """A variant's name: "model · prompt"."""
    return " · ".join(str(row[c]) for c in ("model", "prompt") if c in row and not is_missing(row[c]))


def unreliable(row: Mapping[str, Any]) -> bool:
    """Whether a summary row is marked unreliable (too many failed requests)."""
    return row.get("reliable") is False or row.get("reliable") is np.False_


def frame_records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """A frame's rows as dicts with string keys ([] for none)."""
    if frame is None or frame.empty:
        return []
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
