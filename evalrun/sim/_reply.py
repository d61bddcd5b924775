"""What the simulated model says: the answer it picks and the text, JSON or tool call it
writes around it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalrun.models import ModelInfo
from evalrun.sim._fields import field_provider
from evalrun.sim._grader import grade, grade_text, grading_provider, grading_request
from evalrun.sim._schema import first_enum, instance_for, property_paths
from evalrun.sim._thinking import SUMMARY, skill_with_thinking, thinking_tokens
from evalrun.sim.answers import AnswerKey, KeyRow, letter_of
from evalrun.tokens import count_text_tokens, cut_to_tokens

__all__ = ["Reply", "ToolCall", "forced_tool", "generate_reply"]

# An option on its own line: "(A) ...", "A) ...", "A. ...", "A: ...".
_OPTION = re.compile(r"(?m)^[ \t]*(?:\(([A-Z])\)|([A-Z])[).:])[ \t]+\S")
_DEFAULT_LETTERS = ("A", "B", "C", "D")
_THINKING = "Reading the question, weighing each option against it, and settling on one answer."
_UNSURE = "I don't know."


@dataclass(frozen=True)
class ToolCall:
    """A tool the reply calls, with its input."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A generated reply, already cut by stop sequences and max_tokens."""

    text: str
    thinking: str | None
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int
    tool_call: ToolCall | None = None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content if isinstance(b, Mapping) and b.get("type") == "text"]


def _letters(text: str) -> list[str]:
    found = sorted({a or b for a, b in _OPTION.findall(text)})
    return found if len(found) >= 2 else list(_DEFAULT_LETTERS)


def _draws(seed: int, info: ModelInfo, body: Mapping[str, Any]) -> tuple[float, int]:
    """Two deterministic draws from the seed, the model and everything the request says."""
    digest = hashlib.blake2b(f"{seed}\x00{info.id}".encode(), digest_size=16)
    system = body.get("system")
    for text in [system] if isinstance(system, str) else _texts(system or []):
        digest.update(b"\x00s" + text.encode())
    for message in body["messages"]:
        for text in _texts(message["content"]):
            digest.update(b"\x00" + message["role"][0].encode() + text.encode())
    raw = digest.digest()
    return int.from_bytes(raw[:8], "big") / 2**64, int.from_bytes(raw[8:], "big")


def _pick(choices: Sequence[str], correct: str | None, skill: float, u: float, n: int) -> str:
    if correct is None:
        return choices[n % len(choices)]
    if u < skill:
        return correct
    others = [c for c in choices if c != correct]
    return others[n % len(others)] if others else correct


def _match(body: Mapping[str, Any], key: AnswerKey | None, users: Sequence[str]) -> KeyRow | None:
    if key is None:
        return None
    metadata = body.get("metadata")
    row_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    return key.match("\n".join(users), row_id if isinstance(row_id, str) else None)


def _answer(
    row: KeyRow | None,
    key: AnswerKey | None,
    users: Sequence[str],
    schema: Mapping[str, Any] | None,
    *,
    skill: float,
    u: float,
    n: int,
) -> str:
    enum = first_enum(schema) if schema is not None else None
    target_letter = letter_of(row.target) if row else None
    if enum:
        correct = None
        if row:
            lowered = {value.casefold(): value for value in enum}
            correct = target_letter if target_letter in enum else lowered.get(row.target.casefold())
        return _pick(enum, correct, skill, u, n)
    if row and target_letter is None:  # a free-text answer
        if u < skill:
            return row.target
        wrong = sorted({t for t in key.targets() if t != row.target}) if key else []
        return wrong[n % len(wrong)] if wrong else _UNSURE
    letters = _letters(users[-1] if users else "")
    if target_letter and target_letter not in letters:
        letters = sorted({*letters, target_letter})
    return _pick(letters, target_letter, skill, u, n)


