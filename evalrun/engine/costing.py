"""What a run will cost before it is sent: requests, tokens, USD and wall time per model × prompt,
and how small a difference between two variants it could detect.

The plan is streamed once. Input tokens come from the endpoint's `count_tokens` when it answers
(each distinct request counted once; above `SAMPLE_ABOVE` distinct requests per model a random
sample, extrapolated with its error bound), otherwise from the local approximation. Output
tokens are what the answer mode produces, bounded by `max_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from evalrun.cost import cost_usd
from evalrun.errors import ApiError, AuthError
from evalrun.jsonsafe import json_safe
from evalrun.plan.grid import Plan
from evalrun.plan.modes import MODES
from evalrun.plan.thinking import thinking_variants
from evalrun.send.client import MessagesClient
from evalrun.tokens import estimate_input_tokens

__all__ = ["Estimate", "estimate_plan"]

SAMPLE_ABOVE = 2000  # distinct requests per model; above this a random sample is counted
SAMPLE_SIZE = 400
COUNT_CONCURRENCY = 16


@dataclass
class Estimate:
    cells: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_max: int = 0
    cost_usd: float = 0.0
    cost_usd_max: float = 0.0
    sent_as: str = "realtime"  # how `cost_usd` is priced: as `run` (or `run --batch`) will send it
    cost_usd_realtime: float = 0.0
    cost_usd_batch: float = 0.0
    cost_usd_uncached: float = 0.0  # real time and no prompt caching: the naive price
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    input_source: str = "local approximation"
    input_error_tokens: int = 0  # ± bound (95 %) when input tokens were extrapolated from a sample
    wall_time_s: float | None = None
    limits: dict[str, float] = field(default_factory=dict)
    by_cell: list[dict[str, Any]] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    power: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in vars(self).items()}


@dataclass
class _Distinct:
    """One model's distinct request bodies (for count_tokens), counted or sampled."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash → body, while few
    groups: dict[str, Counter[str]] = field(default_factory=dict)  # hash → prompt → requests
    local: dict[str, int] = field(default_factory=dict)
    seen: int = 0
    sample: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)  # reservoir
    sampled: bool = False

    def add(self, request: Any, prompt: str, rng: random.Random) -> None:
        """One distinct request of the model: counted by body, or kept in the reservoir sample."""
        key, body = _count_key(request.body_json)
        if key in self.local:
            if not self.sampled:
                self.groups[key][prompt] += 1
            return
        self.local[key] = request.input_tokens
        self.seen += 1
        if not self.sampled:
            self.bodies[key] = body
            self.groups[key] = Counter({prompt: 1})
            if self.seen > SAMPLE_ABOVE:
                # Too many to count one by one: keep a random sample from here on.
                self.sampled = True
                keys = rng.sample(list(self.bodies), SAMPLE_SIZE)
                self.sample = [(k, self.bodies[k], self.local[k]) for k in keys]
                self.bodies, self.groups = {}, {}
        elif len(self.sample) < SAMPLE_SIZE:
            self.sample.append((key, body, request.input_tokens))
        else:
            slot = rng.randrange(self.seen)
            if slot < SAMPLE_SIZE:
                self.sample[slot] = (key, body, request.input_tokens)


def _count_key(body_json: str) -> tuple[str, dict[str, Any]]:
    body = json.loads(body_json)
    body.pop("max_tokens", None)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest(), body


