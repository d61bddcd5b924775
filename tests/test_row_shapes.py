"""Datasets as users have them, end to end against a fake API: JSONL and Parquet rows with nested
fields, lettered option lists, answer indexes, per-row conversations and documents — every
request exactly as the data says, and the same results from either file."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import analyze, open_run
from tests.fakes_datasets import ROWS, RecordingAPI, write_jsonl, write_parquet

MC_SPEC = """\
name: shapes
dataset: {{path: {data}, id: id}}
models: [claude-haiku-4-5]
params: {{max_tokens: 5}}
prompts:
  options:
    system: "Answer with a letter. Source: {{doc.title}} ({{doc.year}})."
    messages:
      - {{role: user, content: "{{question}}\\n{{choices|options}}"}}
    prefill: "The answer is ("
scorer: {{type: choice, target_index: answer_index}}
"""

CONVERSATION_SPEC = """\
name: chat
dataset: {{path: {data}, id: id}}
models: [claude-haiku-4-5]
params: {{max_tokens: 5}}
prompts:
  alone:
    messages: "{{messages}}"
  framed:
    messages:
      - {{role: user, content: "Read this conversation."}}
      - {{role: assistant, content: "Ready."}}
      - "{{messages}}"
      - {{role: user, content: "Options:\\n{{choices|options}}"}}
scorer: {{type: choice, target_index: answer_index}}
"""


async def _run(tmp_path: Path, spec_text: str, data: Path, name: str) -> tuple[RecordingAPI, pd.DataFrame]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(spec_text.format(data=data.name), encoding="utf-8")
    api = RecordingAPI()
    await run_prepared(prepare(spec, out=tmp_path / f"out-{name}"), transport=api.transport())
    results = pd.read_csv(tmp_path / f"out-{name}" / "results.csv", keep_default_na=False)
    return api, results


def _by_question(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {next(r["id"] for r in ROWS if r["question"] in json.dumps(b)): b for b in bodies}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
async def test_options_are_lettered_from_each_rows_list_and_the_index_is_the_gold_letter(tmp_path: Path, kind: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS) if kind == "jsonl" else write_parquet(tmp_path / "d.parquet", ROWS)
    api, results = await _run(tmp_path, MC_SPEC, data, kind)
    bodies = _by_question(api.bodies)
    assert bodies["r1"]["messages"][0]["content"] == (
        "Which river is the longest?\n(A) Danube\n(B) Rhine\n(C) Nile\n(D) Seine\n(E) Volga"
    )
    assert bodies["r2"]["messages"][0]["content"].endswith("(C) Kangchenjunga\n(D) Lhotse")
    assert "(E)" not in bodies["r2"]["messages"][0]["content"]  # a four-option row has four letters
    assert bodies["r3"]["system"] == "Answer with a letter. Source: Lakes (2023)."
    assert bodies["r3"]["messages"][-1] == {"role": "assistant", "content": "The answer is ("}
    # answer_index 2 → C, 0 → A, 4 → E; the fake answers C, B, E: a five-option row's E is read and right.
    assert dict(zip(results["row_id"], results["target"], strict=True)) == {"r1": "C", "r2": "A", "r3": "E"}
    assert dict(zip(results["row_id"], results["answer"], strict=True)) == {"r1": "C", "r2": "B", "r3": "E"}
    assert list(results["correct"].astype(str)) == ["True", "False", "True"]
    store, settings = open_run(tmp_path / f"out-{kind}", readonly=True)
    try:  # the report's letter tables run to E, where the rows' options do
        assert analyze(store, settings, folder=tmp_path / f"out-{kind}").choices == list("ABCDE")
    finally:
        store.close()


@pytest.mark.anyio
async def test_structured_output_enum_follows_the_rows_option_count(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    api, _ = await _run(tmp_path, MC_SPEC.replace("scorer:", "answer_mode: structured\nscorer:"), data, "structured")
    bodies = _by_question(api.bodies)
    enum = {k: b["output_config"]["format"]["schema"]["properties"]["answer"]["enum"] for k, b in bodies.items()}
    assert enum == {"r1": list("ABCDE"), "r2": list("ABCD"), "r3": list("ABCDE")}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
async def test_a_rows_conversation_is_sent_turn_for_turn_where_the_variant_puts_it(tmp_path: Path, kind: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", ROWS) if kind == "jsonl" else write_parquet(tmp_path / "d.parquet", ROWS)
    api, results = await _run(tmp_path, CONVERSATION_SPEC, data, f"chat-{kind}")
    assert len(api.bodies) == 6 and set(results["status"]) == {"ok"}
    for row in ROWS:
        sent = [b for b in api.bodies if row["question"] in json.dumps(b)]
        alone = next(b for b in sent if b["messages"][0]["content"] != "Read this conversation.")
        framed = next(b for b in sent if b["messages"][0]["content"] == "Read this conversation.")
        assert alone["messages"] == row["messages"]
        assert framed["messages"][:2] == [
            {"role": "user", "content": "Read this conversation."},
            {"role": "assistant", "content": "Ready."},
        ]
        assert framed["messages"][2:-1] == row["messages"]
        letters = "ABCDE"[: len(row["choices"])]
        assert framed["messages"][-1]["content"].splitlines()[1:] == [
            f"({letter}) {option}" for letter, option in zip(letters, row["choices"], strict=True)
        ]


@pytest.mark.anyio
async def test_the_parquet_copy_gives_the_same_results_as_the_jsonl(tmp_path: Path) -> None:
    _, from_jsonl = await _run(tmp_path, MC_SPEC, write_jsonl(tmp_path / "d.jsonl.gz", ROWS), "j")
    _, from_parquet = await _run(tmp_path, MC_SPEC, write_parquet(tmp_path / "d.parquet", ROWS), "p")
    columns = ["row_id", "prompt", "answer", "target", "correct", "status", "response_text"]
    pd.testing.assert_frame_equal(from_jsonl[columns], from_parquet[columns])


@pytest.mark.anyio
async def test_block_content_turns_and_documents_are_sent_as_the_api_takes_them(tmp_path: Path) -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    (tmp_path / "memo.pdf").write_bytes(pdf)
    (tmp_path / "notes.txt").write_text("Plain notes.", encoding="utf-8")
    rows = [
        {"id": "a", "file": "memo.pdf", "turns": [{"role": "user", "content": [{"type": "text", "text": "Which river is the longest?"}]}]},
        {"id": "b", "file": "notes.txt", "turns": [{"role": "user", "content": "Which lake is the deepest?"}]},
    ]
    data = write_jsonl(tmp_path / "docs.jsonl", rows)
    spec = """\
