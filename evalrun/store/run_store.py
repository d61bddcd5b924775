"""The run store: SQLite in WAL mode, one file per run folder, every response committed on arrival.

Tables (see `migrations.py`): `cells` (what the user asked for), `requests` (what is paid for;
many cells may share one), `rows` (the dataset rows the reports need), `responses` (keyed by
request, never deleted except by `--fresh`), `learned`, `runs`, `meta`, and the batches a
folder created. Every multi-row write is one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from evalrun.errors import StoreError
from evalrun.messages_api import USAGE_COLUMNS, Usage, usage_counters
from evalrun.store._cells_sql import cells_select
from evalrun.store.across_reads import AcrossReads
from evalrun.store.migrations import MIGRATIONS, apply_migrations
from evalrun.store.records import CellRecord, Outcome, RequestRecord, RowRecord, reply_text
from evalrun.store.reviews import ReviewMethods
from evalrun.store.run_ledger import RunLedger

__all__ = ["RUN_FAILED_CELLS", "STORE_NAME", "Learned", "PendingRequest", "Store"]

STORE_NAME = "store.sqlite"
# A run's status in `runs`: running, then complete (every cell answered), failed cells (it went to
# its end with cells failed, unsent or ungraded: exit 4), budget, deadline, interrupted, stopped,
# failed, or aborted (killed mid-way; set by the next run). Stores written before `failed cells`
# existed say `complete` for such a run.
RUN_FAILED_CELLS = "failed cells"
_FINAL = "(r.status = 'ok' OR r.retryable = 0)"
# A reply without a usage object stores NULL in every usage column.
_NO_USAGE = Usage(*(None,) * len(USAGE_COLUMNS))


@dataclass(frozen=True)
class Learned:
    """What responses taught us about a model that the table did not say."""

    prefill_refused: bool = False
    refused_params: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request of the plan with no final answer yet."""

    key: str
    first_seq: int
    model: str
    max_tokens: int
    input_tokens: int
    body_json: str
    gate: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def translate_sqlite_error(exc: sqlite3.Error | OSError, path: Path) -> StoreError:
    """One clear line for a failed store operation."""
    text = str(exc)
    if "full" in text or getattr(exc, "errno", None) == 28:
        return StoreError(f"{path}: the disk is full; free space and run again to resume (nothing stored is lost)")
    if "readonly" in text or "unable to open" in text:
        return StoreError(f"{path}: cannot write the run store ({text}); check the folder's permissions")
    if "not a database" in text or "malformed" in text:
        return StoreError(f"{path}: not an evalrun store, or damaged ({text})")
    if "locked" in text:
        return StoreError(f"{path}: the store is busy (another evalrun is writing it)")
    return StoreError(f"{path}: store error: {text}")


def _flock(path: Path, *, blocking: bool) -> IO[str]:
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        handle.close()
        raise
    return handle


