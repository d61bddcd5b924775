"""`evalrun runs [DIR]`: every run folder, newest first; unreadable ones with their problem."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import anyio
import httpx
import pandas as pd
import pytest
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


def _run_with_some_500s(spec: Path, out: Path, failing: set[int]) -> None:
    """The rows numbered in `failing` get a 500 (not retried), the others an answer: a run that
    finishes with failed cells (exit 4)."""
    api = FakeAPI()

    def handle(request: httpx.Request) -> httpx.Response:
        if any(f"Question number {i}?" in request.content.decode() for i in failing):
            return httpx.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
        return api.handle(request)

    async def go() -> None:
        with pytest.raises(RunFailed) as info:
            await run_prepared(prepare(spec, out=out), transport=httpx.MockTransport(handle), max_retries=0,
                               backoff=lambda attempt, after: 0.0)  # fmt: skip
        assert info.value.exit_code == 4

    anyio.run(go)


def test_a_run_that_finished_with_failed_cells_is_not_listed_as_complete(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 20)
    spec = write_spec("name: some500s\n", name="some500s.yaml")
    folder = tmp_path / "reports" / "some500s" / "x"
    _run_with_some_500s(spec, folder, failing={7, 11, 15, 19})  # 4 of 20 cells fail with 500s
    clean = _run(write_spec("name: clean\n", name="clean.yaml"))

    table = CliRunner().invoke(cli, ["runs"], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    status = {line.split()[2]: line for line in table.output.splitlines() if line[:4].isdigit()}
    assert "failed cells" in status["some500s"] and "complete" not in status["some500s"]
    assert "complete" in status["clean"]
    listed = CliRunner().invoke(cli, ["runs", "--json"], catch_exceptions=False)
    by_name = {info["name"]: info for info in json.loads(listed.output)}
    assert by_name["some500s"]["status"] == "failed cells"
    assert by_name["clean"]["status"] == "complete"
    assert by_name["some500s"]["cells"] == 20

    # The run is recorded so in the store, not only relabelled by the listing.
    with contextlib.closing(sqlite3.connect(folder / "store.sqlite")) as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("failed cells",)]

    # A store written before this status existed says `complete` for such a run: still listed
    # as what it was.
    with contextlib.closing(sqlite3.connect(folder / "store.sqlite")) as db, db:
        db.execute("UPDATE runs SET status = 'complete'")
    listed = CliRunner().invoke(cli, ["runs", "--json"], catch_exceptions=False)
    assert {i["name"]: i["status"] for i in json.loads(listed.output)} == {"some500s": "failed cells", "clean": "complete"}
    assert clean.exists()


def test_a_run_against_a_standalone_simulator_is_listed_as_simulated(write_spec, tmp_path: Path) -> None:
    """`evalrun sim` announces itself in a header: its answers are simulated, and `runs` says so
    like report.md does, though the endpoint is a URL, not `--sim`."""
    from evalrun.sim import SimConfig, create_app

    write_mc_csv(tmp_path / "mc.csv", 4)
    out = tmp_path / "reports" / "mc" / "standalone"
    transport = httpx.ASGITransport(create_app(SimConfig()))
    anyio.run(lambda: run_prepared(prepare(write_spec(""), out=out), transport=transport))
    result = CliRunner().invoke(cli, ["runs", "reports", "--json"], catch_exceptions=False)
    (info,) = json.loads(result.output)
    assert info["endpoint"] != "simulator" and info["simulated"] is True
    assert "endpoint: simulator" in (out / "report.md").read_text()
