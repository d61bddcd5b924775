"""`evalrun runs [DIR]`: every run folder, newest first; unreadable ones with their problem."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import anyio
import pandas as pd
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.errors import RunFailed
from evalrun.execute import prepare, run_prepared
from evalrun.reports.runs import list_runs

from .conftest import FakeAPI, write_mc_csv


def _run(spec: Path) -> Path:
    result = CliRunner().invoke(cli, ["run", str(spec), "--sim"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1].removeprefix("report: "))


def _age(folder: Path, started_at: str) -> None:
    with contextlib.closing(sqlite3.connect(folder / "store.sqlite")) as db, db:
        db.execute("UPDATE runs SET started_at = ?", (started_at,))


def _failed_run(spec: Path, out: Path) -> None:
    """Every request gets a 500 and is not retried: a failed run, reported."""
    api = FakeAPI()
    api.enqueue(*([500] * 50))

    async def go() -> None:
        with contextlib.suppress(RunFailed):
            await run_prepared(prepare(spec, out=out), transport=api.transport(), max_retries=0,
                               backoff=lambda attempt, after: 0.0)  # fmt: skip

    anyio.run(go)


def test_runs_lists_every_folder_newest_first(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 12)
    older = _run(write_spec("name: older\nmodels: [claude-haiku-4-5, claude-sonnet-4-6]\n", name="older.yaml"))
    newer = _run(write_spec("name: newer\n", name="newer.yaml"))
    _age(older, "2026-01-02T03:04:05+00:00")
    _age(newer, "2026-02-01T00:00:00+00:00")
    _failed_run(write_spec("name: failing\n", name="failing.yaml"), tmp_path / "reports" / "failing" / "x")
    _age(tmp_path / "reports" / "failing" / "x", "2025-12-01T00:00:00+00:00")
    (tmp_path / "reports" / "broken" / "x").mkdir(parents=True)
    (tmp_path / "reports" / "broken" / "x" / "store.sqlite").write_text("not a database")
    (tmp_path / "reports" / "old" / "y").mkdir(parents=True)
    (tmp_path / "reports" / "old" / "y" / "report.md").write_text("# an old report\n")

    result = CliRunner().invoke(cli, ["runs"], catch_exceptions=False)
    assert result.exit_code == 0
    out = result.output
    assert "Traceback" not in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["started", "name", "endpoint"]
    names = [line.split()[2] for line in lines[1:] if line[:4].isdigit()]
    assert names == ["newer", "older", "failing"]  # newest first
    # Accuracy per model × prompt, as summary.csv has it.
    summary = pd.read_csv(older / "summary.csv")
    for row in summary.itertuples():
        assert f"{row.model} · {row.prompt}: {100 * row.accuracy:.1f}%" in out
    assert "FAILED" in out and "failed: every request failed" in out
    assert "cannot read it: " in out and "not an evalrun store, or damaged" in out
    assert "no store.sqlite (report files only)" in out
    assert "simulator" in out and "12/12" in out


def test_runs_json_and_a_stale_summary_recomputed(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 8)
    folder = _run(write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6]\n"))
    expected = pd.read_csv(folder / "summary.csv")
    (folder / "summary.csv").unlink()  # not there any more: accuracy comes from the store
    result = CliRunner().invoke(cli, ["runs", "reports", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    (info,) = json.loads(result.output)
    assert info["name"] == "mc" and info["endpoint"] == "simulator" and info["problem"] is None
    assert info["cells"] == info["cells_done"] == 16
    got = {(a["model"], a["prompt"]): a["accuracy"] for a in info["accuracy"]}
    assert got == {(r.model, r.prompt): r.accuracy for r in expected.itertuples()}


def test_runs_of_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["runs", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "is not a folder" in result.output
    assert list_runs(tmp_path) == []
    empty = CliRunner().invoke(cli, ["runs", str(tmp_path)])
    assert empty.exit_code == 0 and "no run folders under" in empty.output
