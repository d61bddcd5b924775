"""What a stored reply says about thinking: the tokens it spent thinking, whether it was cut by
`max_tokens` while still thinking, and whether the model refused.

Thinking tokens are billed as output and counted in `usage.output_tokens`. When the API reports
them apart (`usage.thinking_tokens`, or `usage.output_tokens_details.thinking_tokens`) that
figure is used (`source = "usage"`). Otherwise a reply with thinking blocks is estimated as its
output tokens minus the visible answer's tokens (`source = "estimate"`): Claude 4 models return
a *summarized* thinking block, so the thinking cannot be read off its text. A reply without
thinking blocks thought 0 tokens (`source` empty).

The message JSON is parsed only when it mentions thinking, so the results pass stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalrun.tokens import count_text_tokens

__all__ = ["NO_THINKING", "Reasoning", "reasoning_of"]

_MARKERS = ('"thinking"', '"redacted_thinking"', '"thinking_tokens"')
TRUNCATED_NOTE = "cut by max_tokens while still thinking (no answer written): raise max_tokens above the thinking"


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The thinking side of one answered cell."""

    thinking_tokens: int = 0
    source: str = ""  # usage | estimate | "" (no thinking)
    truncated: bool = False  # cut by max_tokens while thinking: no text, no tool call
    refused: bool = False  # stop_reason refusal


NO_THINKING = Reasoning()


def _reported(usage: Any) -> int | None:
    if not isinstance(usage, Mapping):
        return None
    for value in (usage.get("thinking_tokens"), (usage.get("output_tokens_details") or {}).get("thinking_tokens")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def reasoning_of(cell: Mapping[str, Any]) -> Reasoning:
    """The thinking of one answered stored cell (its `message_json`, `text`, `output_tokens`,
    `stop_reason`)."""
    refused = cell.get("stop_reason") == "refusal"
    raw = cell.get("message_json")
    if not raw or not any(marker in raw for marker in _MARKERS):
        return Reasoning(refused=True) if refused else NO_THINKING
    try:
        message = json.loads(raw)
    except ValueError:
        return Reasoning(refused=refused)
    content = [b for b in message.get("content") or () if isinstance(b, Mapping)]
    kinds = {b.get("type") for b in content}
    thought = bool(kinds & {"thinking", "redacted_thinking"})
    answered = any(b.get("type") == "tool_use" for b in content) or bool(cell.get("text"))
    truncated = thought and not answered and cell.get("stop_reason") == "max_tokens"
    reported = _reported(message.get("usage"))
    if reported is not None:
        return Reasoning(reported, "usage", truncated, refused)
    if not thought:
        return Reasoning(refused=refused)
    visible = count_text_tokens(cell.get("text") or "") + sum(
        count_text_tokens(json.dumps(b.get("input"), ensure_ascii=False)) for b in content if b.get("type") == "tool_use"
    )
    output = int(cell.get("output_tokens") or 0)
    return Reasoning(max(output - visible, 0), "estimate", truncated, refused)
