"""The stages of a run, in the order they happen:

1. `open_folder`: the folder's lock, its owner (one experiment per folder), its migrations, what
   a changed plan means, the run's settings row;
2. `connect`: one HTTP client per endpoint × key × API version, the pacer and the sender;
3. `request_stages`: the request plans, answers first and then (for a judge scorer) grading;
   both are the same contract (`RequestStage`) and go through `send_stage`, the same run loop,
   store, cache, budget and deadline;
4. `close_folder` (in `run.py`): the run's status and stop reason, the reports.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from evalrun import __version__
from evalrun.cost import stored_cost
from evalrun.engine.options import Limits, RunOptions
from evalrun.engine.prepare import Prepared, api_keys, lane_names, simulator
from evalrun.engine.settings import RunSettings
from evalrun.errors import SpecError
from evalrun.plan.grid import Plan
from evalrun.plan.judge import JudgePlan, judge_mode
from evalrun.send.batch import BatchSender
from evalrun.send.client import MessagesClient
from evalrun.send.fdlimit import SPARE_FILES, allow_open_files
from evalrun.send.limits import Pacer
from evalrun.send.realtime import RealtimeSender
from evalrun.send.runner import Runner, RunStats
from evalrun.send.sender import backoff_delay
from evalrun.store.cache import ResponseCache
from evalrun.store.ownership import experiment_in, set_aside
from evalrun.store.run_store import Learned, Store

__all__ = [
    "OpenFolder",
    "RequestStage",
    "check_owner",
    "connect",
    "open_folder",
    "request_stages",
    "run_keys",
    "send_stage",
    "settings_of",
    "within_open_files",
]


# -- before the folder: keys and the process's file limit -----------------------------------------
def run_keys(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each model's key: one throwaway key for the simulator, else from the environment."""
    if prepared.sim:
        sim_key = "sim-" + secrets.token_hex(8)
        return {m.label: sim_key for m in prepared.all_models}
    return api_keys(prepared, environ)


def check_priced(prepared: Prepared, limits: Limits) -> None:
    """A budget can only be kept when every graded model has a price."""
    if limits.budget_usd is None:
        return
    unpriced = [m.label for m in prepared.models if m.info.price is None]
    if unpriced:
        raise SpecError(
            f"{prepared.experiment.source}: a budget is set but {unpriced[0]} has no known price; "
            f"give it one under `model_table` so the budget can be kept"
        )


