"""Adding a human review to a run's store: the payload checked, the cell found, one row appended.

Used by the viewer's `POST /api/runs/{run}/reviews`; scripts may call `add_review` directly.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalrun.errors import NoSuchCell, ReviewError
from evalrun.reports.build import open_run
from evalrun.results.reviews import check_review
from evalrun.spec import parse_scorer
from evalrun.store.reviews import CellKey, Review

__all__ = ["NOTE_CHARS", "add_review", "default_reviewer", "parse_review"]

NOTE_CHARS = 10_000
_FIELDS = {"row_id", "model", "prompt", "repeat", "verdict", "grade", "note"}


def default_reviewer() -> str:
    """The login name (what `--reviewer` defaults to)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):
        return "unknown"


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "row_id":
        return str(value)
    if not isinstance(value, str) or not value:
        raise ReviewError(f"`{name}` is required and must be a non-empty string")
    return value


def parse_review(payload: Any) -> tuple[CellKey, Any, Any, str]:
    """(cell key, verdict, grade, note) from a request body; `ReviewError` says what is wrong."""
    if not isinstance(payload, Mapping):
        raise ReviewError("the body must be a JSON object: {row_id, model, prompt, repeat, verdict | grade, note}")
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise ReviewError(f"unknown field `{unknown[0]}`; known: {', '.join(sorted(_FIELDS))}")
    repeat = payload.get("repeat", 0)
    if isinstance(repeat, str) and repeat.strip().isdigit():
        repeat = int(repeat)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise ReviewError(f"`repeat` must be a whole number from 0, not {repeat!r}")
    note = payload.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise ReviewError("`note` must be a string")
    if len(note) > NOTE_CHARS:
        raise ReviewError(f"`note` is longer than {NOTE_CHARS:,} characters")
    key = (_text(payload, "model"), _text(payload, "prompt"), _text(payload, "row_id"), repeat)
    return key, payload.get("verdict"), payload.get("grade"), note


def add_review(folder: Path, payload: Any, *, reviewer: str) -> Review:
    """Check a review against the run (its scorer, its cells) and append it to the run's store.

    The store is opened for writing without the run's lock (a review is one short INSERT, which
    waits for a running evalrun's commit at most, and never blocks it for longer)."""
    key, verdict, grade, note = parse_review(payload)
    store, settings = open_run(folder)
    with store:
        verdict, grade = check_review(parse_scorer(settings["scorer"]), verdict=verdict, grade=grade)
        if not store.has_cell(key):
            model, prompt, row_id, repeat = key
            raise NoSuchCell(f"no cell model={model!r} prompt={prompt!r} row_id={row_id!r} repeat={repeat} in this run")
        return store.add_review(key, verdict=verdict, grade=grade, note=note, reviewer=reviewer)
