"""Human reviews in the results pass: a reviewed cell scores by the human's verdict or grade.

The automatic score is kept beside it (`correct_auto`, `score_source` in results.csv). With a
judge scorer a human grade (or a verdict that names exactly one grade of the scale) is also a
human rating of the grader, so it feeds the judge's agreement and kappa beside a human-grade
column of the dataset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from evalrun.errors import ReviewError
from evalrun.results.judge import match_grade
from evalrun.results.scoring import Score
from evalrun.spec import ScorerSpec
from evalrun.store.reviews import VERDICTS, CellKey, Review

__all__ = ["cell_key", "check_review", "human_grade", "human_score"]


def cell_key(cell: Mapping[str, Any]) -> CellKey:
    """A stored cell's review key."""
    return (str(cell["model"]), str(cell["prompt"]), str(cell["row_id"]), int(cell["repeat"]))


def _passing(spec: ScorerSpec) -> int:
    labels = spec.grade_labels
    return labels.index(spec.pass_grade) if spec.pass_grade else 0


def check_review(spec: ScorerSpec, *, verdict: Any, grade: Any) -> tuple[str | None, str | None]:
    """(verdict, grade) as stored: exactly one of them, the verdict `correct` or `wrong`, a grade
    one of the judge's (however it was written). Raises `ReviewError` with what is wrong."""
    if (verdict is None) == (grade is None):
        raise ReviewError("give either `verdict` (correct or wrong) or `grade`, not both and not neither")
    if verdict is not None:
        if verdict not in VERDICTS:
            raise ReviewError(f"verdict must be `correct` or `wrong`, not {verdict!r}")
        return str(verdict), None
    if spec.type != "judge":
        raise ReviewError(f"a grade needs a judge scorer; this run's scorer is `{spec.type}`: give a verdict")
    labels = spec.grade_labels
    found = match_grade(grade, labels)
    if found is None:
        raise ReviewError(f"grade {grade!r} is not on the judge's scale ({', '.join(labels)})")
    return None, found


def human_score(auto: Score, review: Review, spec: ScorerSpec) -> Score:
    """The score of a reviewed cell: the human's verdict (1 or 0) or grade (its place on the
    scale), answered; the automatic answer, fields and columns stay as they were."""
    if review.grade is not None and spec.type == "judge":
        labels = spec.grade_labels
        place = labels.index(review.grade) if review.grade in labels else len(labels) - 1
        correct, value = place <= _passing(spec), 1.0 - place / max(len(labels) - 1, 1)
    else:
        correct = review.verdict == "correct"
        value = 1.0 if correct else 0.0
    note = f": {review.note}" if review.note else ""
    return dataclasses.replace(
        auto, correct=correct, status="ok", score=value, explanation=f"human review by {review.reviewer}{note}"
    )


def human_grade(review: Review, spec: ScorerSpec) -> str | None:
    """The grade a review gives the cell on the judge's scale: its grade, or a verdict when
    exactly one grade passes (`correct`) or exactly one fails (`wrong`); else None (a verdict
    on a finer scale says no grade)."""
    labels = spec.grade_labels
    if review.grade is not None:
        return match_grade(review.grade, labels)
    passing = _passing(spec)
    if review.verdict == "correct" and passing == 0:
        return labels[0]
    if review.verdict == "wrong" and passing == len(labels) - 2:
        return labels[-1]
    return None
