"""From a spec file to a stored, reported run: the plain function calls the CLI strings together."""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evalrun import __version__
from evalrun.cost import stored_cost
from evalrun.errors import BudgetExceeded, EvalrunError, RunInterrupted, RunStopped, SpecError, StoreError
from evalrun.estimate import Estimate, estimate_plan
from evalrun.models import ModelTable
from evalrun.plan.dataset import Dataset, load_dataset
from evalrun.plan.grid import Learned, ModelPlan, Plan, experiment_table, make_plan, resolve_models
from evalrun.reports.build import build_reports
from evalrun.send.client import MessagesClient
from evalrun.send.runner import Runner, RunStats, backoff_delay
from evalrun.spec import Experiment, load_spec
from evalrun.store.run_store import Store

__all__ = ["Prepared", "RunResult", "prepare", "run_prepared"]

DEFAULT_CONCURRENCY = 512  # a ceiling: the pacer sets the real pace (bench/README.md)


@dataclass(frozen=True)
class Prepared:
    """A validated experiment, its dataset and its static plan, and where its run folder is."""

    experiment: Experiment
    dataset: Dataset
    table: ModelTable
    models: tuple[ModelPlan, ...]
    plan: Plan
    folder: Path
    sim: bool

    def replan(self, learned: Mapping[str, Learned]) -> Plan:
        return make_plan(self.experiment, self.dataset, self.models, self.table, learned=learned)


@dataclass
class RunResult:
    folder: Path
    stats: RunStats
    warnings: list[str] = field(default_factory=list)


def prepare(
    spec_path: str | Path,
    *,
    out: str | Path | None = None,
    limit: int | None = None,
    sim: bool = False,
    environ: Mapping[str, str] | None = None,
    reports_root: Path = Path("reports"),
) -> Prepared:
    """Load and check everything that can be checked without sending a request."""
    experiment = load_spec(spec_path)
    table = experiment_table(experiment)
    spec = experiment.dataset
    limits = [x for x in (limit, spec.limit) if x is not None]
    dataset = load_dataset(
        experiment.dataset_path,
        id_column=spec.id,
        limit=min(limits) if limits else None,
        sample=spec.sample,
        seed=spec.seed,
        encoding=spec.encoding,
    )
    models = resolve_models(experiment, table, sim=sim, environ=os.environ if environ is None else environ)
    plan = make_plan(experiment, dataset, models, table)
    folder = Path(out) if out else reports_root / experiment.name / plan.fingerprint
    return Prepared(experiment, dataset, table, models, plan, folder, sim)


