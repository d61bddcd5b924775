"""Scale of `evalrun diff` and `evalrun gate`: two 100 k-cell runs compared.

Not a test. Two runs of a one-model, one-prompt multiple-choice spec over the same generated
100,000-row CSV (`bench/scale.py`'s inputs), the second with its prompt edited so that every
request is new, each made by `evalrun run SPEC --out FOLDER` against `bench/fakeapi.py` at zero
latency. Then, each in a fresh process under `/usr/bin/time -v` (wall time and peak RSS):

  evalrun diff BASE CAND
  evalrun gate CAND --baseline BASE --max-drop 0.02 --non-inferior 0.02 --junit F --markdown F

Wall time is printed beside CPU time (user + system) and the load average: on a machine shared
with other work the wall time measures the queue, the CPU time the command.

Targets (issue 22): each under 5 s; memory flat — the 100 k-cell comparison's peak RSS within
1.25 × that of a 10 k-cell comparison (both stores are streamed; a cell costs a few bytes).

    python bench/diff.py [--rows 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import fake_api
from scale import BIN, run, write_inputs


def make_runs(root: Path, rows: int) -> tuple[Path, Path]:
    """The baseline and the candidate run folders of `rows` cells each (kept when they exist)."""
    spec = write_inputs(root, rows, 1, 1)
    edited = root / "edited.yaml"
    edited.write_text(spec.read_text().replace("Answer with the letter", "Answer with just the letter"))
    base, cand, cache = root / "base", root / "cand", root / "cache"
    if not (base / "report.md").exists() or not (cand / "report.md").exists():
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(cand, ignore_errors=True)
        with fake_api() as url:
            for label, which, out in (("base", spec, base), ("cand", edited, cand)):
                measured = run(label, which, out, cache, rows, url)
                print(f"  ran {label} ({rows:,} cells): {measured.wall_s:.1f} s, exit {measured.exit_code}", flush=True)
    return base, cand


def timed_cpu(argv: list[str]) -> tuple[float, float, float, int]:
    """(wall s, CPU s = user + system, peak RSS MB, exit code) of `argv` under /usr/bin/time -v:
    on a shared machine the CPU time is what the command itself costs."""
    t0 = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *argv], env=dict(os.environ), capture_output=True, text=True)
    wall = time.perf_counter() - t0

    def field(name: str) -> float:
        match = re.search(rf"{name}: ([\d.]+)", result.stderr)
        return float(match.group(1)) if match else float("nan")

    return wall, field(r"User time \(seconds\)") + field(r"System time \(seconds\)"), \
        field(r"Maximum resident set size \(kbytes\)") / 1024, result.returncode


def measure(root: Path, rows: int) -> dict[str, tuple[float, float, float, int]]:
    base, cand = make_runs(root, rows)
    evalrun = str(BIN / "evalrun")
    gate = [evalrun, "gate", str(cand), "--baseline", str(base), "--max-drop", "0.02", "--non-inferior", "0.02",
            "--junit", str(root / "gate.xml"), "--markdown", str(root / "gate.md")]  # fmt: skip
    return {"diff": timed_cpu([evalrun, "diff", str(base), str(cand)]), "gate": timed_cpu(gate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="cells per run (one model, one prompt)")
    parser.add_argument("--small", type=int, default=10_000, help="the smaller comparison, for memory growth")
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the run folders under DIR")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evalrun-diff-"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; folders in {root}\n")
    results = {}
    for rows in (args.small, args.rows):
        for what, figures in measure(root / f"{rows}", rows).items():
            results[(what, rows)] = figures
    load = os.getloadavg()[0]
    print(f"\n  {'command':<8} {'cells/run':>10} {'wall s':>7} {'CPU s':>6} {'peak RSS MB':>11} {'exit':>5}   (load {load:.1f})")
    for (what, rows), (wall, cpu, rss, code) in results.items():
        print(f"  {what:<8} {rows:>10,} {wall:7.2f} {cpu:6.2f} {rss:11.0f} {code:>5}")
    print("\n  target                                         measured  verdict")
    for what in ("diff", "gate"):
        wall, cpu, rss, _ = results[(what, args.rows)]
        small = results[(what, args.small)][2]
        print(f"  {what} of two {args.rows:,}-cell runs < 5 s (wall){'':<6} {wall:7.2f} s  {'met' if wall < 5 else 'MISSED'}")
        print(f"  {what} of two {args.rows:,}-cell runs < 5 s (CPU){'':<7} {cpu:7.2f} s  {'met' if cpu < 5 else 'MISSED'}")
        print(f"  {what} peak RSS {args.rows:,} ≤ 1.25 × {args.small:,}{'':<8} {rss / small:7.2f} ×  "
              f"{'met' if rss / small <= 1.25 else 'MISSED'}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
