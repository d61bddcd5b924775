"""The scorer part of a spec: one small model per type, with the messages users already know."""

from __future__ import annotations

import pytest

from evalrun.errors import SpecError
from evalrun.spec import parse_spec
from evalrun.spec_scorers import ChoiceScorer, ExactScorer, JudgeScorer, parse_scorer

BASE = {
    "name": "x",
    "dataset": "d.csv",
    "models": ["claude-haiku-4-5"],
    "prompts": {"p": {"messages": [{"role": "user", "content": "{q}"}]}},
}


def error_of(scorer: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "scorer": scorer}, source="spec.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        ({"type": "choice"}, "spec.yaml: scorer: a choice scorer needs `target`: the column with the right answer"),
        ({"type": "exact", "target": "a", "choices": ["A"]},
         "spec.yaml: scorer: `choices` does not apply to a exact scorer (it takes case_sensitive, target, type)"),
        ({"type": "choice", "traget": "a"}, "spec.yaml: scorer.traget: unknown key (did you mean 'target'?)"),
        ({"target": "a"}, "spec.yaml: scorer.type: required key is missing"),
        ({"type": "foo", "target": "a"},
         "spec.yaml: scorer.type: Input should be 'choice', 'exact', 'contains', 'regex', 'fields' or 'judge'"),
        ({"type": "regex", "target": "a"}, "spec.yaml: scorer: a regex scorer needs `pattern`"),
        ({"type": "fields", "fields": {}}, "spec.yaml: scorer: a fields scorer needs `fields`: answer path → dataset column"),
        ({"type": "judge", "model": "m"}, "spec.yaml: scorer: a judge scorer needs `model` (the grader) and `rubric`"),
        ({"type": "judge", "model": {"name": "m", "lable": "x"}, "rubric": "r"},
         "spec.yaml: scorer.model.lable: unknown key (did you mean 'label'?)"),
        ({"type": "fields", "fields": {"a": {"column": "c", "tolerance": -1}}},
         "spec.yaml: scorer.fields.a.tolerance: Input should be greater than or equal to 0"),
        ({"type": "judge", "model": "m", "rubric": "r", "case_sensitive": True},
         "spec.yaml: scorer: `case_sensitive` does not apply to a judge scorer"),
    ],
)  # fmt: skip
def test_scorer_mistakes_keep_their_messages(scorer: object, expected: str) -> None:
    assert error_of(scorer) == expected or error_of(scorer).startswith(expected)


def test_each_type_is_its_own_model_and_reads_other_types_keys_as_none() -> None:
    judge = parse_spec({**BASE, "scorer": {"type": "judge", "model": "m", "rubric": "r {response}"}}).scorer
    assert isinstance(judge, JudgeScorer)
    assert judge.grade_labels == ["pass", "fail"] and judge.choices is None and judge.field_specs == {}
    choice = parse_spec({**BASE, "scorer": {"type": "choice", "target": "t"}}).scorer
    assert isinstance(choice, ChoiceScorer) and choice.choices == ["A", "B", "C", "D"] and choice.rubric is None


def test_stored_settings_of_earlier_runs_still_load() -> None:
    # Earlier runs stored the flat scorer with every key, the unset ones null.
    old = {"type": "exact", "target": "t", "choices": None, "pattern": None, "case_sensitive": False,
           "from": None, "tool": None, "fields": None, "model": None, "rubric": None, "grades": None,
           "scale": None, "human": None, "pass_grade": None, "answer_mode": None}  # fmt: skip
    assert parse_scorer(old) == ExactScorer(type="exact", target="t")
    judge = parse_scorer({**old, "type": "judge", "model": "m", "rubric": "r", "target": None})
    assert isinstance(judge, JudgeScorer) and judge.judge_model.name == "m"
    choice = parse_scorer(parse_spec({**BASE, "scorer": {"type": "choice", "target": "t"}}).scorer.model_dump(mode="json"))
    assert isinstance(choice, ChoiceScorer)
