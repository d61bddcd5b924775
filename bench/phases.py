"""Where the time before the first request goes: each step `evalrun run` takes before it sends,
timed on its own in a fresh process, for the scale benchmark's multiple-choice spec.

Not a test. Writes the spec and CSV like `bench/scale.py`, then in a child process per row count:
the imports of the run path, the spec and model table, the dataset scan (every line), the plan,
`Plan.check()` (every row's target), the aiohttp transport and the first chunk of the streamed
plan. (The reports module is imported after the run, so it is not on this path.)

    python bench/phases.py [--rows 25000,100000,200000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import write_inputs

_CHILD = """
import json, os, sys, time
steps = []
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter()
    steps.append((name, now - t))
    t = now
import evalrun.cli, evalrun.execute
mark("import evalrun.cli + evalrun.execute")
from evalrun.plan.dataset import scan_dataset
from evalrun.plan.endpoints import experiment_table, resolve_models
from evalrun.plan.grid import Plan
from evalrun.spec import load_spec
experiment = load_spec(sys.argv[1]); table = experiment_table(experiment)
mark("load_spec + model table")
dataset = scan_dataset(experiment.dataset_path, id_column=experiment.dataset.id)
mark("scan_dataset (reads and checks every line)")
models = resolve_models(experiment, table, sim=False, environ=os.environ)
plan = Plan(experiment, dataset, models, table)
mark("resolve models + Plan()")
plan.check()
mark("Plan.check() (every row's target, cluster, images)")
import aiohttp
mark("import aiohttp (the transport)")
next(iter(plan.chunks()))
mark("first chunk of the plan (32 cells)")
print("@@" + json.dumps(steps))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="25000,100000,200000")
    args = parser.parse_args()
    counts = [int(r) for r in args.rows.split(",")]
    env = {**os.environ, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "bench-key"}
    table: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in counts:
            spec = write_inputs(Path(tmp) / str(rows), rows, 1, 1)
            out = subprocess.run([sys.executable, "-c", _CHILD, str(spec)], env=env, capture_output=True, text=True)
            if "@@" not in out.stdout:
                sys.exit(out.stderr)
            for name, seconds in json.loads(out.stdout.rsplit("@@", 1)[1]):
                table.setdefault(name, []).append(seconds)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; seconds per step, 1 model × 1 prompt\n")
    print(f"  {'step':<58}" + "".join(f"{f'{r:,} rows':>13}" for r in counts))
    for name, seconds in table.items():
        print(f"  {name:<58}" + "".join(f"{s:13.3f}" for s in seconds))
    totals = [sum(col) for col in zip(*table.values(), strict=True)]
    print(f"  {'total before the first send (plus interpreter start)':<58}" + "".join(f"{s:13.3f}" for s in totals))


if __name__ == "__main__":
    main()