async def _count_remote(bodies: Mapping[str, Mapping[str, Any]], client: MessagesClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    limiter = anyio.Semaphore(COUNT_CONCURRENCY)

    async def one(key: str, body: Mapping[str, Any]) -> None:
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
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    seed: int = 0,
    judge: Any = None,
) -> Estimate:
    """Estimate the whole plan (and its grading stage, with a `judge` plan). `clients` by model
    label; None counts locally. In three steps: stream the plan once (`_Streamed`), count the
    input tokens (`_count_input`), price each model × prompt (`_priced_row`)."""
    streamed = _Streamed(plan, rng=random.Random(seed), remote=clients is not None)
    for chunk in plan.chunks():
        for cell, request in zip(chunk.cells, chunk.requests, strict=True):
            streamed.add(cell, request)
    result = Estimate(cells=streamed.cells, requests=len(streamed.seen_requests))
    counted = await _count_input(streamed.distinct, clients)
    if counted.remote_ok:
        result.input_source = "count_tokens endpoint" + (" (sampled)" if counted.factor else "")
        result.input_error_tokens = round(counted.sampled_error)
    variants = {(v.model.label, v.prompt_name): v for v in plan.variants}
    written: set[str] = set()  # cache prefixes whose first request (the write) is counted
    prices = {m.label: m.info.price for m in plan.models}
    for (model, prompt), group in streamed.groups.items():
        row = _priced_row(group, counted.input_tokens(model, prompt, group["local_input"]), prices.get(model),
                          variants.get((model, prompt)), written, batch=plan.batch)  # fmt: skip
        row["output_basis"] = "bound" if (model, prompt) in streamed.thinks else "expected"
        _add_row(result, row)
    if judge is not None:
        grading = judge_estimate(plan, judge, seed=seed)
        _add_row(result, grading)
        result.requests += grading["requests"]
        prices[judge.model.label] = judge.model.info.price
    _totals(result, plan, prices)
    _wall_time(result, rpm=rpm, itpm=itpm, otpm=otpm)
    return result


class _Streamed:
    """The plan streamed once: cells and distinct requests per model × prompt, and (to count
    remotely) each model's distinct bodies, or a random sample of them above `SAMPLE_ABOVE`."""

    def __init__(self, plan: Plan, *, rng: random.Random, remote: bool) -> None:
        self.plan = plan
        self.rng = rng
        self.remote = remote
        self.cells = 0
        self.groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.distinct: dict[str, _Distinct] = defaultdict(_Distinct)
        self.seen_requests: set[int] = set()
        self.thinks = thinking_variants(plan)  # their output is bounded by max_tokens, not forecast

    def add(self, cell: Any, request: Any) -> None:
        self.cells += 1
        group = self.groups.setdefault(
            (cell.model, cell.prompt),
            {"model": cell.model, "prompt": cell.prompt, "answer_mode": cell.answer_mode, "cells": 0,
             "requests": 0, "local_input": 0, "output_tokens": 0, "output_tokens_max": 0},
        )  # fmt: skip
        group["cells"] += 1
        fingerprint = int(request.key[:16], 16)
        if fingerprint in self.seen_requests:
            return  # answered by the same request as an earlier cell: not paid again
        self.seen_requests.add(fingerprint)
        group["requests"] += 1
        thinking = (cell.model, cell.prompt) in self.thinks
        mode = MODES[cell.answer_mode]
        group["output_tokens"] += cell.max_tokens if thinking else mode.expected_output_tokens(cell.max_tokens, self.plan.choices)
        group["output_tokens_max"] += cell.max_tokens
        group["local_input"] += request.input_tokens
        if self.remote:
            self.distinct[cell.model].add(request, cell.prompt, self.rng)


@dataclass
class _Counted:
    """Input tokens as counted by the endpoint: exact per model × prompt, or a remote/local
    factor per sampled model; `remote_ok` False means the local approximation stands."""

    remote_ok: bool = False
    factor: dict[str, float] = field(default_factory=dict)
    exact: dict[tuple[str, str], float] = field(default_factory=dict)
    sampled_error: float = 0.0

    def input_tokens(self, model: str, prompt: str, local: int) -> float:
        if self.remote_ok and (model, prompt) in self.exact:
            return self.exact[(model, prompt)]
        if self.remote_ok and model in self.factor:
            return local * self.factor[model]
        return float(local)


