"""Dataset formats at scale: planning a large CSV, JSONL and Parquet set, and its peak memory.

Not a test. For each row count and format, a generated multiple-choice set is checked and planned
by `evalrun validate SPEC` in a fresh process under `/usr/bin/time -v` (peak RSS of the process):
the scan reads every record once and `Plan.check()` reads each row again, renders it and checks
its target. No request is sent.

  csv      id,question,A,B,C,D,answer — flat columns, `{A}` … `{D}` in the template
  jsonl    {"id", "question", "choices": [4 options], "answer_index"} — `{choices|options}`,
           `target_index: answer_index`
  parquet  the same records as the JSONL, a list column, written in row groups of 50,000

Target (issue 24): a JSONL or Parquet set plans with the same flat memory as the CSV: from 100 k
to 1 M rows, peak RSS grows no more than the CSV's does (× 1.25, + 10 MB) — the growth there is
the ids' hashes, one per row, as for a CSV — and the JSONL run's peak within 1.25 × the CSV's.
The Parquet run's peak sits above by what loading pyarrow takes, the same at any size.

    python bench/formats.py [--rows 100000,1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FORMATS = ("csv", "jsonl", "parquet")


def _record(i: int) -> dict[str, object]:
    return {
        "id": f"r{i}",
        "question": f"Which option is right for question number {i}?",
        "choices": [f"a{i}", f"b{i}", f"c{i}", f"d{i}"],
        "answer_index": i % 4,
    }


def write_data(folder: Path, kind: str, rows: int) -> Path:
    if kind == "csv":
        path = folder / "data.csv"
        with path.open("w", encoding="utf-8") as f:
            f.write("id,question,A,B,C,D,answer\n")
            for i in range(rows):
                f.write(f"r{i},Which option is right for question number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}\n")
        return path
    if kind == "jsonl":
        path = folder / "data.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(rows):
                f.write(json.dumps(_record(i)) + "\n")
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "data.parquet"
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer_index", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 50_000):
            batch = [_record(i) for i in range(start, min(rows, start + 50_000))]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return path


def write_spec(folder: Path, data: Path, kind: str) -> Path:
    if kind == "csv":
        content, scorer = r"{question}\n(A) {A}\n(B) {B}\n(C) {C}\n(D) {D}", "{type: choice, target: answer}"
    else:
        content, scorer = r"{question}\n{choices|options}", "{type: choice, target_index: answer_index}"
    spec = folder / f"{kind}.yaml"
    spec.write_text(
        f"name: formats-{kind}\ndataset: {{path: {data.name}, id: id}}\nmodels: [claude-haiku-4-5]\n"
        "params: {max_tokens: 1, temperature: 0}\nprompts:\n  p:\n    system: Answer with the letter.\n"
        f'    messages:\n      - {{role: user, content: "{content}"}}\n    prefill: "The answer is ("\n'
        f"scorer: {scorer}\n",
        encoding="utf-8",
    )
    return spec


def measure(spec: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS MB, exit code) of `evalrun validate SPEC`."""
    t0 = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", str(BIN / "evalrun"), "validate", str(spec)],
        capture_output=True, text=True, env={**os.environ, "ANTHROPIC_API_KEY": "bench-key"},
    )  # fmt: skip
    wall = time.perf_counter() - t0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    if result.returncode:
        sys.stderr.write(result.stdout[-1000:] + result.stderr[-2000:])
    return wall, (int(match.group(1)) / 1024 if match else float("nan")), result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--keep", metavar="DIR", help="keep the generated files under DIR")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evalrun-formats-"))
    counts = [int(n) for n in args.rows.split(",")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; `evalrun validate` (scan + plan check), files in {root}\n")
    print(f"  {'format':<8} {'rows':>10} {'file MB':>8} {'wall s':>7} {'rows/s':>9} {'peak RSS MB':>11} {'exit':>4}")
    rss: dict[tuple[str, int], float] = {}
    for rows in counts:
        for kind in FORMATS:
            folder = root / f"{kind}-{rows}"
            folder.mkdir(parents=True, exist_ok=True)
            data = write_data(folder, kind, rows)
            wall, peak, code = measure(write_spec(folder, data, kind))
            rss[(kind, rows)] = peak
            size = data.stat().st_size / 1e6
            print(f"  {kind:<8} {rows:>10,} {size:8.1f} {wall:7.1f} {rows / wall:9,.0f} {peak:11.0f} {code:>4}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    big, small = max(counts), min(counts)
    print("\n  measure                                         measured  target  verdict")
    ratio = rss[("jsonl", big)] / rss[("csv", big)]
    print(f"  peak RSS jsonl / csv at {big:,} rows{'':<14} {ratio:8.2f}    1.25  {'met' if ratio <= 1.25 else 'MISSED'}")
    if big != small:
        csv_growth = rss[("csv", big)] - rss[("csv", small)]
        for kind in FORMATS:
            growth = rss[(kind, big)] - rss[(kind, small)]
            line = f"  peak RSS growth {small:,} → {big:,} rows, {kind:<8}{growth:8.0f} MB"
            if kind == "csv":
                print(line + "          (the ids: a 64-bit hash each)")
            else:
                target = 1.25 * csv_growth + 10
                print(line + f" {target:5.0f}  {'met' if growth <= target else 'MISSED'}")
        extra = rss[("parquet", small)] - rss[("csv", small)]
        print(f"  parquet − csv at {small:,} rows (pyarrow loaded, fixed){'':<3}{extra:8.0f} MB")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
