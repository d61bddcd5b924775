"""`evalrun estimate SPEC --pilot N`: measure what each configuration spends on a few real rows,
and forecast the whole run's cost with a 95 % interval.

The pilot is an ordinary run of the same experiment limited to N rows sampled from the plan's
rows (seeded; the same rows for every configuration), sent by the run engine into the plan's
own run folder (and the shared response cache): its answers are stored answers, so the full
run takes them from the store and never pays for them again. Nothing else is written.

The forecast, per configuration (model label × prompt): the pilot's cells cost what they
cost; each of the other cells is forecast at the mean cost of a pilot cell (input, output and
thinking tokens at the run's prices), with a t interval over the pilot cells and the finite
population correction (the pilot rows are drawn without replacement from the plan's rows). The
run's interval adds the configurations' variances (their rows are drawn independently of the
cost of another configuration's reply). Thinking makes output, and so cost, vary from row to
row; the interval says how much the N rows tell about it, and narrows as N grows.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evalrun.engine.prepare import Prepared
from evalrun.engine.run import run_prepared
from evalrun.errors import RunFailed, SpecError
from evalrun.jsonsafe import json_safe
from evalrun.plan.dataset import Dataset
from evalrun.plan.grid import Plan
from evalrun.results.reasoning import reasoning_of

__all__ = [
    "CONFIDENCE",
    "PilotForecast",
    "bound_note",
    "forecast_lines",
    "pilot_dataset",
    "pilot_estimate",
    "pilot_json",
    "pilot_lines",
    "run_pilot",
]

CONFIDENCE = 0.95


@dataclass
class PilotForecast:
    """What a pilot measured and the whole run's cost it forecasts (`to_json` adds to the estimate's)."""

    pilot_rows: int = 0
    pilot_cells: int = 0
    pilot_cost_usd: float = 0.0
    cost_usd: float = math.nan
    cost_usd_low: float = math.nan
    cost_usd_high: float = math.nan
    by_config: list[dict[str, Any]] = field(default_factory=list)
    pilot_notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in vars(self).items()}


def pilot_dataset(dataset: Dataset, rows: int, *, seed: int = 0) -> Dataset:
    """`rows` of the dataset's selected rows, sampled with `seed` (all of them when it has fewer)."""
    if rows >= dataset.count:
        return dataset
    chosen = set(random.Random(seed).sample(range(dataset.count), rows))
    lines = {row.line for row in dataset.iter_rows() if row.seq in chosen}
    # Without limit or sample, a row's position is its index among the file's data rows.
    whole = dataclasses.replace(dataset, chosen=None, limit=None)
    indexes = frozenset(row.seq for row in whole.iter_rows() if row.line in lines)
    return dataclasses.replace(dataset, chosen=indexes, limit=None, count=len(indexes))