def within_open_files(prepared: Prepared, keys: Mapping[str, str | None], concurrency: int, notes: list[str]) -> int:
    """The concurrency ceiling the process can open connections for: each distinct endpoint
    and key has a pool of its own, and an in-process simulator holds the other end of each."""
    pools = len({(m.base_url, keys[m.label], m.api_version) for m in prepared.all_models})
    per_connection = 2 if prepared.sim else 1
    allowed = allow_open_files(concurrency * pools * per_connection + SPARE_FILES)
    fits = max(1, (allowed - SPARE_FILES) // (pools * per_connection))
    if fits >= concurrency:
        return concurrency
    notes.append(
        f"concurrency lowered from {concurrency} to {fits}: this process may open at most {allowed} files "
        f"(raise `ulimit -n` for more)"
    )
    return fits


# -- 1. the folder ----------------------------------------------------------------------------------
def settings_of(prepared: Prepared, plan: Plan, *, concurrency: int, budget: float | None) -> RunSettings:
    """What this run records about itself (see `RunSettings`)."""
    experiment = prepared.experiment
    judge = prepared.judge
    return RunSettings(
        name=experiment.name,
        spec_path=experiment.source,
        spec=experiment.model_dump(mode="json", exclude_none=True),
        dataset=str(prepared.dataset.path),
        rows=prepared.dataset.count,
        cluster=experiment.dataset.cluster,
        endpoint="simulator" if prepared.sim else sorted({m.endpoint for m in prepared.models}),
        models={m.label: m.spec.name for m in prepared.models},
        model_labels=[m.label for m in prepared.models],
        api_versions={m.label: m.api_version for m in prepared.models},
        prompts=list(experiment.prompts),
        modes={f"{m}/{p}": mode for (m, p), mode in plan.modes.items()},
        repeats=experiment.repeats,
        reducer=experiment.reducer,
        scorer=experiment.scorer.model_dump(mode="json"),
        prices={m.label: (vars(m.info.price) if m.info.price is not None else None) for m in prepared.all_models},
        judge=(
            {"label": judge.label, "model": judge.spec.name, "mode": judge_mode(experiment.scorer, judge)}
            if judge is not None
            else None
        ),
        prices_as_of=prepared.table.as_of,
        budget_usd=budget,
        batch=prepared.batch,
        concurrency=concurrency,
        warnings=list(plan.warnings),
        evalrun_version=__version__,
    )


def check_owner(prepared: Prepared, *, fresh: bool) -> str | None:
    """Refuse a folder whose store holds another experiment, before anything in it changes.
    With `fresh`, the other experiment's store is set aside (renamed, never deleted: its answers
    were paid for) and the name it was set aside under is returned."""
    folder = prepared.folder
    owner = experiment_in(folder)
    name = prepared.experiment.name
    if owner is None or owner == name:
        return None
    if not fresh:
        raise SpecError(
            f"{folder}: this run folder holds experiment {owner!r}, not {name!r}; give --out another folder "
            f"(or out= in Python), or add --fresh to set the store of {owner!r} aside and start {name!r} there"
        )
    return set_aside(folder, owner)


@dataclass
class OpenFolder:
    """A run folder opened for writing: its store (locked), this run's row and the plan to send."""

    store: Store
    run_id: int
    plan: Plan
    plan_stored: bool
    settings: RunSettings
    changes: list[str] = field(default_factory=list)


def open_folder(prepared: Prepared, options: RunOptions, limits: Limits, notes: list[str]) -> OpenFolder:
    """Stage 1: lock, owner, migrations, `--fresh`, the baseline, the plan against the stored
    one, a new run row."""
    baseline = _checked_baseline(prepared, options)
    aside = check_owner(prepared, fresh=options.fresh)
    if aside is not None:
        notes.append(f"the folder held another experiment: its store was set aside as {aside}")
    store = Store.open(prepared.folder, lock=True)
    try:
        if options.fresh:
            store.forget_responses()
            store.clear_judges()
        if baseline is not None:
            from evalrun.reports.baseline import record_baseline

            record_baseline(store, baseline)  # the report builds compare with it
        learned = store.learned()
        plan = prepared.replan(learned) if learned else prepared.plan
        stored = store.plan_fingerprint() == prepared.fingerprint(plan)
        changes: list[str] = []
        if not stored:
            changes = _plan_changes(store, prepared)
            store.clear_plan()
        settings = settings_of(prepared, plan, concurrency=limits.concurrency, budget=limits.budget_usd)
        run_id = store.start_run(settings.to_json())
        _backfill_costs(store, prepared)
    except BaseException:
        store.close()
        raise
    notes.extend(changes)
    return OpenFolder(store, run_id, plan, stored, settings, changes)


def _checked_baseline(prepared: Prepared, options: RunOptions) -> str | None:
    """The run's baseline folder (the option, else the spec's `baseline:`), checked to be a run
    folder before anything in this one changes."""
    baseline = options.baseline or prepared.experiment.baseline_folder()
    if baseline is None:
        return None
    from evalrun.reports.baseline import checked_baseline

    return checked_baseline(baseline)


def _plan_changes(store: Store, prepared: Prepared) -> list[str]:
    """What an edited spec changed in the folder's plan, said rather than done silently."""
    before = store.cell_identities()
    if not before:
        return []
    experiment = prepared.experiment
    row_ids = [row.id for row in prepared.dataset.iter_rows()]
    after = {
        (m.label, p, r, k)
        for m in prepared.models
        for p in experiment.prompts
        for r in row_ids
        for k in range(experiment.repeats)
    }
    added, dropped = len(after - before), len(before - after)
    if not added and not dropped:
        return []
    return [
        f"the spec changed since this folder's last run: {added:,} cells added, {dropped:,} cells no longer in "
        f"the plan (kept in the store with their answers and listed by `evalrun report`; the reports show the new plan)"
    ]


def _backfill_costs(store: Store, prepared: Prepared) -> None:
    """Price stored answers that have no cost yet (an older store, or a price added since)."""
    prices = {m.label: m.info.price for m in prepared.all_models}
    updates = []
    for key, model, usage in store.responses_without_cost():
        cost = stored_cost(prices.get(model), usage)
        if not math.isnan(cost):
            updates.append((cost, key))
    if updates:
        store.set_costs(updates)


# -- 2. clients and the sender ------------------------------------------------------------------
def open_cache(prepared: Prepared, options: RunOptions, notes: list[str]) -> ResponseCache | None:
    """The shared response cache, unless the run is fresh, simulated or told not to use it."""
    if not options.use_cache or options.fresh or prepared.sim:
        return None
    cache = ResponseCache.open(options.cache_dir)
    if cache.problem:
        notes.append(cache.problem)
    return cache


@contextlib.asynccontextmanager
async def connect(
    prepared: Prepared,
    options: RunOptions,
    limits: Limits,
    keys: Mapping[str, str | None],
    store: Store,
) -> AsyncIterator[RealtimeSender | BatchSender]:
    """Stage 2: the clients (one per endpoint × key × API version), the pacer and the sender;
    the clients are closed on the way out."""
    with contextlib.ExitStack() as stack:
        base_urls = {m.label: m.base_url for m in prepared.all_models}
        if prepared.sim:
            url = stack.enter_context(simulator(prepared, next(iter(keys.values()), None) or ""))
            base_urls = dict.fromkeys(base_urls, url)
        clients: dict[tuple[str, str | None, str], MessagesClient] = {}
        by_model: dict[str, MessagesClient] = {}
        for model in prepared.all_models:
            ident = (base_urls[model.label], keys[model.label], model.api_version)
            if ident not in clients:
                clients[ident] = MessagesClient(
                    base_url=ident[0], api_key=ident[1], api_version=ident[2],
                    transport=options.transport, max_connections=limits.concurrency,
                )  # fmt: skip
            by_model[model.label] = clients[ident]
        try:
            yield _sender(prepared, options, limits, keys, store, by_model)
        finally:
            for client in clients.values():
                await client.aclose()


def _sender(
    prepared: Prepared,
    options: RunOptions,
    limits: Limits,
    keys: Mapping[str, str | None],
    store: Store,
    by_model: Mapping[str, MessagesClient],
) -> RealtimeSender | BatchSender:
    realtime = RealtimeSender(
        clients=by_model,
        lanes=lane_names(prepared.all_models, keys),
        pacer=Pacer(max_concurrency=limits.concurrency, clock=options.clock, probe_first=True),
        backoff=options.backoff or backoff_delay,
        clock=options.clock,
        attempt_timeout=limits.request_timeout_s,
    )
    if not prepared.batch:
        return realtime
    return BatchSender(
        clients=by_model,
        store=store,
        fallback=realtime if options.batch_fallback == "realtime" else None,
        cancel_on_exit=options.cancel_on_exit,
        poll_s=options.batch_poll_s,
        clock=options.clock,
    )


# -- 3. the request stages ------------------------------------------------------------------
@dataclass(frozen=True)
class RequestStage:
    """One stage's request plan, as the run loop takes it: the answers' plan (re-planned when a
    model turns out to refuse a feature, its plan fingerprinted) or the grading plan (streamed
    from the answered cells, nothing to re-plan)."""

    name: str  # "answer" or "judge": the `requests.stage` its requests are stored under
    plan: Plan | JudgePlan  # both are a `RequestPlan` (evalrun/plan/contract.py)
    replan: Callable[[Mapping[str, Learned]], Plan] | None = None
    fingerprint: Callable[[Plan], str] | None = None
    plan_stored: bool = False


def request_stages(prepared: Prepared, folder: OpenFolder) -> Iterator[RequestStage]:
    """The stages in order; the grading stage is made only once the answers are in."""
    yield RequestStage(
        "answer", folder.plan, replan=prepared.replan, fingerprint=prepared.fingerprint, plan_stored=folder.plan_stored
    )
    grading = prepared.judge_plan(folder.store)
    if grading is not None:
        yield RequestStage("judge", grading)


@dataclass
class SendContext:
    """What every stage is sent with: the folder, the sender, the cache, the limits, the hooks."""

    folder: OpenFolder
    sender: RealtimeSender | BatchSender
    cache: ResponseCache | None
    options: RunOptions
    limits: Limits
    warmup: bool
    runner: Runner | None = None


async def send_stage(stage: RequestStage, ctx: SendContext, deadline_s: float | None) -> RunStats:
    """Send one stage's requests through the run loop (raises when the run stops early)."""
    runner = Runner(
        plan=stage.plan,
        store=ctx.folder.store,
        run_id=ctx.folder.run_id,
        sender=ctx.sender,
        replan=stage.replan,
        fingerprint=stage.fingerprint,
        stage=stage.name,
        plan_stored=stage.plan_stored,
        cache=ctx.cache,
        max_retries=ctx.limits.max_retries,
        budget_usd=ctx.limits.budget_usd,
        deadline_s=deadline_s,
        clock=ctx.options.clock,
        on_progress=ctx.options.on_progress,
        warmup=ctx.warmup,
    )
    ctx.runner = runner
    if ctx.options.on_runner is not None:
        ctx.options.on_runner(runner)
    return await runner.run()


def combined(first: RunStats | None, then: RunStats) -> RunStats:
    """One set of counters for the stages of a run (the cells are the answers')."""
    if first is None:
        return then
    return RunStats(
        cells=first.cells,
        requests=first.requests + then.requests,
        answered=first.answered + then.answered,
        reattached=first.reattached + then.reattached,
        from_cache=first.from_cache + then.from_cache,
        errors=first.errors + then.errors,
        retries=first.retries + then.retries,
        rate_limited=first.rate_limited + then.rate_limited,
        spent_usd=then.spent_usd,
        spent_before_usd=first.spent_before_usd,
        started=first.started,
        planning=False,
        stopped_models={**first.stopped_models, **then.stopped_models},
    )
