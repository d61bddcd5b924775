"""The `judge` scorer's reading side: a grader model's reply → a grade, a score and its explanation.

The grader was asked (see `evalrun.plan.judge`) for a short explanation and one grade from the
scale, best first: as structured output `{"explanation", "grade"}` where the grader refuses
prefill, or as `<explanation>…</explanation><grade>…</grade>` text. A grade is scored by its
place on the scale (best 1, worst 0); it is correct when it is at least `pass_grade` (the best
grade by default). A graded reply whose grader request failed, or whose grader replied with no
grade of the scale (garbage, a refusal, a grade off the scale), has no score (status `error`),
never a wrong one; one not graded yet is `pending`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evalrun.results.score import Grader, Reply, Score, Scorer
from evalrun.spec import ScorerSpec
from evalrun.spec_scorers import match_grade

__all__ = ["GRADER_COLUMNS", "Grader", "judge_scorer", "match_grade", "parse_grade"]

GRADER_COLUMNS = ["grade", "grade_explanation", "judge_input_tokens", "judge_output_tokens", "judge_cost_usd"]
_GRADE_TAG = re.compile(r"<grade>\s*(.*?)\s*</grade>", re.IGNORECASE | re.DOTALL)
_EXPLANATION_TAG = re.compile(r"(?:<explanation>)?(.*?)</explanation>", re.IGNORECASE | re.DOTALL)
_GRADE_LINE = re.compile(r"grade\s*[:=]\s*\**\s*([^\s*.,;]+)", re.IGNORECASE)


def parse_grade(text: str, labels: Sequence[str]) -> tuple[str | None, str | None]:
    """(grade, explanation) from a grader's reply in either format."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            payload = json.loads(stripped)
        except ValueError:
            payload = None
        if isinstance(payload, Mapping):
            explanation = payload.get("explanation")
            return match_grade(payload.get("grade"), labels), explanation if isinstance(explanation, str) else None
    explanation_match = _EXPLANATION_TAG.search(text)
    explanation = explanation_match.group(1).strip() if explanation_match else None
    tags = _GRADE_TAG.findall(text)
    if tags:
        return match_grade(tags[-1], labels), explanation
    lines = _GRADE_LINE.findall(text)
    if lines:
        return match_grade(lines[-1], labels), explanation
    # A grader that answered with the bare grade, or ended its reasoning with it.
    words = re.findall(r"[\w.-]+", stripped)
    for candidate in (stripped, words[-1] if words else ""):
        grade = match_grade(candidate.strip(".:;,!"), labels)
        if grade is not None:
            body = stripped[: len(stripped) - len(candidate)].strip() if candidate != stripped else ""
            return grade, explanation or (body or None)
    return None, explanation


def judge_scorer(spec: ScorerSpec) -> Scorer:
    labels = spec.grade_labels
    passing = labels.index(spec.pass_grade) if spec.pass_grade else 0
    last = max(len(labels) - 1, 1)

    def score(reply: Reply, target: str, row: Mapping[str, str]) -> Score:
        grader = reply.grader
        extra: dict[str, Any] = {"grade": "", "grade_explanation": "", "judge_input_tokens": None,
                                 "judge_output_tokens": None, "judge_cost_usd": None}  # fmt: skip
        if grader is None or grader.status is None:
            return Score(answer=None, correct=False, status="pending", explanation="not graded yet", extra=extra)
        extra.update(
            judge_input_tokens=grader.input_tokens, judge_output_tokens=grader.output_tokens,
            judge_cost_usd=grader.cost_usd,
        )  # fmt: skip
        if grader.status != "ok":
            return Score(answer=None, correct=False, status="error", explanation=f"judge: {grader.error}", extra=extra)
        grade, explanation = parse_grade(grader.text, labels)
        extra.update(grade=grade or "", grade_explanation=explanation or "")
        if grade is None:
            # A grading that failed says nothing about the answer: an error (no score), never wrong.
            said = " ".join(grader.text.split())[:120] or "an empty reply"
            return Score(answer=None, correct=False, status="error", extra=extra,
                         explanation=f"judge: the grader's reply has no usable grade ({', '.join(labels)}): {said!r}")  # fmt: skip
        place = labels.index(grade)
        return Score(
            answer=grade,
            correct=place <= passing,
            status="ok",
            explanation=explanation,
            score=1.0 - place / last,
            extra=extra,
        )

    return Scorer(score, needs_message=False, columns=GRADER_COLUMNS)
