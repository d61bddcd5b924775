"""docs/ci.md's GitHub Actions workflow, as far as it runs without GitHub: its evalrun steps, in
bash, on the simulator (no key): a run on main kept as the baseline, then a pull request's run
gated against it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def workflow() -> dict[str, Any]:
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    return dict(yaml.safe_load(block.group(1)))


def step(flow: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in flow["jobs"]["eval"]["steps"] if s.get("name") == name)


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_workflow_parses_and_keeps_its_secrets_out_of_scripts() -> None:
    flow = workflow()
    assert set(flow[True if True in flow else "on"]) == {"pull_request", "push"}
    steps = flow["jobs"]["eval"]["steps"]
    for s in steps:
        # Expressions reach scripts only through env (never pasted into the shell text).
        assert "${{" not in s.get("run", ""), s
    run_step = step(flow, "Run the experiment")
    assert run_step["env"]["ANTHROPIC_API_KEY"] == "${{ secrets.ANTHROPIC_API_KEY }}"
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert {u["with"]["name"] for u in uploads} == {"eval-report", "eval-baseline"}


def test_the_gate_step_runs_on_the_simulator_against_a_kept_baseline(tmp_path: Path) -> None:
    flow = workflow()
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "datasets", tmp_path / "datasets")
    env = {
        **os.environ, **{k: str(v) for k, v in flow["env"].items()},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT), "ANTHROPIC_API_KEY": "",  # no secret: the simulator
        "EVALRUN_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    run_script = step(flow, "Run the experiment")["run"]
    gate_script = step(flow, "Gate")["run"]

    # No baseline yet: the accuracy floor alone.
    first = bash(run_script, env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "endpoint: simulator" in first.stderr
    floor = bash(gate_script, env, tmp_path)
    assert floor.returncode == 0, floor.stdout + floor.stderr
    assert "min-accuracy" in floor.stdout and "max-drop" not in floor.stdout

    # main's run becomes the artifact the pull request downloads into baseline/.
    shutil.move(str(tmp_path / env["EVAL_OUT"]), str(tmp_path / "baseline"))
    again = bash(run_script, env, tmp_path)
    assert again.returncode == 0, again.stderr
    gated = bash(gate_script, env, tmp_path)
    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert "gate: passed" in gated.stdout and "max-drop" in gated.stdout
    suite = ET.parse(tmp_path / "eval-junit.xml").getroot()
    cases = list(suite.iter("testcase"))
    assert cases and all(c.find("failure") is None for c in cases)
    assert {c.get("name") for c in cases} == {"max-drop"}
    assert (tmp_path / "eval-summary.md").read_text().startswith("✅ **evalrun gate passed**")

    # A regression the gate catches: the same folder gated with an impossible floor fails with 6.
    strict = bash(gate_script.replace("--max-drop", "--min-accuracy 0.99 --max-drop"), env, tmp_path)
    assert strict.returncode == 6, strict.stdout + strict.stderr
