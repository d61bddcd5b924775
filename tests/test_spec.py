from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalrun.errors import SpecError
from evalrun.spec import load_spec, parse_spec

BASE = {
    "name": "x",
    "dataset": "d.csv",
    "models": ["claude-haiku-4-5"],
    "prompts": {"p": {"messages": [{"role": "user", "content": "{q}"}], "prefill": "The answer is ("}},
    "scorer": {"type": "choice", "target": "answer"},
}


def with_(**changes):
    spec = {**BASE, **changes}
    return spec


def error_of(raw) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, source="spec.yaml")
    return str(info.value)


def test_shorthands_expand() -> None:
    spec = parse_spec(BASE, source="spec.yaml")
    assert spec.dataset.path == "d.csv"
    assert spec.models[0].name == "claude-haiku-4-5"
    assert spec.scorer.choices == ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_(nmae="x"), "spec.yaml: nmae: unknown key (did you mean 'name'?)"),
        (with_(models=[{"name": "m", "lable": "x"}]), "models.0.lable: unknown key (did you mean 'label'?)"),
        (with_(dataset={"path": "a", "limt": 2}), "dataset.limt: unknown key (did you mean 'limit'?)"),
        (with_(scorer={"type": "choice", "traget": "a"}), "scorer.traget: unknown key (did you mean 'target'?)"),
        (with_(params={"max_token": 3}), "params.max_token: not a Messages API parameter (did you mean 'max_tokens'?)"),
        (with_(params={"max_tokens": 0}), "params.max_tokens: must be a whole number ≥ 1"),
        (with_(budget_usd=0), "budget_usd: Input should be greater than 0"),
        (with_(concurrency=0), "concurrency: Input should be greater than 0"),
        (with_(repeats=0), "repeats: Input should be greater than or equal to 1"),
        (with_(name="a b"), "name: must be letters"),
    ],
)
def test_mistakes_name_the_key(raw, expected: str) -> None:
    assert expected in error_of(raw)


def test_prefill_ending_in_whitespace_is_caught_before_sending() -> None:
    raw = with_(prompts={"p": {"messages": [{"role": "user", "content": "q"}], "prefill": "The answer is ( "}})
    message = error_of(raw)
    assert "prompts.p.prefill" in message and "whitespace" in message


def test_unknown_key_inside_a_content_block() -> None:
    raw = with_(prompts={"p": {"messages": [{"role": "user", "content": [{"type": "image", "pth": "{img}"}]}]}})
    assert "prompts.p.messages.0.content.0.pth: unknown key (did you mean 'path'?)" in error_of(raw)


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [a, b\nprompts: {}\n")
    with pytest.raises(SpecError, match=r"bad.yaml: YAML syntax error at line 3, column \d+"):
        load_spec(path)


def test_missing_and_empty_spec_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec(tmp_path / "empty.yaml")


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(st.none(), st.integers(), st.text(max_size=5))))
def test_any_mapping_is_either_a_spec_or_a_spec_error(raw: dict) -> None:
    try:
        parse_spec({**BASE, **raw}, source="spec.yaml")
    except SpecError as exc:
        assert str(exc).startswith("spec.yaml: ")


# -- a fields scorer must be able to find its answer object ---------------------------------------
# Each of these once passed `validate` and scored every cell `unparsed` (accuracy 0.0).

TOOL = {"name": "record_city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
FORCED = {"type": "tool", "name": "record_city"}
OUTPUT = {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}}
PROMPT = {"messages": [{"role": "user", "content": "{text}"}]}


def fields_spec(scorer: dict, params: dict | None = None, **changes) -> dict:
    return with_(
        scorer={"type": "fields", "fields": {"city": "city"}, **scorer},
        params=params if params is not None else {"max_tokens": 100},
        prompts=changes.pop("prompts", {"p": PROMPT}),
        **changes,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            fields_spec({"from": "tool", "tool": "nope"}, {"max_tokens": 100, "tools": [TOOL], "tool_choice": FORCED}),
            "spec.yaml: scorer.tool: 'nope' is not one of the tools sent (record_city)",
        ),
        (fields_spec({"tool": "nope"}, {"max_tokens": 100, "tools": [TOOL]}), "scorer.tool: 'nope' is not one of"),
        (fields_spec({"from": "tool"}), "spec.yaml: scorer.from: `tool` reads a tool call, but no `tools` are sent"),
        (fields_spec({"from": "tool", "tool": "record_city"}), "scorer.from: `tool` reads a tool call, but no `tools`"),
        (
            fields_spec({"tool": "other"}, {"max_tokens": 100, "tools": [TOOL, {**TOOL, "name": "other"}], "tool_choice": FORCED}),
            "scorer.tool: 'other' is never called: tool_choice forces 'record_city'",
        ),
        (
            fields_spec({"from": "tool"}, {"max_tokens": 100, "tools": [TOOL], "tool_choice": {"type": "none"}}),
            "scorer.from: `tool` reads a tool call, but tool_choice is none",
        ),
    ],
)
def test_a_fields_scorer_that_can_never_find_its_answer_is_a_spec_error(raw: dict, expected: str) -> None:
    message = error_of(raw)
    assert expected in message
    assert "\n" not in message


def test_tools_and_output_config_given_per_prompt_or_model_count_and_a_variant_without_them_is_named() -> None:
    with_tools = {**PROMPT, "params": {"tools": [TOOL], "tool_choice": FORCED}}
    parse_spec(fields_spec({"tool": "record_city"}, prompts={"p": with_tools}), source="spec.yaml")
    with_output = {**PROMPT, "params": {"output_config": OUTPUT}}
    parse_spec(fields_spec({"from": "json"}, prompts={"p": with_output}), source="spec.yaml")
    on_model = [{"name": "claude-haiku-4-5", "params": {"output_config": OUTPUT}}]
    parse_spec(fields_spec({"from": "json"}, models=on_model), source="spec.yaml")

    message = error_of(fields_spec({"tool": "record_city"}, prompts={"p": with_tools, "bare": PROMPT}))
    assert message.startswith("spec.yaml: scorer.from: `tool` reads a tool call, but no `tools` are sent with prompt 'bare'")
    two_models = ["claude-haiku-4-5", {"name": "claude-sonnet-4-6", "params": {"tools": [TOOL]}}]
    message = error_of(fields_spec({"from": "tool"}, models=two_models))
    assert "no `tools` are sent with prompt 'p' to model 'claude-haiku-4-5'" in message


@pytest.mark.parametrize(
    ("scorer", "params"),
    [
        ({"from": "text"}, {"max_tokens": 100}),  # a JSON object in free text needs nothing
        ({"from": "tool"}, {"max_tokens": 100, "tools": [TOOL]}),  # any tool
        ({"tool": "record_city"}, {"max_tokens": 100, "tools": [TOOL], "tool_choice": FORCED}),
        ({"tool": "record_city"}, {"max_tokens": 100, "tools": [TOOL], "tool_choice": {"type": "any"}}),
        ({"from": "json"}, {"max_tokens": 100, "output_config": OUTPUT}),
        ({"from": "json"}, {"max_tokens": 100}),  # a prompt may ask for a bare JSON reply
        ({}, {"max_tokens": 100}),  # `from` defaults to json
    ],
)
def test_fields_scorers_that_can_find_their_answer_are_accepted(scorer: dict, params: dict) -> None:
    assert parse_spec(fields_spec(scorer, params), source="spec.yaml").scorer.type == "fields"
