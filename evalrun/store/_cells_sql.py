"""The one SELECT that reads planned cells with their row, answer and grading answer.

Shared by the report pass (`Store.iter_cells`) and the viewer's pages (`Store.cells_page`), so a
cell reads the same whichever of them asks.
"""

from __future__ import annotations

__all__ = ["cells_select"]

_COLUMNS = (
    "SELECT c.seq, c.model, c.model_id, c.prompt, c.row_seq, c.row_id, c.repeat, c.answer_mode,"
    " c.max_tokens, c.request_key, w.target, w.cluster, w.values_json, w.line,"
    " r.status, r.retryable, r.http_status, r.error_type, r.error, r.message_json, r.raw, r.text,"
    " r.stop_reason, r.response_model, r.input_tokens, r.output_tokens, r.cache_creation_input_tokens,"
    " r.cache_read_input_tokens, r.cache_creation_1h_input_tokens, r.service_tier, r.cost_usd, r.source,"
    " r.simulated, r.latency_s, r.attempts, r.request_id, c.judge_key,"
    " j.status AS judge_status, j.text AS judge_text, j.error AS judge_error,"
    " j.input_tokens AS judge_input_tokens, j.output_tokens AS judge_output_tokens,"
    " j.cost_usd AS judge_cost_usd, j.source AS judge_source,"
    # Correlated counts on the key indexes: the scan stays in `order_by`'s index order.
    # (Joining GROUP BY subqueries instead made SQLite sort every wide row: 1.3 s → 0.76 s
    # at 100 k cells.)
    " (SELECT count(*) FROM cells x WHERE x.request_key = c.request_key) AS sharing,"
    " CASE WHEN c.judge_key IS NULL THEN 1"
    " ELSE (SELECT count(*) FROM cells y WHERE y.judge_key = c.judge_key) END AS judge_sharing"
)


def cells_select(*, with_requests: bool = False) -> str:
    """`SELECT … FROM …` of every planned cell (no WHERE, no ORDER BY): `c` the cell, `w` its
    dataset row, `r` its answer, `j` its grading answer, `q` its request when `with_requests`."""
    return (
        _COLUMNS
        + (", q.body_json AS request_json" if with_requests else "")
        + " FROM cells c JOIN rows w ON w.row_seq = c.row_seq LEFT JOIN responses r ON r.key = c.request_key"
        + " LEFT JOIN responses j ON j.key = c.judge_key"
        + (" LEFT JOIN requests q ON q.key = c.request_key" if with_requests else "")
    )
