"""The viewer at scale: `evalrun view` over 200 run folders and a 100,000-cell run, timed over HTTP.

Not a test. The big run is built the way `bench/scale.py` builds its runs (`evalrun run` against
`bench/fakeapi.py` at zero latency: 1 model × 1 prompt × 100,000 rows); the 200 small folders are
copies of one finished 40-row run, spread over 10 experiment folders. Then `evalrun view ROOT
--port 0` is started as its own process and each request below is timed from this process
(wall clock, loopback): the first time (cold: nothing cached) and again (warm).

Targets (issue 25): the run list of 200 folders and the first page of the 100 k-cell run's cells
each answer in under 1 s.

    python bench/view.py [--rows 100000] [--folders 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import fake_api
from scale import run, write_inputs

BIN = Path(sys.executable).parent


def build(root: Path, work: Path, rows: int, folders: int) -> None:
    big_spec = write_inputs(work / "big", rows, 1, 1)
    small_spec = write_inputs(work / "small", 40, 1, 1)
    with fake_api() as url:
        measured = run("big", big_spec, root / "big" / "run", work / "cache-big", rows, url)
        print(f"  built the {rows:,}-cell run in {measured.wall_s:.1f} s", flush=True)
        run("small", small_spec, work / "small-run", work / "cache-small", 40, url)
    for i in range(folders):
        shutil.copytree(work / "small-run", root / f"exp{i % 10}" / f"run{i:03d}")
    print(f"  copied {folders} small run folders", flush=True)


def start(root: Path) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen([str(BIN / "evalrun"), "view", str(root), "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    url = line[line.index("http://") :].strip()
    base, token = url.split("/?token=")
    return process, base, token


def timed(client: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    answer = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - t0, answer.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--keep", metavar="DIR")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evalrun-view-"))
    root = work / "reports"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; folders in {work}\n")
    if not root.exists():
        build(root, work, args.rows, args.folders)
    process, base, token = start(root)
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/static/view.js")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            cells = "/api/runs/big/run/cells"
            plan = [
                ("run list, 201 folders (cold)", "GET", "/api/runs", {}, 1.0),
                ("run list (warm)", "GET", "/api/runs", {}, 1.0),
                ("first page of 100 k cells (cold)", "GET", cells, {"params": {"limit": 50}}, 1.0),
                ("first page of 100 k cells (warm)", "GET", cells, {"params": {"limit": 50}}, 1.0),
                ("last page (offset 99,950)", "GET", cells, {"params": {"limit": 50, "offset": args.rows - 50}}, None),
                ("first page of wrong answers", "GET", cells, {"params": {"limit": 50, "status": "wrong"}}, None),
                ("one run's progress (poll)", "GET", "/api/runs/big/run", {}, None),
                ("run page, 100 k cells (cold)", "GET", "/runs/big/run", {}, None),
                ("run page (warm)", "GET", "/runs/big/run", {}, None),
                ("a review", "POST", "/api/runs/big/run/reviews",
                 {"json": {"model": "claude-haiku-4-5", "prompt": "p0", "row_id": "r7", "repeat": 0, "verdict": "wrong"},
                  "headers": {"X-Evalrun-Token": token}}, None),
                ("progress after it (re-scored)", "GET", "/api/runs/big/run", {}, None),
                ("run list after it", "GET", "/api/runs", {}, 1.0),
            ]  # fmt: skip
            print(f"  {'request':<36} {'seconds':>8} {'status':>6}  target")
            for label, method, url, kwargs, target in plan:
                seconds, status = timed(client, method, url, **kwargs)
                verdict = "" if target is None else f"< {target:.0f} s  {'met' if seconds < target else 'MISSED'}"
                print(f"  {label:<36} {seconds:8.3f} {status:>6}  {verdict}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
