"""From a spec file to a stored, reported run: the plain function calls the CLI strings together."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evalrun import __version__
from evalrun.cost import stored_cost
from evalrun.errors import (
    BudgetExceeded,
    DeadlineReached,
    EvalrunError,
    RunAborted,
    RunFailed,
    RunInterrupted,
    RunStopped,
    SpecError,
    StoreError,
)
from evalrun.models import ModelTable
from evalrun.plan.dataset import Dataset, scan_dataset
from evalrun.plan.endpoints import ModelPlan, experiment_table, resolve_judge, resolve_models
from evalrun.plan.grid import KEY_TARGET, Plan
from evalrun.plan.judge import JudgePlan, judge_mode
from evalrun.send.batch import BatchSender
from evalrun.send.client import MessagesClient, check_api_key
from evalrun.send.clock import Clock, SystemClock
from evalrun.send.fdlimit import SPARE_FILES, allow_open_files
from evalrun.send.limits import Pacer
from evalrun.send.realtime import RealtimeSender
from evalrun.send.runner import Runner, RunStats
from evalrun.send.sender import backoff_delay
from evalrun.spec import Experiment, load_spec, parse_duration
from evalrun.store.cache import ResponseCache
from evalrun.store.run_store import RUN_FAILED_CELLS, Learned, Store

__all__ = ["DEFAULT_CONCURRENCY", "Prepared", "RunResult", "api_keys", "prepare", "run_prepared"]

DEFAULT_CONCURRENCY = 1024  # a ceiling: the pacer sets the real pace (bench/README.md)
# Total cells above which a spec is refused: a typo in `repeats` must not plan forever.
MAX_CELLS = 50_000_000


@dataclass(frozen=True)
class Prepared:
    """A validated experiment, its checked dataset, its plan, and where its run folder is."""

    experiment: Experiment
    dataset: Dataset
    table: ModelTable
    models: tuple[ModelPlan, ...]
    plan: Plan
    folder: Path
    sim: bool
    images_digest: str = ""
    judge: ModelPlan | None = None
    batch: bool = False

    @property
    def all_models(self) -> tuple[ModelPlan, ...]:
        """The graded models and the grader, if there is one."""
        return (*self.models, self.judge) if self.judge is not None else self.models

    def judge_plan(self, store: Store | None) -> JudgePlan | None:
        if self.judge is None:
            return None
        return JudgePlan(self.experiment, self.judge, self.table, store)

    def replan(self, learned: Mapping[str, Learned]) -> Plan:
        return Plan(self.experiment, self.dataset, self.models, self.table, learned=learned, batch=self.batch)

    def fingerprint(self, plan: Plan) -> str:
        return plan.fingerprint(self.images_digest)


@dataclass
class RunResult:
    folder: Path
    stats: RunStats
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def prepare(
    spec_path: str | Path,
    *,
    out: str | Path | None = None,
    limit: int | None = None,
    sim: bool = False,
    environ: Mapping[str, str] | None = None,
    reports_root: Path = Path("reports"),
    check: bool = True,
    batch: bool | None = None,
) -> Prepared:
    """Load and check everything that can be checked without sending a request: the spec, the
    model table, the dataset (every line), every row's target and images, and the first body."""
    experiment = load_spec(spec_path)
    table = experiment_table(experiment)
    spec = experiment.dataset
    limits = [x for x in (limit, spec.limit) if x is not None]
    dataset = scan_dataset(
        experiment.dataset_path,
        id_column=spec.id,
        limit=min(limits) if limits else None,
        sample=spec.sample,
        seed=spec.seed,
        encoding=spec.encoding,
        format=spec.format,
        split=spec.split,
    )
    env = os.environ if environ is None else environ
    models = resolve_models(experiment, table, sim=sim, environ=env)  # a swept entry is several configurations
    cells = dataset.count * len(models) * len(experiment.prompts) * experiment.repeats
    if cells > MAX_CELLS:
        raise SpecError(
            f"{experiment.source}: {cells:,} cells ({dataset.count:,} rows × {len(models)} model configurations × "
            f"{len(experiment.prompts)} prompts × {experiment.repeats} repeats) is more than evalrun plans "
            f"({MAX_CELLS:,}); check `repeats`, `dataset.limit` and the models' sweeps"
        )
    judge = resolve_judge(experiment, table, sim=sim, environ=env)
    batch = experiment.batch if batch is None else batch
    plan = Plan(experiment, dataset, models, table, batch=batch)
    images = plan.check() if check else ""
    folder = Path(out) if out else reports_root / experiment.name / plan.inputs_digest[:12]
    return Prepared(experiment, dataset, table, models, plan, folder, sim, images, judge, batch)


