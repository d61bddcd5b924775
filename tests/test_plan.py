from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalrun.errors import SpecError, TemplateError
from evalrun.execute import prepare
from evalrun.store.run_store import Learned


def cells(plan):
    """(cell, body) of every cell of a plan."""
    return [(cell, json.loads(request.body_json)) for cell, request in plan.cells()]


def test_modes_and_parameters_follow_the_model_table(write_spec) -> None:
    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6, claude-opus-4-7, claude-opus-5]\n")
    plan = prepare(spec).plan
    bodies = {c.model: body for c, body in cells(plan) if c.row_id == "q1"}
    haiku, sonnet, opus47, opus5 = (bodies[m] for m in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7", "claude-opus-5"))
    assert haiku["messages"][-1] == {"role": "assistant", "content": "The answer is ("}
    assert haiku["max_tokens"] == 1 and haiku["temperature"] == 0
    assert sonnet["messages"][-1]["role"] == "user"
    assert sonnet["output_config"]["format"]["schema"]["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]
    assert sonnet["temperature"] == 0 and sonnet["max_tokens"] >= 16
    assert "temperature" not in opus47 and "temperature" not in opus5
    assert any("claude-opus-4-7: refuses `temperature`" in w for w in plan.warnings)


def test_api_version_2026_removes_sampling_parameters(write_spec) -> None:
    plan = prepare(write_spec("api_version: '2026-10-21'\n")).plan
    assert all("temperature" not in body for _, body in cells(plan))


def test_forced_prefill_on_a_model_that_refuses_it_is_a_spec_error(write_spec) -> None:
    with pytest.raises(SpecError, match="does not accept prefill"):
        prepare(write_spec("models: [claude-sonnet-4-6]\nanswer_mode: prefill\n"))


def test_instruction_mode_appends_the_instruction(write_spec) -> None:
    plan = prepare(write_spec("models: [claude-sonnet-4-6]\nanswer_mode: instruction\n")).plan
    content = cells(plan)[0][1]["messages"][-1]["content"]
    assert content.endswith("Answer with only the letter of the correct option (A, B, C or D).")


def test_learned_refusals_replan_an_unknown_model(write_spec) -> None:
    prepared = prepare(write_spec("models: [my-local-model]\n"))
    assert cells(prepared.plan)[0][0].answer_mode == "prefill"
    replanned = prepared.replan({"my-local-model": Learned(prefill_refused=True, refused_params=frozenset({"temperature"}))})
    cell, body = cells(replanned)[0]
    assert cell.answer_mode == "structured"
    assert "temperature" not in body


def test_keys_are_stable_and_depend_on_the_body_and_repeat(write_spec) -> None:
    first = prepare(write_spec("repeats: 2\n"))
    second = prepare(write_spec("repeats: 2\n"))
    keys = [c.request_key for c, _ in cells(first.plan)]
    assert keys == [c.request_key for c, _ in cells(second.plan)]
    assert len(set(keys)) == len(keys) == 12
    assert first.folder == second.folder and first.fingerprint(first.plan) == second.fingerprint(second.plan)


def test_placeholder_that_is_not_a_column(write_spec) -> None:
    spec = write_spec('prompts:\n  p:\n    messages:\n      - {role: user, content: "{questoin}"}\n')
    with pytest.raises(TemplateError, match=r"prompts.p.messages.0.content: placeholder \{questoin\} is not a column"):
        prepare(spec)


def test_target_not_a_choice_names_the_line(write_spec, tmp_path: Path) -> None:
    (tmp_path / "mc.csv").write_text("id,question,A,B,C,D,answer\nq1,Q,a,b,c,d,E\n")
    with pytest.raises(Exception, match=r"line 2: column 'answer' holds 'E'"):
        prepare(write_spec())


def test_model_table_inline_declares_a_local_model(write_spec) -> None:
    spec = write_spec(
        "models: [{name: my-llama, base_url: 'http://localhost:9999'}]\n"
        "model_table:\n  my-llama: {prefill: false, refuses: [temperature], price: {input: 0, output: 0}}\n"
    )
    plan = prepare(spec).plan
    cell, body = cells(plan)[0]
    assert cell.answer_mode == "structured"
    assert "temperature" not in body
    assert not any("no known price" in w for w in plan.warnings)


def test_model_table_rejects_unknown_properties(write_spec) -> None:
    with pytest.raises(SpecError, match=r"models.my-llama: unknown key 'prefil'"):
        prepare(write_spec("models: [my-llama]\nmodel_table:\n  my-llama: {prefil: true}\n"))


def test_the_run_folder_does_not_depend_on_the_hash_seed(write_spec) -> None:
    import subprocess
    import sys

    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6, claude-opus-4-7]\n")
    code = f"from evalrun.execute import prepare; print(prepare({str(spec)!r}).folder)"
    folders = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3", "4", "5")
    }
    assert len(folders) == 1, folders
