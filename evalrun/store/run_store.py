"""The run store: SQLite in WAL mode, one file per run folder, every response committed on arrival."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalrun.errors import StoreError
from evalrun.plan.grid import Cell, Learned
from evalrun.store.migrations import MIGRATIONS, apply_migrations

__all__ = ["STORE_NAME", "Outcome", "Store"]

STORE_NAME = "store.sqlite"


@dataclass(frozen=True)
class Outcome:
    """How one cell ended: a reply (`status="ok"`) or an error."""

    status: str
    message: dict[str, Any] | None = None
    text: str | None = None
    error: str | None = None
    error_type: str | None = None
    http_status: int | None = None
    retryable: bool = False
    latency_s: float | None = None
    attempts: int = 1
    request_id: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _translate(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc)
    if "full" in text:
        return StoreError(f"{path}: the disk is full; free space and run again to resume (nothing stored is lost)")
    if "readonly" in text or "unable to open" in text:
        return StoreError(f"{path}: cannot write the run store ({text}); check the folder's permissions")
    if "not a database" in text or "malformed" in text:
        return StoreError(f"{path}: not an evalrun store, or damaged ({text})")
    if "locked" in text:
        return StoreError(f"{path}: the store is busy (another evalrun is writing it)")
    return StoreError(f"{path}: store error: {text}")


class Store:
    """A run folder's `store.sqlite`."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._lock_file: Any = None

    @classmethod
    def open(cls, folder: Path, *, create: bool = True) -> Store:
        path = folder / STORE_NAME
        if not create and not path.exists():
            raise StoreError(f"{folder}: no {STORE_NAME} here; is this a run folder (reports/<name>/<run>/)?")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{folder}: cannot create the run folder ({exc.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise StoreError(f"{folder}: the run folder is not writable")
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; only a power cut can lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            known = {m.__name__ for m in MIGRATIONS}
            has_table = db.execute("SELECT 1 FROM sqlite_master WHERE name='_migrations'").fetchone()
            if has_table:
                newer = [n for (n,) in db.execute("SELECT name FROM _migrations") if n not in known]
                if newer:
                    db.close()
                    raise StoreError(
                        f"{path}: written by a newer evalrun (schema step {newer[-1]}); upgrade evalrun to read it"
                    )
            apply_migrations(db)
        except sqlite3.Error as exc:
            raise _translate(exc, path) from None
        return cls(path, db)

    def close(self) -> None:
        self.unlock()
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- locking: one writer per run folder --------------------------------------------------
    def lock(self) -> None:
        """Take the folder's lock or raise StoreError: two runs on one store would pay twice."""
        lock_path = self.path.with_name(".lock")
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise StoreError(
                f"{self.path.parent}: another evalrun is running on this folder{f' (pid {holder})' if holder else ''}; "
                f"wait for it to finish, or use --out for a separate folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- writes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:
                yield self._db
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def set_meta(self, **values: str) -> None:
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def start_run(self, settings: dict[str, Any]) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (started_at, status, settings_json) VALUES (?, 'running', ?)",
                (_now(), json.dumps(settings, sort_keys=True)),
            )
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET finished_at = ?, status = ? WHERE id = ?", (_now(), status, run_id))

    def last_settings(self) -> dict[str, Any]:
        row = self._db.execute("SELECT settings_json FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else {}

    def runs(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, started_at, finished_at, status FROM runs ORDER BY id").fetchall()
        return [dict(zip(("id", "started_at", "finished_at", "status"), r, strict=True)) for r in rows]

    def save_plan(self, cells: Iterable[Cell]) -> None:
        """Replace the planned cells in one transaction (responses are kept, keyed by content)."""
        with self._write() as db:
            db.execute("DELETE FROM cells")
            db.executemany(
                "INSERT OR REPLACE INTO cells (key, seq, model, model_id, prompt, row_id, repeat, answer_mode,"
                " target, max_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (c.key, i, c.model, c.model_id, c.prompt, c.row_id, c.repeat, c.answer_mode, c.target, c.max_tokens)
                    for i, c in enumerate(cells)
                ),
            )

    def record(self, key: str, outcome: Outcome) -> None:
        """Commit one cell's outcome now: a killed run loses at most what is in flight."""
        message = outcome.message or {}
        usage = message.get("usage") or {}
        creation = usage.get("cache_creation") or {}
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO responses (key, status, retryable, http_status, error_type, error,"
                " message_json, text, stop_reason, response_model, input_tokens, output_tokens,"
                " cache_creation_input_tokens, cache_read_input_tokens, cache_creation_1h_input_tokens,"
                " service_tier, latency_s, attempts, request_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    outcome.status,
                    int(outcome.retryable),
                    outcome.http_status,
                    outcome.error_type,
                    outcome.error,
                    json.dumps(message, ensure_ascii=False) if outcome.message is not None else None,
                    outcome.text,
                    message.get("stop_reason"),
                    message.get("model"),
                    int(usage.get("input_tokens") or 0),
                    int(usage.get("output_tokens") or 0),
                    int(usage.get("cache_creation_input_tokens") or 0),
                    int(usage.get("cache_read_input_tokens") or 0),
                    int(creation.get("ephemeral_1h_input_tokens") or 0),
                    usage.get("service_tier"),
                    outcome.latency_s,
                    outcome.attempts,
                    outcome.request_id,
                    _now(),
                ),
            )

    def clear_responses(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM responses")
            db.execute("DELETE FROM learned")

    # -- reads -------------------------------------------------------------------------------
    def finished_keys(self) -> set[str]:
        """Cells that need no request: answered, or failed in a way a retry cannot fix."""
        rows = self._db.execute("SELECT key FROM responses WHERE status = 'ok' OR retryable = 0")
        return {key for (key,) in rows}

    def learned(self) -> dict[str, Learned]:
        found: dict[str, dict[str, str]] = {}
        for model, capability, value in self._db.execute("SELECT model, capability, value FROM learned"):
            found.setdefault(model, {})[capability] = value
        return {
            model: Learned(
                prefill_refused=caps.get("prefill") == "refused",
                refused_params=frozenset(json.loads(caps.get("refused_params", "[]"))),
            )
            for model, caps in found.items()
        }

    def save_learned(self, model: str, learned: Learned) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO learned (model, capability, value) VALUES (?, 'prefill', ?)",
                (model, "refused" if learned.prefill_refused else "unknown"),
            )
            db.execute(
                "INSERT OR REPLACE INTO learned (model, capability, value) VALUES (?, 'refused_params', ?)",
                (model, json.dumps(sorted(learned.refused_params))),
            )

    def cell_rows(self) -> list[dict[str, Any]]:
        """Every planned cell with its response (if any), in plan order."""
        cursor = self._db.execute(
            "SELECT c.model, c.model_id, c.prompt, c.row_id, c.repeat, c.answer_mode, c.target, c.max_tokens,"
            " r.status, r.retryable, r.http_status, r.error_type, r.error, r.text, r.stop_reason, r.response_model,"
            " r.input_tokens, r.output_tokens, r.cache_creation_input_tokens, r.cache_read_input_tokens,"
            " r.cache_creation_1h_input_tokens, r.service_tier, r.latency_s, r.attempts, r.request_id, c.key"
            " FROM cells c LEFT JOIN responses r ON r.key = c.key ORDER BY c.seq"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]
