"""The store's responses: every outcome committed on arrival, the ledger of paid malformed
replies, what the folder has spent, and `--fresh`. A mixin of `Store`, kept apart so the store
module stays small."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.messages_api import USAGE_COLUMNS, Usage, usage_counters
from evalrun.store._sqlite import FINAL, now, translate_sqlite_error
from evalrun.store.records import Outcome, reply_text

__all__ = ["ResponseMethods"]

# A reply without a usage object stores NULL in every usage column.
_NO_USAGE = Usage(*(None,) * len(USAGE_COLUMNS))


class ResponseMethods:
    """Recording outcomes and reading what they cost (`Store` provides `_db`, `path`, `query`,
    `transaction` and `meta`)."""

    _db: sqlite3.Connection
    path: Path

    if TYPE_CHECKING:

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def meta(self) -> dict[str, str]: ...

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

    def any_simulated(self) -> bool:
        """Whether any stored answer came from a simulator (one that announced itself in a header,
        so a run against a standalone `evalrun sim` counts as simulated, not only `--sim`)."""
        return bool(self.query("SELECT EXISTS (SELECT 1 FROM responses WHERE simulated = 1)")[0][0])

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
                k for (k,) in self.query(f"SELECT r.key FROM responses r WHERE r.key IN ({marks}) AND {FINAL}", chunk)
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
    return (outcome.key, run_id, outcome.raw, _finite(outcome.cost_usd), now())


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
        now(),
    )
