"""How the simulated model thinks: the API's thinking rules, and what thinking costs and buys.

Rules (400s, in the API's words): `thinking` is `{type: enabled, budget_tokens: N}` with
N ≥ 1024 and N < max_tokens, `{type: adaptive}` or `{type: disabled}`; `output_config.effort`
is low, medium, high or max. With thinking on, no assistant prefill, `temperature` only 1, no
`top_k`/`top_p`. Per model (the table's `thinking_modes` / `effort_levels`): a budget on a model
that takes only adaptive thinking (Opus 4.7 and later) is refused, and so is adaptive thinking
on a budget-only model and an effort level the model does not list.

What thinking does (seeded, so runs repeat exactly): the model thinks T tokens, billed as
output tokens and shown as one short *summarized* thinking block (its text is far shorter than
T, as the real API's summaries are):

* a budget B: T = B · f(effort) · (0.6 + 0.4·v), at least 512 tokens and at most B;
* adaptive: T = A(effort) · (0.6 + 0.8·v), with A = 400 / 1,500 / 4,000 / 8,000 tokens for
  low / medium / high / max (no effort: high);

where f = 0.35 / 0.65 / 1 / 1 for low / medium / high / max (no effort: 1) and v ∈ [0, 1) is a
draw from the seed and the request. Thinking makes a right answer more likely: the skill s
becomes 1 − (1 − s)·exp(−T / 2,500), so more effort or a bigger budget is more accurate and
more expensive. The draw that decides right or wrong does not depend on the thinking, so a row
a configuration gets right stays right with more thinking. Adaptive thinking counts against
max_tokens: when T reaches it the reply is cut while thinking (a thinking block and no text).
`output_config.effort` without thinking changes nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from evalrun.models import ModelInfo
from evalrun.sim._errors import invalid

__all__ = ["check_thinking_model", "check_thinking_request", "skill_with_thinking", "thinking_tokens"]

EFFORTS = ("low", "medium", "high", "max")
MIN_BUDGET = 1024
_BUDGET_SHARE = {"low": 0.35, "medium": 0.65, "high": 1.0, "max": 1.0}
_ADAPTIVE_TOKENS = {"low": 400, "medium": 1500, "high": 4000, "max": 8000}
SKILL_SCALE = 2500.0  # tokens of thinking that cut the error rate by e
SUMMARY = "Summary: read the question, weighed each option against it, and settled on one answer."


def _effort(body: Mapping[str, Any]) -> str | None:
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    return effort if isinstance(effort, str) else None


def _thinking(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        return thinking
    return None


def check_thinking_request(body: Mapping[str, Any]) -> None:
    """The model-independent thinking rules of a well-formed Messages body (400 on the first broken)."""
    effort = _effort(body)
    if _effort_given(body) and effort not in EFFORTS:
        raise invalid("output_config.effort: Input should be 'low', 'medium', 'high' or 'max'")
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, Mapping):
        raise invalid("thinking: Input should be a valid dictionary or object to extract fields from")
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise invalid(
            f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'enabled', 'disabled', 'adaptive'"
        )
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is None:
            raise invalid("thinking.enabled.budget_tokens: Field required")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
        if budget < MIN_BUDGET:
            raise invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET}")
        if "max_tokens" in body and budget >= body["max_tokens"]:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if _thinking(body) is None:
        return
    if body["messages"] and body["messages"][-1].get("role") == "assistant":
        raise invalid("Thinking may not be enabled when the final message is an assistant message (prefill).")
    if body.get("temperature") is not None and body["temperature"] != 1:
        raise invalid("`temperature` may only be set to 1 when thinking is enabled.")
    for name in ("top_k", "top_p"):
        if body.get(name) is not None:
            raise invalid(f"`{name}` may not be set when thinking is enabled.")


def _effort_given(body: Mapping[str, Any]) -> bool:
    config = body.get("output_config")
    return isinstance(config, Mapping) and "effort" in config


def check_thinking_model(body: Mapping[str, Any], info: ModelInfo) -> None:
    """The thinking types and effort levels this model takes (400 for one it does not)."""
    thinking = _thinking(body)
    modes = info.thinking_modes
    if thinking is not None and modes is not None:
        kind = "budget" if thinking.get("type") == "enabled" else "adaptive"
        if kind not in modes:
            if kind == "budget" and "adaptive" in modes:
                raise invalid(
                    "thinking.enabled.budget_tokens: this model does not support budget_tokens; "
                    "use thinking.type 'adaptive' with output_config.effort"
                )
            raise invalid(f"thinking.type: '{thinking.get('type')}' is not supported by this model.")
    effort = _effort(body)
    if effort is not None and info.effort_levels is not None and effort not in info.effort_levels:
        raise invalid(f"output_config.effort: '{effort}' is not supported by this model.")


def thinking_tokens(body: Mapping[str, Any], v: float) -> int:
    """How many tokens the model thinks for this request (0 without thinking); `v` in [0, 1)."""
    thinking = _thinking(body)
    if thinking is None:
        return 0
    effort = _effort(body) or "high"
    if thinking.get("type") == "enabled":
        budget = int(thinking["budget_tokens"])
        wanted = budget * _BUDGET_SHARE[effort] * (0.6 + 0.4 * v)
        return int(min(budget, max(MIN_BUDGET * 0.5, wanted)))
    return int(_ADAPTIVE_TOKENS[effort] * (0.6 + 0.8 * v))


def skill_with_thinking(skill: float, tokens: int) -> float:
    """The probability of a right answer after thinking `tokens` tokens."""
    return 1 - (1 - skill) * math.exp(-tokens / SKILL_SCALE)
