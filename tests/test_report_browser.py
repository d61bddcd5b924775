"""report.html in headless Chromium: the disagreement filter against results.csv, the layout at
1,400 px, readable replies, a failed run, and the open time of a 100,000-cell page.

Skipped when Chromium is not installed (Debian: `apt-get install -y chromium`). Set
EVALRUN_SCREENSHOTS=DIR to keep screenshots of what the tests looked at.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.errors import RunFailed
from evalrun.execute import prepare, run_prepared
from evalrun.reports.explorer import ExplorerSink
from evalrun.reports.html import render_html

from .chromium import CHROMIUM, Browser, chromium
from .conftest import FakeAPI, write_mc_csv

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ["EVALRUN_SCREENSHOTS"]).resolve() if os.environ.get("EVALRUN_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def capitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's example run (two models × two prompts × 40 rows) on the simulator."""
    out = tmp_path_factory.mktemp("browser") / "capitals"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(out.parent / "cache"))
        result = CliRunner().invoke(cli, ["run", str(REPO / "experiments" / "capitals.yaml"), "--sim", "--out", str(out)],
                                    catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(width=1400, height=1000) as b:
        yield b


def show(browser: Browser, url: str) -> None:
    browser.open(url)
    browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'")


def shot(browser: Browser, name: str, *, full_page: bool = False) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(SHOTS / name, full_page=full_page)


def rendered(browser: Browser) -> list[dict[str, Any]]:
    """Every rendered cell of the explorer, by its data attributes (after showing all pages)."""
    browser.eval("(() => { const b = document.querySelector('#explore button.more');"
                 " while (b && !b.hidden) b.click(); })()")  # fmt: skip
    return browser.eval(  # type: ignore[no-any-return]
        "Array.from(document.querySelectorAll('#explore [data-row-id]')).map(e => ({row_id: e.dataset.rowId,"
        " model: e.dataset.model, prompt: e.dataset.prompt, repeat: Number(e.dataset.repeat), outcome: e.dataset.outcome}))"
    )


def disagreements(results: pd.DataFrame, model: str, a: str, b: str) -> dict[str, str]:
    """row_id → the prompt that got it right, where exactly one of a and b did (both answered)."""
    cells = results[results["model"] == model].set_index(["row_id", "repeat"])
    left, right = cells[cells["prompt"] == a], cells[cells["prompt"] == b]
    both = left.merge(right, left_index=True, right_index=True, suffixes=("_a", "_b"))
    answered = both["status_a"].isin(["ok", "unparsed"]) & both["status_b"].isin(["ok", "unparsed"])
    ok_a, ok_b = both["correct_a"] == "True", both["correct_b"] == "True"
    differ = both[answered & (ok_a != ok_b)]
    return {row: (a if right_a else b) for (row, _), right_a in zip(differ.index, differ["correct_a"] == "True", strict=True)}


def test_the_disagreement_filter_shows_exactly_the_rows_where_correctness_differs(capitals: Path, browser: Browser) -> None:
    results = pd.read_csv(capitals / "results.csv", keep_default_na=False, dtype=str)
    comparison = pd.read_csv(capitals / "comparison.csv")
    page = (capitals / "report.html").as_uri()
    for row in comparison.itertuples():
        expected = disagreements(results, row.group, row.a, row.b)
        assert len(expected) == row.only_a_correct + row.only_b_correct  # results.csv and comparison.csv agree
        show(browser, f"{page}#explore?by=prompt&model={row.group}&disagree={row.a},{row.b}")
        cells = rendered(browser)
        assert {c["row_id"] for c in cells} == set(expected)
        assert len(cells) == 2 * len(expected)  # A's cell and B's cell for each row
        assert all(c["model"] == row.group for c in cells)
        assert [c["prompt"] for c in cells] == [row.a, row.b] * len(expected)  # A above B
        for c in cells:
            right = expected[c["row_id"]] == c["prompt"]
            assert c["outcome"] == ("correct" if right else "wrong")
        if row.Index == 0 and SHOTS is not None:  # the README's screenshot (docs/report-explorer.png)
            browser.resize(1400, 1400)
            browser.eval("document.querySelector('#explore .cell .line').click()")
            browser.eval("window.scrollTo(0, document.getElementById('comparisons').offsetTop - 40)")
            shot(browser, "report-explorer.png")
            browser.resize(1400, 1000)
        # "A right, B wrong" only: the link behind the comparison table's "only a right" count.
        show(browser, f"{page}#explore?by=prompt&model={row.group}&disagree={row.a},{row.b}&right={row.a}")
        only_a = {c["row_id"] for c in rendered(browser)}
        assert only_a == {r for r, winner in expected.items() if winner == row.a}
        assert len(only_a) == row.only_a_correct


def test_the_filter_is_driven_by_the_controls_and_kept_in_the_hash(capitals: Path, browser: Browser) -> None:
    results = pd.read_csv(capitals / "results.csv", keep_default_na=False, dtype=str)
    show(browser, (capitals / "report.html").as_uri())
    assert browser.eval("window.evalrunExplorer.matches().length") == len(results)
    browser.eval("""(() => {
      const set = (name, value) => { const s = document.querySelector(`#explore select[name=${name}]`);
        s.value = value; s.dispatchEvent(new Event('change', {bubbles: true})); };
      set('model', 'sonnet-4.6'); set('by', 'prompt'); set('a', 'plain'); set('b', 'few-shot');
    })()""")
    assert browser.eval("location.hash") == "#explore?by=prompt&model=sonnet-4.6&disagree=plain,few-shot"
    expected = disagreements(results, "sonnet-4.6", "plain", "few-shot")
    assert {m["row_id"] for m in browser.eval("window.evalrunExplorer.matches()")} == set(expected)
    # The comparison table links to the same view: follow the first row's "only a right" count.
    browser.eval("document.querySelector('#comparisons a[title=\"read these rows\"]').click()")
    browser.wait_for("location.hash.includes('right=')")
    first = pd.read_csv(capitals / "comparison.csv").iloc[0]
    assert browser.eval("window.evalrunExplorer.matches().length") == 2 * int(first["only_a_correct"])
    # Outcome and text filters.
    browser.eval("location.hash = '#explore?model=claude-haiku-4-5&status=wrong'")
    browser.wait_for("window.evalrunExplorer.state().status === 'wrong'")
    wrong = results[(results["model"] == "claude-haiku-4-5") & (results["status"] == "ok") & (results["correct"] == "False")]
    assert sorted(m["row_id"] for m in browser.eval("window.evalrunExplorer.matches()")) == sorted(wrong["row_id"])
    browser.eval("location.hash = '#explore?q=' + encodeURIComponent('capital of Peru')")
    browser.wait_for("window.evalrunExplorer.state().q !== ''")
    peru = {m["row_id"] for m in browser.eval("window.evalrunExplorer.matches()")}
    assert len(peru) == 1


def test_every_table_fits_1400px_and_no_chart_labels_overlap(capitals: Path, browser: Browser) -> None:
    show(browser, (capitals / "report.html").as_uri())
    browser.eval("document.querySelectorAll('details').forEach(d => d.open = true)")
    overflow = browser.eval("""(() => {
      const width = document.documentElement.clientWidth, out = [];
      document.querySelectorAll('table').forEach((t, i) => {
        const r = t.getBoundingClientRect();
        if (r.right > width + 0.5 || t.scrollWidth > t.parentElement.clientWidth + 0.5) out.push(i + ': ' + r.right);
      });
      if (document.documentElement.scrollWidth > width) out.push('page ' + document.documentElement.scrollWidth);
      return out;
    })()""")
    assert overflow == []
    overlaps = browser.eval("""(() => {
      const out = [];
      document.querySelectorAll('.chart svg').forEach(svg => {
        const boxes = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim())
          .map(t => [t.textContent, t.getBoundingClientRect()]);
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
          const [ta, a] = boxes[i], [tb, b] = boxes[j];
          if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
            out.push(ta + ' / ' + tb);
        }
      });
      return out;
    })()""")
    assert overlaps == []
    assert browser.eval("document.querySelectorAll('.chart svg').length") == 2
    shot(browser, "report-top.png")


def test_a_reply_is_readable_for_any_row(capitals: Path, browser: Browser) -> None:
    results = pd.read_csv(capitals / "results.csv", keep_default_na=False, dtype=str)
    dataset = pd.read_csv(REPO / "datasets" / "capitals.csv", dtype=str).set_index("id")
    for _, cell in results.sample(3, random_state=1).iterrows():
        show(browser, f"{(capitals / 'report.html').as_uri()}#explore?model={cell['model']}&prompt={cell['prompt']}"
                      f"&row={cell['row_id']}")  # fmt: skip
        detail = browser.wait_for("(d => d && !d.hidden && d.innerText)(document.querySelector('#explore .detail'))")
        assert dataset.loc[cell["row_id"], "question"] in detail  # what was asked
        assert cell["response_text"] in detail and cell["target"] in detail  # what came back, and the target
        if cell["answer_mode"] == "prefill":
            assert "PREFILL" in detail and "The answer is (" in detail
    shot(browser, "reply.png")


@pytest.mark.parametrize("experiment", ["definitions", "cities-json"])
def test_a_judges_explanation_and_per_field_correctness_are_shown(experiment: str, tmp_path: Path,
                                                                   browser: Browser) -> None:  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(tmp_path / "cache"))
        result = CliRunner().invoke(cli, ["run", str(REPO / "experiments" / f"{experiment}.yaml"), "--sim", "--out",
                                          str(tmp_path / "out")], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False, dtype=str)
    cell = results[results["status"] == "ok"].iloc[1]
    show(browser, f"{(tmp_path / 'out' / 'report.html').as_uri()}#explore?model={cell['model']}&prompt={cell['prompt']}"
                  f"&row={cell['row_id']}")  # fmt: skip
    detail = browser.wait_for("(d => d && !d.hidden && d.innerText)(document.querySelector('#explore .detail'))")
    if experiment == "definitions":
        assert cell["grade_explanation"] and "grader's explanation" in detail and cell["grade_explanation"] in detail
        assert f"grade\n{cell['grade']}" in detail
    else:
        fields = {k[len("correct_"):]: v == "True" for k, v in cell.items() if k.startswith("correct_") and k != "correct_auto" and v}
        assert fields and f"fields right\n{sum(fields.values())} of {len(fields)}" in detail
        for name, right in fields.items():
            assert f"{name}\n{'✓ right' if right else '✗ wrong'}" in detail
    shot(browser, f"{experiment}.png")


