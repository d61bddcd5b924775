"""Every number in the report files agrees with a recomputation from results.csv."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest, norm

from evalrun.cli import cli

from .conftest import write_mc_csv


@pytest.fixture
def run_folder(write_spec, tmp_path: Path) -> Path:
    write_mc_csv(tmp_path / "mc.csv", 60)
    spec = write_spec(
        "models: [claude-haiku-4-5, claude-sonnet-4-6]\n"
        "prompts:\n"
        "  a:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\n"
        "  b:\n    system: Be careful.\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"Answer: (\"\n"
    )
    result = CliRunner().invoke(cli, ["run", str(spec), "--sim", "--out", "out"], catch_exceptions=False)
    assert result.exit_code == 0
    return tmp_path / "out"


def wilson(k: int, n: int) -> tuple[float, float]:
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_summary_agrees_with_results(run_folder: Path) -> None:
    results = pd.read_csv(run_folder / "results.csv", keep_default_na=False)
    summary = pd.read_csv(run_folder / "summary.csv")
    for _, row in summary.iterrows():
        cells = results[(results["model"] == row["model"]) & (results["prompt"] == row["prompt"])]
        correct = int(cells["correct"].astype(str).eq("True").sum())
        assert row["n"] == len(cells) and row["correct"] == correct
        low, high = wilson(correct, len(cells))
        assert row["ci_low"] == pytest.approx(low, abs=1e-6)
        assert row["ci_high"] == pytest.approx(high, abs=1e-6)
        assert row["input_tokens"] == cells["input_tokens"].sum()
        assert row["cost_usd"] == pytest.approx(cells["cost_usd"].astype(float).sum(), abs=1e-9)


def test_comparison_agrees_with_results(run_folder: Path) -> None:
    results = pd.read_csv(run_folder / "results.csv", keep_default_na=False)
    comparison = pd.read_csv(run_folder / "comparison.csv")
    assert len(comparison) == 2  # a vs b, within each model
    raw = []
    for _, row in comparison.iterrows():
        cells = results[results["model"] == row["group"]]
        a = cells[cells["prompt"] == row["a"]].set_index("row_id")["correct"].astype(str).eq("True")
        b = cells[cells["prompt"] == row["b"]].set_index("row_id")["correct"].astype(str).eq("True")
        only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
        assert (row["only_a_correct"], row["only_b_correct"]) == (only_a, only_b)
        expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert row["p_mcnemar"] == pytest.approx(expected, abs=1e-6)
        assert row["diff"] == pytest.approx(b.mean() - a.mean(), abs=1e-9)
        raw.append(row["p_mcnemar"])
    ordered = sorted(raw)
    holm = [min(1.0, max((len(raw) - j) * ordered[j] for j in range(i + 1))) for i in range(len(raw))]
    assert sorted(comparison["p_holm"]) == pytest.approx(sorted(holm), abs=1e-6)


def test_the_html_report_is_self_contained(run_folder: Path) -> None:
    html = (run_folder / "report.html").read_text()
    assert "<svg" in html and "simulat" in html.lower()
    assert "src=\"http" not in html and "href=\"http" not in html
