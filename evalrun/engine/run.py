"""A run from start to end: the stages of `stages.py` in order, then the run's status, its stop
reason and its reports. Resumable at any point: what the store holds is never sent again."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalrun.engine.options import RunOptions
from evalrun.engine.prepare import Prepared
from evalrun.engine.stages import (
    OpenFolder,
    SendContext,
    check_priced,
    combined,
    connect,
    open_cache,
    open_folder,
    request_stages,
    run_keys,
    send_stage,
    within_open_files,
)
from evalrun.errors import (
    BudgetExceeded,
    DeadlineReached,
    EvalrunError,
    RunAborted,
    RunFailed,
    RunInterrupted,
    RunStopped,
    StoreError,
)
from evalrun.send.clock import SystemClock
from evalrun.send.runner import RunStats
from evalrun.store.cache import ResponseCache
from evalrun.store.run_store import RUN_FAILED_CELLS, Store

__all__ = ["RunResult", "run_prepared", "status_of"]

# The run status (in `runs.status`) an exception that ended a run stands for.
_STATUS: tuple[tuple[type[BaseException], str], ...] = (
    (BudgetExceeded, "budget"),
    (DeadlineReached, "deadline"),
    (RunInterrupted, "interrupted"),
    (RunStopped, "stopped"),
    (RunAborted, "aborted"),  # the store could not be written: stopped at once, not a failure
)


@dataclass
class RunResult:
    """What a run did: its folder, its counters (all stages, and each stage's), what the store counts."""

    folder: Path
    stats: RunStats
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, RunStats] = field(default_factory=dict)


@dataclass
class _Progress:
    """What the stages did so far, kept when one of them raises."""

    stats: RunStats | None = None
    stages: dict[str, RunStats] = field(default_factory=dict)
    status: str = "failed"
    error: BaseException | None = None
    cache: ResponseCache | None = None


def status_of(error: BaseException) -> str:
    """The stored status of a run that `error` ended."""
    return next((status for kind, status in _STATUS if isinstance(error, kind)), "failed")


async def run_prepared(prepared: Prepared, options: RunOptions | None = None, **overrides: Any) -> RunResult:
    """Send what the store (and the shared cache) lacks, store it, rebuild the reports.

    `options` (or, for older callers, its fields as keyword arguments) say how. Raises RunFailed
    (exit 4) when cells are left without an answer, and the stop errors (BudgetExceeded,
    DeadlineReached, RunStopped, RunInterrupted) when the run ends early; either way the store
    and the reports hold what arrived.
    """
    options = dataclasses.replace(options or RunOptions(), **overrides)
    limits = options.limits(prepared.experiment)
    check_priced(prepared, limits)
    keys = run_keys(prepared, os.environ if options.environ is None else options.environ)
    notes: list[str] = []
    limits = dataclasses.replace(limits, concurrency=within_open_files(prepared, keys, limits.concurrency, notes))
    folder = open_folder(prepared, options, limits, notes)
    progress = _Progress()
    try:
        progress.cache = open_cache(prepared, options, notes)
        async with connect(prepared, options, limits, keys, folder.store) as sender:
            ctx = SendContext(folder, sender, progress.cache, options, limits, warmup=not prepared.batch)
            await _send_stages(prepared, ctx, progress)
        progress.status = "complete"
    except BaseException as exc:
        progress.status, progress.error = status_of(exc), exc
        raise
    finally:
        counts = _close_folder(prepared, folder, progress)
    return _conclude(prepared, folder, progress, counts, notes)


async def _send_stages(prepared: Prepared, ctx: SendContext, progress: _Progress) -> None:
    """Stage 3: each request stage in turn, within one deadline for the whole run."""
    clock = ctx.options.clock or SystemClock()
    started = clock.now()
    deadline = ctx.limits.deadline_s
    try:
        for stage in request_stages(prepared, ctx.folder):
            # The later stages get what is left of the deadline, not a fresh one.
            left = None if deadline is None else max(0.001, deadline - (clock.now() - started))
            stats = await send_stage(stage, ctx, left)
            progress.stages[stage.name] = stats
            progress.stats = combined(progress.stats, stats)
    finally:
        if progress.stats is None and ctx.runner is not None:
            progress.stats = ctx.runner.stats


def _close_folder(prepared: Prepared, folder: OpenFolder, progress: _Progress) -> dict[str, Any] | None:
    """Stage 4: the run's status (and why it stopped), the store closed, the reports rebuilt."""
    store, run_id = folder.store, folder.run_id
    counts: dict[str, Any] | None = None
    status = progress.status
    if status == "complete" and progress.stats is not None:
        # Every stage ran to its end; cells may still be left without an answer (exit 4).
        with contextlib.suppress(StoreError):
            counts = final_counts(store, run_id)
            if left_unanswered(counts, progress.stats):
                status = RUN_FAILED_CELLS
    reason, model = _stop_reason(progress)
    hint = _model_hint(prepared, progress.error)
    if hint and reason:
        reason += hint
    with contextlib.suppress(StoreError):
        store.finish_run(run_id, status, stop_reason=reason, stop_model=model)
    if progress.cache is not None:
        progress.cache.close()
    store.close()
    _rebuild_reports(prepared.folder, progress)
    return counts


