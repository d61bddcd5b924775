"""How many files (sockets included) this process may open, raised for the run's concurrency.

A run keeps up to its concurrency ceiling of connections open at once, and many systems start
a process with a soft limit of 1,024 open files: past it, every new connection fails with
"too many open files". The soft limit may be raised up to the hard one without privileges.
"""

from __future__ import annotations

__all__ = ["SPARE_FILES", "allow_open_files"]

# Files besides the connections: the store and its WAL, the shared cache, the dataset, the
# interpreter's own, the terminal.
SPARE_FILES = 64


def allow_open_files(wanted: int) -> int:
    """Raise the soft limit on open files towards `wanted` (never above the hard limit, never
    lowering it) and return how many the process may now open."""
    try:
        import resource
    except ImportError:  # not a POSIX system: no such limit to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= wanted:
        return wanted if soft == unlimited else soft
    target = wanted if hard == unlimited else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target
