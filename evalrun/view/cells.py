"""A page of a run's cells, scored as the reports score them, read from its store read-only.

The page is read in plan order with the store's named reads (`Store.cells_page`): model, prompt,
row and "reviewed" narrow it in SQL; an outcome filter (correct, wrong, …) or "the human and the
automatic score disagree" needs each cell scored, so cells are read in chunks and scored until
the page is full. Nothing reads a whole store to answer one page (a rare outcome is looked for
chunk by chunk, and the answer says how far it got). Each cell is turned into a result record
by the same `ResultsPass` that writes results.csv, so a cell reads the same here and there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.errors import ReviewError
from evalrun.reports.build import open_run
from evalrun.reports.explorer import render_request
from evalrun.results.reviews import cell_key
from evalrun.results.tally import ResultsPass, stored_rows
from evalrun.store.reviews import CellFilter, Review

__all__ = ["OUTCOMES", "CellQuery", "cells_page", "outcome_of", "parse_query"]

OUTCOMES = ("correct", "wrong", "unparsed", "refused", "error", "pending")
MAX_LIMIT = 500
_CHUNK = 500
_TEXT_CAP = 20_000


@dataclass(frozen=True)
class CellQuery:
    """What a page asks for (see `parse_query`)."""

    offset: int = 0
    limit: int = 50
    model: str | None = None
    prompt: str | None = None
    row_id: str | None = None
    status: str | None = None
    reviewed: bool = False
    disagree: bool = False  # reviewed cells where the human and the automatic score differ


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ReviewError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ReviewError(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_query(params: Mapping[str, str]) -> CellQuery:
    """A `CellQuery` from URL parameters; `ReviewError` (a 400) says what is wrong."""
    known = {"offset", "limit", "model", "prompt", "row_id", "status", "reviewed", "disagree"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ReviewError(f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
    status = params.get("status") or None
    if status is not None and status not in OUTCOMES:
        raise ReviewError(f"status must be one of {', '.join(OUTCOMES)}, not {status!r}")
    flags = {}
    for name in ("reviewed", "disagree"):
        raw = (params.get(name) or "").lower()
        if raw not in ("", "0", "1", "true", "false"):
            raise ReviewError(f"{name} must be 1 or 0, not {params.get(name)!r}")
        flags[name] = raw in ("1", "true")
    return CellQuery(
        offset=_int(params, "offset", 0, 0, 10**9),
        limit=_int(params, "limit", 50, 1, MAX_LIMIT),
        model=params.get("model") or None,
        prompt=params.get("prompt") or None,
        row_id=params.get("row_id") or None,
        status=status,
        **flags,
    )


def outcome_of(record: Mapping[str, Any]) -> str:
    """A scored cell's outcome: correct or wrong when scored, else its status."""
    status = str(record.get("status") or "")
    if status == "ok":
        return "correct" if record.get("correct") is True else "wrong"
    return status if status in OUTCOMES else "error"


def _clip(text: str) -> str:
    if len(text) <= _TEXT_CAP:
        return text
    return text[:_TEXT_CAP] + f"\n[… {len(text) - _TEXT_CAP:,} more characters; results.csv has the whole text]"


def _cell_json(record: Mapping[str, Any], cell: Mapping[str, Any], review: Review | None, body: str | None) -> dict[str, Any]:
    request: list[Any] = []
    if body:
        try:
            request = [list(turn) for turn in render_request(json.loads(body))]
        except (ValueError, TypeError, AttributeError):
            request = []
    return {
        "model": record["model"],
        "prompt": record["prompt"],
        "row_id": record["row_id"],
        "repeat": int(record["repeat"]),
        "outcome": outcome_of(record),
        "status": record["status"],
        "answer": record.get("answer") or "",
        "target": record.get("target") or "",
        "correct": record.get("correct"),
        "correct_auto": record.get("correct_auto"),
        "score_source": record.get("score_source") or "",
        "score": record.get("score"),
        "grade": record.get("grade") or "",
        "grade_explanation": _clip(str(record.get("grade_explanation") or "")),
        "reply": _clip(str(record.get("response_text") or "")),
        "error": str(record.get("error") or ""),
        "stop_reason": record.get("stop_reason") or "",
        "cost_usd": record.get("cost_usd"),
        "input_tokens": record.get("input_tokens"),
        "output_tokens": record.get("output_tokens"),
        "request": request,
        "answered": cell["status"] == "ok",  # a reply to review (its grader may have failed)
        "review": review.as_json() if review is not None else None,
        "seq": int(cell["seq"]),
    }


def _matches(query: CellQuery, record: Mapping[str, Any]) -> bool:
    if query.status is not None and outcome_of(record) != query.status:
        return False
    return not (query.disagree and (record.get("score_source") != "human" or record.get("correct") == record.get("correct_auto")))


def _scored(store: Any, results: ResultsPass, where: CellFilter) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    after = -1
    while chunk := store.cells_page(where, after_seq=after, limit=_CHUNK):
        after = int(chunk[-1]["seq"])
        yield from zip(results.records(chunk), chunk, strict=True)


def cells_page(folder: Path, query: CellQuery) -> dict[str, Any]:
    """One page of a run's cells as the API gives it: `cells`, `offset`, `limit`, `more` (another
    page follows), `total` (the matching cells; None when counting them would mean scoring all),
    and the run's `models` and `prompts`."""
    store, settings = open_run(folder, readonly=True)
    with store:
        reviews = store.latest_reviews()
        results = ResultsPass(settings, rows=stored_rows(store), variants=[], reviews=reviews)
        scored = query.status is not None or query.disagree
        where = CellFilter(model=query.model, prompt=query.prompt, row_id=query.row_id,
                           answered=query.status in ("correct", "wrong", "unparsed", "refused") or query.disagree,
                           reviewed=query.reviewed or query.disagree)  # fmt: skip
        page: list[tuple[dict[str, Any], dict[str, Any]]] = []
        total: int | None = None
        if scored:
            skipped = 0
            for record, cell in _scored(store, results, where):
                if not _matches(query, record):
                    continue
                if skipped < query.offset:
                    skipped += 1
                    continue
                page.append((record, cell))
                if len(page) > query.limit:
                    break
        else:
            chunk = store.cells_page(where, offset=query.offset, limit=query.limit + 1)
            page = list(zip(results.records(chunk), chunk, strict=True))
            total = store.count_matching_cells(where)
        more = len(page) > query.limit
        page = page[: query.limit]
        out = [
            _cell_json(record, cell, reviews.get(cell_key(cell)), store.request_body(str(cell["request_key"])))
            for record, cell in page
        ]
        variants = store.variants()
    return {
        "cells": out,
        "offset": query.offset,
        "limit": query.limit,
        "more": more,
        "total": total,
        "models": list(dict.fromkeys(m for m, _ in variants)),
        "prompts": list(dict.fromkeys(p for _, p in variants)),
    }