class Store(AcrossReads, ReviewMethods, RunLedger):
    """A run folder's `store.sqlite` (the reads across runs: `AcrossReads`; human reviews: `ReviewMethods`;
    a run's own bookkeeping: `RunLedger`)."""

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
                (_now(), json.dumps(settings, sort_keys=True)),
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

    # -- the plan ----------------------------------------------------------------------------
    def plan_fingerprint(self) -> str | None:
        """The fingerprint of the stored plan when it was written completely, else None."""
        meta = self.meta()
        return meta.get("plan_fingerprint") if meta.get("plan_complete") == "1" else None

    def add_rows(self, rows: Iterable[RowRecord]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO rows (row_seq, row_id, line, cluster, target, values_json) VALUES (?, ?, ?, ?, ?, ?)",
                ((r.row_seq, r.row_id, r.line, r.cluster, r.target, r.values_json) for r in rows),
            )

    def add_cells(self, cells: Sequence[CellRecord], requests: Sequence[RequestRecord]) -> None:
        """Write a chunk of the plan in one transaction. A request already stored keeps its
        first (earliest) position."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO cells (seq, model, model_id, prompt, row_seq, row_id, repeat, answer_mode,"
                " request_key, max_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (c.seq, c.model, c.model_id, c.prompt, c.row_seq, c.row_id, c.repeat, c.answer_mode,
                     c.request_key, c.max_tokens)
                    for c in cells
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT OR IGNORE INTO requests (key, first_seq, model, stage, gate, max_tokens, input_tokens,"
                " body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (r.key, r.first_seq, r.model, r.stage, r.gate, r.max_tokens, r.input_tokens, r.body_json)
                    for r in requests
                ),
            )

    def link_judges(self, links: Sequence[tuple[int, str]]) -> None:
        """Record which grading request grades which cell."""
        with self.transaction() as db:
            db.executemany("UPDATE cells SET judge_key = ? WHERE seq = ?", ((key, seq) for seq, key in links))

    def clear_judges(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE cells SET judge_key = NULL")
            db.execute("DELETE FROM requests WHERE stage = 'judge'")

    def answered_cells(self, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
        """Answered cells not yet linked to a grading request, in plan order."""
        cursor = self._db.execute(
            "SELECT c.seq, c.row_seq, w.values_json, w.target, r.text, r.message_json FROM cells c"
            " JOIN rows w ON w.row_seq = c.row_seq JOIN responses r ON r.key = c.request_key"
            " WHERE r.status = 'ok' AND c.judge_key IS NULL AND c.seq > ? ORDER BY c.seq LIMIT ?",
            (after_seq, limit),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def finish_plan(self, fingerprint: str) -> None:
        self.set_meta(plan_fingerprint=fingerprint, plan_complete="1")

    def drop_model_plan(self, model: str) -> None:
        """Forget one model's cells and requests before it is re-planned (after learning)."""
        with self.transaction() as db:
            db.execute("DELETE FROM cells WHERE model = ?", (model,))
            db.execute("DELETE FROM requests WHERE model = ? AND stage = 'answer'", (model,))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('plan_complete', '0')")

    def pending(self, model: str, *, after_seq: int, limit: int, run_id: int, stage: str = "answer") -> list[PendingRequest]:
        """The next requests of `model` with no final answer, in plan order. A request whose
        retries ran out in this run (`run_id`) is not handed out again until the next run."""
        rows = self.query(
            "SELECT q.key, q.first_seq, q.model, q.max_tokens, q.input_tokens, q.body_json, q.gate FROM requests q"
            " LEFT JOIN responses r ON r.key = q.key"
            " WHERE q.model = ? AND q.stage = ? AND q.first_seq > ?"
            " AND (r.key IS NULL OR (r.status != 'ok' AND r.retryable = 1 AND coalesce(r.run_id, -1) != ?))"
            " AND NOT EXISTS (SELECT 1 FROM batch_requests b JOIN batches t ON t.id = b.batch_id"
            " WHERE b.key = q.key AND t.status != 'collected')"
            " ORDER BY q.first_seq LIMIT ?",
            (model, stage, after_seq, run_id, limit),
        )
        return [PendingRequest(*row) for row in rows]

    def count_pending(self, *, run_id: int, stage: str | None = None) -> int:
        rows = self.query(
            "SELECT count(*) FROM requests q LEFT JOIN responses r ON r.key = q.key"
            " WHERE (r.key IS NULL OR (r.status != 'ok' AND r.retryable = 1 AND coalesce(r.run_id, -1) != ?))"
            + (" AND q.stage = ?" if stage else ""),
            (run_id, stage) if stage else (run_id,),
        )
        return int(rows[0][0])

    def plan_counts(self) -> dict[str, int]:
        """Cells, distinct requests, and how many of each have a final answer."""
        cells, cells_done = self.query(
            f"SELECT count(*), coalesce(sum(CASE WHEN r.key IS NOT NULL AND {_FINAL} THEN 1 ELSE 0 END), 0)"
            " FROM cells c LEFT JOIN responses r ON r.key = c.request_key"
        )[0]
        requests, requests_done = self.query(
            f"SELECT count(*), coalesce(sum(CASE WHEN r.key IS NOT NULL AND {_FINAL} THEN 1 ELSE 0 END), 0)"
            " FROM requests q LEFT JOIN responses r ON r.key = q.key WHERE q.stage = 'answer'"
        )[0]
        return {"cells": cells, "cells_done": cells_done, "requests": requests, "requests_done": requests_done}

    def request_count(self, stage: str = "answer") -> int:
        """How many distinct requests the plan holds for a stage (without joining the answers)."""
        (count,) = self.query("SELECT count(*) FROM requests WHERE stage = ?", (stage,))[0]
        return int(count)

    def request_body(self, key: str) -> str | None:
        rows = self.query("SELECT body_json FROM requests WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    # -- responses ---------------------------------------------------------------------------
    def record(self, outcome: Outcome, *, run_id: int | None = None) -> None:
        """Commit one request's outcome now: a killed run loses at most what is in flight.
        (One statement in autocommit mode is its own transaction.)"""
        if outcome.raw is not None:
            self.record_many([outcome], run_id=run_id)  # its row, and its entry in the ledger of paid bodies
            return
        try:
            self._db.execute(_INSERT_RESPONSE, _response_row(outcome, run_id))
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path) from None

    def record_many(self, outcomes: Iterable[Outcome], *, run_id: int | None = None) -> None:
        outcomes = list(outcomes)
        with self.transaction() as db:
            db.executemany(_INSERT_RESPONSE, (_response_row(o, run_id) for o in outcomes))
            db.executemany(_INSERT_PAID, (_paid_row(o, run_id) for o in outcomes if o.raw is not None))

    def spent_usd(self) -> float:
        """Everything this folder ever paid for (answers copied from the shared cache are free)."""
        (total,) = self.query(
            "SELECT coalesce(sum(cost_usd), 0) FROM responses WHERE source != 'cache' AND cost_usd IS NOT NULL"
        )[0]
        before = float(self.meta().get("spent_before_fresh_usd", "0") or 0)
        return float(total) + self.paid_replies_usd() + before

    def paid_replies_usd(self) -> float:
        """What the malformed replies this folder received cost, every one of them (by their
        own usage figures, else their worst case)."""
        (total,) = self.query("SELECT coalesce(sum(cost_usd), 0) FROM paid_replies")[0]
        return float(total)

    def paid_replies(self, key: str) -> list[str]:
        """The bodies of every malformed reply received for request `key`, oldest first."""
        return [raw for (raw,) in self.query("SELECT raw FROM paid_replies WHERE key = ? ORDER BY id", (key,))]

    def forget_responses(self) -> None:
        """`--fresh`: forget the stored answers (what they cost still counts against the budget)."""
        spent = self.spent_usd() - self.paid_replies_usd()  # the ledger of paid bodies stays
        with self.transaction() as db:
            db.execute("DELETE FROM responses")
            db.execute("DELETE FROM learned")
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('spent_before_fresh_usd', ?)", (repr(spent),)
            )

    def final_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` already have a final answer (answered, or failed for good)."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                k for (k,) in self.query(f"SELECT r.key FROM responses r WHERE r.key IN ({marks}) AND {_FINAL}", chunk)
            )
        return found

    def responses_without_cost(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(key, model label, usage) of answers stored without a cost (older stores, late prices)."""
        rows = self.query(
            "SELECT r.key, q.model, r.input_tokens, r.output_tokens, r.cache_creation_input_tokens,"
            " r.cache_read_input_tokens, r.cache_creation_1h_input_tokens, r.service_tier FROM responses r"
            " JOIN requests q ON q.key = r.key WHERE r.status = 'ok' AND r.cost_usd IS NULL AND r.input_tokens IS NOT NULL"
        )
        return [(key, model, dict(zip(USAGE_COLUMNS, rest, strict=True))) for key, model, *rest in rows]

    def set_costs(self, costs: Iterable[tuple[float, str]]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE responses SET cost_usd = ? WHERE key = ?", costs)

    # -- Message Batches ---------------------------------------------------------------------
    def add_batch(
        self, local_id: str, *, endpoint: str, models: str, requests: Sequence[tuple[str, str, int, int]],
        reserved_usd: float,
    ) -> None:  # fmt: skip
        """Commit a batch before it is submitted: a killed run finds it again instead of paying twice.
        `requests` are (key, model label, max_tokens, input token estimate)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO batches (id, endpoint, model, status, created_at, requests, reserved_usd)"
                " VALUES (?, ?, ?, 'submitting', ?, ?, ?)",
                (local_id, endpoint, models, _now(), len(requests), reserved_usd),
            )
            db.executemany(
                "INSERT INTO batch_requests (custom_id, batch_id, key, model, max_tokens, input_tokens)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ((key, local_id, key, model, max_tokens, tokens) for key, model, max_tokens, tokens in requests),
            )

    def set_batch_id(self, local_id: str, batch_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET id = ?, status = 'in_progress' WHERE id = ?", (batch_id, local_id))
            db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (batch_id, local_id))

    def drop_batch(self, batch_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (batch_id,))
            db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def set_batch_status(self, batch_id: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE batches SET status = ? WHERE id = ?", (status, batch_id))

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches this folder created whose results are not all stored yet."""
        rows = self.query(
            "SELECT id, endpoint, model, status, created_at, requests, reserved_usd FROM batches"
            " WHERE status != 'collected' ORDER BY created_at"
        )
        names = ("id", "endpoint", "models", "status", "created_at", "requests", "reserved_usd")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def batch_requests(self, batch_id: str) -> list[PendingRequest]:
        """The requests of a batch (for re-attaching after a restart)."""
        rows = self.query(
            "SELECT b.key, coalesce(q.first_seq, -1), b.model, b.max_tokens, b.input_tokens,"
            " coalesce(q.body_json, '{}'), coalesce(q.gate, '') FROM batch_requests b"
            " LEFT JOIN requests q ON q.key = b.key WHERE b.batch_id = ?",
            (batch_id,),
        )
        return [PendingRequest(*row) for row in rows]

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

    # -- reading for reports -----------------------------------------------------------------
    def iter_cells(
        self, *, chunk: int = 5000, order: str = "seq", with_requests: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """Every planned cell with its row and response, in chunks of dicts.

        `order="seq"` is plan order; `order="row"` groups each model × prompt's repeats of a row.
        `with_requests` adds `request_json`, the body that was sent (image files as references).
        """
        order_by = "c.seq" if order == "seq" else "c.model, c.prompt, c.row_seq, c.repeat"
        cursor = self._db.execute(cells_select(with_requests=with_requests) + f" ORDER BY {order_by}")
        names = [d[0] for d in cursor.description]
        try:
            while batch := cursor.fetchmany(chunk):
                yield [dict(zip(names, row, strict=True)) for row in batch]
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path) from None

    def cell_rows(self) -> list[dict[str, Any]]:
        """Every planned cell with its row and response, in plan order (small runs and tests)."""
        return [row for chunk in self.iter_cells() for row in chunk]

    # -- reading for reports: counts, clusters, request bodies (reporttrust) ----------------
    def count_cells(self) -> int:
        """How many cells the store plans."""
        return int(self.query("SELECT count(*) FROM cells")[0][0])

    def count_rows(self) -> int:
        """How many dataset rows the store holds (row positions are 0 … n − 1)."""
        return int(self.query("SELECT coalesce(max(row_seq) + 1, 0) FROM rows")[0][0])

    def row_clusters(self) -> list[tuple[int, str | None]]:
        """(row position, cluster) of every stored dataset row, in row order."""
        return list(self.query("SELECT row_seq, cluster FROM rows ORDER BY row_seq"))

    def responses_mark(self) -> tuple[int, int]:
        """(how many responses, the last one's rowid): changes whenever a response is stored."""
        count, top = self.query("SELECT count(*), coalesce(max(rowid), 0) FROM responses")[0]
        return int(count), int(top)

    def request_bodies_after(self, rowid: int, limit: int) -> list[tuple[int, str, str]]:
        """(rowid, key, body) of the next `limit` stored requests after `rowid`, in the order written."""
        return list(self.query(
            "SELECT rowid, key, body_json FROM requests WHERE rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit)))


_INSERT_RESPONSE = (
    "INSERT OR REPLACE INTO responses (key, status, retryable, http_status, error_type, error,"
    " message_json, raw, text, stop_reason, response_model, input_tokens, output_tokens,"
    " cache_creation_input_tokens, cache_read_input_tokens, cache_creation_1h_input_tokens,"
    " service_tier, cost_usd, source, simulated, latency_s, attempts, request_id, run_id, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_INSERT_PAID = "INSERT INTO paid_replies (key, run_id, raw, cost_usd, created_at) VALUES (?, ?, ?, ?, ?)"


def _finite(cost: float | None) -> float | None:
    return cost if cost is not None and math.isfinite(cost) else None


def _paid_row(outcome: Outcome, run_id: int | None) -> tuple[Any, ...]:
    return (outcome.key, run_id, outcome.raw, _finite(outcome.cost_usd), _now())


def _response_row(outcome: Outcome, run_id: int | None) -> tuple[Any, ...]:
    message = outcome.message or {}
    counters = usage_counters(message.get("usage")) or _NO_USAGE
    # A malformed reply's cost is counted in the ledger of paid bodies (once, whatever replaces it).
    cost = _finite(outcome.cost_usd) if outcome.raw is None else None
    return (
        outcome.key,
        outcome.status,
        int(outcome.retryable),
        outcome.http_status,
        outcome.error_type,
        outcome.error,
        json.dumps(message, ensure_ascii=False) if outcome.message is not None else None,
        outcome.raw,
        reply_text(message) if outcome.message is not None else None,
        message.get("stop_reason") if isinstance(message.get("stop_reason"), str) else None,
        message.get("model") if isinstance(message.get("model"), str) else None,
        *counters,
        cost,
        outcome.source,
        int(outcome.simulated),
        outcome.latency_s,
        outcome.attempts,
        outcome.request_id,
        run_id,
        _now(),
    )
