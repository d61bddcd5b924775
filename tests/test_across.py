"""Across runs: `evalrun diff`, `evalrun gate` and `evalrun runs --name` on two runs of one
experiment against a fake whose answers the test decides (tests/fakes_across.py)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

import evalrun
from evalrun.cli import cli
from evalrun.reports.build import load_results

from .fakes_across import ROWS, Oracle, run_spec, set_started, write_dataset, write_experiment

BASE_PROMPTS = {"same": "Answer:", "worse": "Choose:", "slight": "Pick:"}
CAND_PROMPTS = {"same": "Answer:", "worse": "Choose EDITED-BAD:", "slight": "Pick EDITED-SLIGHT:"}
MARKERS = ("EDITED-BAD", "EDITED-SLIGHT")


def wrong(marker: str, row: int) -> bool:
    """The baseline misses every tenth row; the bad edit three more in ten; the slight edit four
    more rows in 200 and gets one of the baseline's misses right."""
    if marker == "EDITED-BAD":
        return row % 10 in (0, 1, 2, 9)
    if marker == "EDITED-SLIGHT":
        return (row % 10 == 9 and row != 9) or row % 50 == 0
    return row % 10 == 9


def right(marker: str) -> np.ndarray:
    return np.array([0.0 if wrong(marker, i) else 1.0 for i in range(ROWS)])


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path, Oracle]:
    write_dataset(tmp_path / "data.csv")
    reports = tmp_path / "reports" / "exp"
    base = run_spec(write_experiment(tmp_path / "base.yaml", BASE_PROMPTS), reports / "z-base", Oracle(wrong, MARKERS))
    second = Oracle(wrong, MARKERS)
    cand = run_spec(write_experiment(tmp_path / "cand.yaml", CAND_PROMPTS), reports / "a-cand", second)
    set_started(base, "2026-12-01T10:00:00+00:00")
    set_started(cand, "2026-12-02T10:00:00+00:00")
    return base, cand, second


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_diff_pairs_rows_exactly_and_an_unchanged_prompt_is_answered_from_the_cache(two_runs) -> None:
    base, cand, second = two_runs
    # The unchanged prompt was never sent again: the shared cache answered it.
    assert not [b for b in second.bodies if not any(m in json.dumps(b) for m in MARKERS)]
    results = load_results(cand)
    assert (results.loc[results["prompt"] == "same", "source"] == "cache").all()

    result = invoke("diff", str(base), str(cand))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(cand / "diff.csv").set_index("prompt")
    assert (cand / "diff.md").read_text().startswith("# exp: compared with the baseline")
    for prompt, marker in (("same", ""), ("worse", "EDITED-BAD"), ("slight", "EDITED-SLIGHT")):
        a, b = right(""), right(marker)
        row = table.loc[prompt]
        assert row["n"] == ROWS
        assert row["acc_base"] == a.mean() and row["acc_cand"] == b.mean()
        assert row["diff"] == pytest.approx(b.mean() - a.mean(), abs=1e-12)
        assert row["flipped_up"] == int(((a == 0) & (b == 1)).sum())
        assert row["flipped_down"] == int(((a == 1) & (b == 0)).sum())
        assert row["test"] == "mcnemar-exact"
        table2 = [[int(((a == 1) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())],
                  [int(((a == 0) & (b == 1)).sum()), int(((a == 0) & (b == 0)).sum())]]  # fmt: skip
        assert row["p_value"] == pytest.approx(mcnemar(table2, exact=True).pvalue, rel=1e-9)
        assert bool(row["prompt_changed"]) == (prompt != "same")
        if prompt != "same":
            # The bootstrap interval lies where the paired t interval does (scipy), within a point.
            t = sps.ttest_rel(b, a).confidence_interval()
            assert row["diff_ci_low"] == pytest.approx(t.low, abs=0.01)
            assert row["diff_ci_high"] == pytest.approx(t.high, abs=0.01)
    same = table.loc["same"]
    assert same["diff"] == 0.0 and same["diff_ci_low"] == 0.0 and same["diff_ci_high"] == 0.0
    assert same["flipped_up"] == same["flipped_down"] == 0
    assert table.loc["worse", "diff"] == pytest.approx(-0.30)
    assert table.loc["slight", "diff"] == pytest.approx(-0.015)
    assert int(table["changed_rows"].iloc[0]) == 0
    assert "worse" in result.output and "prompt_changed" in result.output


def test_the_gate_fails_an_established_drop_and_non_inferiority_also_the_slight_one(two_runs, tmp_path: Path) -> None:
    base, cand, _ = two_runs
    junit = tmp_path / "gate.xml"
    summary = tmp_path / "gate.md"
    result = invoke("gate", str(cand), "--baseline", str(base), "--max-drop", "0.02", "--junit", str(junit),
                    "--markdown", str(summary))  # fmt: skip
    assert result.exit_code == 6, result.output
    failing = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "· worse  max-drop" in failing[0]
    assert "-30.0 pt" in failing[0] and "a drop larger than 2 pt is established" in failing[0]
    assert "rule: fails when the whole 95% interval of the change lies below −2 pt" in failing[0]
    cases = ET.parse(junit).getroot().iter("testcase")
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("claude-haiku-4-5.worse", "max-drop")}
    assert len(list(ET.parse(junit).getroot().iter("testcase"))) == 3
    assert "❌ **evalrun gate failed**" in summary.read_text()

    strict = invoke("gate", str(cand), "--baseline", str(base), "--max-drop", "0.02", "--non-inferior", "0.02",
                    "--junit", str(junit))  # fmt: skip
    assert strict.exit_code == 6
    failed = {(c.get("classname"), c.get("name")) for c in ET.parse(junit).getroot().iter("testcase")
              if c.find("failure") is not None}  # fmt: skip
    assert failed == {("claude-haiku-4-5.worse", "max-drop"), ("claude-haiku-4-5.worse", "non-inferior"),
                      ("claude-haiku-4-5.slight", "non-inferior")}  # fmt: skip
    message = next(c.find("failure") for c in ET.parse(junit).getroot().iter("testcase")
                   if c.get("classname") == "claude-haiku-4-5.slight" and c.find("failure") is not None)  # fmt: skip
    assert message is not None and "non-inferiority not shown" in (message.get("message") or "")

    # The candidate against itself passes every criterion.
    assert invoke("gate", str(cand), "--baseline", str(cand), "--non-inferior", "0.0").exit_code == 0


