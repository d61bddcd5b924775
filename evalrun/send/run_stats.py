"""The live counters of a run, for the progress line and the run's summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """Live counters for the progress line; the CLI reads them, the run loop writes them."""

    cells: int = 0  # cells in the plan
    requests: int = 0  # requests this run has to answer (grows while the plan is written)
    answered: int = 0  # of those, sent by this run and answered by the API
    reattached: int = 0  # answered in batches an earlier (killed) run submitted, collected by this one
    from_cache: int = 0  # answered from the shared response cache
    errors: int = 0  # ended in an error in this run
    retries: int = 0
    rate_limited: int = 0
    spent_usd: float = 0.0  # what the run folder has spent in total
    spent_before_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    planning: bool = True
    pacing: str = ""
    oldest_wait_s: float = 0.0
    stopped_models: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.answered + self.reattached + self.from_cache + self.errors

    @property
    def total(self) -> int:
        return self.requests

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.answered + self.reattached + self.errors) / elapsed if elapsed > 0 else 0.0
