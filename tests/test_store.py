from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evalrun.errors import StoreError
from evalrun.store.run_store import Outcome, Store


def test_migrations_create_the_expected_columns(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        db = store._db
        columns = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
        assert {"key", "status", "retryable", "message_json", "input_tokens", "output_tokens", "attempts"} <= columns
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute("INSERT INTO _migrations VALUES ('m999_future', 'now')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer evalrun"):
        Store.open(tmp_path)


def test_only_one_run_per_folder(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    first.lock()
    second = Store.open(tmp_path)
    with pytest.raises(StoreError, match="another evalrun is running"):
        second.lock()
    first.close()
    second.lock()
    second.close()


def test_retryable_errors_are_sent_again_permanent_ones_are_not(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.record("a", Outcome(status="ok", message={"content": [], "usage": {"input_tokens": 3}}))
        store.record("b", Outcome(status="error", error="gave up", retryable=True))
        store.record("c", Outcome(status="error", error="400"))
        assert store.finished_keys() == {"a", "c"}


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