async def _count_input(distinct: Mapping[str, _Distinct], clients: Mapping[str, MessagesClient] | None) -> _Counted:
    """Count each model's distinct bodies (or its sample) with count_tokens. An API error other
    than a refused key falls back to the local approximation."""
    from evalrun.plan.render import materialize

    counted = _Counted(remote_ok=clients is not None)
    if clients is None:
        return counted
    try:
        for model, known in distinct.items():
            if known.sampled:
                got = await _count_remote({k: materialize(b) for k, b, _ in known.sample}, clients[model])
                ratios = [got[k] / max(local, 1) for k, _, local in known.sample]
                counted.factor[model] = statistics.fmean(ratios)
                spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
                counted.sampled_error += 1.96 * spread / math.sqrt(len(ratios)) * sum(known.local.values())
            else:
                got = await _count_remote({k: materialize(b) for k, b in known.bodies.items()}, clients[model])
                for key, prompts in known.groups.items():
                    for prompt, count in prompts.items():
                        counted.exact[(model, prompt)] = counted.exact.get((model, prompt), 0.0) + got[key] * count
    except AuthError:
        raise
    except ApiError:
        counted.remote_ok = False
    return counted


def _priced_row(
    group: Mapping[str, Any], tokens: float, price: Any, variant: Any, written: set[str], *, batch: bool
) -> dict[str, Any]:
    """One model × prompt's row of the estimate: tokens, prompt-cache writes and reads, USD."""
    row = {k: v for k, v in group.items() if k != "local_input"}
    row["input_tokens"] = round(tokens)
    # A cached prefix: the first request writes it, every later one reads it (the run loop
    # sends the first alone, so parallel first requests do not all miss).
    point = variant.cache if variant is not None else None
    writes = reads = 0
    write_1h = 0
    if point is not None and group["requests"]:
        scale = tokens / group["local_input"] if group["local_input"] else 1.0
        prefix = round(point.prefix_tokens * scale)
        first = point.key not in written
        written.add(point.key)
        writes = prefix if first else 0
        reads = prefix * (group["requests"] - (1 if first else 0))
        write_1h = writes if point.ttl == "1h" else 0
    uncached = max(row["input_tokens"] - writes - reads, 0)
    row["cache_write_tokens"] = writes
    row["cache_read_tokens"] = reads
    usage = {"input_tokens": uncached, "cache_creation_input_tokens": writes, "cache_read_input_tokens": reads,
             "cache_creation_1h_input_tokens": write_1h}  # fmt: skip
    expected, most = group["output_tokens"], group["output_tokens_max"]
    tier = "batch" if batch else None
    row["cost_usd_realtime"] = cost_usd(price, **usage, output_tokens=expected)
    row["cost_usd_batch"] = cost_usd(price, **usage, output_tokens=expected, service_tier="batch")
    row["cost_usd_uncached"] = cost_usd(price, input_tokens=row["input_tokens"], output_tokens=expected)
    row["cost_usd"] = cost_usd(price, **usage, output_tokens=expected, service_tier=tier)
    row["cost_usd_max"] = cost_usd(price, **usage, output_tokens=most, service_tier=tier)
    return row


def _add_row(result: Estimate, row: dict[str, Any]) -> None:
    result.by_cell.append(row)
    result.input_tokens += row["input_tokens"]
    result.output_tokens += row["output_tokens"]
    result.output_tokens_max += row["output_tokens_max"]


def _totals(result: Estimate, plan: Plan, prices: Mapping[str, Any]) -> None:
    """The estimate's sums over its rows, how it is sent, and the models without a price."""
    result.cost_usd = sum(r["cost_usd"] for r in result.by_cell)
    result.cost_usd_max = sum(r["cost_usd_max"] for r in result.by_cell)
    for name in ("cost_usd_realtime", "cost_usd_batch", "cost_usd_uncached"):
        setattr(result, name, sum(r.get(name, r["cost_usd"]) for r in result.by_cell))
    result.cache_write_tokens = sum(r.get("cache_write_tokens", 0) for r in result.by_cell)
    result.cache_read_tokens = sum(r.get("cache_read_tokens", 0) for r in result.by_cell)
    result.sent_as = "batch" if plan.batch else "realtime"
    result.unpriced = sorted({m for m, p in prices.items() if p is None})


