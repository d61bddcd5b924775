"""The run store: SQLite in WAL mode, one file per run folder, every response committed on arrival.

Tables (see `migrations.py`): `cells` (what the user asked for), `requests` (what is paid for;
many cells may share one), `rows` (the dataset rows the reports need), `responses` (keyed by
request, never deleted except by `--fresh`), `learned`, `runs`, `meta`, and the batches a
folder created. Every multi-row write is one transaction.

This module opens, locks and migrates a store and holds its transactions, meta, runs and learned
capabilities; the named reads and writes live in mixins of `Store`: the plan (`plan_methods.py`),
responses and spending (`responses.py`), batches (`batch_ledger.py`), reads for reports
(`report_reads.py`) and across runs (`across_reads.py`), reviews (`reviews.py`), and the run
ledger (`run_ledger.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from evalrun.errors import StoreError
from evalrun.store._sqlite import now, translate_sqlite_error
from evalrun.store.across_reads import AcrossReads
from evalrun.store.batch_ledger import BatchLedger
from evalrun.store.migrations import MIGRATIONS, apply_migrations
from evalrun.store.plan_methods import PlanMethods
from evalrun.store.records import PendingRequest
from evalrun.store.report_reads import ReportReads
from evalrun.store.responses import ResponseMethods
from evalrun.store.reviews import ReviewMethods
from evalrun.store.run_ledger import RunLedger

# PendingRequest and translate_sqlite_error live in records.py and _sqlite.py; named here too,
# where the senders and ownership.py import them from.
__all__ = ["RUN_FAILED_CELLS", "STORE_NAME", "Learned", "PendingRequest", "Store", "translate_sqlite_error"]

STORE_NAME = "store.sqlite"
# A run's status in `runs`: running, then complete (every cell answered), failed cells (it went to
# its end with cells failed, unsent or ungraded: exit 4), budget, deadline, interrupted, stopped,
# failed, or aborted (killed mid-way; set by the next run). Stores written before `failed cells`
# existed say `complete` for such a run.
RUN_FAILED_CELLS = "failed cells"


@dataclass(frozen=True)
class Learned:
    """What responses taught us about a model that the table did not say."""

    prefill_refused: bool = False
    refused_params: frozenset[str] = frozenset()


def _flock(path: Path, *, blocking: bool) -> IO[str]:
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        handle.close()
        raise
    return handle


class Store(PlanMethods, ResponseMethods, BatchLedger, ReportReads, AcrossReads, ReviewMethods, RunLedger):
    """A run folder's `store.sqlite` (the plan: `PlanMethods`; responses and spending: `ResponseMethods`;
    batches: `BatchLedger`; reads for reports: `ReportReads`; reads across runs: `AcrossReads`; human
    reviews: `ReviewMethods`; a run's own bookkeeping: `RunLedger`)."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock_file: IO[str] | None = None) -> None:
        self.path = path
        self._db = db
        self._lock_file = lock_file

    @classmethod
    def open(cls, folder: Path, *, create: bool = True, lock: bool = False) -> Store:
        """Open (and migrate) a folder's store. `lock=True` takes the folder's one-writer lock
        first, before anything is created, so a second run on the folder gets the lock message."""
        path = folder / STORE_NAME
        if not create and not path.exists():
            raise StoreError(f"{folder}: no {STORE_NAME} here; is this a run folder (reports/<name>/<run>/)?")
        if folder.exists() and not folder.is_dir():
            raise StoreError(f"{folder}: exists and is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{folder}: cannot create the run folder ({exc.strerror})") from None
        if create and not os.access(folder, os.W_OK):
            raise StoreError(f"{folder}: the run folder is not writable")
        lock_file = cls._take_lock(folder) if lock else None
        try:
            with contextlib.closing(_flock(folder / ".migrate.lock", blocking=True)):
                db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    # NORMAL in WAL mode survives a killed process; only a power cut can lose the last commits.
                    db.execute("PRAGMA synchronous=NORMAL")
                    known = {m.__name__ for m in MIGRATIONS}
                    if db.execute("SELECT 1 FROM sqlite_master WHERE name='_migrations'").fetchone():
                        newer = [n for (n,) in db.execute("SELECT name FROM _migrations") if n not in known]
                        if newer:
                            raise StoreError(
                                f"{path}: written by a newer evalrun (schema step {newer[-1]}); upgrade evalrun to read it"
                            )
                    apply_migrations(db)
                except BaseException:
                    db.close()
                    raise
        except sqlite3.Error as exc:
            if lock_file is not None:
                lock_file.close()
            raise translate_sqlite_error(exc, path) from None
        except BaseException:
            if lock_file is not None:
                lock_file.close()
            raise
        store = cls(path, db, lock_file)
        if lock:
            store._end_stale_runs()
        return store

    @classmethod
    def open_readonly(cls, folder: Path) -> Store:
        """Open a store to read it, changing nothing: no migration, no lock, no new file."""
        path = folder / STORE_NAME
        if not path.exists():
            raise StoreError(f"{folder}: no {STORE_NAME} here; is this a run folder (reports/<name>/<run>/)?")
        # A WAL store needs its -shm file even to be read: in a folder nobody may write (a
        # read-only copy, an archive) nothing can change it either, so it is read as immutable.
        mode = "ro" if os.access(folder, os.W_OK) else "ro&immutable=1"
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, timeout=10.0, check_same_thread=False)
            applied = {n for (n,) in db.execute("SELECT name FROM _migrations")}
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, path) from None
        known = [m.__name__ for m in MIGRATIONS]
        if applied != set(known):
            db.close()
            newer = sorted(applied - set(known))
            raise StoreError(
                f"{path}: written by a newer evalrun (schema step {newer[-1]})"
                if newer
                else f"{path}: written by an older evalrun; `evalrun report {folder}` brings it up to date"
            )
        return cls(path, db)

    @staticmethod
    def _take_lock(folder: Path) -> IO[str]:
        lock_path = folder / ".lock"
        try:
            handle = _flock(lock_path, blocking=False)
        except BlockingIOError:
            try:
                holder = lock_path.read_text().strip()
            except OSError:
                holder = ""
            raise StoreError(
                f"{folder}: another evalrun is running on this folder{f' (pid {holder})' if holder else ''}; "
                f"wait for it to finish, or use --out for a separate folder"
            ) from None
        except OSError as exc:
            raise StoreError(f"{folder}: cannot take the folder's lock ({exc.strerror})") from None
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        return handle

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One real transaction (the connection runs in autocommit otherwise)."""
        try:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise translate_sqlite_error(exc, self.path) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path) from None

    # -- meta and runs -----------------------------------------------------------------------
    def set_meta(self, **values: str) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    def meta(self) -> dict[str, str]:
        return dict(self.query("SELECT key, value FROM meta"))

    def start_run(self, settings: dict[str, Any]) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (started_at, status, settings_json) VALUES (?, 'running', ?)",
                (now(), json.dumps(settings, sort_keys=True)),
            )
        return int(cursor.lastrowid or 0)

    def update_settings(self, run_id: int, settings: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET settings_json = ? WHERE id = ?", (json.dumps(settings, sort_keys=True), run_id))

    def _end_stale_runs(self) -> None:
        # We hold the folder's lock, so a run still marked `running` was killed (or its last
        # write failed, e.g. a full disk): say so instead of leaving it running forever.
        with contextlib.suppress(StoreError), self.transaction() as db:
            db.execute("UPDATE runs SET status = 'aborted' WHERE status = 'running'")

    def last_settings(self) -> dict[str, Any]:
        """The last run's settings; with `stopped` ({status, reason, model}) when it stopped early
        for a reason it recorded, so every report can say why."""
        rows = self.query("SELECT settings_json FROM runs ORDER BY id DESC LIMIT 1")
        settings: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        stop = self.last_stop() if rows else None
        if stop is not None:
            settings["stopped"] = stop
        return settings

    def runs(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT id, started_at, finished_at, status FROM runs ORDER BY id")
        return [dict(zip(("id", "started_at", "finished_at", "status"), r, strict=True)) for r in rows]

    # -- learned capabilities ----------------------------------------------------------------
    def learned(self) -> dict[str, Learned]:
        found: dict[str, dict[str, str]] = {}
        for model, capability, value in self.query("SELECT model, capability, value FROM learned"):
            found.setdefault(model, {})[capability] = value
        return {
            model: Learned(
                prefill_refused=caps.get("prefill") == "refused",
                refused_params=frozenset(json.loads(caps.get("refused_params", "[]"))),
            )
            for model, caps in found.items()
        }

    def save_learned(self, model: str, learned: Learned) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO learned (model, capability, value) VALUES (?, 'prefill', ?)",
                (model, "refused" if learned.prefill_refused else "unknown"),
            )
            db.execute(
                "INSERT OR REPLACE INTO learned (model, capability, value) VALUES (?, 'refused_params', ?)",
                (model, json.dumps(sorted(learned.refused_params))),
            )
