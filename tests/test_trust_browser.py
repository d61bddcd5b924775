"""#21.4 in the browser: the explorer's disagreement view counts dataset rows, as the comparison
table does, so a link from the table lands on the rows it counted (repeats included)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli

from .chromium import CHROMIUM
from .test_report_browser import browser, rendered, show  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
REPO = Path(__file__).resolve().parent.parent


def test_with_repeats_the_table_and_the_explorer_count_the_same_rows(tmp_path: Path, browser) -> None:  # noqa: F811
    spec = tmp_path / "capitals.yaml"
    text = (REPO / "experiments" / "capitals.yaml").read_text().replace("../datasets/", f"{REPO}/datasets/")
    spec.write_text(re.sub(r"^repeats: .*$", "repeats: 3", text, flags=re.M))
    ran = CliRunner().invoke(cli, ["run", str(spec), "--sim", "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv")
    results = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False, dtype=str)
    page = (tmp_path / "out" / "report.html").as_uri()
    counted = comparison.dropna(subset=["only_a_correct"])
    assert len(counted) and (counted["only_a_correct"] + counted["only_b_correct"]).sum() > 0
    for row in counted.itertuples():
        show(browser, f"{page}#explore?by=prompt&model={row.group}&disagree={row.a},{row.b}&right={row.a}")
        cells = rendered(browser)
        assert len({c["row_id"] for c in cells}) == row.only_a_correct
        cells_of_a = results[(results["model"] == row.group) & (results["prompt"] == row.a)]
        repeats = cells_of_a.groupby("row_id").size().max()
        assert len(cells) == 2 * repeats * row.only_a_correct  # every repeat of each row, A above B
        said = browser.eval("document.querySelector('#explore .ex-count').textContent")
        total = int(row.only_a_correct + row.only_b_correct)
        assert said.startswith(f"{total:,} dataset row") and "row × repeat pairs" in said
