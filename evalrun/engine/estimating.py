"""`estimate`: what a run will cost, before it is sent (count_tokens is free), and the power of
its comparisons, seen through the run's folder when it already holds a (partial) run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from evalrun.engine.prepare import Prepared, simulator
from evalrun.engine.stages import run_keys
from evalrun.errors import EvalrunError, SpecError, StoreError
from evalrun.send.client import MessagesClient
from evalrun.store.ownership import experiment_in
from evalrun.store.run_store import Learned

if TYPE_CHECKING:
    from evalrun.engine.costing import Estimate

__all__ = ["estimate_prepared"]


async def estimate_prepared(
    prepared: Prepared,
    *,
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    local: bool = False,
    detect: float | None = None,
) -> Estimate:
    """Estimate the run without sending a Messages request (count_tokens is free): the plan the
    run would send (re-planned by what its folder learned), counted by the endpoint when it
    answers, else locally; then the power of its comparisons."""
    from evalrun.engine.costing import estimate_plan, power_analysis

    plan = prepared.plan
    observed = _observed(prepared)
    if observed is not None and observed[1]:
        plan = prepared.replan(observed[1])
    report = observed[0] if observed is not None else None
    judge = prepared.judge_plan(None)

    async def count(clients: Mapping[str, MessagesClient] | None) -> Estimate:
        return await estimate_plan(plan, clients=clients, rpm=rpm, itpm=itpm, otpm=otpm, judge=judge)

    keys = None if local else _keys_or_none(prepared, os.environ if environ is None else environ)
    if keys is None:
        estimate = await count(None)
    else:
        async with _count_clients(prepared, keys, transport) as clients:
            try:
                estimate = await count(clients)
            except EvalrunError as exc:
                if "401" not in str(exc) and "authentication" not in str(exc):
                    raise
                estimate = await count(None)  # a key the endpoint refuses: count locally
    estimate.power = power_analysis(plan, observed=report, detect=detect)
    return estimate


def _keys_or_none(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str | None] | None:
    """The keys to count tokens with; None (count locally) when there is no usable key."""
    try:
        return run_keys(prepared, environ)
    except SpecError:
        return None


@contextlib.asynccontextmanager
async def _count_clients(
    prepared: Prepared, keys: Mapping[str, str | None], transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[dict[str, MessagesClient]]:
    """One client per graded model for count_tokens (the simulator's, for a --sim estimate)."""
    with contextlib.ExitStack() as stack:
        base_urls = {m.label: m.base_url for m in prepared.models}
        if prepared.sim:
            url = stack.enter_context(simulator(prepared, next(iter(keys.values()), None) or ""))
            base_urls = dict.fromkeys(base_urls, url)
        clients = {
            m.label: MessagesClient(
                base_url=base_urls[m.label], api_key=keys[m.label], api_version=m.api_version, transport=transport
            )
            for m in prepared.models
        }
        try:
            yield clients
        finally:
            for client in clients.values():
                await client.aclose()


def _observed(prepared: Prepared) -> tuple[Any, dict[str, Learned]] | None:
    """The finished (or partial) run of this plan, if its folder has one: its Report and what it learned."""
    from evalrun.reports.build import analyze, open_run

    if not (prepared.folder / "store.sqlite").exists():
        return None
    try:
        if experiment_in(prepared.folder) not in (None, prepared.experiment.name):
            return None  # another experiment's folder (a run there would be refused): nothing observed
    except StoreError:
        return None
    try:
        store, settings = open_run(prepared.folder)
    except StoreError:
        return None
    with store:
        return analyze(store, settings, folder=prepared.folder), store.learned()