name: docs
dataset: {{path: {data}, id: id}}
models: [claude-haiku-4-5]
params: {{max_tokens: 5}}
prompts:
  p:
    messages:
      - role: user
        content:
          - {{type: document, path: "{{file}}", citations: true, title: "{{id}}"}}
          - {{type: text, text: "Use the document."}}
      - {{role: assistant, content: "Understood."}}
      - "{{turns}}"
scorer: {{type: contains, target: id}}
"""
    api, results = await _run(tmp_path, spec, data, "docs")
    by_id = {b["messages"][0]["content"][0]["title"]: b for b in api.bodies}
    document = by_id["a"]["messages"][0]["content"][0]
    assert document == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()},
        "title": "a",
        "citations": {"enabled": True},
    }
    assert by_id["b"]["messages"][0]["content"][0]["source"] == {"type": "text", "media_type": "text/plain", "data": "Plain notes."}
    assert by_id["a"]["messages"][2:] == rows[0]["turns"]
    assert set(results["status"]) == {"ok"}


def test_a_malformed_jsonl_record_is_named_by_its_line_with_exit_2(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in ROWS]
    lines.insert(2, '{"id": "r9", "question": "broken",')  # line 3
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "s.yaml").write_text(MC_SPEC.format(data="d.jsonl"), encoding="utf-8")
    for command in ("validate", "run"):
        result = CliRunner().invoke(cli, [command, str(tmp_path / "s.yaml"), "--sim"] if command == "run" else [command, str(tmp_path / "s.yaml")])
        assert result.exit_code == 2, result.output
        assert "d.jsonl: line 3: not valid JSON" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answer_index": 5}, r"line 2: field 'answer_index' \(scorer.target_index\) holds 5, which is not a 0-based index into the 5 options"),
        ({"answer_index": "two"}, "line 2: field 'answer_index'"),
        ({"choices": "Nile"}, r"line 2: field 'choices' is str, not a list"),
        ({"doc": {"name": "x"}}, r"line 2: prompts.options: no field 'doc.title'"),
    ],
)
def test_a_bad_row_value_is_named_by_line_and_field_with_exit_2(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    rows = [ROWS[0], {**ROWS[2], **row}]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "s.yaml").write_text(MC_SPEC.format(data="d.jsonl"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output), result.output


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([{"role": "system", "content": "x"}], r"line 1: prompts.alone: field 'messages', turn 0: role must be 'user' or 'assistant'"),
        ([{"role": "user", "content": [{"type": "image"}]}], r"field 'messages', turn 0, block 0: a image block needs a `source`"),
        ([{"role": "assistant", "content": "Hi"}], "must start with a user turn"),
        ("not turns", "field 'messages' is str, not a list"),
    ],
)
def test_a_bad_row_conversation_is_named_before_anything_is_sent(tmp_path: Path, turns: Any, message: str) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{**ROWS[0], "messages": turns}])
    (tmp_path / "s.yaml").write_text(CONVERSATION_SPEC.format(data="d.jsonl"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output), result.output


@pytest.mark.anyio
async def test_a_rows_system_prompt_and_tools_are_sent_as_the_row_holds_them(tmp_path: Path) -> None:
    weather = {"name": "weather", "description": "Look up the weather.", "input_schema": {"type": "object", "properties": {}}}
    clock = {"name": "clock", "input_schema": {"type": "object"}}
    rows = [
        {"id": "a", "sys": [{"type": "text", "text": "You are terse."}], "tools": [weather], "q": "Which river is the longest?"},
        {"id": "b", "sys": "Plain system text.", "tools": [weather, clock], "q": "Which lake is the deepest?"},
    ]
    spec = """\
