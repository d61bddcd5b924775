"""The run folders a viewer serves: found under its root, named by their path relative to it,
read cheaply and cached.

A run is named in URLs by its folder's path relative to the root (`exp/20260101-120000`). A name
that leaves the root (`..`, an absolute path) or passes through a symbolic link is not a run:
`resolve` answers None and the app answers 404, so nothing outside the root is ever served.

The run list reads each folder with `evalrun.reports.runs.read_run` (settings, progress, cost and
accuracy from its fresh summary.csv, else recomputed), cached by the store's signature (size and
modification time of `store.sqlite` and its WAL, and of summary.csv): listing 200 folders again
costs 200 `stat` calls. A run that is going changes its signature with every answer; it is read
again in the background while the list answers with what it read last, so a large live run
cannot keep the list waiting.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from evalrun.reports.runs import RunInfo, find_run_folders, read_run
from evalrun.store.run_store import STORE_NAME

__all__ = ["RunFolders", "trends"]

_SIGNATURE_FILES = (STORE_NAME, f"{STORE_NAME}-wal", "summary.csv")
_READERS = 4


@dataclass
class _Cached:
    signature: tuple[Any, ...]
    info: RunInfo


class RunFolders:
    """The run folders under `root`, resolved safely and read through a cache."""

    def __init__(self, root: Path, *, read: Callable[[Path], RunInfo] = read_run) -> None:
        self.root = root.resolve()
        self._read = read
        self._cache: dict[Path, _Cached] = {}
        self._lock = threading.Lock()
        self._refreshing: set[Path] = set()

    def name_of(self, folder: Path) -> str:
        """A folder's run name: its path relative to the root, with `/` (`.` for the root itself)."""
        return PurePosixPath(*folder.relative_to(self.root).parts).as_posix() if folder != self.root else "."

    def resolve(self, name: str) -> Path | None:
        """The run folder a name means, or None: outside the root, through a symlink, or no store."""
        if not name or "\\" in name or "\x00" in name:
            return None
        parts = PurePosixPath(name).parts
        if name == ".":
            parts = ()
        if any(p in ("..", "") or p.startswith("/") for p in parts):
            return None
        folder = self.root
        for part in parts:
            folder = folder / part
            if folder.is_symlink():
                return None
        try:
            real = folder.resolve(strict=True)
        except OSError:
            return None
        if real != folder or not real.is_relative_to(self.root):
            return None
        store = real / STORE_NAME
        if store.is_symlink() or not store.is_file():
            return None
        return real

    def folders(self) -> list[Path]:
        """Every run folder under the root (not through a symlink), holding a store."""
        found = []
        for folder in find_run_folders(self.root):
            if self.resolve(self.name_of(folder) if folder != self.root else ".") is not None:
                found.append(folder)
        return found

    @staticmethod
    def signature(folder: Path) -> tuple[Any, ...]:
        out: list[Any] = []
        for name in _SIGNATURE_FILES:
            try:
                stat = os.stat(folder / name)
            except OSError:
                out.append(None)
                continue
            # An empty WAL (a reader's, or one checkpointed away) says nothing new: as if absent.
            out.append((stat.st_size, stat.st_mtime_ns) if stat.st_size or not name.endswith("-wal") else None)
        return tuple(out)

    def info(self, folder: Path) -> RunInfo:
        """One folder's `RunInfo`: read now the first time; afterwards from the cache, which a
        changed store refreshes in the background (one refresh per folder at a time), so the
        list never waits for a large run that is going to be scored again."""
        signature = self.signature(folder)
        with self._lock:
            cached = self._cache.get(folder)
            stale = cached is not None and cached.signature != signature
            if stale and folder not in self._refreshing:
                self._refreshing.add(folder)
                threading.Thread(target=self._refresh, args=(folder, signature), daemon=True).start()
        if cached is not None:
            return cached.info
        return self._refresh(folder, signature)

    def _refresh(self, folder: Path, signature: tuple[Any, ...]) -> RunInfo:
        try:
            info = self._read(folder)
        finally:
            with self._lock:
                self._refreshing.discard(folder)
        with self._lock:
            self._cache[folder] = _Cached(signature, info)
        return info

    def forget(self, folder: Path) -> None:
        """Read the folder afresh next time (a review was just added)."""
        with self._lock:
            self._cache.pop(folder, None)

    def list(self) -> list[dict[str, Any]]:
        """The run list as the API gives it: newest first, each run with its name in URLs."""
        folders = self.folders()
        with self._lock:
            unread = [folder for folder in folders if folder not in self._cache]
        if len(unread) > 1:  # the first look: SQLite reads in parallel (its queries release the GIL)
            with ThreadPoolExecutor(max_workers=_READERS) as pool:
                list(pool.map(self.info, unread))
        infos = [(folder, self.info(folder)) for folder in folders]
        infos.sort(key=lambda pair: (pair[1].problem is None, pair[1].started_at or "", pair[1].folder), reverse=True)
        out = []
        for folder, info in infos:
            row = info.as_json()
            row["run"] = self.name_of(folder)
            row.pop("folder", None)
            out.append(row)
        return out


def trends(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per experiment name, its runs oldest first with each model × prompt's accuracy."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in reversed(runs):
        if run.get("problem") or not run.get("name"):
            continue
        out.setdefault(str(run["name"]), []).append(
            {"run": run["run"], "started_at": run.get("started_at"), "accuracy": run.get("accuracy") or []}
        )
    return out
