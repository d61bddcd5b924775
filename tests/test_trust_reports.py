"""Round-3 trust fixes in scoring, reports and spec checks (#21.1, 4, 5, 12, 13, 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results
from evalrun.results.scoring import Grader, Reply, make_scorer
from evalrun.spec_scorers import JudgeScorer

from .test_scorers_reply import GradingFake, judged_spec


# -- #21.12 a grader reply with no usable grade is a grading error, never a wrong answer --------
@pytest.mark.parametrize("text", ["lorem ipsum", "I cannot grade this.", "<grade>7</grade>", ""])
def test_a_grader_reply_without_a_usable_grade_is_an_error_not_a_wrong_answer(text: str) -> None:
    scorer = make_scorer(JudgeScorer(type="judge", model="m", rubric="r {response}", scale=5))
    score = scorer(Reply(text="x", grader=Grader(status="ok", text=text)), "", {})
    assert score.status == "error" and not score.correct and score.answer is None
    assert "no usable grade" in (score.explanation or "")


@pytest.mark.anyio
async def test_an_unusable_grade_leaves_the_accuracy_of_the_graded_rows(tmp_path: Path) -> None:
    fake = GradingFake()

    def handle(request: httpx.Request) -> httpx.Response:
        reply = fake.handle(request)
        if b"<response>" in request.content and b"cwm" in request.content:
            body = json.loads(reply.content)
            body["content"][0]["text"] = "I would rather not say."  # no grade at all
            return httpx.Response(200, json=body)
        return reply

    await run_prepared(prepare(judged_spec(tmp_path), out=tmp_path / "out"), transport=httpx.MockTransport(handle))
    results = load_results(tmp_path / "out").set_index("row_id")
    assert results.loc["r2", "status"] == "error"
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    # r1 was graded (fail by the fake's rule); r2's grading failed: 1 answered row, not 2 wrong ones.
    assert summary.loc[0, "accuracy"] == pytest.approx(results.loc["r1", "correct"] * 1.0)
    assert summary.loc[0, "n"] == 1


# -- #21.1 the estimate under an explicit cache TTL ---------------------------------------------
def two_shot_spec(tmp_path: Path, rows: int) -> Path:
    """A few-shot prefix of about 1,800 tokens marked `cache: 5m`: below haiku 4.5's 4,096."""
    example = " ".join(f"word{i}" for i in range(900))
    lines = ["id,question,A,B,C,D,answer"]
    lines += [f"r{i},Which option is number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}" for i in range(rows)]
    (tmp_path / "mc.csv").write_text("\n".join(lines) + "\n")
    shots = "".join(
        f"      - {{role: user, content: \"Example {k}: {example} (A) x (B) y (C) z (D) w\"}}\n"
        f"      - {{role: assistant, content: \"The answer is ({'ABCD'[k % 4]})\"}}\n"
        for k in range(2)
    )
    spec = tmp_path / "two-shot.yaml"
    spec.write_text(
        "name: two-shot\ndataset: {path: mc.csv, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 1}\n"
        "prompts:\n  two-shot:\n    cache: 5m\n    system: Answer with the letter of the correct option.\n"
        "    messages:\n" + shots
        + "      - {role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}\n"
        "    prefill: \"The answer is (\"\n"
        "scorer: {type: choice, target: answer}\n"
    )
    return spec


def cli_run(*args: str) -> Any:
    from click.testing import CliRunner

    from evalrun.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_short_prefix_marked_5m_is_not_cached_and_the_estimate_matches_the_bill(tmp_path: Path) -> None:
    spec = two_shot_spec(tmp_path, 30)
    note = "marked for caching (cache: 5m) but below the 4,096-token minimum"
    checked = cli_run("validate", str(spec), "--sim")
    assert checked.exit_code == 0 and note in checked.output
    estimated = cli_run("estimate", str(spec), "--sim", "--json")
    assert estimated.exit_code == 0 and note in estimated.stderr
    estimate = json.loads(estimated.stdout)
    assert estimate["cache_write_tokens"] == 0 and estimate["cache_read_tokens"] == 0
    ran = cli_run("run", str(spec), "--sim", "--out", str(tmp_path / "out"))
    assert ran.exit_code == 0, ran.output
    results = load_results(tmp_path / "out")
    assert results["cache_read_input_tokens"].sum() == 0 and results["cache_creation_input_tokens"].sum() == 0
    assert estimate["cost_usd"] == pytest.approx(results["cost_usd"].sum(), rel=0.02)
    assert note in (tmp_path / "out" / "report.md").read_text()


