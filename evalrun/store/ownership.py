"""Which experiment a run folder holds, read before the folder is opened (nothing created,
locked or migrated), and setting another experiment's store aside for `--fresh`."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from evalrun.errors import StoreError
from evalrun.store.run_store import STORE_NAME, Store, translate_sqlite_error

__all__ = ["experiment_in", "set_aside"]


def experiment_in(folder: Path) -> str | None:
        """The experiment whose store `folder` holds (its last run's name), or None when there is
        no store or no run in it yet. Reads without locking, migrating or creating anything."""
        path = folder / STORE_NAME
        if not path.is_file():
            return None
        # Without a WAL file everything is in the main file: read it as immutable, which creates
        # no -wal/-shm beside it (a refused folder is left exactly as it was).
        mode = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
        try:
            with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True, timeout=10.0)) as db:
                rows = db.execute("SELECT settings_json FROM runs ORDER BY id DESC LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, path) from None
        if not rows:
            return None
        try:
            name = json.loads(rows[0][0]).get("name")
        except (ValueError, AttributeError):
            return None
        return str(name) if name else None

def set_aside(folder: Path, owner: str) -> str:
        """Rename the folder's store (with its WAL files) out of the way, under the folder's
        one-writer lock, so a new experiment can start there; nothing is deleted. Returns the new name."""
        with contextlib.closing(Store._take_lock(folder)):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)[:60]
            target = f"{STORE_NAME}.{safe}.{stamp}.old"
            try:
                for suffix in ("-wal", "-shm", ""):
                    source = folder / f"{STORE_NAME}{suffix}"
                    if source.exists():
                        source.rename(folder / f"{target}{suffix}")
            except OSError as exc:
                raise StoreError(f"{folder}: cannot set the old store aside ({exc.strerror})") from None
        return target
