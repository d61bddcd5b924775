"""Prompt caching, planned: where the breakpoint goes in a variant's requests, and whether at all.

The cacheable part of an eval request is its *static prefix*: tools, a system prompt and the
leading turns (few-shot examples) that hold no `{column}` placeholder, so they are the same for
every row. A breakpoint (`cache_control`) goes at the end of that prefix when it reaches the
model's minimum cacheable length, with a 5-minute TTL under `cache: auto` (the default) or the
TTL `5m`/`1h` names; below the minimum nothing is marked, whatever the mode: the API would not
cache it (both counters read 0), so an estimate that counted cache writes and reads would be
wrong. Under `5m`/`1h` that is said (`cache_note`), since the user asked for caching. `off`
never marks. A spec that places its own `cache_control` is left as
written. Batches use a 1 h TTL under `auto`: a batch can take longer than five minutes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalrun.plan.render import Template
from evalrun.spec import ImageBlock, PromptSpec, TextBlock
from evalrun.tokens import count_request_tokens

__all__ = ["CachePoint", "apply_cache_point", "cache_note", "plan_cache_point"]

DEFAULT_CACHE_MIN_TOKENS = 1024  # the smallest minimum of any current model


@dataclass(frozen=True)
class CachePoint:
    """A cache breakpoint: after `turns` leading turns (0: after the system prompt; -1: after the
    tools), with a TTL; `prefix_tokens` is the prefix's local token estimate and `key` names the
    prefix (requests with the same key share one cache entry)."""

    turns: int
    ttl: str
    prefix_tokens: int
    key: str


def _static(text: str) -> bool:
    try:
        return not Template.parse(text, where="cache").columns
    except Exception:
        return False


def _static_turns(prompt: PromptSpec) -> int:
    count = 0
    for turn in prompt.messages[:-1]:  # the last turn holds the row
        if isinstance(turn.content, str):
            if not _static(turn.content):
                break
        elif not all(
            _static(block.text) if isinstance(block, TextBlock) else _static(block.path or block.url or "")
            for block in turn.content
        ):
            break
        count += 1
    return count


def _system_static(prompt: PromptSpec) -> bool:
    if prompt.system is None:
        return False
    if isinstance(prompt.system, str):
        return _static(prompt.system)
    return all(_static(block.text) for block in prompt.system)


def _has_own_breakpoints(prompt: PromptSpec, params: Mapping[str, Any]) -> bool:
    if "cache_control" in params or "cache_control" in json.dumps(params.get("tools") or []):
        return True
    system = prompt.system if isinstance(prompt.system, list) else []
    if any(block.cache_control for block in system):
        return True
    return any(
        isinstance(block, TextBlock | ImageBlock) and block.cache_control
        for turn in prompt.messages
        if not isinstance(turn.content, str)
        for block in turn.content
    )


def plan_cache_point(
    mode: str, prompt: PromptSpec, params: Mapping[str, Any], first_body: Mapping[str, Any], *,
    min_tokens: int | None, batch: bool, model: str,
) -> CachePoint | None:  # fmt: skip
    """The breakpoint for one model × prompt variant, or None (see the module docstring)."""
    point = _static_point(mode, prompt, params, first_body, batch=batch, model=model)
    if point is None or point.prefix_tokens < (min_tokens or DEFAULT_CACHE_MIN_TOKENS):
        return None
    return point


def cache_note(
    mode: str, prompt: PromptSpec, params: Mapping[str, Any], first_body: Mapping[str, Any], *,
    min_tokens: int | None, batch: bool, model: str,
) -> str | None:  # fmt: skip
    """What to tell the user when a prompt marked `cache: 5m`/`1h` has a static prefix below the
    model's minimum (so nothing is cached), else None."""
    if mode not in ("5m", "1h"):
        return None
    point = _static_point(mode, prompt, params, first_body, batch=batch, model=model)
    floor = min_tokens or DEFAULT_CACHE_MIN_TOKENS
    if point is None or point.prefix_tokens >= floor:
        return None
    return (f"marked for caching (cache: {mode}) but below the {floor:,}-token minimum "
            f"(its static prefix is about {point.prefix_tokens:,} tokens): not cached")  # fmt: skip


def _static_point(
    mode: str, prompt: PromptSpec, params: Mapping[str, Any], first_body: Mapping[str, Any], *,
    batch: bool, model: str,
) -> CachePoint | None:  # fmt: skip
    """Where a breakpoint would go, whatever the prefix's length; None when nothing is static."""
    if mode == "off" or _has_own_breakpoints(prompt, params):
        return None
    # Cache order is tools → system → messages: a prefix is static only if all before it is.
    turns: int | None
    if prompt.system is not None and not _system_static(prompt):
        turns = -1 if params.get("tools") else None
    else:
        leading = _static_turns(prompt)
        if leading > 0:
            turns = leading
        elif prompt.system is not None:
            turns = 0
        else:
            turns = -1 if params.get("tools") else None
    if turns is None:
        return None
    prefix = _prefix(first_body, turns)
    tokens = count_request_tokens(prefix)
    ttl = mode if mode in ("5m", "1h") else ("1h" if batch else "5m")
    digest = hashlib.sha256(f"{model}\x00{json.dumps(prefix, sort_keys=True)}".encode()).hexdigest()[:16]
    return CachePoint(turns=turns, ttl=ttl, prefix_tokens=tokens, key=f"cache:{digest}")


def _prefix(body: Mapping[str, Any], turns: int) -> dict[str, Any]:
    prefix: dict[str, Any] = {"model": body.get("model"), "messages": []}
    if body.get("tools"):
        prefix["tools"] = body["tools"]
    if turns >= 0 and body.get("system") is not None:
        prefix["system"] = body["system"]
    if turns > 0:
        prefix["messages"] = body["messages"][:turns]
    return prefix


def _marked(content: Any, control: dict[str, str]) -> list[dict[str, Any]]:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else copy.deepcopy(list(content))
    blocks[-1] = {**blocks[-1], "cache_control": control}
    return blocks


def apply_cache_point(body: dict[str, Any], point: CachePoint) -> dict[str, Any]:
    """`body` with `cache_control` on the last block of its static prefix."""
    control = {"type": "ephemeral"} if point.ttl == "5m" else {"type": "ephemeral", "ttl": point.ttl}
    if point.turns > 0:
        messages = list(body["messages"])
        turn = messages[point.turns - 1]
        messages[point.turns - 1] = {**turn, "content": _marked(turn["content"], control)}
        return {**body, "messages": messages}
    if point.turns == 0:
        return {**body, "system": _marked(body["system"], control)}
    tools = copy.deepcopy(list(body["tools"]))
    tools[-1] = {**tools[-1], "cache_control": control}
    return {**body, "tools": tools}
