"""Answer extraction and scorers: pure functions from (the whole reply, the target, the row) to a Score.

The seam: a scorer is a callable `(reply, target, row) -> Score`. `reply` is a `Reply`, which
carries the reply text (without the prefill), the whole message (content blocks, tool_use
inputs, usage) and the answer mode it was asked in; `row` is the dataset row by column. The
built-in scorers are made by the factories in `SCORERS`, keyed by the spec's `type`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from evalrun.spec import ScorerSpec
from evalrun.store.records import reply_text

__all__ = [
    "Grader",
    "Reply",
    "Score",
    "Scorer",
    "extract_choice",
    "make_scorer",
    "normalize_choice_target",
]


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

_STRIP = " \t\r\n*_`\"'()[]{}<>.,:;!"
STRIP = _STRIP  # what is stripped around a label (`(C)`, `**C**`, `C.`)


def _choice_pattern(choices: Sequence[str]) -> str:
    return "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))


def _json_answer(text: str) -> str | None:
    """The answer field of a JSON object reply (structured output), if the reply is one."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for key in ("answer", "choice", "letter", "option"):
        if isinstance(value.get(key), str):
            return str(value[key])
    strings = [v for v in value.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else None


def extract_choice(text: str, choices: Sequence[str]) -> str | None:
    """The choice a reply names, or None when it names none or several.

    Accepts `C`, ` C`, `C)`, `(C)`, `C. Paris`, `**C**`, `The answer is (C).`, `Answer: C`,
    `{"answer": "C"}`. A lone lower-case letter counts only when it is the whole reply, so the
    article "a" in a sentence is never read as choice A.
    """
    if not text or not text.strip():
        return None
    by_upper = {c.upper(): c for c in choices}
    json_value = _json_answer(text)
    if json_value is not None:
        return by_upper.get(json_value.strip(_STRIP).upper())
    bare = text.strip(_STRIP)
    if bare.upper() in by_upper:
        return by_upper[bare.upper()]
    alternatives = _choice_pattern(choices)
    # A reply that starts with the label and a delimiter: "C) Paris", "(B) ...", "D. ...", "A: ...".
    lead = re.match(rf"^[\s*_\"'(\[]*({alternatives})(?:[)\].:,*]|\s*$)", text)
    marked = set(re.findall(rf"\(({alternatives})\)", text))
    if lead:
        # "(A) or (B)" names two options: that is no answer, not the first one.
        return lead.group(1) if marked <= {lead.group(1)} else None
    # "The answer is (C)", "Answer: C", "the correct option is **B**": the last such phrase wins,
    # because a model that reasons first states its conclusion last.
    phrase = re.findall(
        rf"(?:answer|option|choice)\s*(?:is|would be|:)?\s*[:\-]?\s*(?:option\s+)?[*_\"'(\[]*\s*({alternatives})(?![A-Za-z0-9])",
        text,
        flags=re.IGNORECASE,
    )
    phrase = [p for p in phrase if p in choices or (p.upper() in by_upper and len(p) > 1)]
    if phrase:
        return str(by_upper.get(phrase[-1].upper(), phrase[-1]))
    if len(marked) == 1:
        return str(marked.pop())
    return None


def normalize_choice_target(target: str, choices: Sequence[str]) -> str | None:
    """The gold label in canonical form (`c`, `(C)`, ` C ` → `C`), or None if it is not a choice."""
    by_upper = {c.upper(): c for c in choices}
    return by_upper.get(target.strip(_STRIP).upper())


def normalize_text(text: str, case_sensitive: bool) -> str:
    """Whitespace collapsed, a final period dropped, case folded unless `case_sensitive`."""
    return _normalize(text, case_sensitive)


def _normalize(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split()).strip().rstrip(".")
    return text if case_sensitive else text.casefold()


def _choice_scorer(spec: ScorerSpec) -> Scorer:
    fixed = tuple(spec.choices or ("A", "B", "C", "D"))
    options = spec.options

    def score(reply: Reply, target: str, row: Mapping[str, Any]) -> Score:
        # With `options`, a row's choices are as many letters as its own list has options.
        choices = _row_letters(row, options) if options is not None else fixed
        answer = extract_choice(reply.text, choices)
        if answer is None:
            return Score(answer=None, correct=False, status="unparsed")
        return Score(answer=answer, correct=answer == normalize_choice_target(target, choices), status="ok")

    return Scorer(score, needs_message=options is not None)


def _row_letters(row: Mapping[str, Any], options: str) -> tuple[str, ...]:
    from evalrun.plan.paths import as_list, letters, lookup

    return letters(len(as_list(lookup(row, options), path=options)), path=options)


def _exact_scorer(spec: ScorerSpec) -> Scorer:
    def score(reply: Reply, target: str, row: Mapping[str, str]) -> Score:
        answer = reply.text.strip()
        if not answer:
            return Score(answer=None, correct=False, status="unparsed")
        same = _normalize(answer, spec.case_sensitive) == _normalize(target, spec.case_sensitive)
        return Score(answer=answer, correct=same, status="ok")

    return Scorer(score)


def _contains_scorer(spec: ScorerSpec) -> Scorer:
    def score(reply: Reply, target: str, row: Mapping[str, str]) -> Score:
        answer = reply.text.strip()
        if not answer:
            return Score(answer=None, correct=False, status="unparsed")
        found = _normalize(target, spec.case_sensitive) in _normalize(answer, spec.case_sensitive)
        return Score(answer=answer, correct=found, status="ok")

    return Scorer(score)


def _regex_scorer(spec: ScorerSpec) -> Scorer:
    assert spec.pattern is not None
    pattern = re.compile(spec.pattern, 0 if spec.case_sensitive else re.IGNORECASE)

    def score(reply: Reply, target: str, row: Mapping[str, str]) -> Score:
        match = pattern.search(reply.text)
        if match is None:
            return Score(answer=None, correct=False, status="unparsed")
        answer = match.group(1) if pattern.groups else match.group(0)
        answer = answer or ""
        same = _normalize(answer, spec.case_sensitive) == _normalize(target, spec.case_sensitive)
        return Score(answer=answer, correct=same, status="ok")

    return Scorer(score)


def _fields_scorer(spec: ScorerSpec) -> Scorer:
    from evalrun.results.fields import fields_scorer

    return fields_scorer(spec)


def _judge_scorer(spec: ScorerSpec) -> Scorer:
    from evalrun.results.judge import judge_scorer

    return judge_scorer(spec)


SCORERS: dict[str, Callable[[ScorerSpec], Scorer]] = {
    "choice": _choice_scorer,
    "exact": _exact_scorer,
    "contains": _contains_scorer,
    "regex": _regex_scorer,
    "fields": _fields_scorer,
    "judge": _judge_scorer,
}


def make_scorer(spec: ScorerSpec) -> Scorer:
    """The scoring function for a scorer spec."""
    return SCORERS[spec.type](spec)
