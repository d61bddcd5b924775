"""evalrun: batch evaluations and prompt experiments on the Anthropic Messages API."""

from __future__ import annotations

from evalrun.errors import (
    ApiError,
    AuthError,
    BudgetExceeded,
    DatasetError,
    EvalrunError,
    PermanentApiError,
    RateLimitError,
    RunInterrupted,
    RunStopped,
    SpecError,
    StoreError,
    TemplateError,
    TransientApiError,
)
from evalrun.reports.build import build_reports, load_results
from evalrun.spec import Experiment, load_spec

__all__ = [
    "ApiError",
    "AuthError",
    "BudgetExceeded",
    "DatasetError",
    "EvalrunError",
    "Experiment",
    "PermanentApiError",
    "RateLimitError",
    "RunInterrupted",
    "RunStopped",
    "SpecError",
    "StoreError",
    "TemplateError",
    "TransientApiError",
    "build_reports",
    "load_results",
    "load_spec",
]
__version__ = "0.1.0"
