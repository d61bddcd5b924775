"""What the store's modules share: one clear line for a failed SQLite operation, the time stamp
every row carries, and the test for a final answer."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from evalrun.errors import StoreError

__all__ = ["FINAL", "now", "translate_sqlite_error"]

# A response is final when it answered, or failed in a way no retry can fix.
FINAL = "(r.status = 'ok' OR r.retryable = 0)"


def now() -> str:
    """The current UTC time as stored (ISO 8601, seconds)."""
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
