"""Cold start: how long evalrun takes to answer in a fresh process, and what it loads to do so.

Not a test. For each command, the median wall time of N fresh processes (the console script
itself, as a user runs it), then once more in-process under the same arguments to list which
heavy modules ended up in `sys.modules`.

Targets (issue 13): `evalrun --help` and `evalrun validate` under 0.5 s; none of pandas, scipy,
matplotlib, starlette, uvicorn or numpy loaded by `import evalrun` or by `validate`.

    python bench/coldstart.py [--runs 15] [--importtime FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HEAVY = ("pandas", "scipy", "matplotlib", "starlette", "uvicorn", "numpy")
TARGET_S = 0.5

# (label, argv run as a fresh process, in-process probe, whether the heavy modules must stay out)
COMMANDS: list[tuple[str, list[str], str, bool]] = [
    ("evalrun --help", [str(BIN / "evalrun"), "--help"], "cli:--help", False),
    ("evalrun validate experiments/capitals.yaml", [str(BIN / "evalrun"), "validate", "experiments/capitals.yaml"],
     "cli:validate experiments/capitals.yaml", True),
    ('python -c "import evalrun"', [sys.executable, "-c", "import evalrun"], "import", True),
]  # fmt: skip

_PROBE = """
import json, sys
heavy = {heavy!r}
how = {how!r}
if how == "import":
    import evalrun
else:
    from evalrun.cli import main
    sys.argv = ["evalrun", *how.split(":", 1)[1].split()]
    try:
        main()
    except SystemExit:
        pass
sys.stdout.flush()
print("\\n@@" + json.dumps([m for m in heavy if m in sys.modules]))
"""


def wall_times(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def loaded(how: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, how=how)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.rsplit("@@", 1)[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command (median)")
    parser.add_argument("--importtime", metavar="FILE", help="also write `python -X importtime` of validate to FILE")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {args.runs} fresh processes\n")
    baseline = statistics.median(wall_times([sys.executable, "-c", "pass"], args.runs))
    print(f"  {'command':<44} {'median s':>8} {'min s':>6} {'target':>7} {'ratio':>6}  heavy modules loaded")
    print(f"  {'python -c pass (the interpreter alone)':<44} {baseline:8.3f}")
    for label, argv, how, must_stay_out in COMMANDS:
        times = wall_times(argv, args.runs)
        median = statistics.median(times)
        modules = loaded(how)
        timed = label != 'python -c "import evalrun"'
        ratio = f"{median / TARGET_S:.2f}" if timed else "—"
        verdict = "met" if (not timed or median < TARGET_S) and not (must_stay_out and modules) else "MISSED"
        print(f"  {label:<44} {median:8.3f} {min(times):6.3f} {'<0.5 s' if timed else '—':>7} {ratio:>6}  "
              f"{', '.join(modules) or 'none'}  [{verdict}]")  # fmt: skip
    if args.importtime:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _PROBE.format(heavy=HEAVY, how=COMMANDS[1][2])],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        Path(args.importtime).write_text(result.stderr, encoding="utf-8")
        rows = []
        for line in result.stderr.splitlines()[1:]:
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[1].isdigit():
                rows.append((int(parts[1]), parts[2]))
        print(f"\nslowest imports under validate (cumulative µs), from {args.importtime}:")
        for cumulative, name in sorted(rows, reverse=True)[:15]:
            print(f"  {cumulative:>9,}  {name}")


if __name__ == "__main__":
    main()
