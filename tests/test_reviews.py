"""Human reviews: the `reviews` table (migration m003), its append-only history, and how a review
scores a cell (a verdict, a grade on the judge's scale, and which of them rate the grader)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evalrun.errors import ReviewError
from evalrun.results.reviews import check_review, human_grade, human_score
from evalrun.results.scoring import Score
from evalrun.spec import parse_scorer
from evalrun.store.reviews import Review
from evalrun.store.run_store import Store

JUDGE = {"type": "judge", "model": "claude-haiku-4-5", "rubric": "grade {response}"}


def _review(verdict: str | None = None, grade: str | None = None) -> Review:
    return Review(1, "m", "p", "r1", 0, verdict, grade, "", "ada", "now")


def test_the_reviews_table_has_the_expected_columns_and_keeps_every_review(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        columns = {row[1] for row in store._db.execute("PRAGMA table_info(reviews)")}
        assert columns == {"id", "model", "prompt", "row_id", "repeat", "verdict", "grade", "note", "reviewer", "created_at"}
        store.add_review(("m", "p", "r1", 0), verdict="wrong", grade=None, note="", reviewer="ada")
        store.add_review(("m", "p", "r1", 0), verdict="correct", grade=None, note="again", reviewer="bob")
        store.add_review(("m", "p", "r2", 1), verdict=None, grade="fail", note="", reviewer="ada")
        assert [r.verdict for r in store.reviews()] == ["wrong", "correct", None]
        latest = store.latest_reviews()
        assert latest[("m", "p", "r1", 0)].reviewer == "bob" and latest[("m", "p", "r2", 1)].grade == "fail"
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        assert db.execute("SELECT count(*) FROM reviews").fetchone()[0] == 3


@pytest.mark.parametrize(
    ("scorer", "verdict", "grade", "says"),
    [({"type": "choice", "target": "a"}, "right", None, "verdict must be"),
     ({"type": "choice", "target": "a"}, None, None, "either"),
     ({"type": "choice", "target": "a"}, "correct", "pass", "either"),
     ({"type": "choice", "target": "a"}, None, "pass", "needs a judge"),
     (JUDGE, None, "excellent", "not on the judge's scale")],
)  # fmt: skip
def test_a_review_the_scorer_cannot_read_is_refused(scorer: dict[str, str], verdict: str | None, grade: str | None,
                                                    says: str) -> None:  # fmt: skip
    with pytest.raises(ReviewError, match=says):
        check_review(parse_scorer(scorer), verdict=verdict, grade=grade)


def test_a_grade_is_matched_however_it_is_written() -> None:
    spec = parse_scorer({**JUDGE, "scale": 5})
    assert check_review(spec, verdict=None, grade=" 4 ") == (None, "4")
    assert check_review(parse_scorer(JUDGE), verdict=None, grade="PASS") == (None, "pass")


def test_a_grade_scores_by_its_place_on_the_scale_and_the_automatic_answer_stays() -> None:
    spec = parse_scorer({**JUDGE, "scale": 5, "pass_grade": "3"})
    auto = Score(answer="5", correct=True, status="ok", score=1.0, extra={"grade": "5"})
    human = human_score(auto, _review(grade="2"), spec)
    assert (human.answer, human.correct, human.value, human.extra) == ("5", False, 0.25, {"grade": "5"})
    assert human_score(auto, _review(grade="3"), spec).correct
    unparsed = Score(answer=None, correct=False, status="unparsed")
    rescued = human_score(unparsed, _review(verdict="correct"), spec)
    assert (rescued.status, rescued.correct, rescued.value) == ("ok", True, 1.0)


def test_a_verdict_rates_the_grader_only_when_it_names_one_grade() -> None:
    binary = parse_scorer(JUDGE)  # pass / fail
    assert human_grade(_review(verdict="correct"), binary) == "pass"
    assert human_grade(_review(verdict="wrong"), binary) == "fail"
    fine = parse_scorer({**JUDGE, "scale": 5, "pass_grade": "3"})  # 5, 4, 3 pass; 2, 1 fail
    assert human_grade(_review(verdict="correct"), fine) is None
    assert human_grade(_review(verdict="wrong"), fine) is None
    assert human_grade(_review(grade="2"), fine) == "2"
    top = parse_scorer({**JUDGE, "scale": 3})  # only 3 passes; 2 and 1 fail
    assert human_grade(_review(verdict="correct"), top) == "3"
    assert human_grade(_review(verdict="wrong"), top) is None