# -- #21.14 what was accepted without a word ------------------------------------------------------
SPEC_ERRORS = {
    "params: {max_tokens: 1, temperature: hot}\n": "spec.yaml: params.temperature: must be a number from 0 to 1, got 'hot'",
    "params: {max_tokens: 1, temperature: 5}\n": "spec.yaml: params.temperature: must be a number from 0 to 1, got 5",
    "api_version: 1999-01-01\n": "API version '1999-01-01' is not one the model table knows (2023-06-01, 2026-10-21)",
    "api_version: soon\n": "spec.yaml: api_version: 'soon' is not an API version (a date such as 2023-06-01)",
    "params: {max_tokens: 1, tools: [{name: a, input_schema: {type: object}}], tool_choice: {type: tool, name: b}}\n":
        "spec.yaml: tool_choice: forces 'b', which is not one of the tools sent (a)",
    "params: {max_tokens: 1, tool_choice: {type: tool, name: b}}\n":
        "spec.yaml: tool_choice: forces 'b', which is not one of the tools sent (no tools are sent)",
    "scorer: {type: choice, target: answer, choices: []}\n": "spec.yaml: scorer: choices is empty",
    "models: [{name: claude-haiku-4-5, base_url: 'http://user:hunter2@localhost:9/'}]\n":
        "spec.yaml: models.0.base_url: holds a user name or password",
}  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), list(SPEC_ERRORS.items()))
def test_values_the_api_would_refuse_are_spec_errors(write_spec: Any, body: str, expected: str) -> None:
    spec = write_spec(body)
    checked = cli_run("validate", str(spec))
    assert checked.exit_code == 2
    line = checked.output.strip()
    assert "\n" not in line and expected in line and "hunter2" not in line


def test_a_numeric_field_needs_a_number_in_its_column(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,q,amount\nr1,a,12.5\nr2,b,\nr3,c,lots\n")
    (tmp_path / "s.yaml").write_text(
        "name: n\ndataset: {path: d.csv, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 50}\n"
        "prompts: {p: {messages: [{role: user, content: '{q}'}]}}\n"
        "scorer: {type: fields, from: text, fields: {amount: {column: amount, tolerance: 0.01}}}\n"
    )
    checked = cli_run("validate", str(tmp_path / "s.yaml"), "--sim")
    assert checked.exit_code == 2
    assert "line 3: column 'amount' holds '', not a number" in checked.output


def test_a_human_grade_off_the_scale_is_named(tmp_path: Path) -> None:
    spec = judged_spec(tmp_path, human=True)
    (tmp_path / "d.csv").write_text("id,term,reference,human\nr1,tarn,a lake,pass\nr2,cwm,a valley,\nr3,col,a pass,maybe\n")
    checked = cli_run("validate", str(spec), "--sim")
    assert checked.exit_code == 2
    assert "line 4: column 'human' holds 'maybe', which is not one of the grades pass, fail" in checked.output


def test_validate_without_a_key_says_what_run_will_need(write_spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    checked = cli_run("validate", str(write_spec()))
    assert checked.exit_code == 0
    assert "note: `run` will need a usable API key: ANTHROPIC_API_KEY is not set" in checked.stderr


# -- #21.13 a read-only run folder is read without a change ---------------------------------------
def _make_read_only(folder: Path) -> Any:
    """Make `folder` read-only for this process (chmod; as root, the immutable flag); None when
    this machine cannot."""
    import os
    import subprocess

    for path in [*folder.iterdir(), folder]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    if not os.access(folder, os.W_OK):
        return lambda: [p.chmod(0o755) for p in [folder, *folder.iterdir()]]
    done = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True, check=False)
    if done.returncode != 0 or os.access(folder, os.W_OK):
        return None
    return lambda: subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


def test_report_and_compare_read_a_read_only_folder_without_writing(tmp_path: Path, write_spec: Any) -> None:
    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6]\n")
    ran = cli_run("run", str(spec), "--sim", "--out", str(tmp_path / "out"))
    assert ran.exit_code == 0, ran.output
    folder = tmp_path / "out"
    before = sorted(p.name for p in folder.iterdir())
    undo = _make_read_only(folder)
    if undo is None:
        pytest.skip("this machine cannot make a folder read-only for this user")
    try:
        compared = cli_run("compare", str(folder), "--by", "model")
        rebuilt = cli_run("report", str(folder))
    finally:
        undo()
    assert compared.exit_code == 0 and "| plain | claude-haiku-4-5 | claude-sonnet-4-6 |" in compared.stdout
    assert "comparison.csv not written" in compared.stderr and "Traceback" not in compared.output
    assert rebuilt.exit_code != 0 and "read-only" in rebuilt.output and "Traceback" not in rebuilt.output
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_long_row_id_is_embedded_whole_so_its_link_finds_it() -> None:
    from evalrun.reports.explorer import ExplorerSink, decode

    row_id = "r" + "0123456789" * 1000  # 10,001 characters
    sink = ExplorerSink()
    sink.begin([])
    record = {"model": "m", "prompt": "p", "row_id": row_id, "repeat": 0, "status": "ok", "correct": True,
              "answer": "A", "target": "A", "response_text": "A", "stop_reason": "end_turn", "answer_mode": "plain",
              "cost_usd": 0.001, "latency_s": 0.5, "input_tokens": 10, "output_tokens": 1, "attempts": 1}  # fmt: skip
    sink.write([record], [{"seq": 0, "row_seq": 0, "request_key": "k", "request_json": None}])
    sink.close()
    payload = decode(json.loads(sink.json()))
    assert [payload["strings"][i] for i in payload["cells"]["r"]] == [row_id]


