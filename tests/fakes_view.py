"""Helpers for the viewer's tests: a folder of simulated runs, and `evalrun view` started as a
real process on a free loopback port (ready when its API answers: polled, never a fixed sleep)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from click.testing import CliRunner

from evalrun.cli import cli

__all__ = ["REPO", "Viewer", "make_run", "running_viewer"]

REPO = Path(__file__).resolve().parents[1]


def make_run(experiment: str, out: Path, *, extra: list[str] | None = None) -> Path:
    """Run one of the repository's example experiments on the simulator into `out`."""
    result = CliRunner().invoke(cli, ["run", str(REPO / "experiments" / f"{experiment}.yaml"), "--sim", "--out", str(out),
                                      *(extra or [])], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@dataclass
class Viewer:
    url: str  # as printed: http://HOST:PORT/?token=…
    base: str
    token: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def running_viewer(root: Path, *args: str, timeout: float = 60.0) -> Iterator[Viewer]:
    """`evalrun view ROOT --port 0 ARGS…` as a child process, once it answers `GET /api/runs`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "evalrun", "view", str(root), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while "http://" not in line:
            ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0))
            line = process.stdout.readline() if ready else ""
            if not line:  # no address in time, or the process ended
                raise AssertionError(f"the viewer did not start: {process.stderr.read() if process.stderr else ''}")
        url = line[line.index("http://") :].strip()
        base, token = url.split("/?token=")
        while True:  # ready when the API answers
            try:
                if httpx.get(f"{base}/api/runs", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("the viewer never answered GET /api/runs")
            time.sleep(0.05)  # the poll's pace, not a wait for something to happen
        yield Viewer(url=url, base=base, token=token, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
