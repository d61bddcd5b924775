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
