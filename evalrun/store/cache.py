"""The response cache shared by run folders: every paid answer, content-addressed by request.

A request key hashes the endpoint, API version, body and repeat index, so `--limit 25` then the
full run, a new `--out`, or a second experiment that shares prompts never pays twice for the
same request. Only answers from real endpoints are kept: a simulated answer never stands in for
a real one. Location: `$EVALRUN_CACHE_DIR`, else `$XDG_CACHE_HOME/evalrun`, else
`~/.cache/evalrun`; one SQLite file, `responses.sqlite`. `evalrun cache info|clear` manage it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalrun.errors import StoreError
from evalrun.messages_api import validate_message
from evalrun.store.records import Outcome

__all__ = ["CACHE_NAME", "ResponseCache", "cache_dir"]

CACHE_NAME = "responses.sqlite"
_CHUNK = 500


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the shared cache lives (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("EVALRUN_CACHE_DIR"):
        return Path(env["EVALRUN_CACHE_DIR"]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "evalrun"


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    responses: int
    bytes: int
    cost_usd: float
    oldest: str | None
    newest: str | None


class ResponseCache:
    """Paid answers by request key. Failures to read or write it never fail a run: the cache is
    an optimisation, the run folder's own store is the record."""

    def __init__(self, path: Path, db: sqlite3.Connection | None) -> None:
        self.path = path
        self._db = db
        self.problem: str | None = None

    @classmethod
    def open(cls, directory: Path | None = None) -> ResponseCache:
        folder = directory if directory is not None else cache_dir()
        path = folder / CACHE_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, message_json TEXT NOT NULL,"
                " cost_usd REAL, latency_s REAL, request_id TEXT, created_at TEXT NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            cache = cls(path, None)
            cache.problem = f"{path}: the shared response cache is not usable ({exc}); answers are not shared"
            return cache
        return cls(path, db)

    @property
    def usable(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def lookup(self, keys: Sequence[str]) -> dict[str, Outcome]:
        """Cached answers for `keys`, as outcomes from the cache (not paid for again)."""
        if self._db is None or not keys:
            return {}
        found: dict[str, Outcome] = {}
        try:
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                for key, message_json, cost, latency, request_id in self._db.execute(
                    f"SELECT key, message_json, cost_usd, latency_s, request_id FROM responses WHERE key IN ({marks})",
                    chunk,
                ):
                    message = _message(message_json)
                    if message is None:
                        continue  # a row that is not a Messages reply is no answer: sent again
                    found[key] = Outcome(
                        key=key,
                        status="ok",
                        message=message,
                        latency_s=latency if isinstance(latency, int | float) else None,
                        attempts=0,
                        request_id=request_id if isinstance(request_id, str) else None,
                        source="cache",
                        cost_usd=cost if isinstance(cost, int | float) else None,
                    )
        except (sqlite3.Error, ValueError) as exc:
            self.problem = f"{self.path}: reading the shared response cache failed ({exc})"
            return {}
        return found

    def put(self, outcomes: Iterable[Outcome]) -> None:
        """Keep real, successful answers (never simulated ones, never errors)."""
        if self._db is None:
            return
        rows = [
            (o.key, json.dumps(o.message, ensure_ascii=False), o.cost_usd, o.latency_s, o.request_id, _now())
            for o in outcomes
            if o.status == "ok" and o.message is not None and not o.simulated and o.source != "cache"
        ]
        if not rows:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO responses (key, message_json, cost_usd, latency_s, request_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            self.problem = f"{self.path}: writing the shared response cache failed ({exc}); answers are not shared"

    def info(self) -> CacheInfo:
        if self._db is None:
            raise StoreError(self.problem or f"{self.path}: the shared response cache is not usable")
        count, cost, oldest, newest = self._db.execute(
            "SELECT count(*), coalesce(sum(cost_usd), 0), min(created_at), max(created_at) FROM responses"
        ).fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(CACHE_NAME + "*") if p.is_file())
        return CacheInfo(self.path, int(count), size, float(cost), oldest, newest)

    def clear(self) -> int:
        """Forget every answer; the number forgotten. A cache that cannot be read (a corrupt or
        foreign file) is removed whole, and `problem` says so (the count is then 0)."""
        if self._db is not None:
            try:
                (count,) = self._db.execute("SELECT count(*) FROM responses").fetchone()
                self._db.execute("DELETE FROM responses")
                self._db.execute("VACUUM")
                return int(count)
            except sqlite3.Error as exc:
                self.problem = f"{self.path}: the shared response cache could not be read ({exc})"
                self.close()
        removed = False
        try:
            for path in self.path.parent.glob(CACHE_NAME + "*"):
                path.unlink()
                removed = True
        except OSError as exc:
            raise StoreError(f"{self.path}: the shared response cache cannot be removed ({exc})") from None
        if not removed:
            raise StoreError(self.problem or f"{self.path}: the shared response cache is not usable")
        self.problem = f"{self.problem or self.path}; the file was removed"
        return 0


def _message(message_json: Any) -> dict[str, Any] | None:
    """A cached row's message, or None when the row holds no Messages reply (JSON of another
    shape, or no JSON): such a row answers nothing."""
    try:
        message = json.loads(message_json)
    except (TypeError, ValueError, RecursionError):
        return None
    return message if validate_message(message) is None else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def outcome_usage(outcome: Outcome) -> dict[str, Any]:
    """The usage object of an outcome's message (empty when there is none)."""
    usage = (outcome.message or {}).get("usage")
    return usage if isinstance(usage, dict) else {}
