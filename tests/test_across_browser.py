"""The baseline's flipped rows in report.html's explorer, in headless Chromium (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalrun.reports.baseline import remember_baseline

from .chromium import CHROMIUM, chromium
from .fakes_across import Oracle, run_spec, write_dataset, write_experiment

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")


def wrong(marker: str, row: int) -> bool:
    return row % 5 in (0, 1) if marker == "EDITED" else row % 5 == 0


def test_the_explorer_shows_the_rows_that_flipped_against_the_baseline(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.csv", 30)
    base = run_spec(write_experiment(tmp_path / "b.yaml", {"p": "Answer:"}), tmp_path / "base", Oracle(wrong, ("EDITED",)))
    folder = tmp_path / "cand"
    remember_baseline(folder, base)
    run_spec(write_experiment(tmp_path / "c.yaml", {"p": "Answer EDITED:"}), folder, Oracle(wrong, ("EDITED",)))
    page = (folder / "report.html").as_uri()
    with chromium() as browser:
        browser.open(page + "#explore?model=claude-haiku-4-5&prompt=p&flipped=down")
        browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'")
        rows = {m["row_id"] for m in browser.eval("window.evalrunExplorer.matches()")}
        assert rows == {f"r{i}" for i in range(30) if i % 5 == 1}
        browser.open(page + "#explore?model=claude-haiku-4-5&prompt=p&flipped=up")
        browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'")
        assert browser.eval("window.evalrunExplorer.matches().length") == 0