def _wall_time(result: Estimate, *, rpm: float | None, itpm: float | None, otpm: float | None) -> None:
    """The wall time the slowest of the given rate limits allows."""
    result.limits = {k: v for k, v in (("rpm", rpm), ("itpm", itpm), ("otpm", otpm)) if v}
    if result.limits:
        minutes = [result.requests / rpm if rpm else 0.0]
        minutes.append(result.input_tokens / itpm if itpm else 0.0)
        minutes.append(result.output_tokens / otpm if otpm else 0.0)
        result.wall_time_s = max(minutes) * 60


def power_analysis(
    plan: Plan,
    *,
    observed: Any = None,
    detect: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any] | None:
    """For each pair of variants the reports would compare: the smallest accuracy difference
    the planned rows can detect, and (with `detect`) how many rows that difference needs.

    The spread of the per-row differences comes from `observed` (a finished run's `Report` of
    the same plan) when it has rows both variants answered, otherwise from the stated assumption
    `DEFAULT_DISCORDANCE` (share of rows on which exactly one variant is right).
    """
    from evalrun.results.power import DEFAULT_DISCORDANCE, sd_diff_binary

    found = _pairs(plan)
    if found is None:
        return None
    by, pairs = found
    rows = plan.dataset.count
    tallies = {(t.model, t.prompt): t for t in observed.tallies} if observed is not None else {}
    cluster_sizes = _cluster_sizes(plan)
    # Without a finished run the within-cluster correlation is unknown: besides independent rows,
    # give the worst case, every question of a cluster right or wrong together, whose design
    # effect is Σ m² / N for clusters of m rows (each cluster then counts as one row).
    worst_deff = sum(m * m for m in cluster_sizes) / rows if cluster_sizes and rows else None
    out = []
    for group, a, b in pairs:
        key_a, key_b = ((group, a), (group, b)) if by == "prompt" else ((a, group), (b, group))
        source, sd, deff = "assumed", sd_diff_binary(DEFAULT_DISCORDANCE), 1.0
        measured = _observed_spread(observed, tallies, key_a, key_b)
        if measured is not None:
            source, sd, deff = measured
        entry: dict[str, Any] = {"by": by, "group": group, "a": a, "b": b, "sd_diff": sd, "design_effect": deff,
                                 "source": source}  # fmt: skip
        entry.update(_detectable(rows, sd, deff, alpha=alpha, power=power, detect=detect))
        if worst_deff is not None and source == "assumed":
            entry["clusters"] = len(cluster_sizes)
            entry["design_effect_worst"] = worst_deff
            worst = _detectable(rows, sd, worst_deff, alpha=alpha, power=power, detect=detect)
            entry.update({f"{k}_worst": v for k, v in worst.items() if k != "detect"})
        out.append(entry)
    return {
        "rows": rows,
        "alpha": alpha,
        "power": power,
        "assumption": (
            f"where no finished run of this plan exists, {DEFAULT_DISCORDANCE:.0%} of rows are assumed "
            f"discordant (exactly one variant right) and rows independent"
            + (
                f"; with dataset.cluster, the worst case counts each of the {len(cluster_sizes):,} clusters as one row "
                f"(its questions right or wrong together): the truth lies between, and a finished run measures it"
                if cluster_sizes
                else " (no clustering)"
            )
        ),
        "formula": "n = deff · ((z[1−α/2] + z[power]) · sd_diff / δ)²; MDD = (z[1−α/2] + z[power]) · sd_diff · √(deff / n)",
        "pairs": out,
    }


