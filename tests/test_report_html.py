from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from evalrun.reports.html import render_html
from evalrun.results.diagnostics import repeat_summary
from evalrun.results.stats import wilson_interval
from evalrun.results.summary import COMPARISON_COLUMNS, compare_tallies

from .conftest import tallies_from_cells


def compare(results: pd.DataFrame, **options: object) -> pd.DataFrame:
    rows = compare_tallies(tallies_from_cells(results.to_dict("records")), **options)  # type: ignore[arg-type]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)

EVIL = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _results(*, repeats: int = 1, cost: float = 0.001) -> pd.DataFrame:
    cells = []
    for prompt, mode, right in (("direct", "prefill", 6), (EVIL, "plain", 8)):
        for row in range(10):
            for repeat in range(repeats):
                answer = "A" if row < right else "B"
                cells.append({
                    "model": "haiku", "model_id": "claude-haiku", "prompt": prompt, "row_id": str(row),
                    "repeat": repeat, "answer_mode": mode, "response_text": answer, "answer": answer,
                    "target": "A", "correct": answer == "A", "status": "ok",
                    "stop_reason": "refusal" if row == 9 else "end_turn", "input_tokens": 100,
                    "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "cost_usd": cost, "latency_s": 0.5, "attempts": 1, "error": "",
                })
    return pd.DataFrame(cells)


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, prompt), g in results.groupby(["model", "prompt"], sort=False):
        n, correct = len(g), int(g["correct"].sum())
        low, high = wilson_interval(correct, n)
        cost = g["cost_usd"].sum(min_count=1) if not g["cost_usd"].isna().any() else math.nan
        rows.append({
            "model": model, "prompt": prompt, "answer_mode": g["answer_mode"].iloc[0], "n": n,
            "answered": n, "unparsed": 0, "errors": 0, "correct": correct, "accuracy": correct / n,
            "ci_low": low, "ci_high": high, "input_tokens": int(g["input_tokens"].sum()),
            "output_tokens": int(g["output_tokens"].sum()), "cost_usd": cost,
            "cost_per_correct_usd": cost / correct, "latency_p50_s": 0.5, "latency_p95_s": 0.5,
        })
    return pd.DataFrame(rows)


SETTINGS = {"name": "Capitals <quiz>", "endpoint": "simulator", "models": ["haiku"], "max_tokens": 16}


def _render(results: pd.DataFrame | None = None, **overrides: object) -> str:
    results = _results() if results is None else results
    kwargs: dict[str, object] = {
        "summary": _summary(results),
        "outcomes": results.assign(count=1),
        "repeats": repeat_summary(results),
        "cells": len(results),
        "comparison": compare(results, by="prompt", n_boot=200),
        "settings": SETTINGS,
        "choices": ["A", "B", "C", "D"],
    }
    kwargs.update(overrides)
    return render_html(**kwargs)  # type: ignore[arg-type]


def test_is_one_self_contained_document() -> None:
    page = _render()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2  # accuracy bars and cost scatter
    assert not re.search(r"<script\b", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page


def test_escapes_user_text() -> None:
    page = _render()
    assert EVIL not in page
    assert html.escape(EVIL) in page
    assert "<title>Capitals &lt;quiz&gt;</title>" in page


def test_simulator_banner_only_for_simulated_runs() -> None:
    assert "scores below are simulated" in _render()
    real = _render(settings={**SETTINGS, "endpoint": "https://api.anthropic.com"})
    assert "simulated" not in real
    # The endpoint is shown as escaped text in the settings table, never as a link.
    assert "<a " not in real


def test_shows_tables_the_reader_needs() -> None:
    page = _render()
    for heading in ("Summary", "Accuracy", "Cost against accuracy", "Comparisons", "Answer letters",
                    "Outcomes", "Run settings"):
        assert f"<h2>{heading}</h2>" in page
    assert "60.0%" in page and "80.0%" in page  # accuracies
    assert "⚠ modes differ" in page  # prefill vs plain must be flagged
    # Pairs follow the spec's order: a is "direct" (60 %), b the 80 % prompt.
    assert "+20.0 pp" in page  # diff = acc_b - acc_a
    assert '<th class="text">max_tokens</th><td class="text">16</td>' in page  # run settings
    assert "Repeats" not in page


def test_repeat_section_when_repeated() -> None:
    page = _render(_results(repeats=3))
    assert "<h2>Repeats</h2>" in page and "consistency rate" in page


def test_cost_chart_skipped_when_cost_unknown() -> None:
    page = _render(_results(cost=math.nan))
    assert page.count("<svg") == 1
    assert "Cost unknown" in page


def test_renders_without_comparison_choices_or_results() -> None:
    results = _results()
    page = render_html(summary=_summary(results), outcomes=None, comparison=None, settings={"name": "x"})
    assert "Comparisons" not in page and "Answer letters" not in page and "<svg" in page


def test_ids_are_unique_across_charts_and_output_is_deterministic() -> None:
    page = _render()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert _render() == page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_chromium_renders_tables_and_charts(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(_render(), encoding="utf-8")
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<table" in dom and "<svg" in dom
    assert "<script>alert" not in dom
    assert "scores below are simulated" in dom