def test_a_failed_run_is_shown_as_failed(write_spec, tmp_path: Path, browser: Browser) -> None:
    write_mc_csv(tmp_path / "mc.csv", 10)
    api = FakeAPI()
    api.enqueue(*([500] * 30))

    async def go() -> None:
        with contextlib.suppress(RunFailed):
            await run_prepared(prepare(write_spec(), out=tmp_path / "failed"), transport=api.transport(), max_retries=0,
                               backoff=lambda attempt, after: 0.0)  # fmt: skip

    anyio.run(go)
    show(browser, (tmp_path / "failed" / "report.html").as_uri())
    banner = browser.eval("(b => b && [b.innerText, getComputedStyle(b).backgroundColor])(document.querySelector('.banner.failed'))")
    assert banner is not None and banner[0].startswith("Failed run: every request failed")
    assert banner[1] == "rgb(255, 235, 233)"  # red
    assert browser.eval("document.querySelectorAll('svg').length") == 0  # no accuracy chart
    accuracy = browser.eval("Array.from(document.querySelectorAll('#summary > .scroll tbody tr')).map(r => r.cells[4].innerText)")
    assert accuracy and all(a.startswith("—") for a in accuracy)
    assert browser.eval("document.querySelectorAll('#explore [data-outcome=error]').length") > 0
    shot(browser, "failed.png")


