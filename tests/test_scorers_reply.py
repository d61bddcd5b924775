"""Scorers that read the whole reply: field extraction and the judge, unit and end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results
from evalrun.results.judge import parse_grade
from evalrun.results.scoring import Grader, Reply, make_scorer
from evalrun.spec_scorers import FieldsScorer, JudgeScorer

ROW = {"city": "Lyon", "population": "522000", "country": "France", "capital": "no"}
FIELDS = FieldsScorer(type="fields", tool="record",  # type: ignore[call-arg]
    fields={"city": "city", "population": {"column": "population", "tolerance": 0.01}, "country": "country"},
)  # fmt: skip


def tool_reply(name: str, data: dict[str, Any]) -> Reply:
    return Reply(text="", message={"content": [{"type": "tool_use", "id": "t", "name": name, "input": data}]})


def test_fields_from_a_tool_call_with_a_numeric_tolerance() -> None:
    scorer = make_scorer(FIELDS)
    score = scorer(tool_reply("record", {"city": "lyon ", "population": 520000, "country": "Spain"}), "", ROW)
    assert score.status == "ok" and not score.correct
    assert score.fields == {"city": True, "population": True, "country": False}
    assert scorer(tool_reply("record", {"city": "Lyon", "population": 600000, "country": "France"}), "", ROW).fields == {
        "city": True, "population": False, "country": True
    }  # fmt: skip


@pytest.mark.parametrize(
    "reply",
    [Reply(text="Lyon, 522000, France"), tool_reply("other_tool", {"city": "Lyon"}), Reply(text="")],
)
def test_no_tool_call_is_unparsed_never_silently_wrong(reply: Reply) -> None:
    score = make_scorer(FIELDS)(reply, "", ROW)
    assert score.status == "unparsed" and not score.correct and score.explanation


def test_a_missing_field_is_a_wrong_field() -> None:
    score = make_scorer(FIELDS)(tool_reply("record", {"city": "Lyon", "population": 522000}), "", ROW)
    assert score.status == "ok" and score.fields == {"city": True, "population": True, "country": False}


def test_fields_from_json_and_from_text_and_nested_paths() -> None:
    spec = FieldsScorer(type="fields", **{"from": "json"}, fields={"place.city": "city", "capital": "capital"})  # type: ignore[arg-type]
    reply = Reply(text=json.dumps({"place": {"city": "Lyon"}, "capital": False}))
    assert make_scorer(spec)(reply, "", ROW).fields == {"place.city": True, "capital": True}
    assert make_scorer(spec)(Reply(text="not json"), "", ROW).status == "unparsed"
    text_spec = FieldsScorer(type="fields", **{"from": "text"}, fields={"city": "city"})  # type: ignore[arg-type]
    found = make_scorer(text_spec)(Reply(text='Sure! {"city": "Lyon"} is the answer.'), "", ROW)
    assert found.correct


@pytest.mark.parametrize(
    ("text", "grade", "explanation"),
    [
        ('{"explanation": "Right.", "grade": "pass"}', "pass", "Right."),
        ("It matches.</explanation>\n<grade>fail</grade>", "fail", "It matches."),
        ("<explanation>Close.</explanation><grade> PASS </grade>", "pass", "Close."),
        ("Grade: fail", "fail", None),
        ("pass", "pass", None),
        ("The definition matches the reference. PASS.", "pass", "The definition matches the reference."),
        ("no idea", None, None),
    ],
)
def test_grades_are_read_in_every_format(text: str, grade: str | None, explanation: str | None) -> None:
    assert parse_grade(text, ["pass", "fail"]) == (grade, explanation)


def test_a_scale_scores_by_place_and_passes_from_pass_grade() -> None:
    spec = JudgeScorer(type="judge", model="claude-sonnet-4-6", rubric="r {response}", scale=5, pass_grade="4")  # type: ignore[call-arg]
    scorer = make_scorer(spec)

    def graded(text: str) -> Any:
        return scorer(Reply(text="x", grader=Grader(status="ok", text=text)), "", {})

    assert graded('{"grade": "5", "explanation": "e"}').score == 1.0
    four = graded("<grade>4</grade>")
    assert four.correct and four.value == pytest.approx(0.75)
    assert not graded("<grade>3.0</grade>").correct
    failed = scorer(Reply(text="x", grader=Grader(status="error", error="500 api_error")), "", {})
    assert failed.status == "error" and not failed.correct


class GradingFake:
    """An independent fake: answers questions, and grades grading requests by its own rule
    (pass when the response contains the reference), in the format the request asks for."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.grades: dict[str, str] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        user = body["messages"][0]["content"]
        if "<response>" in user:
            response = re.search(r"<response>\n(.*?)\n</response>", user, re.S).group(1)  # type: ignore[union-attr]
            reference = re.search(r"<reference>\n(.*?)\n</reference>", user, re.S).group(1)  # type: ignore[union-attr]
            grade = "pass" if reference.lower() in response.lower() else "fail"
            self.grades[response] = grade
            if "output_config" in body:
                text = json.dumps({"explanation": f"graded {grade}", "grade": grade})
            else:
                text = f"graded {grade}</explanation>\n<grade>{grade}</grade>"
            usage = {"input_tokens": 100, "output_tokens": 20}
        else:
            term = user.split("'")[1]
            text = f"{term} means {'a thing' if term == 'tarn' else 'a small mountain lake'}"
            usage = {"input_tokens": 10, "output_tokens": 5}
        return httpx.Response(200, json={"type": "message", "role": "assistant", "content": [{"type": "text", "text": text}],
                                         "stop_reason": "end_turn", "usage": usage})  # fmt: skip


