"""Prompt caching: which prefixes were written, and what a request reads and writes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalrun.tokens import Unit

__all__ = ["CachePlan", "PromptCache", "TooManyBreakpoints"]

_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_BREAKPOINTS = 4
_MAX_ENTRIES = 200_000


class TooManyBreakpoints(ValueError):
    """More than four cache_control blocks in one request."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )


@dataclass(frozen=True)
class CachePlan:
    """What one request reads from and writes to the cache, in tokens."""

    total: int
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    store: tuple[tuple[bytes, float], ...] = field(default=(), repr=False)  # (prefix key, ttl s)

    @property
    def write(self) -> int:
        """Tokens written, whatever the TTL."""
        return self.write_5m + self.write_1h

    @property
    def uncached(self) -> int:
        """The `input_tokens` the response reports: what was neither read nor written."""
        return self.total - self.read - self.write


_Point = tuple[int, bytes, str]  # a breakpoint: (prefix tokens, cache key, ttl)


def _breakpoints(units: list[Unit], top_level: Mapping[str, Any] | None) -> list[int]:
    """The indices of the units that end a cached prefix (top-level `cache_control`: the last)."""
    marks = [i for i, unit in enumerate(units) if unit[2] is not None]
    if top_level is not None and units and (not marks or marks[-1] != len(units) - 1):
        marks.append(len(units) - 1)
    if len(marks) > _MAX_BREAKPOINTS:
        raise TooManyBreakpoints(len(marks))
    return marks


def _prefixes(
    model: str, units: list[Unit], marks: list[int], top_level: Mapping[str, Any] | None, min_tokens: int
) -> list[_Point]:
    """Each breakpoint whose prefix reaches `min_tokens`: its length, key (model and prefix) and TTL."""
    if not marks:
        return []
    digest = hashlib.blake2b(model.encode(), digest_size=16)
    prefix = 0
    points: list[_Point] = []
    wanted = set(marks)
    for index, (tokens, ident, control) in enumerate(units):
        prefix += tokens
        digest.update(b"\x00" + ident.encode())
        if index in wanted and prefix >= min_tokens:
            control = control if control is not None else top_level or {}
            points.append((prefix, digest.digest(), str(control.get("ttl", "5m"))))
    return points


class PromptCache:
    """Prefix hashes with expiry times. Single-threaded: the ASGI loop is its only user."""

    def __init__(self) -> None:
        self._entries: dict[bytes, float] = {}

    def plan(
        self, model: str, units: Iterable[Unit], *, top_level: Mapping[str, Any] | None, min_tokens: int
    ) -> CachePlan:
        """Look a request's breakpoints up without changing the cache.

        The longest cached prefix at a breakpoint is read; every later breakpoint whose prefix
        reaches `min_tokens` is written, each segment at the TTL of the breakpoint ending it.
        Top-level `cache_control` puts one more breakpoint at the last block.
        """
        units = list(units)
        total = sum(u[0] for u in units)
        marks = _breakpoints(units, top_level)
        points = _prefixes(model, units, marks, top_level, min_tokens)
        if not points:
            return CachePlan(total=total)
        hit = self._longest_cached(points)
        read = points[hit][0] if hit >= 0 else 0
        writes = {"5m": 0, "1h": 0}
        store = [(points[hit][1], _TTL_SECONDS["5m"])] if hit >= 0 else []  # a read refreshes its TTL
        before = read
        for tokens, key, ttl in points[hit + 1 :]:
            writes[ttl] += tokens - before
            before = tokens
            store.append((key, _TTL_SECONDS[ttl]))
        return CachePlan(
            total=total, read=read, write_5m=writes["5m"], write_1h=writes["1h"], store=tuple(store)
        )

    def _longest_cached(self, points: list[_Point]) -> int:
        """The position of the last breakpoint whose prefix is cached now, or -1."""
        now = time.monotonic()
        for position in range(len(points) - 1, -1, -1):
            if self._entries.get(points[position][1], 0.0) > now:
                return position
        return -1

    def commit(self, plan: CachePlan) -> None:
        """Record a plan's writes; called once the response is on its way, as the real cache."""
        if not plan.store:
            return
        now = time.monotonic()
        if len(self._entries) > _MAX_ENTRIES:
            self._entries = {k: t for k, t in self._entries.items() if t > now}
        for key, ttl in plan.store:
            self._entries[key] = max(self._entries.get(key, 0.0), now + ttl)