def api_keys(prepared: Prepared, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each model's key, from the environment only (never from a file). A missing key, or one
    that cannot be sent, is one clear error before any request."""
    keys: dict[str, str | None] = {}
    for model in prepared.all_models:
        variable = model.key_variable
        key = (environ.get(variable) or "").strip() or None
        if not model.info.needs_key:
            key = None  # its server takes no key: the one in the environment is not sent to it
        if key is None:
            if model.info.needs_key:
                raise SpecError(
                    f"{variable} is not set: {model.label} at {model.base_url} needs an API key "
                    f"(export {variable}=..., run with --sim to use the simulator, or declare "
                    f"`needs_key: false` for it under model_table if its server takes no key)"
                )
        else:
            problem = check_api_key(key)
            if problem:
                raise SpecError(f"{variable}: the key {problem}; it cannot be sent")
        keys[model.label] = key
    return keys


def settings_of(prepared: Prepared, plan: Plan, *, concurrency: int, budget: float | None, **extra: Any) -> dict[str, Any]:
    experiment = prepared.experiment
    return {
        "name": experiment.name,
        "spec_path": experiment.source,
        "spec": experiment.model_dump(mode="json", exclude_none=True),
        "dataset": str(prepared.dataset.path),
        "rows": prepared.dataset.count,
        "cluster": experiment.dataset.cluster,
        "endpoint": "simulator" if prepared.sim else sorted({m.endpoint for m in prepared.models}),
        "models": {m.label: m.spec.name for m in prepared.models},
        "model_labels": [m.label for m in prepared.models],
        "api_versions": {m.label: m.api_version for m in prepared.models},
        "prompts": list(experiment.prompts),
        "modes": {f"{m}/{p}": mode for (m, p), mode in plan.modes.items()},
        "repeats": experiment.repeats,
        "reducer": experiment.reducer,
        "scorer": experiment.scorer.model_dump(mode="json"),
        "prices": {m.label: (vars(m.info.price) if m.info.price is not None else None) for m in prepared.all_models},
        "judge": (
            {"label": prepared.judge.label, "model": prepared.judge.spec.name,
             "mode": judge_mode(experiment.scorer, prepared.judge)}
            if prepared.judge is not None else None
        ),
        "prices_as_of": prepared.table.as_of,
        "budget_usd": budget,
        "batch": prepared.batch,
        "concurrency": concurrency,
        "warnings": list(plan.warnings),
        "evalrun_version": __version__,
        **extra,
    }


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


@contextlib.contextmanager
def simulator(prepared: Prepared, api_key: str) -> Iterator[str]:
    from evalrun.sim import AnswerKey, SimConfig, running_server

    experiment = prepared.experiment
    scorer = experiment.scorer
    fields = {path: spec.column for path, spec in scorer.field_specs.items()} if scorer.type == "fields" else None
    # The simulator finds a request's row by the row's text in the user turns: offer it only the
    # columns every prompt puts in a user turn (an assistant turn or a column some prompt leaves
    # out would hide the match), plus what it answers with.
    keep = _user_turn_columns(experiment) | {c for c, _ in scorer.columns()} | {experiment.dataset.id or ""}
    # Rows as flat text (nested fields by dotted path), with the gold answer as the plan reads it.
    rows = list(prepared.plan.answer_key_rows(keep))
    answers = AnswerKey.from_rows(rows, KEY_TARGET, id_column=experiment.dataset.id, fields=fields)
    with running_server(SimConfig(api_key=api_key, answers=answers, model_table=prepared.table)) as url:
        yield url


def _user_turn_columns(experiment: Experiment) -> set[str]:
    from evalrun.plan.render import Template
    from evalrun.spec import TextBlock

    per_prompt = []
    for prompt in experiment.prompts.values():
        columns: set[str] = set()
        for turn in prompt.messages:
            if turn.role not in ("user", "row"):  # "row": the row's own turns
                continue
            texts = [turn.content] if isinstance(turn.content, str) else [b.text for b in turn.content if isinstance(b, TextBlock)]
            for text in texts:
                columns.update(Template.parse(text, where="prompt").columns)
        per_prompt.append(columns)
    common = set.intersection(*per_prompt) if per_prompt else set()
    return common or set().union(*per_prompt)


def lane_names(models: tuple[ModelPlan, ...], keys: Mapping[str, str | None]) -> dict[str, str]:
    """Each model's lane: endpoint × key × model class, named as briefly as stays unambiguous."""
    key_numbers: dict[str | None, int] = {}
    idents = {}
    for m in models:
        number = key_numbers.setdefault(keys.get(m.label), len(key_numbers) + 1)
        idents[m.label] = (m.endpoint, number, m.info.family if m.info.known else m.spec.name)
    endpoints = {e for e, _, _ in idents.values()}
    several_keys = len({(e, k) for e, k, _ in idents.values()}) > len(endpoints)
    names = {}
    for label, (endpoint, number, family) in idents.items():
        name = family
        if len(endpoints) > 1:
            name += f"@{endpoint}"
        if several_keys:
            name += f" key{number}"
        names[label] = name
    return names


async def run_prepared(
    prepared: Prepared,
    *,
    fresh: bool = False,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    concurrency: int | None = None,
    budget_usd: float | None = None,
    max_retries: int | None = None,
    deadline_s: float | None = None,
    request_timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    on_runner: Callable[[Runner], None] | None = None,
    backoff: Callable[[int, float | None], float] | None = None,
    clock: Clock | None = None,
    batch_fallback: str = "batch",
    cancel_on_exit: bool = False,
    batch_poll_s: float = 0.5,
) -> RunResult:
    """Send what the store (and the shared cache) lacks, store it, and rebuild the reports.
    Resumable at any point. Raises RunFailed (exit 4) when cells are left without an answer."""
    experiment = prepared.experiment
    env = os.environ if environ is None else environ
    concurrency = concurrency or experiment.concurrency or DEFAULT_CONCURRENCY
    budget = budget_usd if budget_usd is not None else experiment.budget_usd
    if budget is not None and (not math.isfinite(budget) or budget <= 0):
        raise SpecError(f"budget: {budget!r} is not a positive amount of USD")
    if deadline_s is None and experiment.deadline is not None:
        deadline_s = parse_duration(experiment.deadline)
    if request_timeout_s is None and experiment.request_timeout is not None:
        request_timeout_s = parse_duration(experiment.request_timeout)
    if budget is not None:
        unpriced = [m.label for m in prepared.models if m.info.price is None]
        if unpriced:
            raise SpecError(
                f"{experiment.source}: a budget is set but {unpriced[0]} has no known price; "
                f"give it one under `model_table` so the budget can be kept"
            )
    sim_key = "sim-" + secrets.token_hex(8) if prepared.sim else None
    keys = {m.label: sim_key for m in prepared.all_models} if prepared.sim else api_keys(prepared, env)
    notes: list[str] = []
    concurrency = _within_open_files(prepared, keys, concurrency, notes)
    store = Store.open(prepared.folder, lock=True)
    run_id: int | None = None
    status = "failed"
    stats: RunStats | None = None
    cache: ResponseCache | None = None
    error: BaseException | None = None
    try:
        if fresh:
            store.forget_responses()
            store.clear_judges()
        learned = store.learned()
        plan = prepared.replan(learned) if learned else prepared.plan
        fingerprint = prepared.fingerprint(plan)
        stored = store.plan_fingerprint() == fingerprint
        if not stored:
            store.clear_plan()
        settings = settings_of(prepared, plan, concurrency=concurrency, budget=budget)
        run_id = store.start_run(settings)
        _backfill_costs(store, prepared)
        if use_cache and not fresh and not prepared.sim:
            cache = ResponseCache.open(cache_dir)
            if cache.problem:
                notes.append(cache.problem)
        with contextlib.ExitStack() as stack:
            base_urls = {m.label: m.base_url for m in prepared.all_models}
            if prepared.sim:
                url = stack.enter_context(simulator(prepared, sim_key or ""))
                base_urls = dict.fromkeys(base_urls, url)
            clients: dict[tuple[str, str | None, str], MessagesClient] = {}
            by_model: dict[str, MessagesClient] = {}
            for model in prepared.all_models:
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
            pacer = Pacer(max_concurrency=concurrency, clock=clock, probe_first=True)
            realtime = RealtimeSender(
                clients=by_model,
                lanes=lane_names(prepared.all_models, keys),
                pacer=pacer,
                backoff=backoff or backoff_delay,
                clock=clock,
                attempt_timeout=request_timeout_s,
            )
            sender: RealtimeSender | BatchSender = realtime
            if prepared.batch:
                sender = BatchSender(
                    clients=by_model,
                    store=store,
                    fallback=realtime if batch_fallback == "realtime" else None,
                    cancel_on_exit=cancel_on_exit,
                    poll_s=batch_poll_s,
                    clock=clock,
                )
            # Both stages (answers, then grading) run through the same loop, sender and budget.
            stage_runner = functools.partial(
                Runner,
                store=store,
                run_id=run_id,
                sender=sender,
                cache=cache,
                max_retries=max_retries if max_retries is not None else experiment.max_retries,
                budget_usd=budget,
                deadline_s=deadline_s,
                clock=clock,
                on_progress=on_progress,
                warmup=not prepared.batch,
            )
            timer = clock or SystemClock()
            started_at = timer.now()
            runner = stage_runner(
                plan=plan, replan=prepared.replan, fingerprint=prepared.fingerprint, plan_stored=stored
            )
            if on_runner is not None:
                on_runner(runner)
            try:
                stats = await runner.run()
                judge_plan = prepared.judge_plan(store)
                if judge_plan is not None:
                    # The grading stage: one request to the grader per answered cell, same loop.
                    spent = stats
                    # One deadline for the whole run: the grading stage gets what is left of it.
                    left = None if deadline_s is None else max(0.001, deadline_s - (timer.now() - started_at))
                    runner = stage_runner(
                        plan=judge_plan, replan=None, fingerprint=None, stage="judge", deadline_s=left
                    )
                    if on_runner is not None:
                        on_runner(runner)
                    graded = await runner.run()
                    stats = _combined(spent, graded)
                status = "complete"
            except BudgetExceeded:
                status = "budget"
                raise
            except DeadlineReached:
                status = "deadline"
                raise
            except RunInterrupted:
                status = "interrupted"
                raise
            except RunStopped:
                status = "stopped"
                raise
            except RunAborted:  # the store could not be written: stopped at once, not a failure
                status = "aborted"
                raise
            finally:
                if stats is None:
                    stats = runner.stats
                for client in clients.values():
                    await client.aclose()
    except BaseException as exc:
        error = exc
        raise
    finally:
        counts: dict[str, Any] | None = None
        if run_id is not None:
            if status == "complete" and stats is not None:
                # Every stage ran to its end; cells may still be left without an answer (exit 4).
                with contextlib.suppress(StoreError):
                    counts = _final_counts(store, run_id)
                    if _left_unanswered(counts, stats):
                        status = RUN_FAILED_CELLS
            with contextlib.suppress(StoreError):
                store.finish_run(run_id, status)
        if cache is not None:
            cache.close()
        store.close()
        if run_id is not None:
            # Partial or complete, the reports always reflect what the store holds. (Imported
            # here: the statistics and writers are not needed before the last answer.)
            from evalrun.reports.build import build_reports

            try:
                build_reports(prepared.folder, force=stats is None or bool(stats.done) or error is not None)
            except EvalrunError as report_error:
                if error is None:
                    raise
                error.add_note(f"the reports could not be written: {report_error}")
    assert stats is not None
    if counts is None:
        with Store.open(prepared.folder, create=False) as reopened:
            counts = _final_counts(reopened, run_id)
    if cache is not None and cache.problem and cache.problem not in notes:
        notes.append(cache.problem)
    result = RunResult(folder=prepared.folder, stats=stats, warnings=notes, counts=counts)
    if _left_unanswered(counts, stats):
        raise RunFailed(_failure_message(prepared.folder, counts, stats), result=result)
    return result


def _within_open_files(prepared: Prepared, keys: dict[str, str | None], concurrency: int, notes: list[str]) -> int:
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


def _combined(answer: RunStats, judge: RunStats) -> RunStats:
    """One set of counters for both stages of a judged run."""
    return RunStats(
        cells=answer.cells,
        requests=answer.requests + judge.requests,
        answered=answer.answered + judge.answered,
        reattached=answer.reattached + judge.reattached,
        from_cache=answer.from_cache + judge.from_cache,
        errors=answer.errors + judge.errors,
        retries=answer.retries + judge.retries,
        rate_limited=answer.rate_limited + judge.rate_limited,
        spent_usd=judge.spent_usd,
        spent_before_usd=answer.spent_before_usd,
        started=answer.started,
        planning=False,
        stopped_models={**answer.stopped_models, **judge.stopped_models},
    )


def _left_unanswered(counts: Mapping[str, Any], stats: RunStats) -> bool:
    """Whether a run that went to its end left cells failed, unsent or ungraded (exit 4)."""
    return bool(counts["failed"] or counts["not_sent"] or counts["ungraded"] or stats.stopped_models)


def _final_counts(store: Store, run_id: int | None) -> dict[str, Any]:
    rows = store.query(
        "SELECT CASE WHEN r.key IS NULL THEN 'not_sent' WHEN r.status = 'ok' THEN 'answered' ELSE 'failed' END,"
        " count(*) FROM cells c LEFT JOIN responses r ON r.key = c.request_key GROUP BY 1"
    )
    (stored_before,) = store.query(
        "SELECT count(*) FROM cells c JOIN responses r ON r.key = c.request_key"
        " WHERE r.status = 'ok' AND coalesce(r.run_id, -1) != ?",
        (run_id if run_id is not None else -1,),
    )[0]
    errors = store.query(
        "SELECT coalesce(r.error_type, ''), r.http_status, r.error FROM cells c JOIN responses r ON r.key = c.request_key"
        " WHERE r.status != 'ok'"
    )
    (ungraded,) = store.query(
        "SELECT count(*) FROM cells c JOIN responses r ON r.key = c.request_key"
        " LEFT JOIN responses j ON j.key = c.judge_key WHERE r.status = 'ok'"
        " AND (SELECT count(*) FROM requests WHERE stage = 'judge') > 0 AND coalesce(j.status, '') != 'ok'"
    )[0]
    (graded_requests,) = store.query("SELECT count(*) FROM requests WHERE stage = 'judge'")[0]
    (unpriced,) = store.query(
        "SELECT count(*) FROM responses WHERE status = 'ok' AND source != 'cache' AND cost_usd IS NULL"
    )[0]
    (answered_requests,) = store.query(
        "SELECT count(DISTINCT c.request_key) FROM cells c JOIN responses r ON r.key = c.request_key"
        " WHERE r.status = 'ok'"
    )[0]
    counts: dict[str, Any] = {
        "answered": 0, "failed": 0, "not_sent": 0, "stored_before": stored_before,
        "answered_requests": answered_requests, "ungraded": ungraded, "graded_requests": graded_requests,
        "unpriced": unpriced,
    }  # fmt: skip
    counts.update(dict(rows))
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for error_type, status, message in errors:
        kind = " ".join(str(p) for p in (status, error_type) if p) or "error"
        kinds[kind] += 1
        examples.setdefault(kind, str(message or ""))
    counts["errors"] = [(kind, n, examples[kind]) for kind, n in kinds.most_common(3)]
    return counts


def _failure_message(folder: Path, counts: Mapping[str, Any], stats: RunStats) -> str:
    parts = []
    if counts["failed"]:
        kind, n, example = counts["errors"][0]
        parts.append(f"{counts['failed']:,} cells failed (most common: {n:,} × {kind}: {example[:160]})")
    if stats.stopped_models:
        for model, reason in stats.stopped_models.items():
            parts.append(f"{model} was stopped: {reason}")
    if counts["not_sent"]:
        parts.append(f"{counts['not_sent']:,} cells were not sent")
    if counts.get("ungraded"):
        parts.append(f"{counts['ungraded']:,} answered cells have no grade (their grading request failed)")
    return (
        f"finished with failed cells: {'; '.join(parts)}. The report in {folder} shows accuracy over the "
        f"{counts['answered']:,} answered cells only; run the same command again to retry just the failed ones"
    )


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
) -> Any:
    """Estimate the run without sending a Messages request (count_tokens is free)."""
    from evalrun.estimate import estimate_plan, power_analysis

    env = os.environ if environ is None else environ
    plan = prepared.plan
    observed = _observed(prepared)
    if observed is not None and observed[1]:
        plan = prepared.replan(observed[1])
    report = observed[0] if observed is not None else None
    judge = prepared.judge_plan(None)

    async def counted() -> Any:
        if local:
            return await estimate_plan(plan, clients=None, rpm=rpm, itpm=itpm, otpm=otpm, judge=judge)
        sim_key = "sim-" + secrets.token_hex(8) if prepared.sim else None
        if prepared.sim:
            keys: dict[str, str | None] = dict.fromkeys((m.label for m in prepared.models), sim_key)
        else:
            try:
                keys = api_keys(prepared, env)
            except SpecError:
                # No usable key: count locally rather than refuse to estimate.
                return await estimate_plan(plan, clients=None, rpm=rpm, itpm=itpm, otpm=otpm, judge=judge)
        with contextlib.ExitStack() as stack:
            base_urls = {m.label: m.base_url for m in prepared.models}
            if prepared.sim:
                url = stack.enter_context(simulator(prepared, sim_key or ""))
                base_urls = dict.fromkeys(base_urls, url)
            clients = {
                m.label: MessagesClient(
                    base_url=base_urls[m.label], api_key=keys[m.label], api_version=m.api_version, transport=transport
                )
                for m in prepared.models
            }
            try:
                return await estimate_plan(plan, clients=clients, rpm=rpm, itpm=itpm, otpm=otpm, judge=judge)
            except EvalrunError as exc:
                if "401" in str(exc) or "authentication" in str(exc):
                    return await estimate_plan(plan, clients=None, rpm=rpm, itpm=itpm, otpm=otpm, judge=judge)
                raise
            finally:
                for client in clients.values():
                    await client.aclose()

    estimate = await counted()
    estimate.power = power_analysis(plan, observed=report, detect=detect)
    return estimate


def _observed(prepared: Prepared) -> tuple[Any, dict[str, Learned]] | None:
    """The finished (or partial) run of this plan, if its folder has one: its Report and what it learned."""
    from evalrun.reports.build import analyze, open_run

    if not (prepared.folder / "store.sqlite").exists():
        return None
    try:
        store, settings = open_run(prepared.folder)
    except StoreError:
        return None
    with store:
        return analyze(store, settings, folder=prepared.folder), store.learned()
