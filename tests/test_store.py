from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from evalrun.errors import StoreError
from evalrun.store.cache import ResponseCache
from evalrun.store.migrations import MIGRATIONS, m001_initial
from evalrun.store.records import CellRecord, Outcome, RequestRecord, RowRecord
from evalrun.store.run_store import Store

EXPECTED = {
    "cells": {"seq", "model", "model_id", "prompt", "row_seq", "row_id", "repeat", "answer_mode", "request_key",
              "max_tokens", "judge_key"},
    "requests": {"key", "first_seq", "model", "stage", "gate", "max_tokens", "input_tokens", "body_json"},
    "rows": {"row_seq", "row_id", "line", "cluster", "target", "values_json"},
    "responses": {"key", "status", "retryable", "http_status", "error_type", "error", "message_json", "raw", "text",
                  "stop_reason", "response_model", "input_tokens", "output_tokens", "cache_creation_input_tokens",
                  "cache_read_input_tokens", "cache_creation_1h_input_tokens", "service_tier", "cost_usd", "source",
                  "simulated", "latency_s", "attempts", "request_id", "run_id", "created_at"},
}  # fmt: skip


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def test_migrations_create_the_expected_columns(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        db = store._db
        for table, expected in EXPECTED.items():
            assert columns(db, table) == expected, table
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_of_the_first_schema_is_migrated_and_keeps_its_answers(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    m001_initial(db)
    db.execute("INSERT INTO _migrations VALUES ('m001_initial', 'then')")
    db.execute(
        "INSERT INTO responses (key, status, text, input_tokens, output_tokens, created_at) VALUES ('k', 'ok', 'C', 5, 1, 'then')"
    )
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        assert store.final_keys(["k", "other"]) == {"k"}
        assert columns(store._db, "responses") == EXPECTED["responses"]
        assert [n for (n,) in store._db.execute("SELECT name FROM _migrations ORDER BY name")] == [
            m.__name__ for m in MIGRATIONS
        ]


def test_a_store_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute("INSERT INTO _migrations VALUES ('m999_future', 'now')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer evalrun"):
        Store.open(tmp_path)


def test_only_one_run_per_folder(tmp_path: Path) -> None:
    first = Store.open(tmp_path, lock=True)
    with pytest.raises(StoreError, match="another evalrun is running"):
        Store.open(tmp_path, lock=True)
    first.close()
    Store.open(tmp_path, lock=True).close()


def _open_locked(folder: str, results: multiprocessing.Queue, release: Any) -> None:  # type: ignore[type-arg]
    try:
        store = Store.open(Path(folder), lock=True)
        results.put("ok")
        # Hold the lock until every other process has tried (a fixed sleep here let a late
        # starter on a loaded machine find the lock free and make a second "ok").
        release.wait(60)
        store.close()
    except StoreError as exc:
        results.put(str(exc))


def test_simultaneous_starts_get_the_lock_message_not_a_schema_error(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    release = context.Event()
    processes = [context.Process(target=_open_locked, args=(str(tmp_path / "run"), results, release)) for _ in range(12)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        release.set()
        for process in processes:
            process.join(timeout=60)
    assert outcomes.count("ok") == 1
    assert all("another evalrun is running" in o for o in outcomes if o != "ok"), outcomes


def test_a_killed_run_is_not_left_running(tmp_path: Path) -> None:
    with Store.open(tmp_path, lock=True) as store:
        store.start_run({"name": "x"})  # never finished: the process died
    with Store.open(tmp_path, lock=True) as store:
        assert [r["status"] for r in store.runs()] == ["aborted"]


def test_retryable_errors_are_sent_again_permanent_ones_are_not(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.record(Outcome(key="a", status="ok", message={"content": [], "usage": {"input_tokens": 3}}))
        store.record(Outcome(key="b", status="error", error="gave up", retryable=True))
        store.record(Outcome(key="c", status="error", error="400"))
        assert store.final_keys(["a", "b", "c"]) == {"a", "c"}


def _plan(store: Store, keys: list[str]) -> None:
    store.add_rows([RowRecord(i, f"r{i}", i + 2, None, "A", "{}") for i in range(len(keys))])
    cells = [CellRecord(i, "m", "m", "p", i, f"r{i}", 0, "prefill", key, 1) for i, key in enumerate(keys)]
    requests = [RequestRecord(key, i, "m", 1, 10, "{}") for i, key in enumerate(keys)]
    store.add_cells(cells, requests)


def test_cells_sharing_a_request_all_get_its_answer_and_it_is_pending_once(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        _plan(store, ["same", "same", "other"])
        assert [p.key for p in store.pending("m", after_seq=-1, limit=10, run_id=1)] == ["same", "other"]
        store.record(Outcome(key="same", status="ok", message={"content": [{"type": "text", "text": "A"}]}), run_id=1)
        assert [p.key for p in store.pending("m", after_seq=-1, limit=10, run_id=1)] == ["other"]
        texts = [row["text"] for row in store.cell_rows()]
        assert texts == ["A", "A", None]
        assert store.plan_counts() == {"cells": 3, "cells_done": 2, "requests": 2, "requests_done": 1}


def test_a_request_that_failed_in_this_run_waits_for_the_next_run(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        _plan(store, ["k"])
        store.record(Outcome(key="k", status="error", retryable=True), run_id=7)
        assert store.pending("m", after_seq=-1, limit=10, run_id=7) == []
        assert [p.key for p in store.pending("m", after_seq=-1, limit=10, run_id=8)] == ["k"]


def test_spent_counts_everything_the_folder_paid_and_survives_fresh(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.record(Outcome(key="a", status="ok", message={"content": []}, cost_usd=0.25))
        store.record(Outcome(key="b", status="ok", message={"content": []}, cost_usd=0.5, source="cache"))
        assert store.spent_usd() == pytest.approx(0.25)
        store.forget_responses()
        assert store.final_keys(["a"]) == set()
        assert store.spent_usd() == pytest.approx(0.25)


def test_a_reply_without_usage_has_no_tokens_and_no_cost(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        _plan(store, ["k"])
        store.record(Outcome(key="k", status="ok", message={"content": [{"type": "text", "text": "A"}]}))
        row = store.cell_rows()[0]
        assert row["input_tokens"] is None and row["cost_usd"] is None


def test_the_shared_cache_keeps_real_answers_only(tmp_path: Path) -> None:
    cache = ResponseCache.open(tmp_path / "cache")
    real = Outcome(key="r", status="ok", message={"content": []}, cost_usd=0.1)
    simulated = Outcome(key="s", status="ok", message={"content": []}, simulated=True)
    failed = Outcome(key="f", status="error", error="x")
    cache.put([real, simulated, failed])
    found = cache.lookup(["r", "s", "f"])
    assert set(found) == {"r"} and found["r"].source == "cache" and found["r"].cost_usd == 0.1
    assert cache.info().responses == 1
    assert cache.clear() == 1 and cache.lookup(["r"]) == {}
    cache.close()


def test_an_unusable_cache_never_fails_a_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = ResponseCache.open(tmp_path / "file")
    assert not cache.usable and cache.problem
    assert cache.lookup(["k"]) == {}
    cache.put([Outcome(key="k", status="ok", message={"content": []})])


def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        import os

        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(StoreError, match="not writable"):
            Store.open(folder)
    finally:
        folder.chmod(0o700)


def test_a_read_only_open_changes_nothing(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    (tmp_path / ".migrate.lock").unlink()
    def files() -> dict[str, int]:  # SQLite's own -wal/-shm files come and go with any reader
        return {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))}

    before = files()
    with Store.open_readonly(tmp_path) as store:
        assert store.runs() == []
        with pytest.raises(StoreError):
            store.set_meta(x="y")
    assert files() == before