# -- #21.5 results.parquet's `correct` is a nullable boolean in every run ------------------------
@pytest.mark.parametrize("values", [[True, False], [True, None]])
def test_parquet_correct_is_a_nullable_boolean_whether_or_not_a_cell_failed(tmp_path: Path, values: list[Any]) -> None:
    from evalrun.reports.writers import ParquetResults, Staged

    staged = Staged(tmp_path)
    sink = ParquetResults().open(staged)
    sink.begin(["row_id", "correct", "repeat"])
    sink.write([{"row_id": str(i), "correct": v, "repeat": 0} for i, v in enumerate(values)], [])
    sink.close()
    staged.commit()
    frame = pd.read_parquet(tmp_path / "results.parquet")
    assert str(frame["correct"].dtype) == "boolean" and str(frame["repeat"].dtype) == "Int64"
    assert frame["correct"].tolist()[0] is True and (frame["correct"].isna().tolist() == [v is None for v in values])


def test_a_full_disk_under_the_parquet_writer_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from evalrun.reports.writers import ParquetResults

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class Full:
        def path(self, name: str) -> Path:
            return Path("/dev/full")

    sink = ParquetResults().open(Full())  # type: ignore[arg-type]
    sink.begin(["row_id", "correct"])
    with pytest.raises(OSError):
        sink.write([{"row_id": "x" * 50, "correct": True}] * 10_000, [])
        sink.close()
    del sink
    import gc

    gc.collect()
    assert unraisable == []


@pytest.mark.anyio
async def test_paid_by_this_folder_counts_the_grading_too(tmp_path: Path) -> None:
    fake = GradingFake()
    await run_prepared(prepare(judged_spec(tmp_path), out=tmp_path / "out"), transport=httpx.MockTransport(fake.handle))
    results = load_results(tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    paid = results["cost_usd"].sum() + results["judge_cost_usd"].sum()
    assert results["judge_cost_usd"].sum() > 0
    assert summary.loc[0, "paid_usd"] == pytest.approx(paid)


def _main_table(page: str) -> str:
    """The summary's main table (before its "More columns")."""
    summary = page[page.index('<section id="summary">'):]
    return summary[: summary.index("</table>")]


@pytest.mark.anyio
async def test_the_graders_figures_are_on_the_main_view_and_rows_come_last(tmp_path: Path) -> None:
    fake = GradingFake()
    await run_prepared(prepare(judged_spec(tmp_path, human=True), out=tmp_path / "out"),
                       transport=httpx.MockTransport(fake.handle))  # fmt: skip
    page = (tmp_path / "out" / "report.html").read_text()
    main = _main_table(page)
    for header in ("judge agrees with people", "κ", "cost of the grading", "correct cells"):
        assert header in main, header
    assert "rows graded by both" in main
    # Nothing below the lazily rendered rows: a nav link to a section cannot land mid-list.
    assert page.index('id="explore"') > max(page.index('id="settings"'), page.index('id="outcomes"'))
    assert "paid by this folder (answers and grading)" in page


def test_per_field_accuracy_is_on_the_main_view(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parent.parent / "experiments" / "cities-json.yaml"
    ran = cli_run("run", str(spec), "--sim", "--limit", "4", "--out", str(tmp_path / "out"))
    assert ran.exit_code == 0, ran.output
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    fields = [c.removeprefix("accuracy_") for c in summary.columns if c.startswith("accuracy_")]
    main = _main_table((tmp_path / "out" / "report.html").read_text())
    assert fields and all(f"{field} accuracy" in main for field in fields)


@pytest.mark.anyio
async def test_report_md_of_a_run_with_no_answers_ends_its_sentences(tmp_path: Path, write_spec: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"type": "error", "error": {"type": "invalid_request_error", "message": "no"}})

    from evalrun.errors import EvalrunError

    with pytest.raises(EvalrunError):
        await run_prepared(prepare(write_spec(), out=tmp_path / "out"), transport=httpx.MockTransport(refuse))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "interval: ." not in text and "No interval: nothing was answered." in text


# -- #21.5 a dead plain-http endpoint, said plainly ------------------------------------------------
@pytest.mark.anyio
async def test_a_refused_plain_http_connection_names_no_tls() -> None:
    import socket

    from evalrun.errors import TransientApiError
    from evalrun.send.client import MessagesClient

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = {"model": "claude-haiku-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    async with MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-test-0123456789abcdef") as client:
        with pytest.raises(TransientApiError) as info:
            await client.create(body, timeout=5)
    assert "ssl" not in str(info.value) and f"cannot connect to 127.0.0.1:{port}: Connection refused" in str(info.value)


def test_a_base_url_warning_shared_by_two_models_is_said_once(write_spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/v1")
    checked = cli_run("validate", str(write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6]\n")))
    assert checked.exit_code == 0
    assert checked.stderr.count("base URL ends in /v1") == 1
