"""What a stage's request plan offers the run loop, whichever stage it is: the answers' `Plan`
and the grading stage's `JudgePlan` both satisfy `RequestPlan`, so the run loop, the store, the
cache, the budget and the deadline treat them alike."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from evalrun.plan.endpoints import ModelPlan
from evalrun.plan.grid import PlanChunk
from evalrun.store.run_store import Learned

__all__ = ["RequestPlan"]


class RequestPlan(Protocol):
    """A stage's requests, streamed in plan order as chunks the run loop writes to the store."""

    @property
    def models(self) -> Sequence[ModelPlan]:
        """The models the stage sends to (each gets a lane)."""
        ...

    @property
    def learned(self) -> Mapping[str, Learned]:
        """What earlier responses taught about the models (refused features)."""
        ...

    @property
    def total_cells(self) -> int:
        """The cells the stage answers (for the progress line)."""
        ...

    def chunks(
        self, *, models: set[str] | None = None, after_seq: int = -1, until_seq: int | None = None
    ) -> Iterator[PlanChunk]:
        """The stage's requests (and the cells they answer) after `after_seq`, in plan order."""
        ...