def _stop_reason(progress: _Progress) -> tuple[str | None, str | None]:
    """Why a run stopped before its end, and the model that stopped it, when one did."""
    error = progress.error
    if isinstance(error, EvalrunError) and not isinstance(error, RunFailed):
        return str(error), getattr(error, "model", None)
    if error is not None:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__, None
    stopped = progress.stats.stopped_models if progress.stats is not None else {}
    if stopped:
        # Every stopped model is named (two behind one dead endpoint in one clause); the stored
        # model is the first, for `runs --json`'s `stop_model`.
        return "; ".join(_stopped_clauses(stopped)), next(iter(stopped))
    return None, None


def _model_hint(prepared: Prepared, error: BaseException | None) -> str:
    """For a run stopped by a model the table does not know: the nearest name it does know (a
    typo is the likeliest cause), also added to the error the caller sees."""
    label = getattr(error, "model", None) if isinstance(error, RunStopped) else None
    model = next((m for m in prepared.all_models if m.label == label), None)
    if error is None or model is None or model.info.known:
        return ""
    nearest = prepared.table.nearest(model.spec.name)
    if nearest is None:
        return ""
    hint = f" Did you mean {nearest!r}?"
    error.args = (f"{error}{hint}", *error.args[1:])  # the one line the CLI prints ends with it
    return hint


def _rebuild_reports(folder: Path, progress: _Progress) -> None:
    """Partial or complete, the reports always reflect what the store holds. (Imported here: the
    statistics and writers are not needed before the last answer.)"""
    from evalrun.reports.build import build_reports

    stats, error = progress.stats, progress.error
    try:
        build_reports(folder, force=stats is None or bool(stats.done) or error is not None)
    except EvalrunError as report_error:
        if error is None:
            raise
        error.add_note(f"the reports could not be written: {report_error}")


def _conclude(
    prepared: Prepared, folder: OpenFolder, progress: _Progress, counts: dict[str, Any] | None, notes: list[str]
) -> RunResult:
    stats = progress.stats
    assert stats is not None
    if counts is None:
        with Store.open(prepared.folder, create=False) as reopened:
            counts = final_counts(reopened, folder.run_id)
    cache = progress.cache
    if cache is not None and cache.problem and cache.problem not in notes:
        notes.append(cache.problem)
    result = RunResult(folder=prepared.folder, stats=stats, warnings=notes, counts=counts, stages=progress.stages)
    if left_unanswered(counts, stats):
        raise RunFailed(failure_message(prepared.folder, counts, stats), result=result)
    return result


def left_unanswered(counts: Mapping[str, Any], stats: RunStats) -> bool:
    """Whether a run that went to its end left cells failed, unsent or ungraded (exit 4)."""
    return bool(counts["failed"] or counts["not_sent"] or counts["ungraded"] or stats.stopped_models)


def final_counts(store: Store, run_id: int | None) -> dict[str, Any]:
    """The folder's cells by outcome, and the most common errors, for the done line."""
    counts: dict[str, Any] = store.outcome_counts(run_id)
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for error_type, status, message in store.cell_errors():
        kind = " ".join(str(p) for p in (status, error_type) if p) or "error"
        kinds[kind] += 1
        examples.setdefault(kind, str(message or ""))
    counts["errors"] = [(kind, n, examples[kind]) for kind, n in kinds.most_common(3)]
    return counts


def failure_message(folder: Path, counts: Mapping[str, Any], stats: RunStats) -> str:
    """The one line a run with failed cells ends with: each reason said once."""
    parts = []
    reasons = stats.stopped_models
    if counts["failed"]:
        kind, n, example = counts["errors"][0]
        example = example.removeprefix(f"{kind.split()[-1]}: ")  # a stored message may start with its kind
        said_below = bool(example) and any(example[:80] in reason for reason in reasons.values())
        detail = "; the reason follows" if said_below else f": {example[:160]}"
        parts.append(f"{counts['failed']:,} cells failed (most common: {n:,} × {kind}{detail})")
    parts += _stopped_clauses(reasons)
    if counts["not_sent"]:
        parts.append(f"{counts['not_sent']:,} cells were not sent")
    if counts.get("ungraded"):
        parts.append(f"{counts['ungraded']:,} answered cells have no grade (their grading request failed)")
    return (
        f"finished with failed cells: {'; '.join(parts)}. The report in {folder} shows accuracy over the "
        f"{counts['answered']:,} answered cells only; run the same command again to retry just the failed ones"
    )


def _stopped_clauses(reasons: Mapping[str, str]) -> list[str]:
    """One clause per distinct reason, naming every model it stopped (two models behind one dead
    endpoint are one sentence, not the same error twice)."""
    by_reason: dict[str, list[str]] = {}
    for model, reason in reasons.items():
        by_reason.setdefault(reason, []).append(model)
    return [
        f"{', '.join(models)} {'was' if len(models) == 1 else 'were'} stopped: {reason}"
        for reason, models in by_reason.items()
    ]
