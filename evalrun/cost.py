"""USD from usage (cache writes and reads, batch discount) and the worst case of a request."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from evalrun.messages_api import USAGE_COLUMNS, Usage, usage_counters
from evalrun.models import Price

__all__ = ["cost_usd", "counters_cost", "stored_cost", "usage_cost", "worst_case_usd"]

_MILLION = 1_000_000
BATCH_DISCOUNT = 0.5


def cost_usd(
    price: Price | None,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    cache_creation_1h_input_tokens: int = 0,
    service_tier: str | None = None,
) -> float:
    """The price of one reply's usage; NaN when the model has no known price (never a silent $0)."""
    if price is None:
        return math.nan
    write_1h = min(cache_creation_1h_input_tokens, cache_creation_input_tokens)
    write_5m = cache_creation_input_tokens - write_1h
    # The Message Batches API charges every kind of usage at half the standard price.
    discount = BATCH_DISCOUNT if service_tier == "batch" else 1.0
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + write_5m * price.cache_write_5m
        + write_1h * price.cache_write_1h
        + cache_read_input_tokens * price.cache_read
    )
    return total * discount / _MILLION


def counters_cost(price: Price | None, counters: Usage) -> float:
    """`cost_usd` of a reply's usage counters (`usage_counters`, or a stored row's columns)."""
    return cost_usd(
        price,
        input_tokens=int(counters.input_tokens or 0),
        output_tokens=int(counters.output_tokens or 0),
        cache_creation_input_tokens=int(counters.cache_creation_input_tokens or 0),
        cache_read_input_tokens=int(counters.cache_read_input_tokens or 0),
        cache_creation_1h_input_tokens=int(counters.cache_creation_1h_input_tokens or 0),
        service_tier=counters.service_tier,
    )


def usage_cost(price: Price | None, usage: Mapping[str, Any]) -> float:
    """`cost_usd` of a reply's `usage` object."""
    return counters_cost(price, usage_counters(usage) or Usage())


def stored_cost(price: Price | None, row: Mapping[str, Any]) -> float:
    """`cost_usd` of a stored response row (the store's column names)."""
    return counters_cost(price, Usage(*(row[name] for name in USAGE_COLUMNS)))


def worst_case_usd(price: Price | None, *, input_tokens: int, max_tokens: int, cached: bool = False) -> float:
    """The most one request can cost: every input token written to the cache (if it asks for
    caching, at the dearer 1 h rate) and every allowed output token used."""
    if price is None:
        return math.nan
    input_rate = max(price.input, price.cache_write_1h if cached else price.input)
    return (input_tokens * input_rate + max_tokens * price.output) / _MILLION