name: tools
dataset: {{path: {data}, id: id}}
models: [claude-haiku-4-5]
params:
  max_tokens: 5
  tools: [{{name: fixed, input_schema: {{type: object}}}}, "{{tools}}"]
prompts:
  p:
    system: "{{sys}}"
    messages: [{{role: user, content: "{{q}}"}}]
scorer: {{type: contains, target: id}}
"""
    api, results = await _run(tmp_path, spec, write_jsonl(tmp_path / "t.jsonl", rows), "tools")
    by_row = {("a" if "river" in json.dumps(b) else "b"): b for b in api.bodies}
    assert by_row["a"]["system"] == [{"type": "text", "text": "You are terse."}]
    assert by_row["b"]["system"] == "Plain system text."
    assert [t["name"] for t in by_row["a"]["tools"]] == ["fixed", "weather"]
    assert by_row["b"]["tools"][1:] == [weather, clock]
    assert set(results["status"]) == {"ok"}


def test_a_bad_row_tool_is_named_before_anything_is_sent(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "q": "x", "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]}])
    (tmp_path / "s.yaml").write_text(
        "name: t\ndataset: {path: t.jsonl, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 5, tools: \"{tools}\"}\n"
        "prompts:\n  p:\n    messages: [{role: user, content: \"{q}\"}]\nscorer: {type: contains, target: id}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2, result.output
    assert "t.jsonl: line 1: prompts.p.params.tools: field 'tools', tool 0: `name` must be" in result.output


@pytest.mark.parametrize(("amount", "error"), [
    (12.5, None),
    ("1,400", None),
    ("about twelve", r"d.jsonl: line 1: column 'gold.amount' holds 'about twelve', not a number"),
    # The check reads numbers as the scorer does: 'nan' passed float() but was never compared as a number.
    ("nan", r"d.jsonl: line 1: column 'gold.amount' holds 'nan', not a number"),
])  # fmt: skip
def test_a_nested_numeric_gold_value_is_checked_as_a_number_before_sending(tmp_path: Path, amount: Any, error: str | None) -> None:
    from evalrun.errors import DatasetError

    write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "q": "How much?", "gold": {"amount": amount}}])
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: gold\ndataset: {path: d.jsonl, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 50}\n"
        "prompts: {p: {messages: [{role: user, content: '{q}'}]}}\n"
        "scorer: {type: fields, fields: {amount: {column: gold.amount, tolerance: 0.01}}}\n",
        encoding="utf-8",
    )
    if error is None:
        prepare(spec, out=tmp_path / "out")
    else:
        with pytest.raises(DatasetError, match=error):
            prepare(spec, out=tmp_path / "out")
