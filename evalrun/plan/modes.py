"""Answer modes: how one prompt variant is asked of one model so that the answer can be read.

Each mode is one object: how it shapes the request, its `max_tokens` floor and default, what it
expects back, and which refusal teaches the run to leave it. A new mode is one class here and
one entry in `MODES`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalrun.errors import SpecError
from evalrun.tokens import count_text_tokens

__all__ = ["MODES", "AnswerMode", "choose_mode"]

# Always-on thinking spends output tokens before the answer, so tiny budgets cannot work.
THINKING_MIN_TOKENS = 2048


@dataclass(frozen=True)
class AnswerMode:
    """The plain mode: the variant exactly as written."""

    name: ClassVar[str] = "plain"
    min_max_tokens: ClassVar[int] = 1
    default_max_tokens: ClassVar[int] = 1024
    # Tokens an answer needs after thinking (a thinking budget must leave this much of max_tokens).
    answer_room: ClassVar[int] = 256
    # The capability whose refusal (a 400) makes the run re-plan the model away from this mode.
    refused_with: ClassVar[str | None] = None

    def shape(
        self, messages: list[dict[str, Any]], params: dict[str, Any], *, prefill: str | None, choices: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The final `messages` and body parameters for one row (both may be the inputs)."""
        return messages, params

    def expected_output_tokens(self, max_tokens: int, choices: Sequence[str]) -> int:
        """What a reply in this mode is expected to use, never more than `max_tokens`. A plain
        reply may use all of it, so the bound is the honest expectation."""
        return max_tokens


@dataclass(frozen=True)
class PrefillMode(AnswerMode):
    """The variant's prefill as the final assistant turn: `The answer is (` → `C`."""

    name: ClassVar[str] = "prefill"
    default_max_tokens: ClassVar[int] = 5
    answer_room: ClassVar[int] = 5
    refused_with: ClassVar[str | None] = "prefill"

    def shape(
        self, messages: list[dict[str, Any]], params: dict[str, Any], *, prefill: str | None, choices: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        return messages, params


@dataclass(frozen=True)
class StructuredMode(AnswerMode):
    """Ends with the user turn; structured output constrains the answer to an enum of the choices."""

    name: ClassVar[str] = "structured"
    min_max_tokens: ClassVar[int] = 32
    default_max_tokens: ClassVar[int] = 32
    answer_room: ClassVar[int] = 32

    def shape(
        self, messages: list[dict[str, Any]], params: dict[str, Any], *, prefill: str | None, choices: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        config = dict(params.get("output_config") or {})
        config["format"] = {"type": "json_schema", "schema": choice_schema(choices)}
        return messages, {**params, "output_config": config}

    def expected_output_tokens(self, max_tokens: int, choices: Sequence[str]) -> int:
        longest = max(choices, key=len) if choices else "A"
        return min(max_tokens, count_text_tokens(json.dumps({"answer": longest})))


@dataclass(frozen=True)
class InstructionMode(AnswerMode):
    """Ends with the user turn plus an instruction to answer with the letter only."""

    name: ClassVar[str] = "instruction"
    min_max_tokens: ClassVar[int] = 8
    default_max_tokens: ClassVar[int] = 8
    answer_room: ClassVar[int] = 8

    def shape(
        self, messages: list[dict[str, Any]], params: dict[str, Any], *, prefill: str | None, choices: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        append_to_last_user_turn(messages, instruction(choices))
        return messages, params


MODES: dict[str, AnswerMode] = {
    mode.name: mode for mode in (AnswerMode(), PrefillMode(), StructuredMode(), InstructionMode())
}


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"],
        "additionalProperties": False,
    }


def instruction(choices: Sequence[str]) -> str:
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return f"Answer with only the letter of the correct option ({listed})."


def append_to_last_user_turn(messages: list[dict[str, Any]], text: str) -> None:
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] = f"{last['content']}\n\n{text}"
    else:
        last["content"] = [*last["content"], {"type": "text", "text": text}]


def choose_mode(
    *,
    forced: str,
    has_prefill: bool,
    refuses_prefill: bool,
    multiple_choice: bool,
    model_label: str,
    source: str,
    thinking: bool = False,
) -> AnswerMode:
    """The mode one model is asked one variant in (see the README: answer modes).

    `forced` is the spec's `answer_mode` (model, then prompt, then experiment): `auto` picks
    prefill where the model accepts it and structured output where it does not. With `thinking`
    on, the API refuses prefill: auto picks structured output, a forced prefill is an error.
    """
    if thinking and forced == "prefill":
        raise SpecError(
            f"{source}: answer_mode prefill is forced, but {model_label} thinks (thinking is on) and the API "
            "refuses prefill with thinking; use answer_mode structured or instruction for it"
        )
    refuses_prefill = refuses_prefill or thinking
    if not multiple_choice:
        # No letter enum to constrain; a prefill the model refuses is dropped (warned).
        return MODES["prefill"] if has_prefill and not refuses_prefill else MODES["plain"]
    if forced == "auto":
        if not has_prefill:
            return MODES["plain"]
        return MODES["structured"] if refuses_prefill else MODES["prefill"]
    if forced == "prefill":
        if not has_prefill:
            raise SpecError(f"{source}: answer_mode prefill needs a `prefill` in every prompt it applies to")
        if refuses_prefill:
            raise SpecError(
                f"{source}: answer_mode prefill is forced, but {model_label} does not accept "
                f"prefill; use answer_mode auto, structured or instruction for it"
            )
    return MODES[forced]
