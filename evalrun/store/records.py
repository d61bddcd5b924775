"""The plain records that flow into the store: planned rows, cells and requests, and outcomes.

Kept apart from the store itself so that the planner and the senders can produce them without
importing SQLite code, and small (slots, frozen) because a run streams hundreds of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CellRecord", "Outcome", "PendingRequest", "RequestRecord", "RowRecord", "reply_shown", "reply_text"]


@dataclass(frozen=True, slots=True)
class RowRecord:
    """One dataset row as the reports need it: its values, gold answer and cluster."""

    row_seq: int
    row_id: str
    line: int
    cluster: str | None
    target: str
    values_json: str


@dataclass(frozen=True, slots=True)
class CellRecord:
    """What the user asked for: one model label × prompt × row × repeat, and the request it needs."""

    seq: int
    model: str
    model_id: str
    prompt: str
    row_seq: int
    row_id: str
    repeat: int
    answer_mode: str
    request_key: str
    max_tokens: int


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What is paid for: one distinct request body (images as file references)."""

    key: str
    first_seq: int
    model: str
    max_tokens: int
    input_tokens: int
    body_json: str
    stage: str = "answer"
    gate: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended: a reply (`status="ok"`) or an error.

    `source` says how the answer came: `realtime`, `batch`, or `cache` (copied from the shared
    response cache, so not paid for by this run folder). `raw` keeps the body of a reply that
    was not a valid Messages reply: it was paid for, so it is never thrown away.
    """

    key: str
    status: str
    message: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    http_status: int | None = None
    retryable: bool = False
    latency_s: float | None = None
    attempts: int = 1
    request_id: str | None = None
    raw: str | None = None
    simulated: bool = False
    source: str = "realtime"
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request of the plan with no final answer yet."""

    key: str
    first_seq: int
    model: str
    max_tokens: int
    input_tokens: int
    body_json: str
    gate: str = ""


def reply_text(message: dict[str, Any] | None) -> str:
    """The text of a reply: its text blocks joined (tool_use and thinking blocks are skipped)."""
    if not message:
        return ""
    return "".join(
        block["text"]
        for block in message.get("content") or ()
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def reply_shown(text: str | None, message_json: str | None) -> str:
    """A reply as a person (or a grader) reads it: its text, or its tool calls when it has no text."""
    if text:
        return text
    if not message_json:
        return ""
    import json

    message = json.loads(message_json)
    calls = [b for b in message.get("content") or () if isinstance(b, dict) and b.get("type") == "tool_use"]
    if calls:
        return json.dumps([{"tool": c.get("name"), "input": c.get("input")} for c in calls], ensure_ascii=False)
    return reply_text(message)
