"""Reasoning configurations: a model entry's sweeps expanded into labelled configurations, and
the Messages API's thinking rules checked before anything is sent.

A model entry's `effort: [low, high]`, `thinking: [off, 2048, adaptive]` and `vary: {path:
[...]}` expand into one configuration per value (their product when several are lists),
labelled `<label>@effort=high,thinking=2048`; everything downstream sees ordinary model
labels. On the wire: effort → `output_config.effort`; a budget N → `thinking: {type: enabled,
budget_tokens: N}`; `adaptive` → `thinking: {type: adaptive}`; `off` → no `thinking`.

`check_reasoning` then holds every planned model × prompt to the API's rules (budget ≥ 1024
and below `max_tokens` with room left for the answer, only the thinking types and effort levels
the model table lists, no forced tool use, no sampling parameters but `temperature: 1`), so a
mistake is one spec error naming the model entry and the fix, never a 400 on every row.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalrun.errors import SpecError
from evalrun.models import ModelInfo
from evalrun.plan.modes import AnswerMode
from evalrun.spec import ModelSpec
from evalrun.sweeps import THINKING_MIN_BUDGET

__all__ = [
    "ADAPTIVE_MAX_TOKENS",
    "REMOVE",
    "Configuration",
    "apply_overrides",
    "check_reasoning",
    "configurations",
    "thinking_of",
    "thinking_variants",
]

# max_tokens when adaptive thinking is on and the spec sets none: thinking spends it first.
ADAPTIVE_MAX_TOKENS = 16_000
REMOVE: Any = object()  # an override value that deletes the parameter (thinking: off)


@dataclass(frozen=True)
class Configuration:
    """One configuration of a model entry: its label and the parameters it sets (dotted paths)."""

    label: str
    overrides: tuple[tuple[str, Any], ...] = ()
    thinking_off: bool = False  # `thinking: off` asked for explicitly


def _as_list(value: Any) -> tuple[list[Any], bool]:
    """(values, swept): a list sweeps, a single value only sets."""
    return (list(value), True) if isinstance(value, list) else ([value], False)


def _thinking_param(value: Any) -> Any:
    if value == "off":
        return REMOVE
    if value == "adaptive":
        return {"type": "adaptive"}
    return {"type": "enabled", "budget_tokens": int(value)}


def _shown(value: Any) -> str:
    return str(value) if not isinstance(value, dict | list) else _compact(value)


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def configurations(spec: ModelSpec) -> list[Configuration]:
    """The configurations a model entry expands into (one, labelled as the entry, without sweeps)."""
    axes: list[tuple[str, str, list[Any], bool]] = []  # (label key, parameter path, values, swept)
    if spec.effort is not None:
        axes.append(("effort", "output_config.effort", *_as_list(spec.effort)))
    if spec.thinking is not None:
        axes.append(("thinking", "thinking", *_as_list(spec.thinking)))
    for path, values in (spec.vary or {}).items():
        axes.append((path, path, list(values), True))
    out = []
    for combo in itertools.product(*(values for _, _, values, _ in axes)):
        overrides: list[tuple[str, Any]] = []
        parts: list[str] = []
        thinking_off = False
        for (key, path, _, swept), value in zip(axes, combo, strict=True):
            if key == "thinking":
                thinking_off = value == "off"
                overrides.append((path, _thinking_param(value)))
            else:
                overrides.append((path, value))
            if swept:
                parts.append(f"{key}={_shown(value)}")
        label = spec.display + ("@" + ",".join(parts) if parts else "")
        out.append(Configuration(label=label, overrides=tuple(overrides), thinking_off=thinking_off))
    return out


def apply_overrides(params: Mapping[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """`params` with each dotted path set (or removed): `output_config.effort` keeps the other
    keys of `output_config`."""
    out = copy.deepcopy(dict(params))
    for path, value in overrides:
        *parents, last = path.split(".")
        node = out
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
        if value is REMOVE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return out


def thinking_of(params: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """("budget", N) or ("adaptive", None) when the params turn thinking on, else None."""
    thinking = params.get("thinking")
    if not isinstance(thinking, Mapping):
        return None
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        return "budget", budget if isinstance(budget, int) and not isinstance(budget, bool) else None
    if thinking.get("type") == "adaptive":
        return "adaptive", None
    return None


@dataclass(frozen=True)
class _Where:
    """Names the model entry a problem belongs to: `spec.yaml: models.0 (label@thinking=4096)`."""

    text: str

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.text}: {message}")


def check_entry(spec: ModelSpec, info: ModelInfo, *, where: str) -> None:
    """What a model entry asks that its model cannot do whatever the prompt: thinking off on a
    model that always thinks."""
    asked = spec.thinking if isinstance(spec.thinking, list) else [spec.thinking]
    if "off" in asked and info.thinking == "always":
        raise SpecError(f"{where}.thinking: {info.id} always thinks; `off` is not possible: leave `off` out")


def check_reasoning(
    params: dict[str, Any],
    *,
    info: ModelInfo,
    mode: AnswerMode,
    explicit_max_tokens: bool,
    where: str,
) -> tuple[dict[str, Any], list[str]]:
    """The params of one model × prompt held to the thinking rules: (params, notes), or a
    SpecError naming `where` and the fix. Sets max_tokens when the spec gave none."""
    at = _Where(where)
    notes: list[str] = []
    _check_effort(params, info, at)
    thinking = params.get("thinking")
    if thinking is None:
        return params, notes
    setting = thinking_of(params)
    if setting is None:
        raise at.error(
            f"thinking: {_compact(thinking)} is not {{type: enabled, budget_tokens: N}} or {{type: adaptive}}; "
            "write `thinking: 4096` or `thinking: adaptive` on the model entry"
        )
    kind, budget = setting
    _check_mode_allowed(kind, info, at)
    params = dict(params)
    if kind == "budget":
        _check_budget(params, budget, mode, explicit_max_tokens, at)
    elif not explicit_max_tokens:
        params["max_tokens"] = ADAPTIVE_MAX_TOKENS
    elif params["max_tokens"] < THINKING_MIN_BUDGET + mode.answer_room:
        raise at.error(
            f"max_tokens {params['max_tokens']} leaves no room to think and answer (adaptive thinking spends "
            f"max_tokens first); raise max_tokens to at least {THINKING_MIN_BUDGET + mode.answer_room}"
        )
    choice = params.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("any", "tool"):
        raise at.error(
            f"tool_choice {choice.get('type')} forces a tool, which the API refuses with thinking on; "
            "use tool_choice auto (or none), or turn thinking off for this entry"
        )
    if params.get("temperature") is not None and params["temperature"] != 1:
        notes.append(f"thinks: temperature {params['temperature']} not sent (with thinking only 1 is allowed)")
        del params["temperature"]
    for name in ("top_k", "top_p"):
        if name in params:
            notes.append(f"thinks: `{name}` not sent (the API refuses it with thinking)")
            del params[name]
    return params, notes


def _check_effort(params: Mapping[str, Any], info: ModelInfo, at: _Where) -> None:
    config = params.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    if effort is None or info.effort_levels is None:
        return
    if not info.effort_levels:
        raise at.error(f"effort: {info.id} takes no effort level; leave `effort` out for it")
    if effort not in info.effort_levels:
        raise at.error(
            f"effort: {effort!r} is not a level {info.id} takes; use one of {', '.join(info.effort_levels)}"
        )


def _check_mode_allowed(kind: str, info: ModelInfo, at: _Where) -> None:
    modes = info.thinking_modes
    if modes is None or kind in modes:
        return
    if not modes:
        raise at.error(f"thinking: {info.id} does not think; leave `thinking` out for it")
    if kind == "budget":
        raise at.error(
            f"thinking: {info.id} takes no thinking budget (budget_tokens), only adaptive thinking; "
            "use `thinking: adaptive` with `effort: low|medium|high|max`"
        )
    raise at.error(f"thinking: {info.id} takes no adaptive thinking; give a budget instead, e.g. `thinking: 4096`")


def _check_budget(
    params: dict[str, Any], budget: int | None, mode: AnswerMode, explicit_max_tokens: bool, at: _Where
) -> None:
    if budget is None or budget < THINKING_MIN_BUDGET:
        raise at.error(
            f"thinking: budget_tokens {budget!r} is below the API's minimum of {THINKING_MIN_BUDGET}; "
            f"use a budget of {THINKING_MIN_BUDGET} or more"
        )
    room = mode.answer_room
    if not explicit_max_tokens:
        params["max_tokens"] = budget + max(room, mode.default_max_tokens)
        return
    max_tokens = params["max_tokens"]
    if budget >= max_tokens:
        raise at.error(
            f"thinking budget {budget} is not below max_tokens {max_tokens} (the API refuses it); raise "
            f"max_tokens to at least {budget + room} or lower the budget"
        )
    if max_tokens - budget < room:
        raise at.error(
            f"max_tokens {max_tokens} leaves {max_tokens - budget} tokens for the answer after a thinking budget of "
            f"{budget}; a {mode.name} answer needs {room}: raise max_tokens to at least {budget + room}"
        )


def thinking_variants(plan: Any) -> set[tuple[str, str]]:
    """The (model label, prompt) pairs of a plan that think: their output tokens are bounded by
    max_tokens (thinking spends up to it), not predictable from the answer mode."""
    return {
        (v.model.label, v.prompt_name)
        for v in plan.variants
        if thinking_of(v.params) is not None or v.model.info.thinking == "always"
    }
