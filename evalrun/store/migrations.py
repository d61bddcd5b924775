"""Schema changes of the run store, as append-only functions. A shipped migration is never edited."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["MIGRATIONS", "apply_migrations"]


def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            settings_json TEXT NOT NULL
        );
        -- The current plan: one row per cell, replaced as a whole when the plan changes.
        CREATE TABLE cells (
            key TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            model TEXT NOT NULL,
            model_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            row_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            answer_mode TEXT NOT NULL,
            target TEXT NOT NULL,
            max_tokens INTEGER NOT NULL
        );
        -- Every answer the API gave (or the error a cell ended with), committed as it arrives.
        CREATE TABLE responses (
            key TEXT PRIMARY KEY,
            status TEXT NOT NULL,              -- ok | error
            retryable INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            error_type TEXT,
            error TEXT,
            message_json TEXT,
            text TEXT,
            stop_reason TEXT,
            response_model TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_1h_input_tokens INTEGER NOT NULL DEFAULT 0,
            service_tier TEXT,
            latency_s REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            request_id TEXT,
            created_at TEXT NOT NULL
        );
        -- What responses taught us about a model that the model table did not say.
        CREATE TABLE learned (
            model TEXT NOT NULL,
            capability TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (model, capability)
        );
        """
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial]


def apply_migrations(db: sqlite3.Connection) -> list[str]:
    """Apply what is missing, each in its own transaction; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {name for (name,) in db.execute("SELECT name FROM _migrations")}
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with db:
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", (migration.__name__,)
            )
        applied.append(migration.__name__)
    return applied