def _synthetic(cells: int) -> ExplorerSink:
    """The explorer sink of a run with `cells` cells: 4 variants × cells/4 rows."""
    rng = random.Random(0)
    sink = ExplorerSink()
    sink.begin([])
    rows = cells // 4
    for start in range(0, rows, 2500):
        records, stored = [], []
        for row in range(start, min(rows, start + 2500)):
            body = json.dumps({"system": "Answer with the letter of the correct option.", "max_tokens": 1,
                               "messages": [{"role": "user", "content": f"Question {row}: which is right?\n(A) a{row}\n"
                                             f"(B) b{row}\n(C) c{row}\n(D) d{row}"},
                                            {"role": "assistant", "content": "The answer is ("}]})  # fmt: skip
            for variant in range(4):
                answer, target = rng.choice("ABCD"), "ABCD"[row % 4]
                records.append({"model": f"model-{variant // 2}", "prompt": f"prompt-{variant % 2}", "row_id": f"r{row}",
                                "repeat": 0, "status": "ok", "correct": answer == target, "answer": answer,
                                "target": target, "response_text": answer, "stop_reason": "max_tokens",
                                "answer_mode": "prefill", "cost_usd": 6.1e-05, "latency_s": rng.random(),
                                "input_tokens": 57, "output_tokens": 1, "attempts": 1, "score": float(answer == target),
                                "source": "realtime"})  # fmt: skip
                stored.append({"seq": row * 4 + variant, "row_seq": row, "request_key": f"{row}-{variant // 2}",
                               "request_json": body})  # fmt: skip
        sink.write(records, stored)
    sink.close()
    return sink