def test_min_accuracy_with_and_without_a_baseline(two_runs) -> None:
    base, cand, _ = two_runs
    alone = invoke("gate", str(cand), "--min-accuracy", "0.85")
    assert alone.exit_code == 6
    failing = [line for line in alone.output.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "· worse  min-accuracy: accuracy 60.0% [" in failing[0]
    low, high = sps.binomtest(120, ROWS).proportion_ci(method="wilson")
    assert f"[{100 * low:.1f}%, {100 * high:.1f}%]" in failing[0]
    assert invoke("gate", str(base), "--min-accuracy", "0.85").exit_code == 0
    both = invoke("gate", str(cand), "--baseline", str(base), "--max-drop", "0.5", "--min-accuracy", "0.5")
    assert both.exit_code == 0, both.output
    assert both.output.count("PASS") == 6


def test_runs_name_lists_the_experiment_oldest_first_with_the_paired_change(two_runs) -> None:
    listed = invoke("runs", "--name", "exp")
    assert listed.exit_code == 0, listed.output
    out = listed.output
    assert out.index("z-base") < out.index("a-cand")
    assert "claude-haiku-4-5 · worse   60.0%" in out and "change -30.0 pt" in out
    runs = json.loads(invoke("runs", "--name", "exp", "--json").output)  # type: ignore[attr-defined]
    assert [Path(r["folder"]).name for r in runs] == ["z-base", "a-cand"]
    worse = next(v for v in runs[1]["variants"] if v["prompt"] == "worse")
    assert worse["accuracy"] == 0.6 and worse["change"]["diff"] == pytest.approx(-0.3)
    assert runs[0]["variants"][0]["change"] is None
    assert json.loads(invoke("runs", "--name", "other", "--json").output) == []  # type: ignore[attr-defined]


def test_changed_rows_and_rows_in_one_run_are_left_out_and_counted(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.csv", 40)
    spec = write_experiment(tmp_path / "base.yaml", {"p": "Answer:"})
    base = run_spec(spec, tmp_path / "base", Oracle(wrong, MARKERS))
    text = (tmp_path / "data.csv").read_text().splitlines()
    text[1] = text[1].replace("a0,", "a0 edited,")  # row r0: same id, other content
    text = [line for line in text if not line.startswith("r39,")]  # r39 gone
    text.append("r99,Question number 99?,a,b,c,d,D")  # a new row
    (tmp_path / "data.csv").write_text("\n".join(text) + "\n")
    cand = run_spec(spec, tmp_path / "cand", Oracle(wrong, MARKERS))
    result = evalrun.diff(base, cand)
    row = result.row("claude-haiku-4-5", "p")
    assert (row["n"], row["changed_rows"], row["only_base_rows"], row["only_cand_rows"]) == (38, 1, 1, 1)
    assert row["diff"] == 0.0 and not row["prompt_changed"]
    assert list(result.to_frame()["n"]) == [38]


def test_bad_input_is_one_line_and_exit_2(two_runs, tmp_path: Path) -> None:
    base, cand, _ = two_runs
    (tmp_path / "empty").mkdir()
    for args in (("diff", str(base), str(tmp_path / "empty")), ("gate", str(tmp_path / "nowhere"), "--baseline", str(base)),
                 ("gate", str(cand)), ("gate", str(cand), "--baseline", str(base), "--max-drop", "2")):  # fmt: skip
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and result.output.startswith("error: ")
    write_dataset(tmp_path / "data.csv", 10)
    other = run_spec(write_experiment(tmp_path / "other.yaml", {"q": "Answer:"}, name="other"), tmp_path / "o", Oracle(wrong, MARKERS))
    result = CliRunner().invoke(cli, ["diff", str(base), str(other)])
    assert result.exit_code == 2 and "share no model × prompt" in result.output


def test_clustered_repeats_go_through_the_cluster_robust_test(tmp_path: Path) -> None:
    """Two repeats reduced per row, clusters of four rows: the cluster-robust t-test, as statsmodels
    computes it on the per-row differences."""
    import statsmodels.api as sm

    write_dataset(tmp_path / "data.csv", 80, cluster=4)
    extra = "repeats: 2\n"
    base_spec = write_experiment(tmp_path / "b.yaml", {"p": "Answer:"}, extra=extra)
    base_spec.write_text(base_spec.read_text().replace("id: id}", "id: id, cluster: passage}"))
    cand_spec = write_experiment(tmp_path / "c.yaml", {"p": "Answer EDITED-BAD:"}, extra=extra)
    cand_spec.write_text(cand_spec.read_text().replace("id: id}", "id: id, cluster: passage}"))
    base = run_spec(base_spec, tmp_path / "b", Oracle(wrong, MARKERS))
    cand = run_spec(cand_spec, tmp_path / "c", Oracle(wrong, MARKERS))
    row = evalrun.diff(base, cand).rows[0]
    a = np.array([0.0 if wrong("", i) else 1.0 for i in range(80)])
    b = np.array([0.0 if wrong("EDITED-BAD", i) else 1.0 for i in range(80)])
    fit = sm.OLS(b - a, np.ones(80)).fit(cov_type="cluster", cov_kwds={"groups": np.arange(80) // 4}, use_t=True)
    assert row["test"] == "cluster-t" and row["clusters"] == 20
    assert row["diff"] == pytest.approx(float(fit.params[0]))
    assert row["p_value"] == pytest.approx(float(fit.pvalues[0]), rel=1e-6)
    assert not math.isnan(row["diff_ci_low"]) and row["diff_ci_high"] < 0


def test_a_run_with_a_baseline_reports_the_change_and_the_flipped_rows(two_runs, tmp_path: Path) -> None:
    from evalrun.reports.baseline import remember_baseline

    base, _, _ = two_runs
    folder = tmp_path / "with-baseline"
    remember_baseline(folder, base)  # what `run --baseline` does before it sends
    run_spec(write_experiment(tmp_path / "cand.yaml", CAND_PROMPTS), folder, Oracle(wrong, MARKERS))
    markdown = (folder / "report.md").read_text()
    assert "## Compared with the baseline" in markdown
    assert "| claude-haiku-4-5 | worse | 200 | 90.0% | 60.0% | -30.0 pt |" in markdown
    assert "| claude-haiku-4-5 | same | 200 | 90.0% | 90.0% | +0.0 pt | [+0.0, +0.0] |" in markdown
    page = (folder / "report.html").read_text()
    assert '<section id="baseline">' in page and 'href="#baseline"' in page
    assert 'href="#explore?model=claude-haiku-4-5&amp;prompt=worse&amp;flipped=down">60 wrong now' in page
    assert 'href="#explore?model=claude-haiku-4-5&amp;prompt=slight&amp;row=r9">r9</a>' in page
    flips = json.loads(page.split('<script type="application/json" id="baseline-flips">')[1].split("</script>")[0])
    down = flips["claude-haiku-4-5\u0000worse"]["down"]
    assert sorted(down) == sorted(f"r{i}" for i in range(ROWS) if i % 10 in (0, 1, 2))
    assert flips["claude-haiku-4-5\u0000slight"]["up"] == ["r9"]
    # `evalrun report` rebuilds it; a baseline that is gone is said, never a failed report.
    import shutil

    shutil.rmtree(base)
    assert invoke("report", str(folder)).exit_code == 0  # type: ignore[attr-defined]
    assert "The baseline could not be compared: " in (folder / "report.md").read_text()


def test_run_baseline_option_and_spec_key(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data.csv", 12)
    spec = write_experiment(tmp_path / "s.yaml", {"p": "Answer:"})
    first = invoke("run", str(spec), "--sim", "--out", "first")
    assert first.exit_code == 0  # type: ignore[attr-defined]
    second = invoke("run", str(spec), "--sim", "--out", "second", "--baseline", "first")
    assert second.exit_code == 0  # type: ignore[attr-defined]
    section = Path("second/report.md").read_text().split("## Compared with the baseline")[1]
    # Two simulator runs have different request keys (a new port each time): the bodies say the
    # prompt did not change.
    assert "| claude-haiku-4-5 | p | 12 |" in section and section.split("\n")[6].endswith("| no |")
    keyed = write_experiment(tmp_path / "k.yaml", {"p": "Answer:"}, extra="baseline: first\n")
    assert invoke("run", str(keyed), "--sim", "--out", "third").exit_code == 0  # type: ignore[attr-defined]
    assert "baseline: `" + str((tmp_path / "first").resolve()) in Path("third/report.md").read_text()
    # The key does not name another run folder: the same spec without it lands in the same one.
    from evalrun.execute import prepare

    assert prepare(keyed, sim=True).folder == prepare(spec, sim=True).folder
    bad = CliRunner().invoke(cli, ["run", str(spec), "--sim", "--baseline", "nowhere"])
    assert bad.exit_code == 2 and "not a run folder" in bad.output


@pytest.mark.parametrize("reducer", ["mean", "majority"])
def test_repeats_are_reduced_as_each_runs_own_summary_reduces_them(tmp_path: Path, reducer: str) -> None:
    """With every row paired, each side of the diff is that run's summary accuracy (its reducer
    over three repeats whose answers differ by repeat)."""
    write_dataset(tmp_path / "data.csv", 30)
    extra = f"repeats: 3\nreducer: {reducer}\n"

    def flaky(marker: str, row: int) -> bool:
        return row % 3 == 0 or (marker == "EDITED" and row % 3 == 1)

    class Repeating(Oracle):
        """Answers a row's repeats differently: the request body carries no repeat, so count."""

        def __init__(self) -> None:
            super().__init__(flaky, ("EDITED",))
            self.seen: dict[str, int] = {}

        def handle(self, request):  # type: ignore[no-untyped-def]
            text = request.content.decode()
            self.seen[text] = self.seen.get(text, 0) + 1
            if self.seen[text] == 2:  # every second ask of a question is answered wrong
                self.wrong = lambda marker, row: True
            response = super().handle(request)
            self.wrong = flaky
            return response

    base = run_spec(write_experiment(tmp_path / "b.yaml", {"p": "Answer:"}, extra=extra), tmp_path / "b", Repeating())
    cand = run_spec(write_experiment(tmp_path / "c.yaml", {"p": "Answer EDITED:"}, extra=extra), tmp_path / "c", Repeating())
    row = evalrun.diff(base, cand).rows[0]
    summary_base = pd.read_csv(base / "summary.csv").iloc[0]
    summary_cand = pd.read_csv(cand / "summary.csv").iloc[0]
    assert row["n"] == 30
    assert row["acc_base"] == pytest.approx(summary_base["accuracy"])
    assert row["acc_cand"] == pytest.approx(summary_cand["accuracy"])
    assert row["test"] == ("mcnemar-exact" if reducer == "majority" else "paired-t")


def test_the_report_shows_the_experiments_other_runs(two_runs) -> None:
    base, cand, _ = two_runs
    assert invoke("report", str(cand)).exit_code == 0  # type: ignore[attr-defined]
    markdown = (cand / "report.md").read_text()
    history = markdown.split("## History")[1].split("\n## ")[0]
    lines = [line for line in history.splitlines() if line.startswith("| ") and "started" not in line]
    assert lines[0].startswith("| z-base | 2026-12-01T10:00:00+00:00 | 90.0% [")
    assert lines[1].startswith("| **a-cand** (this run) | 2026-12-02T10:00:00+00:00 | 90.0% [")
    assert "| 60.0% [" in lines[1]
    page = (cand / "report.html").read_text()
    assert '<section id="history"><h2>History</h2>' in page and 'href="#history"' in page
    # The first run had no other run beside it when its report was written.
    assert "## History" not in (base / "report.md").read_text()
