"""A Markdown table of rows by column, values formatted for reading (report.md, `evalrun compare`,
the frontier section)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["fmt_value", "markdown_table"]


def fmt_value(value: Any) -> str:
    """A value as a table shows it: "–" for none, thousands separated, four decimals."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """`rows` as a Markdown table of `columns` (a `|` in a value escaped)."""
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt_value(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])