def _t(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


async def run_pilot(
    prepared: Prepared,
    *,
    rows: int,
    cells_by_config: Mapping[tuple[str, str], int],
    budget_usd: float | None = None,
    seed: int = 0,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    cache_dir: Path | None = None,
) -> PilotForecast:
    """Send the pilot through the run engine and forecast the run (`cells_by_config`: the full
    plan's cells per (model label, prompt), from the estimate)."""
    if rows < 2:
        raise SpecError("--pilot: give at least 2 rows (an interval needs a spread)")
    subset = pilot_dataset(prepared.dataset, rows, seed=seed)
    plan = Plan(prepared.experiment, subset, prepared.models, prepared.table, batch=prepared.batch)
    pilot = dataclasses.replace(prepared, dataset=subset, plan=plan)
    forecast = PilotForecast(pilot_rows=subset.count)
    try:
        await run_prepared(pilot, budget_usd=budget_usd, environ=environ, transport=transport, cache_dir=cache_dir)
    except RunFailed as failed:
        forecast.pilot_notes.append(f"some pilot requests failed ({failed}); the forecast rests on the answered ones")
    measured = _measure(prepared.folder)
    _forecast(forecast, measured, cells_by_config)
    return forecast


def _measure(folder: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per (model, prompt): each answered pilot cell's cost, output and thinking tokens."""
    from evalrun.reports.build import open_run

    store, _ = open_run(folder)
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    with store:
        for chunk in store.iter_cells():
            for cell in chunk:
                if cell["status"] != "ok" or cell["cost_usd"] is None:
                    continue
                share = max(int(cell["sharing"] or 1), 1)
                found = out.setdefault((cell["model"], cell["prompt"]), {"cost": [], "output": [], "thinking": []})
                found["cost"].append(float(cell["cost_usd"]) / share)
                found["output"].append(float(cell["output_tokens"] or 0))
                found["thinking"].append(float(reasoning_of(cell).thinking_tokens))
    return out


def _forecast(
    forecast: PilotForecast,
    measured: Mapping[tuple[str, str], Mapping[str, list[float]]],
    cells_by_config: Mapping[tuple[str, str], int],
) -> None:
    total = 0.0
    variance = 0.0
    for (model, prompt), cells in cells_by_config.items():
        found = measured.get((model, prompt))
        row: dict[str, Any] = {"model": model, "prompt": prompt, "cells": cells}
        if not found or not found["cost"]:
            row.update(pilot_cells=0, pilot_cost_usd=0.0, cost_usd=math.nan, cost_usd_low=math.nan, cost_usd_high=math.nan)
            forecast.pilot_notes.append(f"{model} / {prompt}: no priced pilot answer, so no forecast")
            forecast.by_config.append(row)
            total = math.nan
            continue
        costs = found["cost"]
        n = len(costs)
        paid = sum(costs)
        rest = max(cells - n, 0)
        mean = statistics.fmean(costs)
        spread = statistics.stdev(costs) if n > 1 else 0.0
        correction = math.sqrt(max(1 - n / cells, 0.0)) if cells else 0.0
        half = _t(max(n - 1, 1)) * spread / math.sqrt(n) * correction * rest
        point = paid + rest * mean
        row.update(
            pilot_cells=n, pilot_cost_usd=paid, mean_cost_per_cell_usd=mean,
            mean_output_tokens=statistics.fmean(found["output"]), mean_thinking_tokens=statistics.fmean(found["thinking"]),
            cost_usd=point, cost_usd_low=max(point - half, paid), cost_usd_high=point + half,
        )  # fmt: skip
        forecast.by_config.append(row)
        forecast.pilot_cells += n
        forecast.pilot_cost_usd += paid
        total += point
        variance += half * half
    forecast.cost_usd = total
    half = math.sqrt(variance)
    forecast.cost_usd_low = max(total - half, forecast.pilot_cost_usd)
    forecast.cost_usd_high = total + half


async def pilot_estimate(prepared: Prepared, estimate: Any, *, rows: int, **options: Any) -> PilotForecast:
    """The pilot for an `Estimate` of the same prepared plan (its cells per configuration)."""
    cells = {(r["model"], r["prompt"]): int(r["cells"]) for r in estimate.by_cell if r["prompt"] != "(grading)"}
    return await run_pilot(prepared, rows=rows, cells_by_config=cells, **options)


def bound_note(estimate: Any) -> str | None:
    """Without a pilot: which configurations' costs are bounds (they think), not forecasts."""
    bounded = [f"{r['model']} / {r['prompt']}" for r in estimate.by_cell if r.get("output_basis") == "bound"]
    if not bounded:
        return None
    return (
        f"thinking: the cost of {', '.join(bounded)} is a bound, not a forecast (thinking spends up to max_tokens); "
        "run `evalrun estimate SPEC --pilot 20` to measure it on 20 real rows"
    )


def pilot_lines(forecast: PilotForecast) -> list[str]:
    """The pilot's part of `evalrun estimate`'s text output."""
    lines = [
        f"\npilot: {forecast.pilot_rows} rows, {forecast.pilot_cells} cells sent for ${forecast.pilot_cost_usd:.4f} "
        "(stored: the run will not pay for them again)"
    ]
    for row in forecast.by_config:
        if math.isfinite(row["cost_usd"]):
            lines.append(
                f"  {row['model']} / {row['prompt']}: {row['mean_output_tokens']:,.0f} output tokens a cell "
                f"({row['mean_thinking_tokens']:,.0f} thinking); ${row['cost_usd']:.4f} "
                f"(95 % ${row['cost_usd_low']:.4f}–${row['cost_usd_high']:.4f}) for {row['cells']:,} cells"
            )
    lines.append(
        f"forecast from the pilot: ${forecast.cost_usd:.4f} for the whole run "
        f"(95 % interval ${forecast.cost_usd_low:.4f}–${forecast.cost_usd_high:.4f})"
    )
    lines += [f"  note: {note}" for note in forecast.pilot_notes]
    return lines


def pilot_json(forecast: PilotForecast | None) -> dict[str, Any]:
    """What a pilot adds to `estimate --json` (nothing without one)."""
    return forecast.to_json() if forecast is not None else {}


def forecast_lines(estimate: Any, forecast: PilotForecast | None) -> list[str]:
    """`estimate`'s lines about the cost of thinking: the pilot's forecast, or which figures are bounds."""
    if forecast is not None:
        return pilot_lines(forecast)
    note = bound_note(estimate)
    return [f"note: {note}"] if note else []
