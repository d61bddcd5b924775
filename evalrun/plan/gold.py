"""The dataset's gold values, checked before anything is sent: a numeric field's target must be a
number, a human grade must be one of the judge's grades (or blank: not graded by a person)."""

from __future__ import annotations

from evalrun.errors import DatasetError
from evalrun.plan.dataset import Row
from evalrun.plan.paths import as_number, text_at
from evalrun.spec import Experiment
from evalrun.spec_scorers import match_grade

__all__ = ["check_gold"]


def check_gold(experiment: Experiment, row: Row, where: str) -> None:
    """DatasetError naming the row (`where`: `file: line N`) and column when `row`'s gold values
    cannot be scored against."""
    scorer = experiment.scorer
    for path, spec in scorer.field_specs.items():
        if not spec.tolerance:  # a tolerance makes the field numeric
            continue
        gold = text_at(row.values, spec.column)
        if as_number(gold) is None:
            raise DatasetError(
                f"{where}: column {spec.column!r} holds {gold!r}, not a number, but "
                f"scorer.fields.{path} compares numbers (it has a tolerance)"
            )
    if scorer.human:
        grade = text_at(row.values, scorer.human)
        if grade.strip() and match_grade(grade, scorer.grade_labels) is None:
            raise DatasetError(
                f"{where}: column {scorer.human!r} holds {grade!r}, which is not one of the "
                f"grades {', '.join(scorer.grade_labels)} (leave it blank for a row no person graded)"
            )
