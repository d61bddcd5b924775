from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalrun.results.scoring import extract_choice, make_scorer
from evalrun.spec_scorers import ChoiceScorer, ContainsScorer, ExactScorer, RegexScorer

CHOICES = ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    "text",
    ["C", " C", "C)", "(C)", "The answer is (C).", '{"answer": "C"}', "**C**", "Answer: C", "C. Lima", "c"],
)
def test_the_letter_is_found_in_every_usual_form(text: str) -> None:
    assert extract_choice(text, CHOICES) == "C"


@pytest.mark.parametrize("text", ["", "  ", "I am not sure", "A city is nice", "(A) or (B)", '{"answer": "E"}'])
def test_no_answer_is_never_a_guess(text: str) -> None:
    assert extract_choice(text, CHOICES) is None


def test_unparsed_is_counted_but_never_correct() -> None:
    score = make_scorer(ChoiceScorer(type="choice", target="answer"))("no idea", "C")
    assert (score.status, score.correct, score.answer) == ("unparsed", False, None)
    assert make_scorer(ChoiceScorer(type="choice", target="answer"))("C", "(c)").correct


def test_exact_contains_regex() -> None:
    exact = make_scorer(ExactScorer(type="exact", target="t"))
    assert exact(" Paris. ", "paris").correct
    assert not exact("Paris, France", "Paris").correct
    contains = make_scorer(ContainsScorer(type="contains", target="t"))
    assert contains("It is Paris, France", "paris").correct
    regex = make_scorer(RegexScorer(type="regex", target="t", pattern=r"answer:\s*(\d+)"))
    assert regex("... answer: 42", "42").correct
    assert regex("nothing", "42").status == "unparsed"


@given(st.text(max_size=60))
def test_the_parser_never_returns_something_not_a_choice(text: str) -> None:
    assert extract_choice(text, CHOICES) in (None, *CHOICES)


@given(st.sampled_from(CHOICES), st.sampled_from(["{}", "({})", "The answer is ({}).", "{})", "Answer: {}"]))
def test_the_parser_finds_the_letter_in_any_template(letter: str, template: str) -> None:
    assert extract_choice(template.format(letter), CHOICES) == letter
