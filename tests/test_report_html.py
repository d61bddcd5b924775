from __future__ import annotations

import html
import itertools
import json
import math
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from evalrun.reports.explorer import ExplorerSink
from evalrun.reports.html import explore_link, render_html, spread_labels, write_html
from evalrun.results.diagnostics import repeat_summary
from evalrun.results.stats import wilson_interval
from evalrun.results.summary import COMPARISON_COLUMNS, compare_tallies

from .conftest import tallies_from_cells


def compare(results: pd.DataFrame, **options: object) -> pd.DataFrame:
    rows = compare_tallies(tallies_from_cells(results.to_dict("records")), **options)  # type: ignore[arg-type]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)

EVIL = "<script>alert(1)</script>"


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
    assert not re.search(r"<script\b", page, re.I)  # no explorer data given: no script at all
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page


def test_the_explorer_data_is_streamed_into_the_page(tmp_path: Path) -> None:
    """write_html streams the explorer's data from its spill; render_html gives the same page."""
    results = _results()
    sink = ExplorerSink()
    sink.begin([])
    stored = [{"seq": i, "row_seq": int(r["row_id"]), "request_key": f"k{i}",
               "request_json": json.dumps({"messages": [{"role": "user", "content": f"q{r['row_id']} {EVIL}"}]})}
              for i, r in enumerate(results.to_dict("records"))]  # fmt: skip
    sink.write(results.to_dict("records"), stored)
    sink.close()
    kwargs = {"summary": _summary(results), "comparison": None, "settings": SETTINGS, "cells": len(results),
              "explorer": sink}  # fmt: skip
    with (tmp_path / "report.html").open("w", encoding="utf-8") as handle:
        write_html(handle, **kwargs)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page == render_html(**kwargs)
    data = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    assert data is not None and json.loads(data.group(1))["count"] == len(results)
    assert EVIL not in page and page.count("</script>") == 2


def test_escapes_user_text() -> None:
    page = _render()
    assert EVIL not in page
    assert html.escape(EVIL) in page
    assert "<title>Capitals &lt;quiz&gt;</title>" in page


def test_simulator_banner_only_for_simulated_runs() -> None:
    assert "scores below are simulated" in _render()
    real = _render(settings={**SETTINGS, "endpoint": "https://api.anthropic.com"})
    assert "simulated" not in real
    # The endpoint is shown as escaped text, never as a link.
    assert 'href="http' not in real


def test_shows_tables_the_reader_needs() -> None:
    page = _render()
    for heading in ("Summary", "Accuracy", "Comparisons", "Outcomes", "Run settings"):
        assert f"<h2>{heading}</h2>" in page
    assert "<h3>Answer letters</h3>" in page
    assert "60.0%" in page and "80.0%" in page  # accuracies
    assert "⚠ prefill → plain" in page  # prefill vs plain must be flagged
    # Pairs follow the spec's order: a is "direct" (60 %), b the 80 % prompt.
    assert "+20.0 pp" in page  # diff = acc_b - acc_a
    assert "Repeats" not in page


def test_settings_are_a_readable_list_not_json() -> None:
    settings = {**SETTINGS, "scorer": {"type": "choice", "target": "answer", "choices": ["A", "B"]},
                "spec": {"prompts": {"plain": {"system": "Be brief.", "messages": [{"role": "user", "content": "{q}"}],
                                               "prefill": "The answer is ("}}}, "prompts": ["plain"]}
    page = _render(settings=settings)
    section = page[page.index('<section id="settings">'):]
    assert "<dt>max_tokens</dt><dd>16</dd>" in section
    assert "<dt>scorer</dt><dd>type: choice, target: answer, choices: A, B</dd>" in section
    assert '<span class="role">prefill</span><pre>The answer is (</pre>' in section  # the prompt as written
    assert "&lt;quiz&gt;" in section  # escaped
    # The raw JSON is still there, folded away.
    assert "Everything recorded for the run (JSON)" in section


