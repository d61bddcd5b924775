"""evalrun: batch evaluations and prompt experiments on the Anthropic Messages API.

The public names load lazily (PEP 562), so `import evalrun` and `evalrun --help` start at once:
pandas, numpy and the HTTP stack load only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
import typing as _typing

from evalrun.version import __version__ as __version__

# name → the module that defines it
_EXPORTS = {
    "ApiError": "evalrun.errors",
    "AuthError": "evalrun.errors",
    "BudgetExceeded": "evalrun.errors",
    "DatasetError": "evalrun.errors",
    "DeadlineReached": "evalrun.errors",
    "EvalrunError": "evalrun.errors",
    "Estimate": "evalrun.engine.costing",
    "Experiment": "evalrun.spec",
    "MalformedReplyError": "evalrun.errors",
    "PermanentApiError": "evalrun.errors",
    "RateLimitError": "evalrun.errors",
    "Run": "evalrun.api",
    "RunFailed": "evalrun.errors",
    "RunInterrupted": "evalrun.errors",
    "RunStopped": "evalrun.errors",
    "SpecError": "evalrun.errors",
    "StoreError": "evalrun.errors",
    "TemplateError": "evalrun.errors",
    "TransientApiError": "evalrun.errors",
    "arun": "evalrun.api",
    "build_reports": "evalrun.reports.build",
    "compare": "evalrun.api",
    "diff": "evalrun.across.diff",
    "estimate": "evalrun.api",
    "gate": "evalrun.across.gate",
    "load_results": "evalrun.reports.build",
    "load_spec": "evalrun.spec",
    "run": "evalrun.api",
}

__all__ = sorted(_EXPORTS)

if _typing.TYPE_CHECKING:
    # `X as X`: explicit re-exports, so a user's code type-checks under mypy --strict.
    from evalrun.across.diff import diff as diff
    from evalrun.across.gate import gate as gate
    from evalrun.api import Run as Run
    from evalrun.api import arun as arun
    from evalrun.api import compare as compare
    from evalrun.api import estimate as estimate
    from evalrun.api import run as run
    from evalrun.engine.costing import Estimate as Estimate
    from evalrun.errors import ApiError as ApiError
    from evalrun.errors import AuthError as AuthError
    from evalrun.errors import BudgetExceeded as BudgetExceeded
    from evalrun.errors import DatasetError as DatasetError
    from evalrun.errors import DeadlineReached as DeadlineReached
    from evalrun.errors import EvalrunError as EvalrunError
    from evalrun.errors import MalformedReplyError as MalformedReplyError
    from evalrun.errors import PermanentApiError as PermanentApiError
    from evalrun.errors import RateLimitError as RateLimitError
    from evalrun.errors import RunFailed as RunFailed
    from evalrun.errors import RunInterrupted as RunInterrupted
    from evalrun.errors import RunStopped as RunStopped
    from evalrun.errors import SpecError as SpecError
    from evalrun.errors import StoreError as StoreError
    from evalrun.errors import TemplateError as TemplateError
    from evalrun.errors import TransientApiError as TransientApiError
    from evalrun.reports.build import build_reports as build_reports
    from evalrun.reports.build import load_results as load_results
    from evalrun.spec import Experiment as Experiment
    from evalrun.spec import load_spec as load_spec


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evalrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
