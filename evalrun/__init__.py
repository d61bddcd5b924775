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
    "Experiment": "evalrun.spec",
    "MalformedReplyError": "evalrun.errors",
    "PermanentApiError": "evalrun.errors",
    "RateLimitError": "evalrun.errors",
    "RunFailed": "evalrun.errors",
    "RunInterrupted": "evalrun.errors",
    "RunStopped": "evalrun.errors",
    "SpecError": "evalrun.errors",
    "StoreError": "evalrun.errors",
    "TemplateError": "evalrun.errors",
    "TransientApiError": "evalrun.errors",
    "build_reports": "evalrun.reports.build",
    "diff": "evalrun.across.diff",
    "gate": "evalrun.across.gate",
    "load_results": "evalrun.reports.build",
    "load_spec": "evalrun.spec",
}

__all__ = sorted(_EXPORTS)

if _typing.TYPE_CHECKING:
    from evalrun.across.diff import diff
    from evalrun.across.gate import gate
    from evalrun.errors import (
        ApiError,
        AuthError,
        BudgetExceeded,
        DatasetError,
        DeadlineReached,
        EvalrunError,
        MalformedReplyError,
        PermanentApiError,
        RateLimitError,
        RunFailed,
        RunInterrupted,
        RunStopped,
        SpecError,
        StoreError,
        TemplateError,
        TransientApiError,
    )
    from evalrun.reports.build import build_reports, load_results
    from evalrun.spec import Experiment, load_spec


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evalrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