def test_one_scale_percent_throughout() -> None:
    page = _render()
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    ticks = [t for chart in charts for t in re.findall(r"<text[^>]*>([^<]*)</text>", chart)]
    assert "100%" in ticks and "0%" in ticks
    assert "1.0" not in ticks and "0.5" not in ticks  # no 0–1 axis


def test_repeat_section_when_repeated() -> None:
    page = _render(_results(repeats=3))
    assert "<h3>Repeats</h3>" in page and "consistency rate" in page


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


def test_a_failed_run_gets_a_red_banner_and_no_accuracy() -> None:
    results = _results()
    summary = _summary(results).assign(reliable=False, errors=30, error_rate=0.55)
    page = _render(summary=summary, failure="most requests failed (30 of 50): the accuracy rests on the few answered")
    assert '<p class="banner failed" role="alert" id="failed">Failed run: most requests failed' in page
    assert "Its accuracy is withheld" in page
    assert "<svg" not in page  # no accuracy chart, no cost chart
    summary_table = page[page.index('<section id="summary">'):page.index("</section>")]
    assert "60.0%" not in summary_table and "withheld" in summary_table


def test_nothing_answered_is_a_dash_never_zero() -> None:
    results = _results()
    summary = _summary(results)
    summary.loc[0, ["accuracy", "ci_low", "ci_high", "n", "answered", "correct"]] = [math.nan, math.nan, math.nan, 0, 0, 0]
    summary["errors"] = [10, 0]
    summary["reliable"] = [False, True]
    page = _render(summary=summary)
    row = page[page.index('<tr class="bad">'):]
    row = row[:row.index("</tr>")]
    assert "—" in row and "nothing answered" in row and "0.0%" not in row


def test_unreliable_variants_are_flagged_red() -> None:
    results = _results()
    summary = _summary(results).assign(reliable=[True, False], errors=[0, 3], error_rate=[0.0, 3 / 13])
    page = _render(summary=summary)
    assert 'class="banner failed">Unreliable: more than 5 % of the requests of haiku · ' in page
    assert "unreliable</span>" in page and '<tr class="bad">' in page


def test_outcome_rates_are_explained_in_words() -> None:
    results = _results()
    results["stop_reason"] = "max_tokens"
    page = _render(results)
    outcomes = page[page.index('<section id="outcomes">'):]
    # The prefill variant is expected to stop at max_tokens; the plain one is warned about.
    assert "Stopping at max_tokens is expected here" in outcomes
    assert "of replies were cut off at max_tokens" in outcomes


def test_wide_tables_fold_secondary_columns_away() -> None:
    page = _render()
    table = page[page.index('<section id="summary">'):page.index("</table>")]
    heads = re.findall(r"<th[^>]*>(.*?)</th>", table)
    assert len(heads) <= 13
    assert "More columns" in page


def test_explore_links_encode_each_name() -> None:
    link = explore_link(by="prompt", model="m&x", disagree=("a,1", "b c"), right="")
    assert link == "#explore?by=prompt&model=m%26x&disagree=a%2C1,b%20c"
    names = link.split("disagree=")[1].split(",")
    assert [unquote(n) for n in names] == ["a,1", "b c"]


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=40), st.floats(min_value=0.005, max_value=0.1))
def test_chart_labels_are_spaced_at_least_a_line_apart(wanted: list[float], gap: float) -> None:
    placed = spread_labels(wanted, gap)
    ordered = sorted(placed)
    assert all(b - a >= gap - 1e-9 for a, b in itertools.pairwise(ordered))
    # Order is kept: a higher point never gets a lower label.
    pairs = sorted(zip(wanted, placed, strict=True))
    assert all(p1 <= p2 + 1e-9 for (_, p1), (_, p2) in itertools.pairwise(pairs))
    if len(wanted) * gap <= 1:
        assert min(placed) >= -1e-9 and max(placed) <= 1 + 1e-9
