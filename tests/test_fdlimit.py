"""The open-files limit: a run's connections must fit in it, or the run says it lowered them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_mc_csv, write_mc_spec

resource = pytest.importorskip("resource")

_CHILD = """
import resource, sys
from evalrun.send.fdlimit import allow_open_files
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
print(allow_open_files(int(sys.argv[3])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _limits(soft: int, hard: int, wanted: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(soft), str(hard), str(wanted)],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


def test_the_soft_limit_is_raised_up_to_the_hard_one_never_lowered() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip("the hard limit on open files is too low to test raising")
    assert _limits(200, 600, 500) == (500, 500)  # raised to what is wanted
    assert _limits(200, 300, 500) == (300, 300)  # only as far as the hard limit
    assert _limits(400, 600, 100) == (400, 400)  # never lowered


def test_a_run_under_a_low_hard_limit_lowers_its_concurrency_and_says_so(tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 20)
    spec = write_mc_spec(tmp_path / "spec.yaml", name="fd", dataset="mc.csv")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(
        [sys.executable, "-m", "evalrun", "run", str(spec), "--sim", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, preexec_fn=low_limit,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The in-process simulator holds the other end of each connection: (256 − 64) ÷ 2.
    assert "concurrency lowered from 1024 to 96" in done.stderr
    assert "ulimit -n" in done.stderr
