"""How a run is sent: one frozen, typed set of options, shared by the CLI, the Python API and
the tests, and the limits it resolves to once the spec's own settings are taken into account."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalrun.errors import SpecError
from evalrun.spec import Experiment, parse_duration

if TYPE_CHECKING:
    import httpx

    from evalrun.send.clock import Clock
    from evalrun.send.runner import Runner, RunStats

__all__ = ["DEFAULT_CONCURRENCY", "Limits", "RunOptions"]

DEFAULT_CONCURRENCY = 1024  # a ceiling: the pacer sets the real pace (bench/README.md)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Everything about a run that is not in the spec. None means "what the spec says, else the
    default". The last group is for tests and embedders (fake transports, clocks, hooks)."""

    fresh: bool = False
    use_cache: bool = True
    cache_dir: Path | None = None
    concurrency: int | None = None
    budget_usd: float | None = None
    max_retries: int | None = None
    deadline_s: float | None = None
    request_timeout_s: float | None = None
    batch_fallback: str = "batch"  # "batch" or "realtime": how a batch's unanswered requests are sent again
    cancel_on_exit: bool = False
    batch_poll_s: float = 0.5
    baseline: Path | None = None  # a run folder the reports compare with (else the spec's `baseline:`)
    environ: Mapping[str, str] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    on_progress: Callable[[RunStats], None] | None = None
    on_runner: Callable[[Runner], None] | None = None
    backoff: Callable[[int, float | None], float] | None = None
    clock: Clock | None = None

    def limits(self, experiment: Experiment) -> Limits:
        """The limits this run keeps: an option, else the spec's setting, else the default."""
        budget = self.budget_usd if self.budget_usd is not None else experiment.budget_usd
        if budget is not None and (not math.isfinite(budget) or budget <= 0):
            raise SpecError(f"budget: {budget!r} is not a positive amount of USD")
        deadline = self.deadline_s
        if deadline is None and experiment.deadline is not None:
            deadline = parse_duration(experiment.deadline)
        timeout = self.request_timeout_s
        if timeout is None and experiment.request_timeout is not None:
            timeout = parse_duration(experiment.request_timeout)
        return Limits(
            concurrency=self.concurrency or experiment.concurrency or DEFAULT_CONCURRENCY,
            budget_usd=budget,
            deadline_s=deadline,
            request_timeout_s=timeout,
            max_retries=self.max_retries if self.max_retries is not None else experiment.max_retries,
        )


@dataclass(frozen=True)
class Limits:
    """The resolved limits of one run (see `RunOptions.limits`)."""

    concurrency: int
    budget_usd: float | None
    deadline_s: float | None
    request_timeout_s: float | None
    max_retries: int
