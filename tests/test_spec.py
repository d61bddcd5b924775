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
