"""The values a model entry sweeps (`effort`, `thinking`, `vary`), checked as the spec is read.

Whether a model takes a value is the plan's check (`evalrun.plan.thinking`), against the model
table; here only their form: non-empty lists of distinct values, budgets of at least 1,024
tokens, `vary` paths that start with a Messages parameter.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from evalrun.messages_api import SPEC_PARAMS

__all__ = ["THINKING_MIN_BUDGET", "check_sweep", "json_key"]

THINKING_MIN_BUDGET = 1024  # the API's smallest `budget_tokens`


def check_sweep(effort: Any, thinking: Any, vary: Mapping[str, list[Any]] | None) -> None:
    """Each swept value is well formed (whether the model takes it is the plan's check)."""
    lists = [("effort", effort), ("thinking", thinking), *((f"vary.{k}", v) for k, v in (vary or {}).items())]
    for key, value in lists:
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise ValueError(f"{key}: an empty list sweeps nothing; give one or more values")
        if len({json_key(v) for v in values}) != len(values):
            raise ValueError(f"{key}: a value appears twice; each value is one configuration")
    for value in thinking if isinstance(thinking, list) else [thinking]:
        _check_thinking_value(value)
    for path in vary or {}:
        _check_vary_path(path, effort=effort, thinking=thinking)


def _check_thinking_value(value: Any) -> None:
    if value is None or value in ("off", "adaptive"):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"thinking: {value!r} is not off, adaptive or a budget in tokens (e.g. 4096)")
    if value < THINKING_MIN_BUDGET:
        raise ValueError(
            f"thinking: a budget of {value} is below the API's minimum of {THINKING_MIN_BUDGET} tokens; "
            f"use {THINKING_MIN_BUDGET} or more"
        )


def _check_vary_path(path: str, *, effort: Any, thinking: Any) -> None:
    head = path.split(".")[0]
    if not path or any(not part for part in path.split(".")) or head not in SPEC_PARAMS:
        raise ValueError(
            f"vary: {path!r} is not a Messages parameter path (e.g. max_tokens, output_config.effort)"
            f"{suggest(head, sorted(SPEC_PARAMS))}"
        )
    if (path == "output_config.effort" and effort is not None) or (path == "thinking" and thinking is not None):
        raise ValueError(f"vary: {path!r} is also set by `{path.split('.')[-1]}`; give it once")


def json_key(value: Any) -> str:
    """A value as canonical JSON (to compare swept values of any type)."""
    return json.dumps(value, sort_keys=True, default=str)


def suggest(word: str, options: list[str]) -> str:
    """" (did you mean 'x'?)" for the option nearest a mistyped word, or "" when none is near."""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
