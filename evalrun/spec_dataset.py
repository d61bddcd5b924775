"""The `dataset` key of an experiment spec (`evalrun.spec` re-exports it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DatasetSpec"]


class DatasetSpec(BaseModel):
    """The dataset: a file relative to the spec file (CSV, JSONL, JSON, Parquet; `format` when its
    name does not say), or a Hugging Face dataset saved to disk (`hf`, with its `split`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    format: Literal["csv", "jsonl", "json", "parquet"] | None = None
    hf: str | None = None
    split: str | None = None
    id: str | None = None
    cluster: str | None = None
    limit: int | None = Field(default=None, gt=0)
    sample: int | None = Field(default=None, gt=0)
    seed: int = 0
    encoding: str = "utf-8"

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give `path` (a file) or `hf` (a saved Hugging Face dataset's folder), one of them")
        if self.hf is not None and self.format is not None:
            raise ValueError("`format` applies to a `path`; `hf` is always a saved Hugging Face dataset")
        if self.split is not None and self.hf is None:
            raise ValueError("`split` applies only with `hf` (a saved Hugging Face dataset)")
        return self
