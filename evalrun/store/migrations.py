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


def m002_cells_apart_from_requests(db: sqlite3.Connection) -> None:
    """A cell is what the user asked for (model, prompt, row, repeat); a request is what is paid for.

    Many cells may share one request. The old `cells` table was keyed by the request, so cells
    with identical bodies collapsed into one; it held only the current plan, which is rebuilt
    on the next run, so it is dropped here. Stored responses are all kept.
    """
    db.executescript(
        """
        DROP TABLE cells;
        CREATE TABLE cells (
            seq INTEGER PRIMARY KEY,          -- plan order
            model TEXT NOT NULL,              -- the model's label
            model_id TEXT NOT NULL,
            prompt TEXT NOT NULL,
            row_seq INTEGER NOT NULL,
            row_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            answer_mode TEXT NOT NULL,
            request_key TEXT NOT NULL,
            max_tokens INTEGER NOT NULL,
            judge_key TEXT                    -- the grading request of a model-graded cell
        );
        CREATE UNIQUE INDEX cells_identity ON cells (model, prompt, row_seq, repeat);
        CREATE INDEX cells_request ON cells (request_key);
        CREATE INDEX cells_judge ON cells (judge_key);
        -- Every distinct request of the current plan, with the body that is sent.
        CREATE TABLE requests (
            key TEXT PRIMARY KEY,
            first_seq INTEGER NOT NULL,       -- the first cell that asks for it (send order)
            model TEXT NOT NULL,
            stage TEXT NOT NULL DEFAULT 'answer',   -- answer | judge
            gate TEXT NOT NULL DEFAULT '',    -- the group whose first request goes alone (a probe)
            max_tokens INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,    -- the local estimate, for pacing and the budget
            body_json TEXT NOT NULL           -- image files as references, read when sent
        );
        CREATE INDEX requests_order ON requests (model, stage, first_seq);
        -- The dataset rows, as the scorers and reports need them.
        CREATE TABLE rows (
            row_seq INTEGER PRIMARY KEY,
            row_id TEXT NOT NULL UNIQUE,
            line INTEGER NOT NULL,
            cluster TEXT,
            target TEXT NOT NULL,
            values_json TEXT NOT NULL
        );
        CREATE TABLE responses_new (
            key TEXT PRIMARY KEY,
            status TEXT NOT NULL,             -- ok | error
            retryable INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER,
            error_type TEXT,
            error TEXT,
            message_json TEXT,
            raw TEXT,                         -- the body of a reply that was not a valid message
            text TEXT,
            stop_reason TEXT,
            response_model TEXT,
            input_tokens INTEGER,             -- NULL: the reply reported no usage
            output_tokens INTEGER,
            cache_creation_input_tokens INTEGER,
            cache_read_input_tokens INTEGER,
            cache_creation_1h_input_tokens INTEGER,
            service_tier TEXT,
            cost_usd REAL,                    -- NULL: no price or no usage, never a silent 0
            source TEXT NOT NULL DEFAULT 'realtime',  -- realtime | batch | cache (not paid by this folder)
            simulated INTEGER NOT NULL DEFAULT 0,
            latency_s REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            request_id TEXT,
            run_id INTEGER,
            created_at TEXT NOT NULL
        );
        INSERT INTO responses_new (key, status, retryable, http_status, error_type, error, message_json, text,
            stop_reason, response_model, input_tokens, output_tokens, cache_creation_input_tokens,
            cache_read_input_tokens, cache_creation_1h_input_tokens, service_tier, latency_s, attempts,
            request_id, created_at)
        SELECT key, status, retryable, http_status, error_type, error, message_json, text, stop_reason,
            response_model, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
            cache_creation_1h_input_tokens, service_tier, latency_s, attempts, request_id, created_at
        FROM responses;
        DROP TABLE responses;
        ALTER TABLE responses_new RENAME TO responses;
        -- Message Batches this folder created: committed before anything else, so a killed run
        -- re-attaches to them instead of paying for them twice.
        CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            status TEXT NOT NULL,             -- submitting | in_progress | ended | collected
            created_at TEXT NOT NULL,
            requests INTEGER NOT NULL,
            reserved_usd REAL NOT NULL DEFAULT 0
        );
        CREATE TABLE batch_requests (   -- enough to collect a batch whatever became of the plan
            custom_id TEXT NOT NULL,
            batch_id TEXT NOT NULL,
            key TEXT NOT NULL,
            model TEXT NOT NULL,
            max_tokens INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            PRIMARY KEY (batch_id, custom_id)
        );
        CREATE INDEX batch_requests_key ON batch_requests (key);
        """
    )


def m003_reviews(db: sqlite3.Connection) -> None:
    """Human reviews of cells, appended and never updated: the latest one of a cell counts, the
    history stays. A cell is named by what pairs it across plans (model label, prompt, row id,
    repeat), so a review survives a re-planned store."""
    db.executescript(
        """
        CREATE TABLE reviews (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model TEXT NOT NULL,              -- the model's label
            prompt TEXT NOT NULL,
            row_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            verdict TEXT,                     -- correct | wrong (NULL when a grade is given)
            grade TEXT,                       -- a grade on the judge's scale (NULL when a verdict is given)
            note TEXT NOT NULL DEFAULT '',
            reviewer TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reviews_cell ON reviews (model, prompt, row_id, repeat, id);
        """
    )


def m007_paid_replies(db: sqlite3.Connection) -> None:
    """Every malformed reply received, kept apart from the request's latest outcome: each was
    paid for (its cost counts toward the folder's spend), and a re-run that sends the request
    again must not overwrite the body of an earlier one."""
    db.executescript(
        """
        CREATE TABLE paid_replies (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            run_id INTEGER,
            raw TEXT NOT NULL,
            cost_usd REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX paid_replies_key ON paid_replies (key);
        """
    )


def m005_run_stop_reason(db: sqlite3.Connection) -> None:
    """Why a run stopped before its end (the error's one line) and the model that stopped it,
    so a run stopped by a 404 for a mistyped model says so in its reports and in `runs`; and the
    cells an edited spec took out of the plan (their answers stay in `responses`), so `report`
    can still list them."""
    db.executescript(
        """
        ALTER TABLE runs ADD COLUMN stop_reason TEXT;
        ALTER TABLE runs ADD COLUMN stop_model TEXT;
        CREATE TABLE retired_cells (
            model TEXT NOT NULL,
            prompt TEXT NOT NULL,
            row_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            request_key TEXT NOT NULL,
            retired_at TEXT NOT NULL,
            PRIMARY KEY (model, prompt, row_id, repeat)
        );
        """
    )


# In order of their numbers (the steps are independent: a store that has a later one applies an
# earlier one it lacks when it is next opened).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_cells_apart_from_requests]
MIGRATIONS.append(m003_reviews)
MIGRATIONS.append(m005_run_stop_reason)
MIGRATIONS.append(m007_paid_replies)


def apply_migrations(db: sqlite3.Connection) -> list[str]:
    """Apply what is missing, each in its own transaction; returns the names applied.

    The caller holds the folder's migration lock, so two processes opening a new store at once
    apply each step once.
    """
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
