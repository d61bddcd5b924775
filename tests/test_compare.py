from __future__ import annotations

import math

import pandas as pd
import pytest

from evalrun.results.stats import mcnemar_exact
from evalrun.results.summary import COMPARISON_COLUMNS, compare_tallies

from .conftest import tallies_from_cells


def compare(frame: pd.DataFrame, **options: object) -> pd.DataFrame:
    tallies = tallies_from_cells(frame.to_dict("records"))
    return pd.DataFrame(compare_tallies(tallies, **options), columns=COMPARISON_COLUMNS)  # type: ignore[arg-type]


def _cell(model: str, prompt: str, row: int, correct: bool, *, status: str = "ok",
          repeat: int = 0, mode: str = "prefill") -> dict[str, object]:
    return {
        "model": model, "model_id": f"{model}-id", "prompt": prompt, "row_id": str(row),
        "repeat": repeat, "answer_mode": mode, "answer": "A" if correct else "B", "target": "A",
        "correct": correct and status == "ok", "status": status, "stop_reason": "end_turn",
        "error": "boom" if status == "error" else "",
    }


def _frame() -> pd.DataFrame:
    """Model m, prompts p1/p2/p3 over rows 0-9.

    p1 correct on rows 0-4; p2 correct on rows 0-7 but errored on row 9; p3 (plain
    mode) correct on rows 5-9.
    """
    cells = []
    for row in range(10):
        cells.append(_cell("m", "p1", row, row < 5))
        cells.append(_cell("m", "p2", row, row < 8, status="error" if row == 9 else "ok"))
        cells.append(_cell("m", "p3", row, row >= 5, mode="plain"))
    return pd.DataFrame(cells)


def test_columns_and_pairs_in_spec_order() -> None:
    out = compare(_frame(), by="prompt", n_boot=500)
    assert list(out.columns) == COMPARISON_COLUMNS
    assert list(zip(out["a"], out["b"], strict=True)) == [("p1", "p2"), ("p1", "p3"), ("p2", "p3")]
    assert set(out["by"]) == {"prompt"} and set(out["group"]) == {"m"}


def test_pairs_only_on_cells_both_answered() -> None:
    out = compare(_frame(), by="prompt", n_boot=500).set_index(["a", "b"])
    p1_p2 = out.loc[("p1", "p2")]
    # Row 9 errored on p2, so it is dropped from the pair even though p1 answered it.
    assert p1_p2["n"] == 9
    assert p1_p2["acc_a"] == pytest.approx(5 / 9)
    assert p1_p2["acc_b"] == pytest.approx(8 / 9)
    assert p1_p2["diff"] == pytest.approx(3 / 9)  # diff = acc_b - acc_a
    assert (p1_p2["only_a_correct"], p1_p2["only_b_correct"]) == (0, 3)
    assert p1_p2["p_mcnemar"] == pytest.approx(mcnemar_exact(0, 3)) == pytest.approx(0.25)

    p1_p3 = out.loc[("p1", "p3")]
    assert p1_p3["n"] == 10
    assert (p1_p3["only_a_correct"], p1_p3["only_b_correct"]) == (5, 5)
    assert p1_p3["p_mcnemar"] == 1.0


def test_holm_across_all_pairs() -> None:
    out = compare(_frame(), by="prompt", n_boot=500)
    p = out["p_mcnemar"].tolist()
    assert all(h >= raw for h, raw in zip(out["p_holm"], p, strict=True))
    assert out["p_holm"].min() == pytest.approx(min(1.0, min(p) * len(p)))


def test_modes_differ_flags_cross_mode_pairs() -> None:
    out = compare(_frame(), by="prompt", n_boot=500).set_index(["a", "b"])
    assert not out.loc[("p1", "p2"), "modes_differ"]
    assert out.loc[("p1", "p3"), "modes_differ"]
    assert (out.loc[("p1", "p3"), "mode_a"], out.loc[("p1", "p3"), "mode_b"]) == ("prefill", "plain")


def test_baseline_mode_puts_baseline_on_side_a() -> None:
    out = compare(_frame(), by="prompt", baseline="p2", n_boot=500)
    assert list(zip(out["a"], out["b"], strict=True)) == [("p2", "p1"), ("p2", "p3")]
    # p1 is worse than the baseline, so its diff is negative.
    assert out.loc[0, "diff"] == pytest.approx(-3 / 9)


def test_unknown_baseline_names_known_values() -> None:
    with pytest.raises(ValueError, match="'p1', 'p2', 'p3'"):
        compare(_frame(), by="prompt", baseline="nope")


def test_deterministic_for_seed_and_ci_contains_diff() -> None:
    first = compare(_frame(), by="prompt", n_boot=2000, seed=11)
    again = compare(_frame(), by="prompt", n_boot=2000, seed=11)
    pd.testing.assert_frame_equal(first, again)
    assert ((first["diff_ci_low"] <= first["diff"]) & (first["diff"] <= first["diff_ci_high"])).all()


def test_by_model_groups_by_prompt() -> None:
    cells = []
    for row in range(6):
        cells.append(_cell("haiku", "p", row, row < 2))
        cells.append(_cell("sonnet", "p", row, row < 5))
    out = compare(pd.DataFrame(cells), by="model", n_boot=500)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["by"], row["group"], row["a"], row["b"]) == ("model", "p", "haiku", "sonnet")
    assert row["diff"] == pytest.approx(3 / 6)


def test_no_shared_cells_gives_nan_not_false_confidence() -> None:
    frame = pd.DataFrame([_cell("m", "p1", 0, True), _cell("m", "p2", 1, True)])
    out = compare(frame, by="prompt", n_boot=100)
    assert out.loc[0, "n"] == 0
    assert math.isnan(out.loc[0, "p_mcnemar"]) and math.isnan(out.loc[0, "diff_ci_low"])


def test_single_variant_gives_nothing_to_compare() -> None:
    frame = pd.DataFrame([_cell("m", "p1", 0, True)])
    assert compare_tallies(tallies_from_cells(frame.to_dict("records")), by="prompt") == []


def test_spec_order_decides_sides_not_the_alphabet() -> None:
    cells = [_cell("m", name, row, row < k) for name, k in (("zeta", 2), ("alpha", 5)) for row in range(6)]
    out = compare(pd.DataFrame(cells), by="prompt", n_boot=100)
    assert (out.loc[0, "a"], out.loc[0, "b"]) == ("zeta", "alpha")


def test_repeats_are_reduced_per_row_before_testing() -> None:
    # Three identical repeats of the same answers: the same evidence as one repeat.
    one = [_cell("m", p, row, row < k) for p, k in (("a", 3), ("b", 8)) for row in range(40)]
    three = [{**c, "repeat": r} for c in one for r in range(3)]
    single, repeated = compare(pd.DataFrame(one), by="prompt"), compare(pd.DataFrame(three), by="prompt")
    for column in ("n", "acc_a", "acc_b", "diff", "diff_ci_low", "diff_ci_high", "p_value"):
        assert repeated.loc[0, column] == pytest.approx(single.loc[0, column]), column


def test_pending_cells_of_an_unfinished_run_are_not_paired() -> None:
    frame = _frame()
    pending = (frame["prompt"] == "p1") & (frame["row_id"] == "0")
    frame.loc[pending, "status"] = "pending"
    frame.loc[pending, "correct"] = False
    out = compare(frame, by="prompt", n_boot=100).set_index(["a", "b"])
    assert out.loc[("p1", "p3"), "n"] == 9
