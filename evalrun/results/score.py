"""What a scorer is: a callable from a `Reply` (the reply text, the whole message, the answer
mode, a judge's `Grader` reply), the target and the row to a `Score`. The scorers themselves are
in `evalrun.results.scoring` (and `fields`, `judge`), which all build on these types."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from evalrun.store.records import reply_text

__all__ = ["Grader", "Reply", "Score", "Scorer", "normalize_text"]


@dataclass(frozen=True)
class Grader:
    """What the store holds about the grading of one cell by a judge model."""

    status: str | None  # ok | error | None (not graded yet)
    text: str = ""
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class Reply:
    """What a scorer sees of one answer (and, for a judge scorer, of its grading)."""

    text: str
    message: Mapping[str, Any] | None = None
    answer_mode: str = "plain"
    grader: Grader | None = None

    @classmethod
    def of(cls, message: Mapping[str, Any] | None, *, answer_mode: str = "plain", text: str | None = None) -> Reply:
        return cls(text=text if text is not None else reply_text(dict(message or {})), message=message, answer_mode=answer_mode)

    @cached_property
    def tool_uses(self) -> list[Mapping[str, Any]]:
        """The reply's `tool_use` blocks, in order."""
        content = (self.message or {}).get("content") or ()
        return [b for b in content if isinstance(b, Mapping) and b.get("type") == "tool_use"]

    @cached_property
    def json(self) -> Any:
        """The reply text parsed as JSON (structured output), or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    @property
    def stop_reason(self) -> str | None:
        value = (self.message or {}).get("stop_reason")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Score:
    """`status` is `ok` (an answer was found), `unparsed` (none was: never counted correct),
    `error` (a grader request failed: no score, never a wrong one) or `pending` (not graded yet).

    `value` is the score in [0, 1]: 1 or 0 for a right or wrong answer unless `score` says
    otherwise (a grade on a scale); `fields` the correctness of each field; `explanation` why;
    `extra` more columns for results.csv (a grader's grade and tokens).
    """

    answer: str | None
    correct: bool
    status: str
    explanation: str | None = None
    fields: Mapping[str, bool] | None = field(default=None)
    score: float | None = None
    extra: Mapping[str, Any] | None = None

    @property
    def value(self) -> float:
        if self.score is not None:
            return self.score
        return 1.0 if self.correct else 0.0


_Score = Callable[[Reply, str, Mapping[str, str]], Score]


class Scorer:
    """A scoring function: `scorer(reply, target, row)`. `reply` may be plain text.

    `needs_message`: it reads more than the reply text (tool calls, the whole message, the row).
    `columns`: extra results.csv columns its scores carry in `Score.extra` or per field.
    """

    def __init__(self, function: _Score, *, needs_message: bool = False, columns: Sequence[str] = ()) -> None:
        self._function = function
        self.needs_message = needs_message
        self.columns = list(columns)

    def __call__(self, reply: Reply | str, target: str, row: Mapping[str, str] | None = None) -> Score:
        if isinstance(reply, str):
            reply = Reply(text=reply)
        return self._function(reply, target, row or {})


def normalize_text(text: str, case_sensitive: bool) -> str:
    """Whitespace collapsed, a final period dropped, case folded unless `case_sensitive`."""
    text = " ".join(text.split()).strip().rstrip(".")
    return text if case_sensitive else text.casefold()