def _api_keys(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each model's key, from the environment only (never from a file). Missing → one clear error."""
    keys: dict[str, str | None] = {}
    for model in prepared.models:
        variable = model.api_key_env or "ANTHROPIC_API_KEY"
        key = environ.get(variable)
        if not key:
            local = model.base_url.startswith(("http://localhost", "http://127.0.0.1"))
            if not local:
                raise SpecError(
                    f"{variable} is not set: {model.label} at {model.base_url} needs an API key "
                    f"(export {variable}=..., or run with --sim to use the simulator)"
                )
        keys[model.label] = key or None
    return keys


def _settings(prepared: Prepared, plan: Plan, *, concurrency: int, budget: float | None) -> dict[str, Any]:
    experiment = prepared.experiment
    return {
        "name": experiment.name,
        "spec_path": experiment.source,
        "spec": experiment.model_dump(mode="json", exclude_none=True),
        "dataset": str(prepared.dataset.path),
        "rows": len(prepared.dataset.rows),
        "endpoint": "simulator" if prepared.sim else sorted({m.endpoint for m in prepared.models}),
        "models": {m.label: m.spec.name for m in prepared.models},
        "api_versions": {m.label: m.api_version for m in prepared.models},
        "prompts": list(experiment.prompts),
        "modes": {f"{m}/{p}": mode for (m, p), mode in plan.modes.items()},
        "repeats": experiment.repeats,
        "scorer": experiment.scorer.model_dump(mode="json"),
        "prices": {
            m.label: (vars(m.info.price) if m.info.price is not None else None) for m in prepared.models
        },
        "prices_as_of": prepared.table.as_of,
        "budget_usd": budget,
        "concurrency": concurrency,
        "warnings": list(plan.warnings),
        "evalrun_version": __version__,
    }


def _spent(store: Store, prepared: Prepared) -> float:
    prices = {m.label: m.info.price for m in prepared.models}
    total = 0.0
    for row in store.cell_rows():
        if row["status"] == "ok":
            cost = stored_cost(prices.get(row["model"]), row)
            total += 0.0 if math.isnan(cost) else cost
    return total


@contextlib.contextmanager
def _simulator(prepared: Prepared, api_key: str) -> Iterator[str]:
    from evalrun.sim import AnswerKey, SimConfig, running_server

    experiment = prepared.experiment
    answers = AnswerKey.from_rows(
        [row.values for row in prepared.dataset.rows],
        experiment.scorer.target,
        id_column=experiment.dataset.id,
    )
    with running_server(SimConfig(api_key=api_key, answers=answers, model_table=prepared.table)) as url:
        yield url


async def estimate_prepared(
    prepared: Prepared,
    *,
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    local: bool = False,
) -> Estimate:
    """Estimate the run without sending a Messages request (count_tokens is free)."""
    env = os.environ if environ is None else environ
    choices = list(prepared.experiment.scorer.choices or ())
    if local:
        return await estimate_plan(
            prepared.plan, clients=None, choices=choices, rpm=rpm, itpm=itpm, otpm=otpm
        )
    sim_key = "sim-" + secrets.token_hex(8) if prepared.sim else None
    if prepared.sim:
        keys: dict[str, str | None] = {m.label: sim_key for m in prepared.models}
    else:
        try:
            keys = _api_keys(prepared, env)
        except SpecError:
            # No key: count locally rather than refuse to estimate.
            return await estimate_plan(
                prepared.plan, clients=None, choices=choices, rpm=rpm, itpm=itpm, otpm=otpm
            )
    with contextlib.ExitStack() as stack:
        base_urls = {m.label: m.base_url for m in prepared.models}
        if prepared.sim:
            url = stack.enter_context(_simulator(prepared, sim_key or ""))
            base_urls = {label: url for label in base_urls}
        clients = {
            m.label: MessagesClient(
                base_url=base_urls[m.label],
                api_key=keys[m.label],
                api_version=m.api_version,
                transport=transport,
            )
            for m in prepared.models
        }
        try:
            return await estimate_plan(
                prepared.plan, clients=clients, choices=choices, rpm=rpm, itpm=itpm, otpm=otpm
            )
        finally:
            for client in clients.values():
                await client.aclose()


async def run_prepared(
    prepared: Prepared,
    *,
    fresh: bool = False,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    max_retries: int | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    on_runner: Callable[[Runner], None] | None = None,
    backoff: Callable[[int, float | None], float] | None = None,
) -> RunResult:
    """Send what the store lacks, store it, and rebuild the reports. Resumable at any point."""
    experiment = prepared.experiment
    env = os.environ if environ is None else environ
    concurrency = concurrency or experiment.concurrency or DEFAULT_CONCURRENCY
    budget = budget_usd if budget_usd is not None else experiment.budget_usd
    if budget is not None:
        unpriced = [m.label for m in prepared.models if m.info.price is None]
        if unpriced:
            raise SpecError(
                f"{experiment.source}: a budget is set but {unpriced[0]} has no known price; "
                f"give it one under `model_table` so the budget can be kept"
            )
    sim_key = "sim-" + secrets.token_hex(8) if prepared.sim else None
    keys = {m.label: sim_key for m in prepared.models} if prepared.sim else _api_keys(prepared, env)
    if prepared.folder.exists() and not prepared.folder.is_dir():
        raise StoreError(f"{prepared.folder}: exists and is not a folder")
    store = Store.open(prepared.folder)
    plan_saved = False
    try:
        store.lock()
        if fresh:
            store.clear_responses()
        learned = store.learned()
        plan = prepared.replan(learned) if learned else prepared.plan
        store.save_plan(plan.cells)
        settings = _settings(prepared, plan, concurrency=concurrency, budget=budget)
        run_id = store.start_run(settings)
        plan_saved = True
        status = "failed"
        try:
            with contextlib.ExitStack() as stack:
                base_urls = {m.label: m.base_url for m in prepared.models}
                if prepared.sim:
                    url = stack.enter_context(_simulator(prepared, sim_key or ""))
                    base_urls = {label: url for label in base_urls}
                clients: dict[tuple[str, str | None, str], MessagesClient] = {}
                by_model: dict[str, MessagesClient] = {}
                for model in prepared.models:
                    ident = (base_urls[model.label], keys[model.label], model.api_version)
                    if ident not in clients:
                        clients[ident] = MessagesClient(
                            base_url=ident[0],
                            api_key=ident[1],
                            api_version=ident[2],
                            transport=transport,
                            max_connections=concurrency,
                        )
                    by_model[model.label] = clients[ident]
                runner = Runner(
                    plan=plan,
                    store=store,
                    clients=by_model,
                    replan=prepared.replan,
                    concurrency=concurrency,
                    max_retries=max_retries if max_retries is not None else experiment.max_retries,
                    budget_usd=budget,
                    spent_before_usd=_spent(store, prepared),
                    on_progress=on_progress,
                    backoff=backoff or backoff_delay,
                )
                if on_runner is not None:
                    on_runner(runner)
                try:
                    stats = await runner.run()
                    status = "complete"
                except BudgetExceeded:
                    status = "budget"
                    raise
                except RunInterrupted:
                    status = "interrupted"
                    raise
                except RunStopped:
                    status = "stopped"
                    raise
                finally:
                    for client in clients.values():
                        await client.aclose()
        finally:
            store.finish_run(run_id, status)
    finally:
        store.close()
        if plan_saved:
            # Partial or complete, the reports always reflect what the store holds.
            with contextlib.suppress(EvalrunError):
                build_reports(prepared.folder)
    return RunResult(folder=prepared.folder, stats=stats, warnings=list(plan.warnings))
