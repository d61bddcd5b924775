from __future__ import annotations

import math

import pandas as pd
import pytest

from evalrun.results.diagnostics import confusion_matrix, letter_distribution, outcome_rates, repeat_summary

CHOICES = ["A", "B", "C", "D"]


def _cell(row: int, answer: str, *, target: str = "A", repeat: int = 0, status: str | None = None,
          stop_reason: str = "end_turn", model: str = "m", prompt: str = "p") -> dict[str, object]:
    status = status or ("ok" if answer else "unparsed")
    return {
        "model": model, "prompt": prompt, "row_id": str(row), "repeat": repeat, "answer_mode": "prefill",
        "answer": answer, "target": target, "correct": status == "ok" and answer == target,
        "status": status, "stop_reason": stop_reason,
    }


def _single_repeat() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _cell(0, "A"),
            _cell(1, "A", target="B"),
            _cell(2, "A", target="C"),
            _cell(3, "", target="B", stop_reason="max_tokens"),
            _cell(4, "", target="D", status="error", stop_reason=""),
            _cell(5, "", target="A", stop_reason="refusal"),
            _cell(0, "B", target="A", prompt="q"),
        ]
    )


def test_letter_distribution_shows_position_bias() -> None:
    out = letter_distribution(_single_repeat(), CHOICES)
    p = out[out["prompt"] == "p"].set_index("letter")
    assert list(p.index) == ["A", "B", "C", "D", "unparsed"]
    # Five answered cells (the error is left out): three said A, two unparsed.
    assert p.loc["A", "predicted"] == 3 and p.loc["A", "predicted_share"] == pytest.approx(0.6)
    assert p.loc["unparsed", "predicted"] == 2
    assert p["gold"].to_dict() == {"A": 2, "B": 2, "C": 1, "D": 0, "unparsed": 0}
    assert p["predicted_share"].sum() == pytest.approx(1.0)
    assert p["gold_share"].sum() == pytest.approx(1.0)
    q = out[out["prompt"] == "q"].set_index("letter")
    assert q.loc["B", "predicted"] == 1 and q.loc["A", "gold"] == 1


def test_letter_distribution_adds_other_for_off_menu_answers() -> None:
    out = letter_distribution(pd.DataFrame([_cell(0, "E"), _cell(1, "A")]), CHOICES)
    assert out.set_index("letter").loc["other", "predicted"] == 1


def test_outcome_rates_over_all_cells() -> None:
    out = outcome_rates(_single_repeat()).set_index("prompt")
    p = out.loc["p"]
    assert p["n"] == 6
    assert (p["unparsed"], p["refusals"], p["max_tokens"], p["errors"]) == (2, 1, 1, 1)
    assert p["unparsed_rate"] == pytest.approx(2 / 6)
    assert p["refusal_rate"] == pytest.approx(1 / 6)
    assert p["max_tokens_rate"] == pytest.approx(1 / 6)
    assert p["error_rate"] == pytest.approx(1 / 6)
    assert out.loc["q", "error_rate"] == 0.0


def test_outcome_rates_tolerates_missing_stop_reason() -> None:
    frame = _single_repeat()
    frame["stop_reason"] = frame["stop_reason"].replace("", None)
    assert outcome_rates(frame).set_index("prompt").loc["p", "refusals"] == 1


def test_confusion_matrix_gold_by_predicted() -> None:
    out = confusion_matrix(_single_repeat(), CHOICES)
    p = out[out["prompt"] == "p"].set_index("gold")
    assert list(out.columns) == ["model", "prompt", "gold", "A", "B", "C", "D", "unparsed"]
    assert list(p.index) == CHOICES
    assert p.loc["A"].tolist()[2:] == [1, 0, 0, 0, 1]
    assert p.loc["B"].tolist()[2:] == [1, 0, 0, 0, 1]
    assert p.loc["C", "A"] == 1
    assert p.loc["D"].tolist()[2:] == [0, 0, 0, 0, 0]  # the only D row errored
    total = p[["A", "B", "C", "D", "unparsed"]].to_numpy().sum()
    assert total == 5


def _repeats() -> pd.DataFrame:
    plan = {
        0: ["A", "B", "A"],  # majority A (right), inconsistent
        1: ["B", "A", ""],  # tie A/B: B came first, so the vote is B (wrong)
        2: ["C", "C", "C"],  # consistent and wrong
        3: ["", "", ""],  # nothing parsed: vote counts as wrong, consistent
    }
    cells = [_cell(row, ans, repeat=rep) for row, answers in plan.items() for rep, ans in enumerate(answers)]
    cells.append(_cell(4, "A", repeat=0))
    cells.append(_cell(4, "", repeat=1, status="error"))  # one answered repeat: not in consistency
    return pd.DataFrame(cells)


def test_repeat_summary_majority_vote_and_consistency() -> None:
    out = repeat_summary(_repeats())
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["rows"], row["repeats"]) == (5, 3)
    assert row["mean_accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 0 + 0 + 1) / 5)
    assert row["majority_accuracy"] == pytest.approx(2 / 5)  # rows 0 and 4
    assert row["consistency_rate"] == pytest.approx(2 / 4)  # rows 2 and 3 of rows 0-3


def test_repeat_summary_tie_break_is_earliest_repeat() -> None:
    cells = [_cell(0, "A", repeat=0), _cell(0, "B", repeat=1)]
    assert repeat_summary(pd.DataFrame(cells)).loc[0, "majority_accuracy"] == 1.0
    cells = [_cell(0, "B", repeat=0), _cell(0, "A", repeat=1)]
    assert repeat_summary(pd.DataFrame(cells)).loc[0, "majority_accuracy"] == 0.0


def test_repeat_summary_empty_when_single_repeat() -> None:
    out = repeat_summary(_single_repeat())
    assert out.empty
    assert list(out.columns) == [
        "model", "prompt", "rows", "repeats", "mean_accuracy", "majority_accuracy", "consistency_rate"
    ]


def test_repeat_summary_reads_csv_style_values() -> None:
    frame = _repeats()
    frame["correct"] = frame["correct"].map({True: "True", False: "False"})
    frame["answer"] = frame["answer"].replace("", float("nan"))
    row = repeat_summary(frame).iloc[0]
    assert row["majority_accuracy"] == pytest.approx(2 / 5)
    assert not math.isnan(row["consistency_rate"])


def test_missing_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="stop_reason"):
        outcome_rates(pd.DataFrame({"model": ["m"], "prompt": ["p"], "status": ["ok"]}))


def test_pending_cells_are_left_out() -> None:
    frame = pd.concat([_single_repeat(), pd.DataFrame([_cell(9, "", status="pending", stop_reason="")])])
    assert outcome_rates(frame).set_index("prompt").loc["p", "n"] == 6
    dist = letter_distribution(frame, CHOICES).set_index(["prompt", "letter"])
    assert dist.loc[("p", "unparsed"), "predicted"] == 2
