"""The spec keys for datasets as users have them: formats, a saved Hugging Face dataset, a row's
own turns, documents, `|options` and `target_index` — each mistake one line naming the key."""

from __future__ import annotations

import pytest

from evalrun.errors import TemplateError
from evalrun.plan.render import Template
from evalrun.spec import RowTurns, parse_spec
from tests.test_spec import error_of, with_

MC = {"type": "choice", "target_index": "answer_index"}
OPTIONS_PROMPT = {"p": {"messages": [{"role": "user", "content": "{question}\n{choices|options}"}], "prefill": "The answer is ("}}


def test_options_in_a_template_set_the_choice_scorers_options() -> None:
    spec = parse_spec(with_(prompts=OPTIONS_PROMPT, scorer=MC), source="spec.yaml")
    assert spec.scorer.options == "choices" and spec.scorer.target_index == "answer_index"


def test_a_rows_turns_are_a_placeholder_alone() -> None:
    spec = parse_spec(with_(prompts={"p": {"messages": "{messages}"}}), source="spec.yaml")
    assert spec.prompts["p"].messages == [RowTurns(turns="{messages}")]
    framed = {"p": {"messages": [{"role": "user", "content": "Read."}, {"role": "assistant", "content": "Ok."}, "{ chat }"]}}
    assert parse_spec(with_(prompts=framed), source="spec.yaml").prompts["p"].messages[2].field == "chat"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"dataset": {"id": "id"}}, "dataset: give `path` (a file) or `hf`"),
        ({"dataset": {"path": "d.csv", "hf": "saved"}}, "dataset: give `path` (a file) or `hf`"),
        ({"dataset": {"path": "d.csv", "split": "test"}}, "`split` applies only with `hf`"),
        ({"dataset": {"path": "d.txt", "format": "xml"}}, "dataset.format: Input should be 'csv', 'jsonl', 'json' or 'parquet'"),
        ({"scorer": {"type": "choice", "target": "answer", "target_index": "i"}}, "give `target` (the right letter) or `target_index`"),
        ({"scorer": {"type": "exact", "target_index": "i"}}, "`target_index` does not apply to a exact scorer"),
        ({"prompts": {"p": {"messages": ["Hello {name}"]}}}, "prompts.p.messages.0.turns: 'Hello {name}': a turn is a mapping with role and content, or a placeholder alone"),
        ({"prompts": {"p": {"messages": [{"role": "user", "content": [{"type": "document", "pth": "{f}"}]}]}}},
         "prompts.p.messages.0.content.0.pth: unknown key (did you mean 'path'?)"),
        ({"prompts": {"p": {"messages": [{"role": "user", "content": [{"type": "document"}]}]}}},
         "a document block needs exactly one of `path` or `url`"),
        ({"prompts": {"p": {"messages": [{"role": "user", "content": "{a|options} {b|options}"}]}}}, "`|options` names a and b"),
    ],
)
def test_dataset_mistakes_name_the_key(changes: dict, expected: str) -> None:
    assert expected in error_of(with_(**changes))


def test_a_template_names_paths_and_known_filters_only() -> None:
    template = Template.parse("{doc.title} {choices|options} {choices.0}", where="t")
    assert template.columns == ("doc.title", "choices", "choices.0")
    assert template.fill({"doc": {"title": "T"}, "choices": ["x", "y"]}) == "T (A) x\n(B) y x"
    with pytest.raises(TemplateError, match=r"t: \{choices\|upper\}: unknown filter 'upper' \(filters: options\)"):
        Template.parse("{choices|upper}", where="t")
    with pytest.raises(TemplateError, match="is not a field path"):
        Template.parse("{doc..title}", where="t")

