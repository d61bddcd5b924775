"""Scale: large multiple-choice runs through the real command line against the independent fake.

Not a test. Each run is `evalrun run SPEC --out FOLDER` in a fresh process under `/usr/bin/time -v`
(peak RSS of the evalrun process), with `ANTHROPIC_BASE_URL` at a fresh `bench/fakeapi.py` at
zero latency and a temporary `EVALRUN_CACHE_DIR`. "First request" is the fake's wall-clock time
of the first POST it received, less the time just before the process was started.

Runs (cells = rows × models × prompts):
  25k      1 model × 1 prompt × 25,000 rows
  100k     1 × 1 × 100,000 — then the same command again (every cell stored: the cached re-run)
           and `evalrun report FOLDER`
  200k     1 × 1 × 200,000
  2x2x50k  2 models × 2 prompts × 50,000 rows

Targets (issue 13): first request within 2 s of process start for 100 k rows; peak RSS of the
200 k run within 1.25 × the 25 k run's, both under 300 MB; the cached re-run of 100 k cells
under 3 s; `evalrun report` on 100 k cells under 5 s with bounded memory.

    python bench/scale.py [--only 25k,100k] [--keep DIR] [--profile-report FILE]
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import fake_api, reset, stats

BIN = Path(sys.executable).parent
MODELS = {1: ["claude-haiku-4-5"], 2: ["claude-haiku-4-5", "claude-sonnet-4-5"]}
PROMPT = (
    "  {name}:\n    system: Answer with the letter of the correct option.\n    messages:\n"
    "      - {{role: user, content: \"{lead}{{question}}\\n(A) {{A}}\\n(B) {{B}}\\n(C) {{C}}\\n(D) {{D}}\"}}\n"
    "    prefill: \"The answer is (\"\n"
)


@dataclass
class Measure:
    label: str
    cells: int
    wall_s: float
    rss_mb: float
    first_request_s: float | None = None
    requests: int = 0
    exit_code: int = 0


def write_inputs(folder: Path, rows: int, models: int, prompts: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "data.csv").open("w", encoding="utf-8") as f:
        f.write("id,question,A,B,C,D,answer\n")
        for i in range(rows):
            f.write(f"r{i},Which option is right for question number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}\n")
    variants = "".join(PROMPT.format(name=f"p{j}", lead="" if j == 0 else "Think of the options. ") for j in range(prompts))
    (folder / "spec.yaml").write_text(
        f"name: scale\ndataset: {{path: data.csv, id: id}}\nmodels: [{', '.join(MODELS[models])}]\n"
        "params: {max_tokens: 1, temperature: 0}\nprompts:\n" + variants + "scorer: {type: choice, target: answer}\n",
        encoding="utf-8",
    )
    return folder / "spec.yaml"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """(wall s, peak RSS MB, exit code, start time) of `argv` under /usr/bin/time -v."""
    start = time.time()
    t0 = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    rss = int(match.group(1)) / 1024 if match else float("nan")
    if result.returncode not in (0,):
        sys.stderr.write(result.stderr[-2000:])
    return wall, rss, result.returncode, start


def run(label: str, spec: Path, out: Path, cache: Path, cells: int, url: str) -> Measure:
    """`evalrun run` against the fake at `url` (the same URL again finds its answers stored: the
    endpoint is part of what a request is)."""
    reset(url)
    env = {**os.environ, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "bench-key", "EVALRUN_CACHE_DIR": str(cache)}
    wall, rss, code, start = timed([str(BIN / "evalrun"), "run", str(spec), "--out", str(out)], env)
    seen = stats(url)
    first = seen["first"] - start if seen["first"] else None
    return Measure(label, cells, wall, rss, first, seen["count"], code)


def report(label: str, out: Path, cells: int) -> Measure:
    wall, rss, code, _ = timed([str(BIN / "evalrun"), "report", str(out)], dict(os.environ))
    return Measure(label, cells, wall, rss, None, 0, code)


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="25k,100k,200k,2x2x50k", help="comma-separated runs")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders under DIR (default: a temp dir)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count (a quick look)")
    args = parser.parse_args()
    chosen = args.only.split(",")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evalrun-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; fake API at zero latency; folders in {root}\n")
    plans = {"25k": (25_000, 1, 1), "100k": (100_000, 1, 1), "200k": (200_000, 1, 1), "2x2x50k": (50_000, 2, 2)}
    results: dict[str, Measure] = {}
    for name in chosen:
        rows, models, prompts = plans[name]
        rows = max(100, round(rows * args.scale))
        cells = rows * models * prompts
        spec = write_inputs(root / name, rows, models, prompts)
        out, cache = root / name / "run", root / name / "cache"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        with fake_api() as url:
            results[name] = run(name, spec, out, cache, cells, url)
            print(f"  ran {name}: {results[name].wall_s:.1f} s", flush=True)
            if name == "100k":
                results["100k cached"] = run("100k cached re-run", spec, out, cache, cells, url)
                results["100k report"] = report("100k report", out, cells)
        if name == "25k":
            results["25k report"] = report("25k report", out, cells)

    print(f"\n  {'run':<20} {'cells':>8} {'wall s':>7} {'req/s':>7} {'first req s':>11} {'peak RSS MB':>11} {'sent':>7} {'exit':>4}")
    for m in results.values():
        rate = m.requests / m.wall_s if m.requests else None
        print(f"  {m.label:<20} {m.cells:>8,} {m.wall_s:7.2f} {fmt(rate, '7,.0f'):>7} {fmt(m.first_request_s, '11.2f'):>11} "
              f"{m.rss_mb:11.0f} {m.requests:>7,} {m.exit_code:>4}")  # fmt: skip

    print("\n  target                                          measured          ratio  verdict")

    def verdict(name: str, measured: float | None, target: float, unit: str, text: str) -> None:
        if measured is None:
            return
        ratio = measured / target
        print(f"  {text:<47} {measured:9.2f} {unit:<6} {ratio:6.2f}  {'met' if ratio <= 1 else 'MISSED'}")

    if "100k" in results:
        verdict("first", results["100k"].first_request_s, 2.0, "s", "first request ≤ 2 s (100 k rows)")
    for name in ("25k", "200k", "2x2x50k"):
        if name in results:
            verdict("first", results[name].first_request_s, 2.0, "s", f"first request ≤ 2 s ({name}, for scale)")
    if "25k" in results and "200k" in results:
        verdict("rss", results["200k"].rss_mb / results["25k"].rss_mb, 1.25, "×", "peak RSS 200k ≤ 1.25 × 25k")
    for name in ("25k", "200k", "2x2x50k"):
        if name in results:
            verdict("rss", results[name].rss_mb, 300.0, "MB", f"peak RSS {name} < 300 MB")
    if "100k cached" in results:
        verdict("cached", results["100k cached"].wall_s, 3.0, "s", "cached re-run of 100 k cells < 3 s")
        verdict("report", results["100k report"].wall_s, 5.0, "s", "report of 100 k cells < 5 s")
        if "25k report" in results:
            verdict("report", results["100k report"].rss_mb / results["25k report"].rss_mb, 1.25, "×",
                    "report peak RSS 100k ≤ 1.25 × 25k (bounded)")  # fmt: skip
        verdict("report", results["100k report"].rss_mb, 300.0, "MB", "report peak RSS 100k < 300 MB")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