def _pairs(plan: Plan) -> tuple[str, list[tuple[str, str, str]]] | None:
    """What the reports would compare: prompts within each model, else models; None for one variant."""
    labels = [m.label for m in plan.models]
    prompts = list(plan.experiment.prompts)
    if len(prompts) > 1:
        return "prompt", [(m, a, b) for m in labels for i, a in enumerate(prompts) for b in prompts[i + 1 :]]
    if len(labels) > 1:
        return "model", [(prompts[0], a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    return None


def _observed_spread(
    observed: Any, tallies: Mapping[tuple[str, str], Any], key_a: tuple[str, str], key_b: tuple[str, str]
) -> tuple[str, float, float] | None:
    """The spread of the per-row differences (and design effect) a finished run measured for two
    variants, when they share at least two answered rows."""
    if key_a not in tallies or key_b not in tallies:
        return None
    import numpy as np

    from evalrun.results.power import sd_diff_from_data

    rows_a, values_a = tallies[key_a].row_means()
    rows_b, values_b = tallies[key_b].row_means()
    common, ia, ib = np.intersect1d(rows_a, rows_b, assume_unique=True, return_indices=True)
    if common.size < 2:
        return None
    clusters = observed.clusters[common] if observed.clusters is not None else None
    sd_obs, deff_obs = sd_diff_from_data(values_a[ia], values_b[ib], clusters)
    if not (math.isfinite(sd_obs) and sd_obs > 0):
        return None
    return f"observed on {common.size} rows of the finished run", sd_obs, deff_obs


def _detectable(
    rows: int, sd: float, deff: float, *, alpha: float, power: float, detect: float | None
) -> dict[str, Any]:
    """The smallest detectable difference over `rows`, and the rows `detect` needs."""
    from evalrun.results.power import min_detectable_difference, rows_needed

    out: dict[str, Any] = {
        "min_detectable_difference": min_detectable_difference(
            rows, sd_diff=sd, alpha=alpha, power=power, design_effect=deff
        )
    }
    if detect is not None:
        out["detect"] = detect
        out["rows_needed"] = rows_needed(detect, sd_diff=sd, alpha=alpha, power=power, design_effect=deff)
    return out


def _cluster_sizes(plan: Plan) -> list[int]:
    """The number of selected rows in each cluster of `dataset.cluster` (empty without one)."""
    if plan.experiment.dataset.cluster is None:
        return []
    from collections import Counter

    return list(Counter(plan.cluster(row) for row in plan.dataset.iter_rows()).values())


def judge_estimate(plan: Plan, judge: Any, *, sample: int = 400, seed: int = 0) -> dict[str, Any]:
    """The grading stage of a judge scorer, estimated locally: one grading request per cell, each
    showing the rubric, the row and a reply as long as the graded mode is expected to write."""
    from evalrun.tokens import count_text_tokens

    rows = plan.dataset.count
    chosen = set(random.Random(seed).sample(range(rows), min(sample, rows)))
    variants = plan.variants
    stand_ins = {
        v.prompt_name + "\x00" + v.model.label: " ".join(["word"] * v.mode.expected_output_tokens(
            int(v.params["max_tokens"]), plan.choices
        ))
        for v in variants
    }  # fmt: skip
    tokens: list[float] = []
    for row in plan.dataset.iter_rows():
        if row.seq not in chosen:
            continue
        per_row = [estimate_input_tokens(judge.body(row.values, reply)) for reply in stand_ins.values()]
        tokens.append(sum(per_row) / len(per_row))
    cells = rows * len(variants) * plan.experiment.repeats
    mean_input = statistics.fmean(tokens) if tokens else 0.0
    max_tokens = int(judge.params["max_tokens"])
    expected_output = min(max_tokens, count_text_tokens('{"explanation":"' + "word " * 30 + '","grade":"pass"}'))
    price = judge.model.info.price
    tier = "batch" if plan.batch else None
    input_tokens = round(mean_input * cells)
    return {
        "model": judge.model.label,
        "prompt": "(grading)",
        "answer_mode": judge.mode_name,
        "cells": cells,
        "requests": cells,
        "input_tokens": input_tokens,
        "output_tokens": expected_output * cells,
        "output_tokens_max": max_tokens * cells,
        "cost_usd": cost_usd(price, input_tokens=input_tokens, output_tokens=expected_output * cells, service_tier=tier),
        "cost_usd_max": cost_usd(price, input_tokens=input_tokens, output_tokens=max_tokens * cells, service_tier=tier),
        "cost_usd_realtime": cost_usd(price, input_tokens=input_tokens, output_tokens=expected_output * cells),
        "cost_usd_batch": cost_usd(
            price, input_tokens=input_tokens, output_tokens=expected_output * cells, service_tier="batch"
        ),
        "cost_usd_uncached": cost_usd(price, input_tokens=input_tokens, output_tokens=expected_output * cells),
        "input_source": "local approximation (sampled rows)",
    }
