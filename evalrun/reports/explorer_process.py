"""The explorer's pass in a process of its own, beside the rest of a large report build.

A report build is one CPU-bound pass over the stored cells, and at 100 k cells the explorer's
compact tables (`evalrun.reports.explorer`) are about a third of it. For a run of at least
`PARALLEL_CELLS` cells that part runs in a child process: it opens the store read-only (SQLite
WAL lets both read at once), scores the cells again (cheaper than shipping every record across)
and spills the explorer's data into the build's scratch folder, while this process writes the
results files and the statistics. On two cores the build then takes about as long as the longer
half. If the child fails, the build runs the explorer's pass itself: slower, never without it.

Kept light on purpose: the child imports the store, the scorers and the explorer, not pandas or
scipy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

__all__ = ["PARALLEL_CELLS", "ChildExplorer", "ExplorerProcess", "explore"]

PARALLEL_CELLS = 20_000  # below this a second process (about 0.3 s to start) does not pay
_CHUNK = 4096
_META = "meta.json"
_PAYLOAD = "payload.json"


def explore(store: Any, settings: dict[str, Any], sink: Any) -> None:
    """Feed every stored cell, scored, to an explorer sink and close it."""
    from evalrun.results.tally import ResultsPass

    results = ResultsPass.of_run(settings, store)
    sink.begin(results.columns)
    for chunk in store.iter_cells(chunk=_CHUNK):
        sink.write(list(results.records(chunk)), chunk)
    sink.close()


class ChildExplorer:
    """What report.html needs of an explorer sink (`meta`, `write_json`), read from the files a
    child process left in the scratch folder."""

    def __init__(self, directory: Path) -> None:
        self.meta: dict[str, Any] = json.loads((directory / _META).read_text(encoding="utf-8"))
        self.payload = directory / _PAYLOAD

    def write_json(self, out: IO[str]) -> None:
        with self.payload.open(encoding="utf-8") as handle:
            shutil.copyfileobj(handle, out, 1 << 20)


class ExplorerProcess:
    """A child process building the explorer's data of `folder` into `directory`."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path) -> None:
        self.process = process
        self.directory = directory

    @classmethod
    def start(cls, folder: Path, directory: Path) -> ExplorerProcess | None:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "evalrun.reports.explorer_process", str(folder), str(directory)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError:
            return None
        return cls(process, directory)

    def result(self) -> ChildExplorer | None:
        """Wait for the child: its data, or None when it failed (the caller builds it itself)."""
        _, _errors = self.process.communicate()
        if self.process.returncode != 0:
            return None
        try:
            return ChildExplorer(self.directory)
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """End the child if it still runs (the build failed or was interrupted)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def _main(folder: Path, directory: Path) -> None:
    from evalrun.gctune import fewer_collections
    from evalrun.reports.explorer import ExplorerSink
    from evalrun.store.run_store import Store

    sink = ExplorerSink.for_run(folder, directory)
    with Store.open_readonly(folder) as store, fewer_collections():
        explore(store, store.last_settings(), sink)
    with (directory / _PAYLOAD).open("w", encoding="utf-8") as out:
        sink.write_json(out)
    (directory / _META).write_text(json.dumps(sink.meta), encoding="utf-8")


if __name__ == "__main__":
    _main(Path(sys.argv[1]), Path(sys.argv[2]))