def judged_spec(tmp_path: Path, *, human: bool = False, extra: str = "") -> Path:
    """Two terms defined by haiku and graded by it against a reference (and a human grade)."""
    (tmp_path / "d.csv").write_text("id,term,reference,human\nr1,tarn,a small mountain lake,pass\nr2,cwm,a small mountain lake,fail\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: judged\ndataset: {path: d.csv, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 50}\n" + extra
        + "prompts:\n  p:\n    messages: [{role: user, content: \"Define '{term}'\"}]\n"
        "scorer: {type: judge, model: claude-haiku-4-5, rubric: 'Grade it. {response} {target}', target: reference"
        + (", human: human}\n" if human else "}\n")
    )
    return spec


@pytest.mark.anyio
async def test_a_judged_run_against_an_independent_fake(tmp_path: Path) -> None:
    spec = judged_spec(tmp_path, human=True)
    fake = GradingFake()
    prepared = prepare(spec, out=tmp_path / "out")
    await run_prepared(prepared, transport=httpx.MockTransport(fake.handle))
    results = load_results(tmp_path / "out").set_index("row_id")
    for row_id, cell in results.iterrows():
        assert cell["grade"] == fake.grades[cell["response_text"]], row_id
        assert cell["judge_input_tokens"] == 100 and cell["judge_output_tokens"] == 20
        # Haiku 4.5: $1 / $5 per million tokens, in the grader's own column.
        assert cell["judge_cost_usd"] == pytest.approx((100 * 1 + 20 * 5) / 1e6)
        assert cell["cost_usd"] == pytest.approx((10 * 1 + 5 * 5) / 1e6)
    grading = [b for b in fake.bodies if "<response>" in b["messages"][0]["content"]]
    assert len(grading) == 2 and all(b["messages"][-1] == {"role": "assistant", "content": "<explanation>"} for b in grading)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.loc[0, "judge_agreement"] == pytest.approx(0.0)  # the fake graded r1 fail, r2 pass: the humans the other way round
    sent = len(fake.bodies)
    await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(fake.handle))
    assert len(fake.bodies) == sent  # nothing graded twice


@pytest.mark.anyio
async def test_a_grading_request_shared_by_identical_replies_is_paid_once_and_split(tmp_path: Path) -> None:
    spec = judged_spec(tmp_path, extra="repeats: 2\n")
    fake = GradingFake()
    await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(fake.handle))
    grading = [b for b in fake.bodies if "<response>" in b["messages"][0]["content"]]
    assert len(grading) == 2  # the two repeats of a row replied alike: one grading request each row
    results = load_results(tmp_path / "out")
    paid = len(grading) * (100 * 1 + 20 * 5) / 1e6
    assert results["judge_cost_usd"].sum() == pytest.approx(paid)  # each of 4 cells carries half
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["judge_cost_usd"].sum() == pytest.approx(paid)


@pytest.mark.anyio
async def test_the_grading_stage_gets_what_is_left_of_the_deadline(tmp_path: Path, fake_clock: Any) -> None:
    from evalrun.errors import DeadlineReached

    fake = GradingFake()

    async def handle(request: httpx.Request) -> httpx.Response:
        if b"<response>" in request.content:
            await fake_clock.sleep(3600)  # the grader never answers
        else:
            await fake_clock.sleep(0.5)  # two answers, the first alone: done at 1 s
        return fake.handle(request)

    prepared = prepare(judged_spec(tmp_path), out=tmp_path / "out")
    async with fake_clock.running():
        with pytest.raises(DeadlineReached):
            await run_prepared(prepared, transport=httpx.MockTransport(handle), clock=fake_clock, deadline_s=1.5)
    # Answers by 1 s, the deadline at 1.5 s, then the grace for the grading requests in flight
    # (1 s): not a fresh 1.5 s for the grading stage.
    assert fake_clock.elapsed == pytest.approx(1.5 + 1.0)
