"""A run's settings: what was asked for and how, stored with each run in `runs.settings_json`.

The stored form is a plain JSON object whose keys have not changed since the first stores, so a
folder written by any earlier evalrun still reports: `from_json` fills what an old store lacks
with defaults and keeps keys it does not know (a newer evalrun's) untouched in `extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["RunSettings"]

_NULLABLE = frozenset({"cluster", "judge", "prices_as_of", "budget_usd", "concurrency"})


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """One run's settings (see the module docstring for the stored form)."""

    name: str = "experiment"
    spec_path: str = ""
    spec: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = ""
    rows: int = 0
    cluster: str | None = None
    endpoint: str | list[str] = ""
    models: Mapping[str, str] = field(default_factory=dict)  # label → model name
    model_labels: list[str] = field(default_factory=list)
    api_versions: Mapping[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    modes: Mapping[str, str] = field(default_factory=dict)  # "model/prompt" → answer mode
    repeats: int = 1
    reducer: str = "mean"
    scorer: Mapping[str, Any] = field(default_factory=dict)
    prices: Mapping[str, Mapping[str, float] | None] = field(default_factory=dict)
    judge: Mapping[str, str] | None = None
    prices_as_of: str | None = None
    budget_usd: float | None = None
    batch: bool = False
    concurrency: int | None = None
    warnings: list[str] = field(default_factory=list)
    evalrun_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Whether the run was sent to the built-in simulator."""
        return self.endpoint == "simulator"

    @property
    def labels(self) -> list[str]:
        """The graded models' labels, in the spec's order."""
        return list(self.model_labels or self.models)

    def to_json(self) -> dict[str, Any]:
        """The stored form: the historical key set, plus whatever `extra` carries."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunSettings:
        """Read a stored form, old or new: missing keys take their defaults, unknown keys go to `extra`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in raw.items() if k in known and (v is not None or k in _NULLABLE)}
        extra = {k: v for k, v in raw.items() if k not in known}
        return cls(**values, extra=extra)
