"""What a run will cost before it is sent: requests, tokens, USD and wall time per model × prompt.

Input tokens come from the endpoint's `count_tokens` when it answers (each distinct request
counted once; a random sample, extrapolated with its error bound, when there are very many),
otherwise from the local approximation. Output tokens are what the answer mode produces,
bounded by `max_tokens`.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from evalrun.cost import cost_usd
from evalrun.errors import ApiError, AuthError
from evalrun.plan.grid import Cell, Plan
from evalrun.send.client import MessagesClient
from evalrun.tokens import estimate_input_tokens, estimate_text_tokens

__all__ = ["Estimate", "estimate_plan", "expected_output_tokens"]

SAMPLE_ABOVE = 2000  # distinct requests; above this a random sample is counted
SAMPLE_SIZE = 400
COUNT_CONCURRENCY = 16


@dataclass
class Estimate:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_max: int = 0
    cost_usd: float = 0.0
    cost_usd_max: float = 0.0
    input_source: str = "local approximation"
    input_error_tokens: int = 0  # ± bound (95 %) when input tokens were extrapolated from a sample
    wall_time_s: float | None = None
    limits: dict[str, float] = field(default_factory=dict)
    by_cell: list[dict[str, Any]] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            return None if isinstance(value, float) and math.isnan(value) else value

        out = {k: clean(v) for k, v in vars(self).items() if k != "by_cell"}
        out["by_cell"] = [{k: clean(v) for k, v in row.items()} for row in self.by_cell]
        return out


def expected_output_tokens(cell: Cell, choices: list[str]) -> int:
    """What the cell's answer mode is expected to produce, never more than max_tokens."""
    if cell.answer_mode == "structured":
        longest = max(choices, key=len) if choices else "A"
        expected = estimate_text_tokens(json.dumps({"answer": longest}))
    else:
        # prefill and instruction replies are cut at their small max_tokens; plain replies may
        # use all of it, so the bound is the honest expectation.
        expected = cell.max_tokens
    return min(expected, cell.max_tokens)


def _distinct_key(body: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in body.items() if k != "max_tokens"}, sort_keys=True)


async def _count_remote(bodies: dict[str, dict[str, Any]], client: MessagesClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    limiter = anyio.Semaphore(COUNT_CONCURRENCY)

    async def one(key: str, body: dict[str, Any]) -> None:
        async with limiter:
            counts[key] = await client.count_tokens(body)

    async with anyio.create_task_group() as tg:
        for key, body in bodies.items():
            tg.start_soon(one, key, body)
    return counts


async def estimate_plan(
    plan: Plan,
    *,
    clients: Mapping[str, MessagesClient] | None,
    choices: list[str],
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    seed: int = 0,
) -> Estimate:
    """Estimate the whole plan. `clients` by model label; None counts locally."""
    prices = {m.label: m.info.price for m in plan.models}
    distinct: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # model → key → body
    cell_keys: list[tuple[Cell, str]] = []
    for cell in plan.cells:
        key = _distinct_key(cell.body)
        distinct[cell.model].setdefault(key, cell.body)
        cell_keys.append((cell, key))

    counts: dict[str, dict[str, float]] = {}
    result = Estimate(requests=len(plan.cells))
    sampled_error = 0.0
    remote_ok = clients is not None
    if clients is not None:
        try:
            for model, bodies in distinct.items():
                keys = list(bodies)
                if len(keys) > SAMPLE_ABOVE:
                    sample = random.Random(seed).sample(keys, SAMPLE_SIZE)
                    got = await _count_remote({k: bodies[k] for k in sample}, clients[model])
                    # Scale each local estimate by the sample's measured ratio: cheap and unbiased enough.
                    ratios = [got[k] / max(estimate_input_tokens(bodies[k]), 1) for k in sample]
                    mean = statistics.fmean(ratios)
                    spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
                    model_counts = {k: got.get(k, estimate_input_tokens(bodies[k]) * mean) for k in keys}
                    local_total = sum(estimate_input_tokens(bodies[k]) for k in keys)
                    sampled_error += 1.96 * spread / math.sqrt(len(sample)) * local_total
                    counts[model] = model_counts
                else:
                    got = await _count_remote(bodies, clients[model])
                    counts[model] = {k: float(v) for k, v in got.items()}
        except AuthError:
            raise
        except ApiError:
            remote_ok = False
    if not remote_ok:
        counts = {
            m: {k: float(estimate_input_tokens(b)) for k, b in bodies.items()}
            for m, bodies in distinct.items()
        }
    else:
        result.input_source = "count_tokens endpoint" + (" (sampled)" if sampled_error else "")
    result.input_error_tokens = round(sampled_error)

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for cell, key in cell_keys:
        row = groups.setdefault(
            (cell.model, cell.prompt),
            {"model": cell.model, "prompt": cell.prompt, "answer_mode": cell.answer_mode, "requests": 0,
             "input_tokens": 0.0, "output_tokens": 0, "output_tokens_max": 0, "cost_usd": 0.0, "cost_usd_max": 0.0},
        )  # fmt: skip
        tokens = counts[cell.model][key]
        output = expected_output_tokens(cell, choices)
        price = prices.get(cell.model)
        row["requests"] += 1
        row["input_tokens"] += tokens
        row["output_tokens"] += output
        row["output_tokens_max"] += cell.max_tokens
        row["cost_usd"] += cost_usd(price, input_tokens=round(tokens), output_tokens=output)
        row["cost_usd_max"] += cost_usd(price, input_tokens=round(tokens), output_tokens=cell.max_tokens)
    for row in groups.values():
        row["input_tokens"] = round(row["input_tokens"])
        result.by_cell.append(row)
        result.input_tokens += row["input_tokens"]
        result.output_tokens += row["output_tokens"]
        result.output_tokens_max += row["output_tokens_max"]
    result.cost_usd = sum(r["cost_usd"] for r in groups.values())
    result.cost_usd_max = sum(r["cost_usd_max"] for r in groups.values())
    result.unpriced = sorted({m for m, p in prices.items() if p is None})

    result.limits = {k: v for k, v in (("rpm", rpm), ("itpm", itpm), ("otpm", otpm)) if v}
    if result.limits:
        minutes = [result.requests / rpm if rpm else 0.0]
        minutes.append(result.input_tokens / itpm if itpm else 0.0)
        minutes.append(result.output_tokens / otpm if otpm else 0.0)
        result.wall_time_s = max(minutes) * 60
    return result
