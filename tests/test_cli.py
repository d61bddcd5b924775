"""The commands as a user runs them: files written, lines printed, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.sim import SimConfig, running_server

from .conftest import write_mc_csv, write_mc_spec
from .fakes_process import PATIENCE_S, Lines, gated_server, wait_until

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_on_the_simulator_writes_every_report(write_spec, tmp_path: Path) -> None:
    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6]\n")
    result = invoke("run", str(spec), "--sim", "--out", "out")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "report: out"
    for name in ("summary.csv", "results.csv", "report.md", "report.html", "store.sqlite"):
        assert (tmp_path / "out" / name).exists(), name
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 12
    assert set(results["answer_mode"]) == {"prefill", "structured"}
    assert "endpoint: simulator" in (tmp_path / "out" / "report.md").read_text()
    again = invoke("run", str(spec), "--sim", "--out", "out")
    assert "12 already stored" in again.output
    rebuilt = invoke("report", "out")
    assert rebuilt.exit_code == 0
    assert pd.read_csv(tmp_path / "out" / "results.csv").equals(results)


def test_default_folder_is_stable_so_a_rerun_resumes(write_spec) -> None:
    spec = write_spec()
    first = invoke("run", str(spec), "--sim").output.strip().splitlines()[-1]
    second = invoke("run", str(spec), "--sim").output.strip().splitlines()[-1]
    assert first == second and first.startswith("report: reports/mc/")


def test_validate_prints_modes_and_the_first_body(write_spec) -> None:
    result = invoke("validate", str(write_spec("models: [claude-haiku-4-5, claude-opus-4-7]\n")))
    assert result.exit_code == 0
    assert "plain: answer_mode=prefill" in result.output
    assert "plain: answer_mode=structured" in result.output
    assert '"content": "The answer is ("' in result.output
    assert "claude-opus-4-7: refuses `temperature`: not sent" in result.output


def test_estimate_json_matches_the_run(write_spec, tmp_path: Path) -> None:
    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6]\n")
    estimate = json.loads(invoke("estimate", str(spec), "--sim", "--json").output)
    assert estimate["requests"] == 12
    invoke("run", str(spec), "--sim", "--out", "out")
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert estimate["input_tokens"] == results["input_tokens"].sum()
    assert estimate["cost_usd"] == pytest.approx(results["cost_usd"].sum(), rel=0.05)
    assert {row["model"] for row in estimate["by_cell"]} == {"claude-haiku-4-5", "claude-sonnet-4-6"}


def test_compare_writes_the_paired_table(write_spec, tmp_path: Path) -> None:
    spec = write_spec(
        "prompts:\n"
        "  a:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\n"
        "  b:\n    messages: [{role: user, content: \"Q: {question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"Answer: (\"\n"
    )
    invoke("run", str(spec), "--sim", "--out", "out")
    result = invoke("compare", "out", "--by", "prompt")
    assert result.exit_code == 0
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(table[["a", "b", "n"]].iloc[0]) == ["a", "b", 6]


BAD_SPECS = {
    "nmae: x\n": "nmae: unknown key (did you mean 'name'?)",
    "models: [claude-haiku-4-5\n": "YAML syntax error at line",
    "dataset: missing.csv\n": "missing.csv: no such dataset file",
    "params: {max_tokens: 0}\n": "params.max_tokens: must be a whole number ≥ 1",
    "budget_usd: -1\n": "budget_usd: Input should be greater than 0",
    "scorer: {type: choice, target: gold}\n": "scorer.target column 'gold' is not in the file",
    'prompts:\n  p:\n    messages: [{role: user, content: "{qestion}"}]\n': "placeholder {qestion} is not a column",
    # Accepted silently once; each is now one line naming what is wrong.
    "name: mc\nname: other\n": "duplicate key 'name' (first written on line",
    'prompts:\n  p:\n    messages: [{role: user, content: "{question}"}]\n  p:\n    messages: [{role: user, content: "x"}]\n':
        "duplicate key 'p'",
    "budget_usd: .nan\n": "budget_usd: Input should be a finite number",
    "repeats: 1000000000\n": "repeats: Input should be less than or equal to 1000",
    "models: [{name: claude-haiku-4-5, base_url: 'not a url'}]\n": "models.0.base_url: 'not a url' is not an http(s) URL",
    "model_table:\n  claude-haiku-4-5: {refuses: 5}\n": "models.claude-haiku-4-5.refuses: expected a list of names, got 5",
    "model_table:\n  x: {price: {input: nan, output: 1}}\n": "price.input: expected a number ≥ 0",
    "cache: sometimes\n": "cache: Input should be 'auto', 'off', '5m' or '1h'",
    "scorer: {type: fields, from: text, fields: {city: nope}}\n": "scorer.fields.city column 'nope' is not in the file",
    "scorer: {type: judge, model: claude-haiku-4-5, rubric: '{nope} {response}'}\n": "placeholder {nope} is neither",
}


@pytest.mark.parametrize(("body", "message"), list(BAD_SPECS.items()))
def test_bad_specs_get_one_clear_line(write_spec, body: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["run", str(write_spec(body)), "--sim"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--budget", "nan"], "--budget"), (["--budget", "inf"], "--budget"), (["--deadline", "soon"], "--deadline")],
)
def test_bad_flags_get_one_clear_line(write_spec, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["run", str(write_spec()), "--sim", *flags])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_binary_model_table_file_is_one_line(write_spec, tmp_path: Path) -> None:
    (tmp_path / "table.yaml").write_bytes(bytes(range(256)))
    result = CliRunner().invoke(cli, ["validate", str(write_spec("model_table: table.yaml\n"))])
    assert result.exit_code == 2 and "not UTF-8 text" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("key", "ok"), [("sk-test-secret-key-0123456789\n", True), ("sk-tëst", False)])
def test_keys_with_stray_whitespace_work_and_unsendable_ones_are_one_line(write_spec, monkeypatch, key: str, ok: bool) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/v1")
    result = CliRunner().invoke(cli, ["run", str(write_spec()), "--request-timeout", "1s", "--max-retries", "0"])
    if ok:
        assert result.exit_code != 2 and "cannot be sent" not in result.output  # the key went out
    else:
        assert result.exit_code == 2 and "cannot be sent in an HTTP header" in result.output
        assert "tëst" not in result.output


def test_a_missing_key_is_caught_before_any_request(write_spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = CliRunner().invoke(cli, ["run", str(write_spec())])
    assert result.exit_code == 2
    assert "ANTHROPIC_API_KEY is not set" in result.output


def test_budget_stops_with_exit_code_3_and_resumes(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 80)
    spec = write_spec("models: [claude-sonnet-4-6]\n")
    full = json.loads(invoke("estimate", str(spec), "--sim", "--json").output)["cost_usd"]
    stopped = CliRunner().invoke(cli, ["run", str(spec), "--sim", "--out", "out", "--budget", str(full * 0.4)])
    assert stopped.exit_code == 3, stopped.output
    assert "budget" in stopped.output
    partial = pd.read_csv(tmp_path / "out" / "results.csv")
    spent = partial["cost_usd"].sum()
    assert 0.5 * full * 0.4 <= spent <= full * 0.4
    done = invoke("run", str(spec), "--sim", "--out", "out", "--budget", str(full * 2))
    assert done.exit_code == 0
    final = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (final["status"] == "ok").all()


def _stored(folder: Path) -> int:
    import sqlite3

    try:
        db = sqlite3.connect(folder / "store.sqlite", timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM responses WHERE status = 'ok'").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _run_against(url: str, spec: Path, out: str, **popen: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ANTHROPIC_BASE_URL": url, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "evalrun", "run", str(spec), "--out", out, "--concurrency", "4"]
    return subprocess.Popen(command, env=env, **popen)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_runs_resume_to_the_same_results(tmp_path: Path, sig: int) -> None:
    write_mc_csv(tmp_path / "big.csv", 200)
    spec = write_mc_spec(tmp_path / "big.yaml", name="big", dataset="big.csv")
    # The first 40 requests are answered, the rest wait at the gate: the signal finds the run
    # mid-way however slow the machine is (it used to race a run that could finish first).
    with gated_server(SimConfig(), open_for=40) as (url, gate):
        process = _run_against(url, spec, "killed", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = Lines(process.stderr)  # type: ignore[arg-type]
        wait_until(lambda: _stored(tmp_path / "killed") >= 40 and gate.held >= 1, "40 stored, the rest in flight")
        process.send_signal(sig)
        if sig == signal.SIGINT:
            err.wait_for("stopping: no new requests")
            gate.release()  # the requests in flight are answered; nothing new is sent
        process.wait(timeout=PATIENCE_S)
    assert process.returncode != 0
    assert "Traceback" not in err.text()
    # A fresh simulator per run, as `--sim` would start: its answers depend only on the request.
    for out in ("killed", "clean"):
        with running_server(SimConfig()) as url:
            again = _run_against(url, spec, out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
    columns = ["model", "prompt", "row_id", "answer", "correct", "input_tokens", "output_tokens"]
    killed = pd.read_csv(tmp_path / "killed" / "results.csv")[columns]
    assert killed.equals(pd.read_csv(tmp_path / "clean" / "results.csv")[columns])
    assert len(killed) == 200


def _example_with(tmp_path: Path, name: str, edit) -> Path:
    """An example experiment copied beside its dataset, its text changed by `edit`."""
    import shutil

    shutil.copytree(ROOT / "datasets", tmp_path / "datasets")
    (tmp_path / "experiments").mkdir()
    text = (ROOT / "experiments" / f"{name}.yaml").read_text(encoding="utf-8")
    changed = edit(text)
    assert changed != text
    spec = tmp_path / "experiments" / f"{name}.yaml"
    spec.write_text(changed, encoding="utf-8")
    return spec


def _without_params(text: str, *keys: str) -> str:
    """The spec text without the top-level `params` entries `keys` (each with its nested lines)."""
    out: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("  ") and not line.startswith("   "):
            dropping = line.strip().split(":")[0] in keys
        elif not line.startswith("   "):
            dropping = False
        if not dropping:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(
    ("example", "edit", "message"),
    [
        # (a) the spec's tools and tool_choice force record_city; the scorer waits for a tool no reply calls
        ("cities-tool", lambda t: t.replace("  tool: record_city\n", "  tool: nope\n"),
         "scorer.tool: 'nope' is not one of the tools sent (record_city)"),
        # (b) a tool call is read, but the spec sends no tools
        ("cities-tool", lambda t: _without_params(t, "tools", "tool_choice"),
         "scorer.from: `tool` reads a tool call, but no `tools` are sent"),
    ],
)  # fmt: skip
def test_a_fields_scorer_that_can_never_match_is_refused_by_validate_and_run(
    tmp_path: Path, example: str, edit, message: str
) -> None:
    spec = _example_with(tmp_path, example, edit)
    for command in (["validate", str(spec)], ["run", str(spec), "--sim", "--out", "out"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {spec}: {message}"), result.output
    assert not (tmp_path / "out").exists()  # nothing was sent


def test_a_fields_scorer_reading_json_from_free_text_needs_no_output_config(tmp_path: Path) -> None:
    spec = _example_with(tmp_path, "cities-json", lambda t: _without_params(t, "output_config").replace("from: json", "from: text"))
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert "output_config" not in spec.read_text()


@pytest.mark.parametrize("command", ["report", "compare", "runs"])
@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_folder_that_is_not_there_is_bad_input_for_every_folder_command(tmp_path: Path, command: str, what: str) -> None:
    folder = tmp_path / "nothing"
    if what == "a file":
        folder.write_text("not a folder\n")
    result = CliRunner().invoke(cli, [command, str(folder)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], result.output


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("content", [None, "report.md"])
def test_a_folder_that_is_not_a_run_folder_is_bad_input(tmp_path: Path, command: str, content: str | None) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    if content:
        (folder / content).write_text("# an old report without its store\n")
    result = CliRunner().invoke(cli, [command, str(folder)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {folder}: not a run folder: no store.sqlite here (give reports/<name>/<run>/)"
    assert not (folder / "store.sqlite").exists()  # nothing was created in it