def test_a_100k_cell_page_opens_with_every_cell(tmp_path: Path, browser: Browser) -> None:
    # How fast it opens is measured by bench/timed.py (a 3 s limit here failed on a loaded machine).
    payload = _synthetic(100_000)
    assert payload.meta["count"] == 100_000 and not payload.meta["sampled"]
    summary = pd.DataFrame([{"model": f"model-{v // 2}", "prompt": f"prompt-{v % 2}", "n": 25_000, "accuracy": 0.25,
                             "ci_low": 0.24, "ci_high": 0.26, "cost_usd": 1.5} for v in range(4)])  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render_html(summary=summary, comparison=None, settings={"name": "big"}, cells=100_000,
                                explorer=payload), encoding="utf-8")  # fmt: skip
    browser.open(page.as_uri() + "#explore?by=prompt&model=model-1&disagree=prompt-0,prompt-1")
    browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'", timeout=120)
    assert browser.eval("window.evalrunExplorer.count") == 100_000
    assert browser.eval("document.querySelectorAll('#explore [data-row-id]').length") == 200  # the first 100 pairs


def test_many_long_named_variants_still_fit(tmp_path: Path, browser: Browser) -> None:
    """24 variants with long names, close accuracies and costs: tables inside 1,400 px, no chart label
    on another."""
    rows = []
    for m in range(6):
        for p in range(4):
            rows.append({"model": f"an-extremely-long-model-label-number-{m}-for-a-local-server", "prompt":
                         f"chain-of-thought-with-{p}-worked-examples-and-a-very-long-name", "answer_mode": "structured",
                         "n": 500, "cells": 1000, "answered": 990, "unparsed": 4, "errors": 10, "error_rate": 0.01,
                         "correct": 700 + m + p, "accuracy": 0.70 + 0.001 * (m + p), "ci_low": 0.66, "ci_high": 0.74,
                         "ci_method": "clt", "reliable": True, "input_tokens": 123_456_789, "output_tokens": 9_876_543,
                         "cost_usd": 12.0 + 0.01 * m, "cost_per_correct_usd": 0.017, "latency_p50_s": 1.25,
                         "latency_p95_s": 9.5, "pending": 0})  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render_html(summary=pd.DataFrame(rows), comparison=None, settings={"name": "wide"}, cells=24_000),
                    encoding="utf-8")  # fmt: skip
    browser.open(page.as_uri())
    browser.eval("document.querySelectorAll('details').forEach(d => d.open = true)")
    width = browser.eval("document.documentElement.clientWidth")
    assert browser.eval("document.documentElement.scrollWidth") <= width
    assert browser.eval("Math.max(...Array.from(document.querySelectorAll('table')).map(t => t.getBoundingClientRect().right))") <= width
    overlaps = browser.eval("""(() => {
      let n = 0;
      document.querySelectorAll('.chart svg').forEach(svg => {
        const boxes = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim()).map(t => t.getBoundingClientRect());
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
          const a = boxes[i], b = boxes[j];
          if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5) n++;
        }
      });
      return n;
    })()""")
    assert overlaps == 0
    shot(browser, "wide.png", full_page=True)


def test_thinking_is_shown_collapsed_apart_from_the_reply(tmp_path: Path, browser: Browser) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(tmp_path / "cache"))
        result = CliRunner().invoke(cli, ["run", str(REPO / "experiments" / "effort-sweep.yaml"), "--sim", "--out",
                                          str(tmp_path / "out")], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False, dtype=str)
    cell = results[results["model"] == "sonnet@thinking=2048"].iloc[0]
    model = quote(cell["model"], safe="")
    show(browser, f"{(tmp_path / 'out' / 'report.html').as_uri()}#explore?model={model}&prompt={cell['prompt']}"
                  f"&row={cell['row_id']}")  # fmt: skip
    browser.wait_for("(d => d && !d.hidden)(document.querySelector('#explore .detail'))")
    thinking = browser.eval(
        "(t => t && {open: t.open, summary: t.querySelector('summary').innerText, text: t.querySelector('pre').textContent})"
        "(document.querySelector('#explore .detail details.thinking'))"
    )
    assert thinking is not None and thinking["open"] is False and "not scored" in thinking["summary"]
    assert thinking["text"].startswith("Summary:")
    reply = browser.eval("document.querySelector('#explore .detail .reply > pre').textContent")
    assert "Summary:" not in reply and reply.strip()
