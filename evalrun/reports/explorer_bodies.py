"""The request bodies of a run folder's store, read in the order they were written, for the
explorer's sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RequestBodies"]


class RequestBodies:
    """The request bodies of a run folder's store, by key, on a read-only connection of their own.

    The pass meets the cells in plan order, and the requests were written in that order: so the
    bodies are read a page at a time in the order they were written, and a key is looked for in
    the pages read so far and the next few (`AHEAD`) before it is looked up alone (a plan changed
    halfway, a request shared). Pages read and not yet asked for wait, at most `KEEP` of them."""

    PAGE = 512
    AHEAD = 4
    KEEP = 8 * 512

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cells = store.count_cells()
        self.after = 0  # the last rowid read
        self.page: list[tuple[int, str, str]] = []  # (rowid, key, body) of the page being met in order
        self.at = 0
        self.waiting: dict[str, str] = {}  # read, met out of order, not asked for yet
        self.done = False
        self.lookups = 0

    @classmethod
    def of(cls, folder: Path) -> RequestBodies | None:
        from evalrun.errors import StoreError
        from evalrun.store.run_store import Store

        try:
            return cls(Store.open_readonly(folder))
        except (StoreError, OSError):
            return None

    def get(self, key: str) -> str | None:
        page, at = self.page, self.at
        if at < len(page):
            if page[at][1] == key:  # the usual case: the next one
                self.at = at + 1
                return page[at][2]
            self._wait(page[at:])
            self.page, self.at = [], 0
        body = self.waiting.pop(key, None)
        if body is not None:
            return body
        for _ in range(self.AHEAD):
            rows = self._read()
            if not rows:
                break
            if not self.waiting and rows[0][1] == key:  # in order again
                self.page, self.at = rows, 1
                return rows[0][2]
            self._wait(rows)
            body = self.waiting.pop(key, None)
            if body is not None:
                return body
        self.lookups += 1
        return self.store.request_body(key)  # type: ignore[no-any-return]

    def _read(self) -> list[tuple[int, str, str]]:
        if self.done:
            return []
        rows: list[tuple[int, str, str]] = self.store.request_bodies_after(self.after, self.PAGE)
        if len(rows) < self.PAGE:
            self.done = True
        if rows:
            self.after = rows[-1][0]
        return rows

    def _wait(self, rows: list[tuple[int, str, str]]) -> None:
        waiting = self.waiting
        for _, key, body in rows:
            waiting[key] = body
        while len(waiting) > self.KEEP:
            del waiting[next(iter(waiting))]

    def close(self) -> None:
        self.store.close()
