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
