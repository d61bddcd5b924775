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
from typing import Any

from evalrun.results.fields import fields_scorer
from evalrun.results.judge import judge_scorer
from evalrun.results.score import Grader, Reply, Score, Scorer, normalize_text
from evalrun.spec import ScorerSpec

__all__ = [
    "Grader",
    "Reply",
    "Score",
    "Scorer",
    "extract_choice",
    "make_scorer",
    "normalize_choice_target",
]


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


def _normalize(text: str, case_sensitive: bool) -> str:
    return normalize_text(text, case_sensitive)


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


SCORERS: dict[str, Callable[[ScorerSpec], Scorer]] = {
    "choice": _choice_scorer,
    "exact": _exact_scorer,
    "contains": _contains_scorer,
    "regex": _regex_scorer,
    "fields": fields_scorer,
    "judge": judge_scorer,
}


def make_scorer(spec: ScorerSpec) -> Scorer:
    """The scoring function for a scorer spec."""
    return SCORERS[spec.type](spec)