def _continue(prefill: str, answer: str, is_letter: bool) -> str:
    """The continuation of an assistant prefill that leads into the answer."""
    last = prefill[-1]
    if last == "(":
        return f"{answer})"
    if last == "[":
        return f"{answer}]"
    if last == "{":
        return '"answer": ' + json.dumps(answer, ensure_ascii=False) + "}"
    if last == '"':
        return f'{answer}"'
    if last.isalnum() or last in ":-=>,":
        return f" {answer}"
    return answer if is_letter else f" {answer}"


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool a (validated) request forces: `tool_choice` `tool` names it, `any` takes the
    first; None when the model may answer in text."""
    choice = body.get("tool_choice")
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping)]
    if not isinstance(choice, Mapping) or not tools:
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any":
        return tools[0]
    return None


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    output_config = body.get("output_config") or {}
    fmt = output_config.get("format") if isinstance(output_config, Mapping) else None
    schema = fmt.get("schema") if isinstance(fmt, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _content(
    body: Mapping[str, Any],
    info: ModelInfo,
    schema: Mapping[str, Any] | None,
    prefill: str,
    *,
    seed: int,
    skill: float,
    key: AnswerKey | None,
) -> Any:
    """The reply before any cutting: a JSON value when `schema` is set, else the text."""
    users = [t for m in body["messages"] if m["role"] == "user" for t in _texts(m["content"])]
    grading = grading_request(body, schema)
    if grading is not None:
        label, why = grade(grading)
        if schema is not None:
            return instance_for(schema, None, provider=grading_provider(label, why))
        return grade_text(label, why, prefill)
    u, n = _draws(seed, info, body)
    row = _match(body, key, users)
    answer = _answer(row, key, users, schema, skill=skill, u=u, n=n)
    if schema is not None:
        provider = field_provider(row, key, skill=skill, base=n) if row and key else None
        # Once the row's fields fill the object, a free-text target has no string of its own.
        fields_used = bool(row and set(row.field_values()) & set(property_paths(schema)))
        return instance_for(schema, answer, provider=provider, answer_in_strings=not fields_used)
    is_letter = len(answer) == 1 and answer.isalpha()
    if prefill:
        return _continue(prefill, answer, is_letter)
    return f"The answer is ({answer})." if is_letter else answer


def _think(thought: int, info: ModelInfo, max_tokens: int) -> tuple[str | None, int, bool]:
    """(the thinking block's text, the tokens thinking spent, whether max_tokens cut it)."""
    if thought:
        # Billed as output; the block shows a summary. Cut while thinking: no text at all.
        used = min(thought, max_tokens)
        return SUMMARY, used, used >= max_tokens
    if info.thinking == "always":
        # Always-on thinking spends max_tokens before any text is written.
        text, cut = cut_to_tokens(_THINKING, max_tokens)
        used = count_text_tokens(text)
        return text, used, cut or used >= max_tokens
    return None, 0, False


def generate_reply(
    body: Mapping[str, Any], info: ModelInfo, *, seed: int, skill: float, key: AnswerKey | None
) -> Reply:
    """The reply to a validated request, cut at its first stop sequence or at max_tokens.

    A forced tool (`tool_choice` `tool` or `any`) makes the reply one tool call whose input is
    valid under the tool's `input_schema`; a structured-output format makes it JSON text."""
    tool = forced_tool(body)
    schema = tool.get("input_schema") if tool is not None else _output_schema(body)
    schema = schema if isinstance(schema, Mapping) else None
    last = body["messages"][-1]
    prefill = "".join(_texts(last["content"])) if last["role"] == "assistant" else ""
    thought = thinking_tokens(body, _draws(seed, info, body)[1] % 10_007 / 10_007)
    skill = skill_with_thinking(skill, thought)
    content = _content(body, info, schema, prefill, seed=seed, skill=skill, key=key)

    thinking, used, cut = _think(thought, info, int(body["max_tokens"]))
    budget = int(body["max_tokens"]) - used
    if cut:
        return Reply("", thinking, "max_tokens", None, used)

    if tool is not None:
        # A call cut short by max_tokens is no call: the reply then ends without it.
        tokens = count_text_tokens(_compact(content))
        if tokens > budget:
            return Reply("", thinking, "max_tokens", None, used + budget)
        call = ToolCall(str(tool["name"]), content if isinstance(content, dict) else {})
        return Reply("", thinking, "tool_use", None, used + tokens, call)

    text = _compact(content) if schema is not None else str(content)
    stop_reason, stop_sequence = "end_turn", None
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
    if hits:
        position, sequence = min(hits)
        if count_text_tokens(text[:position]) <= budget:
            text, stop_reason, stop_sequence = text[:position], "stop_sequence", sequence
    if stop_reason == "end_turn":
        text, cut = cut_to_tokens(text, budget)
        if cut:
            stop_reason = "max_tokens"
    return Reply(text, thinking, stop_reason, stop_sequence, used + count_text_tokens(text))
