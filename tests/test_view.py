"""`evalrun view`'s API (through Starlette's TestClient, no port) and `evalrun reviews`: the run
list, cells a page at a time, reviews behind the token, nothing outside the folder served, and a
read that writes nothing."""

from __future__ import annotations

import csv
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from evalrun.cli import cli
from evalrun.store.run_store import Store
from evalrun.view.app import TOKEN_HEADER, create_app

from .fakes_view import make_run

TOKEN = "test-token"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of runs: capitals (multiple choice, 2 models × 2 prompts × 40 rows) and
    definitions (a judge with a human-grade column)."""
    root = tmp_path_factory.mktemp("view") / "reports"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALRUN_CACHE_DIR", str(root.parent / "cache"))
        make_run("capitals", root / "capitals" / "r1")
        make_run("definitions", root / "definitions" / "r1")
    return root


@pytest.fixture
def client(runs: Path) -> Iterator[TestClient]:
    with TestClient(create_app(runs, token=TOKEN, reviewer="ada")) as c:
        yield c


def _copy_run(runs: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(runs / "capitals" / "r1", to)
    return to


def _cell_body(cell: dict[str, Any], **review: Any) -> dict[str, Any]:
    return {"model": cell["model"], "prompt": cell["prompt"], "row_id": cell["row_id"], "repeat": cell["repeat"], **review}


def test_the_run_list_names_each_run_by_its_folder_under_the_root(client: TestClient) -> None:
    data = client.get("/api/runs").json()
    names = {run["run"]: run for run in data["runs"]}
    assert set(names) == {"capitals/r1", "definitions/r1"}
    capitals = names["capitals/r1"]
    assert capitals["name"] == "capitals" and capitals["status"] == "complete"
    assert capitals["cells"] == capitals["cells_done"] == 160
    assert len(capitals["accuracy"]) == 4 and all(0 <= a["accuracy"] <= 1 for a in capitals["accuracy"])
    assert [t["run"] for t in data["trends"]["capitals"]] == ["capitals/r1"]
    assert client.get("/api/runs/capitals/r1").json()["cells_done"] == 160


def test_cells_come_a_page_at_a_time_and_filter_by_model_prompt_and_outcome(client: TestClient, runs: Path) -> None:
    first = client.get("/api/runs/capitals/r1/cells", params={"limit": 7}).json()
    assert first["total"] == 160 and len(first["cells"]) == 7 and first["more"]
    second = client.get("/api/runs/capitals/r1/cells", params={"limit": 7, "offset": 7}).json()
    keys = [(c["model"], c["prompt"], c["row_id"]) for c in first["cells"] + second["cells"]]
    assert len(set(keys)) == 14
    only = client.get("/api/runs/capitals/r1/cells", params={"model": "sonnet-4.6", "prompt": "plain", "limit": 500}).json()
    assert only["total"] == 40 and {(c["model"], c["prompt"]) for c in only["cells"]} == {("sonnet-4.6", "plain")}
    wrong = client.get("/api/runs/capitals/r1/cells", params={"status": "wrong", "limit": 500}).json()
    with (runs / "capitals" / "r1" / "results.csv").open(encoding="utf-8") as handle:
        expected = sum(1 for row in csv.DictReader(handle) if row["status"] == "ok" and row["correct"] == "False")
    assert len(wrong["cells"]) == expected and all(c["outcome"] == "wrong" and c["correct"] is False for c in wrong["cells"])
    cell = first["cells"][0]
    assert cell["request"][0][0] == "system" and cell["reply"] and cell["score_source"] == "auto"


@pytest.mark.parametrize(
    ("params", "says"),
    [({"limit": "0"}, "limit"), ({"limit": "x"}, "whole number"), ({"status": "great"}, "status"),
     ({"colour": "red"}, "unknown parameter"), ({"reviewed": "maybe"}, "reviewed")],
)  # fmt: skip
def test_a_bad_cells_query_is_a_400_saying_what_is_wrong(client: TestClient, params: dict[str, str], says: str) -> None:
    answer = client.get("/api/runs/capitals/r1/cells", params=params)
    assert answer.status_code == 400 and says in answer.json()["error"]


def test_a_review_needs_the_session_token(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    _copy_run(runs, root / "capitals" / "r1")
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        cell = client.get("/api/runs/capitals/r1/cells", params={"limit": 1}).json()["cells"][0]
        body = _cell_body(cell, verdict="wrong")
        url = "/api/runs/capitals/r1/reviews"
        assert client.post(url, json=body).status_code == 403
        assert client.post(url, json=body, headers={TOKEN_HEADER: "guess"}).status_code == 403
        assert client.post(url, json=body, params={"token": TOKEN}).status_code == 403  # a header, not the URL
        with Store.open_readonly(root / "capitals" / "r1") as store:
            assert store.reviews() == []
        assert client.post(url, json=body, headers={TOKEN_HEADER: TOKEN}).status_code == 201


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [({"verdict": "maybe"}, 400, "verdict must be"), ({"verdict": None}, 400, "either"),
     ({"verdict": None, "grade": "pass"}, 400, "judge scorer"), ({"row_id": "no-such-row"}, 404, "no cell"),
     ({"repeat": 3}, 404, "no cell"), ({"repeat": -1}, 400, "repeat"), ({"colour": "red"}, 400, "unknown field"),
     ({"model": ""}, 400, "model"), ({"note": 5}, 400, "note")],
)  # fmt: skip
def test_a_bad_review_is_refused_with_a_clear_message(
    client: TestClient, change: dict[str, Any], status: int, says: str
) -> None:
    cell = client.get("/api/runs/capitals/r1/cells", params={"limit": 1}).json()["cells"][0]
    body = {k: v for k, v in {**_cell_body(cell, verdict="wrong"), **change}.items() if v is not None}
    answer = client.post("/api/runs/capitals/r1/reviews", json=body, headers={TOKEN_HEADER: TOKEN})
    assert answer.status_code == status and says in answer.json()["error"]


def test_a_review_body_that_is_not_json_or_a_run_that_is_not_there(client: TestClient) -> None:
    answer = client.post("/api/runs/capitals/r1/reviews", content=b"{nope", headers={TOKEN_HEADER: TOKEN})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    answer = client.post("/api/runs/capitals/r9/reviews", json={}, headers={TOKEN_HEADER: TOKEN})
    assert answer.status_code == 404


def test_reviews_are_appended_and_the_latest_one_counts(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    folder = _copy_run(runs, root / "capitals" / "r1")
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        cell = client.get("/api/runs/capitals/r1/cells", params={"limit": 1, "status": "correct"}).json()["cells"][0]
        url = "/api/runs/capitals/r1/reviews"
        client.post(url, json=_cell_body(cell, verdict="wrong", note="<script>alert(1)</script>"), headers={TOKEN_HEADER: TOKEN})
        client.post(url, json=_cell_body(cell, verdict="correct", note="on second thought"), headers={TOKEN_HEADER: TOKEN})
        history = client.get(url).json()["reviews"]
        assert [r["verdict"] for r in history] == ["wrong", "correct"] and {r["reviewer"] for r in history} == {"ada"}
        reviewed = client.get("/api/runs/capitals/r1/cells", params={"reviewed": 1}).json()
        assert reviewed["total"] == 1
        shown = reviewed["cells"][0]
        assert shown["score_source"] == "human" and shown["review"]["note"] == "on second thought"
        assert client.get("/api/runs/capitals/r1/cells", params={"disagree": 1}).json()["cells"] == []
        client.post(url, json=_cell_body(cell, verdict="wrong"), headers={TOKEN_HEADER: TOKEN})
        flipped = client.get("/api/runs/capitals/r1/cells", params={"disagree": 1}).json()["cells"]
        assert [(c["row_id"], c["correct"], c["correct_auto"]) for c in flipped] == [(cell["row_id"], False, True)]
    with Store.open_readonly(folder) as store:
        assert len(store.reviews()) == 3 and len(store.latest_reviews()) == 1
    listed = CliRunner().invoke(cli, ["reviews", str(folder)])
    assert listed.exit_code == 0 and listed.output.count("(superseded)") == 2 and "3 reviews of 1 cells" in listed.output
    out = tmp_path / "reviews.csv"
    assert CliRunner().invoke(cli, ["reviews", str(folder), "--csv", str(out)]).exit_code == 0
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["verdict"] for r in rows] == ["wrong", "correct", "wrong"] and [r["counts"] for r in rows] == ["False", "False", "True"]


def test_a_run_folder_outside_the_root_is_never_served(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    _copy_run(runs, root / "mine" / "r1")
    outside = _copy_run(runs, tmp_path / "elsewhere" / "secret")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "mine" / "alias").symlink_to(root / "mine" / "r1", target_is_directory=True)
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        assert [r["run"] for r in client.get("/api/runs").json()["runs"]] == ["mine/r1"]
        for run in ("linked", "mine/alias", "../elsewhere/secret", "mine/../../elsewhere/secret", "/etc", "mine/r1/..", ""):
            for path in (f"/api/runs/{run}/cells", f"/api/runs/{run}", f"/runs/{run}"):
                assert client.get(path).status_code == 404, path
        encoded = client.get("/api/runs/..%2Felsewhere%2Fsecret/cells")
        assert encoded.status_code == 404
        answer = client.post("/api/runs/linked/reviews", json={}, headers={TOKEN_HEADER: TOKEN})
        assert answer.status_code == 404
        assert client.get("/api/diff", params={"a": "mine/r1", "b": "linked"}).status_code == 404


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_reading_a_run_writes_nothing_and_takes_no_lock(runs: Path, tmp_path: Path) -> None:
    folder = _copy_run(runs, tmp_path / "reports" / "capitals" / "r1")
    with sqlite3.connect(folder / "store.sqlite") as db:  # as a finished run leaves it: the WAL folded in
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for name in (".migrate.lock", ".lock"):
        (folder / name).unlink(missing_ok=True)
    before = _snapshot(folder)
    with TestClient(create_app(tmp_path / "reports", token=TOKEN, reviewer="ada")) as client:
        assert client.get("/api/runs").status_code == 200
        assert client.get("/api/runs/capitals/r1/cells", params={"status": "wrong"}).status_code == 200
        assert client.get("/runs/capitals/r1").status_code == 200
        assert client.get("/api/runs/capitals/r1/reviews").status_code == 200
    after = _snapshot(folder)
    def files(snapshot: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {k: v for k, v in snapshot.items() if not k.endswith(("-shm", "-wal"))}

    assert files(after) == files(before)
    assert not (folder / ".migrate.lock").exists() and not (folder / ".lock").exists()


def test_the_list_follows_a_run_that_grows(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    make_run("capitals", root / "capitals" / "r2", extra=["--limit", "5"])
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        assert client.get("/api/runs/capitals/r2").json()["cells_done"] == 20
        make_run("capitals", root / "capitals" / "r2")
        # The list answers at once with what it read last and reads the grown store in the background.
        deadline = time.monotonic() + 60
        while (grown := client.get("/api/runs/capitals/r2").json())["cells_done"] != 160:
            assert time.monotonic() < deadline, grown
            time.sleep(0.02)  # the poll's pace
        assert grown["cells"] == 160
        assert [r["cells_done"] for r in client.get("/api/runs").json()["runs"]] == [160]


def test_pages_escape_what_they_show_and_forbid_inline_scripts(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    _copy_run(runs, root / "<b>odd</b>")
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        page = client.get("/runs/%3Cb%3Eodd%3C%2Fb%3E")
        assert page.status_code == 200 and "<b>odd</b>" not in page.text and "&lt;b&gt;odd&lt;/b&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/").headers["content-security-policy"] == page.headers["content-security-policy"]
        side = client.get("/diff", params={"a": "<b>odd</b>", "b": "<b>odd</b>"})
        assert side.status_code == 200 and "<b>odd</b>" not in side.text


def test_two_runs_side_by_side_pair_the_same_cells(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    _copy_run(runs, root / "a")
    _copy_run(runs, root / "b")
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        cell = client.get("/api/runs/b/cells", params={"status": "correct", "limit": 1}).json()["cells"][0]
        client.post("/api/runs/b/reviews", json=_cell_body(cell, verdict="wrong"), headers={TOKEN_HEADER: TOKEN})
        paired = client.get("/api/diff", params={"a": "a", "b": "b"}).json()
    assert sum(v["n"] for v in paired["variants"]) == 160  # 4 variants × 40 rows, each answered by both
    assert [(f["model"], f["prompt"], f["row_id"], f["right"]) for f in paired["flips"]] == [
        (cell["model"], cell["prompt"], cell["row_id"], "a")]  # the review in B turned that row wrong there
    changed = next(v for v in paired["variants"] if (v["model"], v["prompt"]) == (cell["model"], cell["prompt"]))
    assert (changed["a_only"], changed["b_only"]) == (1, 0) and changed["diff"] == pytest.approx(-1 / 40)


def test_the_view_command_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["view", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not a folder" in result.output
    assert os.path.exists(tmp_path) and not (tmp_path / "nope").exists()


def test_a_run_that_is_going_is_read_while_its_writer_holds_the_lock_and_a_transaction(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    folder = _copy_run(runs, root / "capitals" / "r1")
    writer = Store.open(folder, lock=True)  # what a running evalrun holds
    try:
        run_id = writer.start_run(writer.last_settings())
        with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
            assert client.get("/api/runs/capitals/r1").json()["status"] == "running"
            with writer.transaction() as db:  # a write under way: readers still answer, from before it
                db.execute("DELETE FROM responses")
                page = client.get("/api/runs/capitals/r1/cells", params={"limit": 5}).json()
                assert page["total"] == 160 and all(c["outcome"] != "pending" for c in page["cells"])
        writer.finish_run(run_id, "complete")
    finally:
        writer.close()


def test_a_runs_report_html_is_served_sandboxed_and_only_from_inside(runs: Path, tmp_path: Path) -> None:
    root = tmp_path / "reports"
    folder = _copy_run(runs, root / "capitals" / "r1")
    other = _copy_run(runs, root / "capitals" / "r2")
    (other / "report.html").unlink()
    (other / "report.html").symlink_to(tmp_path / "elsewhere.html")
    (tmp_path / "elsewhere.html").write_text("secret", encoding="utf-8")
    with TestClient(create_app(root, token=TOKEN, reviewer="ada")) as client:
        page = client.get("/runs/capitals/r1/report.html")
        assert page.status_code == 200 and page.text == (folder / "report.html").read_text(encoding="utf-8")
        assert page.headers["content-security-policy"].startswith("sandbox allow-scripts;")
        assert 'href="/runs/capitals/r1/report.html"' in client.get("/runs/capitals/r1").text
        assert client.get("/runs/capitals/r2/report.html").status_code == 404


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["view", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
