"""Honest results from the command line: repeats are not rows, failures are loud, every small
promise of the CLI holds when tried."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from evalrun.cli import cli
from evalrun.sim import SimConfig, running_server

from .conftest import write_mc_csv
from .fakes_process import PATIENCE_S, Lines, gated_server, wait_until


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_identical_repeats_give_the_evidence_of_one(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 40)
    prompts = (
        "models: [claude-sonnet-4-6]\nparams: {max_tokens: 16, temperature: 0}\nprompts:\n"
        "  plain:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "  careful:\n    system: Think.\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
    )
    one = invoke("run", str(write_spec(prompts, name="one.yaml")), "--sim", "--out", "one")
    three = invoke("run", str(write_spec(prompts + "repeats: 3\n", name="three.yaml")), "--sim", "--out", "three")
    assert one.exit_code == 0 and three.exit_code == 0, (one.output, three.output)
    s1, s3 = pd.read_csv(tmp_path / "one" / "summary.csv"), pd.read_csv(tmp_path / "three" / "summary.csv")
    assert list(s1["n"]) == list(s3["n"]) == [40, 40]
    assert list(s3["cells"]) == [120, 120]  # the cells are shown beside the rows
    for column in ("accuracy", "ci_low", "ci_high"):
        assert list(s3[column]) == pytest.approx(list(s1[column]))
    c1, c3 = pd.read_csv(tmp_path / "one" / "comparison.csv"), pd.read_csv(tmp_path / "three" / "comparison.csv")
    for column in ("n", "diff", "diff_ci_low", "diff_ci_high", "p_value"):
        assert c3.loc[0, column] == pytest.approx(c1.loc[0, column]), column


def test_power_figures_follow_the_normal_formula(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 200)
    spec = write_spec(
        "prompts:\n  a:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\n"
        "  b:\n    messages: [{role: user, content: \"Q: {question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\n"
    )
    estimate = json.loads(invoke("estimate", str(spec), "--sim", "--json", "--detect", "0.05").output)
    pair = estimate["power"]["pairs"][0]
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    sd = math.sqrt(0.30)  # the stated assumption: 30 % of rows discordant
    assert pair["source"] == "assumed" and pair["sd_diff"] == pytest.approx(sd)
    assert pair["min_detectable_difference"] == pytest.approx(z * sd / math.sqrt(200))
    assert pair["rows_needed"] == math.ceil((z * sd / 0.05) ** 2)
    # After a run, the discordance observed in it replaces the assumption.
    assert invoke("run", str(spec), "--sim").exit_code == 0
    observed = json.loads(invoke("estimate", str(spec), "--sim", "--json").output)["power"]["pairs"][0]
    assert observed["source"].startswith("observed on 200 rows")


def test_power_before_a_run_gives_the_worst_case_of_clustered_questions(write_spec, tmp_path: Path) -> None:
    # 60 rows in clusters of 1, 2, 3, …: the worst case (a cluster's questions right or wrong
    # together) has the design effect Σ m² / N.
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15]
    lines = [f"r{i},Q{i}?,a,b,c,d,A,p{k}" for i, k in enumerate(k for k, m in enumerate(sizes) for _ in range(m))]
    (tmp_path / "mc.csv").write_text("id,question,A,B,C,D,answer,passage\n" + "\n".join(lines) + "\n")
    spec = write_spec(
        "dataset: {path: mc.csv, id: id, cluster: passage}\n"
        "prompts:\n  a:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "  b:\n    messages: [{role: user, content: \"Q: {question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
    )
    pair = json.loads(invoke("estimate", str(spec), "--sim", "--json", "--detect", "0.1").output)["power"]["pairs"][0]
    deff = sum(m * m for m in sizes) / 60
    assert pair["clusters"] == 10 and pair["design_effect_worst"] == pytest.approx(deff)
    assert pair["min_detectable_difference_worst"] == pytest.approx(pair["min_detectable_difference"] * math.sqrt(deff))
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert pair["rows_needed_worst"] == math.ceil(deff * (z * math.sqrt(0.30) / 0.1) ** 2)


def test_a_custom_base_url_without_a_key_is_caught_before_sending(write_spec, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    result = invoke("run", str(write_spec()))
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY is not set" in result.output
    estimate = invoke("estimate", str(write_spec()), "--json")
    assert estimate.exit_code == 0 and json.loads(estimate.output)["input_source"] == "local approximation"


def test_a_run_against_a_standalone_simulator_is_marked_simulated(write_spec, monkeypatch, tmp_path: Path) -> None:
    with running_server(SimConfig()) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        assert invoke("run", str(write_spec()), "--out", "standalone").exit_code == 0
    assert "endpoint: simulator" in (tmp_path / "standalone" / "report.md").read_text()


def test_validate_names_the_folder_run_uses(write_spec) -> None:
    spec = str(write_spec())
    for flags in (["--sim"], ["--sim", "--limit", "3"], ["--sim", "--batch"]):
        shown = invoke("validate", spec, *flags).output.strip().splitlines()[-1]
        ran = [line for line in invoke("run", spec, *flags).output.splitlines() if line.startswith("report: ")]
        assert shown.removeprefix("run folder: ") == ran[0].removeprefix("report: "), flags


def test_compare_follows_the_spec_and_says_when_there_is_nothing(write_spec) -> None:
    spec = write_spec(
        "prompts:\n  zeta:\n    messages: [{role: user, content: \"{question}\"}]\n"
        "  alpha:\n    messages: [{role: user, content: \"Q: {question}\"}]\n"
    )
    invoke("run", str(spec), "--sim", "--out", "out")
    table = invoke("compare", "out", "--by", "prompt")
    assert table.exit_code == 0 and "| claude-haiku-4-5 | zeta | alpha |" in table.output
    models = invoke("compare", "out", "--by", "model")
    assert models.exit_code == 0 and "nothing to compare" in models.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--p500", "2"], "--p500"), (["--port", "99999"], "--port"), (["--rpm", "-5"], "--rpm")],
)
def test_bad_simulator_arguments_are_one_line(args: list[str], message: str) -> None:
    result = invoke("sim", *args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = invoke("sim", "--port", str(port))
    assert result.exit_code == 2 and "already in use" in result.output
    assert "listens" not in result.output and "simulator on" not in result.output


def test_one_ctrl_c_waits_only_for_the_requests_in_flight(tmp_path: Path, write_spec) -> None:
    from evalrun.reports.build import load_results

    write_mc_csv(tmp_path / "mc.csv", 100)
    # The first request (it goes alone) is answered, every later one waits at the gate: Ctrl-C
    # comes once all four slots are in flight, and the gate opens only after the run has said it
    # stops sending (no guess at how long either takes).
    with gated_server(SimConfig(), open_for=1) as (url, gate):
        env = {**os.environ, "ANTHROPIC_BASE_URL": url, "PYTHONUNBUFFERED": "1"}
        run = subprocess.Popen([sys.executable, "-m", "evalrun", "run", str(write_spec()), "--out", "ctrl-c",
                                "--concurrency", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
        err = Lines(run.stderr)  # type: ignore[arg-type]
        wait_until(lambda: gate.held == 4, "four requests in flight")
        run.send_signal(signal.SIGINT)
        err.wait_for("stopping: no new requests")
        in_flight = gate.received
        gate.release()
        run.wait(timeout=PATIENCE_S)
        text = err.text()
    assert run.returncode == 130, text
    assert in_flight == gate.received == 1 + 4  # nothing new was started after Ctrl-C
    assert (load_results(tmp_path / "ctrl-c")["status"] == "ok").sum() == 1 + 4  # what was in flight was kept
    assert "Traceback" not in text
    assert "interrupted" in text and "run the same command again" in text
