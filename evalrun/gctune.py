"""Fewer cyclic garbage collections while a loop makes many short-lived objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fewer_collections"]


@contextmanager
def fewer_collections(first_threshold: int = 20_000) -> Iterator[None]:
    """Raise the collector's first-generation threshold (700 by default) for the duration.

    A pass over 100,000 cells makes millions of dicts, lists and strings, almost none in a
    reference cycle (reference counting frees them), yet every 700 allocations start a
    collection that walks the young generation, and every so often the old one with every
    module pandas and scipy brought in: about 6 % of building the reports. Cycles are still
    collected, just in larger steps; the old threshold comes back afterwards.
    """
    before = gc.get_threshold()
    gc.set_threshold(first_threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
