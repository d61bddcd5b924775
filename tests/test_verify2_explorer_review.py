"""report.html's explorer filters to the cells a human reviewed and to those where the human's
score differs from the automatic one (issue 25), the filter in the URL hash, equal to results.csv."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.reports.explorer_parts import decode
from evalrun.view.reviewing import add_review

from .chromium import CHROMIUM, chromium
from .fakes_view import make_run


def _reviewed_run(tmp_path: Path) -> tuple[Path, set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """The capitals example with four reviews: two turn the scorer's verdict over, two confirm it.
    Returns the folder, the reviewed cells and the overridden ones (model, prompt, row_id)."""
    folder = make_run("capitals", tmp_path / "capitals")
    results = pd.read_csv(folder / "results.csv")
    ok = results[results["status"] == "ok"].sort_values(["model", "prompt", "row_id"])
    right = ok[ok["correct"].astype(bool)].iloc[:2]
    wrong = ok[~ok["correct"].astype(bool)].iloc[:1]
    flips = [(r, "wrong") for r in right.iloc[:1].itertuples()] + [(r, "correct") for r in wrong.itertuples()]
    keeps = [(right.iloc[1:2].itertuples().__next__(), "correct")]
    reviewed, overridden = set(), set()
    for cell, verdict in [*flips, *keeps]:
        add_review(folder, {"model": cell.model, "prompt": cell.prompt, "row_id": str(cell.row_id), "repeat": 0,
                            "verdict": verdict}, reviewer="tester")  # fmt: skip
        reviewed.add((cell.model, cell.prompt, str(cell.row_id)))
    overridden = {(c.model, c.prompt, str(c.row_id)) for c, _ in flips}
    report = CliRunner().invoke(cli, ["report", str(folder)], catch_exceptions=False)
    assert report.exit_code == 0, report.output
    return folder, reviewed, overridden


def _from_csv(folder: Path) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    results = pd.read_csv(folder / "results.csv")
    human = results[results["score_source"] == "human"]
    differ = human[human["correct"].astype(bool) != human["correct_auto"].astype(bool)]
    key = lambda frame: {(m, p, str(r)) for m, p, r in zip(frame["model"], frame["prompt"], frame["row_id"], strict=True)}  # noqa: E731
    return key(human), key(differ)


def test_the_page_data_marks_reviewed_and_overridden_cells_as_results_csv_does(tmp_path: Path) -> None:
    folder, reviewed, overridden = _reviewed_run(tmp_path)
    assert _from_csv(folder) == (reviewed, overridden)
    html = (folder / "report.html").read_text(encoding="utf-8")
    raw = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S)
    assert raw is not None
    data = decode(json.loads(raw.group(1)))
    cells, strings = data["cells"], data["strings"]
    marks: dict[int, set[tuple[str, str, str]]] = {0: set(), 1: set(), 2: set()}
    for m, p, r, h in zip(cells["m"], cells["p"], cells["r"], cells["h"], strict=True):
        marks[h].add((data["models"][m], data["prompts"][p], strings[r]))
    assert marks[1] | marks[2] == reviewed
    assert marks[2] == overridden


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_the_explorer_filters_to_reviewed_and_overridden_cells_from_the_url_hash(tmp_path: Path) -> None:
    folder, _, _ = _reviewed_run(tmp_path)
    reviewed, overridden = _from_csv(folder)
    with chromium(width=1200, height=900) as browser:
        for value, want in (("reviewed", reviewed), ("overridden", overridden)):
            browser.open((folder / "report.html").as_uri() + f"#explore?review={value}")
            browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'")
            got = browser.eval("window.evalrunExplorer.matches()")
            assert {(c["model"], c["prompt"], c["row_id"]) for c in got} == want
            assert {c["review"] for c in got} <= {"reviewed", "overridden"}
            # the control shows the filter, and choosing "all cells" widens it and updates the hash
            assert browser.eval("document.querySelector('#explore select[name=review]').value") == value
            browser.eval("(() => { const s = document.querySelector('#explore select[name=review]'); s.value = '';"
                         " s.dispatchEvent(new Event('change', {bubbles: true})); })()")  # fmt: skip
            assert browser.eval("window.evalrunExplorer.matches().length") == len(pd.read_csv(folder / "results.csv"))
            assert "review=" not in browser.eval("location.hash")
