"""The simulator's settings: one frozen value object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from evalrun.models import ModelInfo, ModelTable, builtin_table

if TYPE_CHECKING:
    from evalrun.sim.answers import AnswerKey

__all__ = ["DEFAULT_SKILL", "DEFAULT_SKILLS", "SimConfig"]

DEFAULT_SKILLS: Mapping[str, float] = MappingProxyType({"haiku": 0.7, "sonnet": 0.8, "opus": 0.9})
DEFAULT_SKILL = 0.8


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the simulator behaves. Every field has a default that makes an ideal, limitless API.

    Rate limits (`rpm`, `itpm`, `otpm`) are per minute and per model family; `burst` is the
    request bucket's capacity (see `evalrun.sim.ratelimit`). Fault probabilities are per
    admitted request. `skills` maps a model id, dated id or family to the probability of a
    right answer; unlisted models fall back to `DEFAULT_SKILLS`, then `DEFAULT_SKILL`.

    Message Batches take `batch_seconds` to process (their results are ready when that has
    elapsed); each of their requests ends `errored` (api_error or overloaded_error) with
    probability `batch_error_rate` and `expired` with probability `batch_expire_rate`.
    Batches draw on none of the rate limits above, and the p500/p529/pdrop faults spare them.
    """

    api_key: str | None = None
    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None
    burst: int | None = None
    latency_ms: float = 0
    latency_spread: float = 0.3
    latency_per_output_token_ms: float = 0
    p500: float = 0
    p529: float = 0
    pdrop: float = 0
    batch_seconds: float = 0.2
    batch_error_rate: float = 0
    batch_expire_rate: float = 0
    seed: int = 0
    answers: AnswerKey | None = None
    skills: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SKILLS)
    model_table: ModelTable = field(default_factory=builtin_table)

    def __post_init__(self) -> None:
        for name in ("p500", "p529", "pdrop"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")
        if self.p500 + self.p529 + self.pdrop > 1:
            raise ValueError("p500 + p529 + pdrop must not exceed 1")
        for name in ("batch_error_rate", "batch_expire_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")
        if self.batch_error_rate + self.batch_expire_rate > 1:
            raise ValueError("batch_error_rate + batch_expire_rate must not exceed 1")
        if not 0 <= self.batch_seconds < float("inf"):
            raise ValueError(
                f"batch_seconds must be a finite number of seconds, at least 0, got {self.batch_seconds}"
            )
        for name in ("rpm", "itpm", "otpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if self.latency_ms < 0 or self.latency_spread < 0 or self.latency_per_output_token_ms < 0:
            raise ValueError("latencies must not be negative")
        for name, skill in self.skills.items():
            if not 0 <= skill <= 1:
                raise ValueError(f"skills[{name!r}] must be between 0 and 1, got {skill}")

    def skill_for(self, info: ModelInfo) -> float:
        """The probability that `info`'s model answers right: by id, dated id, then family."""
        for table in (self.skills, DEFAULT_SKILLS):
            for name in (info.id, info.response_id, info.family):
                if name in table:
                    return table[name]
        return DEFAULT_SKILL
