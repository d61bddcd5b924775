"""`Report`: everything the report writers need, built from the tallies by
`evalrun.reports.build.analyze` (kept apart so the writers need not import the builder)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.results.tally import RepeatTally, VariantTally

__all__ = ["Report"]


@dataclass
class Report:
    """Everything the report writers need, built from the tallies (never from all cells at once)."""

    folder: Path
    settings: Mapping[str, Any]
    tallies: list[VariantTally]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]] | None
    comparison_by: str | None
    repeats: dict[tuple[str, str], RepeatTally]
    columns: list[str]
    simulated: bool
    clusters: np.ndarray | None = None
    choices: list[str] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    baseline: Any = None  # a reports.baseline.BaselineComparison when the run has a baseline
    trend: list[Any] = field(default_factory=list)  # reports.trend.TrendPoint: the experiment's runs
    frontier: list[dict[str, Any]] = field(default_factory=list)  # evalrun.reports.frontier

    @property
    def failure(self) -> str | None:
        """Why the run's accuracy cannot be trusted as a whole, or None."""
        sent = self.totals["answered"] + self.totals["errors"]
        if self.totals["cells"] and self.totals["answered"] == 0:
            if self.totals["errors"]:
                return f"every request failed ({self.totals['errors']} errors): there is no accuracy to report"
            return "nothing was answered yet: there is no accuracy to report"
        if sent and self.totals["errors"] / sent > 0.5:
            return f"most requests failed ({self.totals['errors']} of {sent}): the accuracy rests on the few answered"
        return None
