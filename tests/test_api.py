"""The Python API (`evalrun.run`, `arun`, `estimate`, `compare`, `Run`): the same engine as the CLI,
from plain code, from inside a running event loop and from the example notebook."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import evalrun
from evalrun.errors import RunStopped, SpecError

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "capitals.yaml"


def _assert_tables_equal_csvs(run: evalrun.Run) -> None:
    pd.testing.assert_frame_equal(run.results, pd.read_csv(run.folder / "results.csv"))
    pd.testing.assert_frame_equal(run.summary, pd.read_csv(run.folder / "summary.csv"))
    assert run.comparison is not None
    pd.testing.assert_frame_equal(run.comparison, pd.read_csv(run.folder / "comparison.csv"))


def test_run_from_plain_code_gives_the_csvs_as_dataframes(tmp_path: Path) -> None:
    run = evalrun.run(SPEC, sim=True, limit=6, out=tmp_path / "out")
    assert (run.status, run.exit_code) == ("complete", 0)
    assert run.folder == tmp_path / "out" and run.report_html.exists()
    assert len(run.results) == 6 * 2 * 2  # rows × models × prompts
    _assert_tables_equal_csvs(run)
    # The same cells as load_results rebuilds from the store, and what the folder paid.
    loaded = evalrun.load_results(run.folder)
    assert sorted(loaded["row_id"]) == sorted(run.results["row_id"].astype(str))
    assert run.cost_usd == pytest.approx(loaded["cost_usd"].sum())


def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def cell() -> evalrun.Run:
        asyncio.get_running_loop()  # as in a Jupyter cell: a loop is running here
        return evalrun.run(SPEC, sim=True, limit=3, out=tmp_path / "in-loop")

    run = asyncio.run(cell())
    assert run.status == "complete"
    _assert_tables_equal_csvs(run)


@pytest.mark.anyio
async def test_arun_in_async_code(tmp_path: Path) -> None:
    run = await evalrun.arun(SPEC, sim=True, limit=3, out=tmp_path / "async")
    assert run.status == "complete" and len(run.results) == 12


def test_a_bad_spec_raises_spec_error_not_system_exit(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="dataset"):
        evalrun.run({"name": "broken", "models": ["claude-haiku-4-5"]}, sim=True)
    with pytest.raises(SpecError, match="no such spec file"):
        evalrun.run(tmp_path / "missing.yaml", sim=True)
    with pytest.raises(SpecError, match="budget"):
        evalrun.run(SPEC, sim=True, budget=-1)
    assert not (tmp_path / "reports").exists()  # nothing was written


def test_a_spec_mapping_and_an_experiment_run_too(tmp_path: Path) -> None:
    shutil.copytree(REPO / "datasets", tmp_path / "datasets")
    raw = evalrun.load_spec(SPEC).model_dump(exclude={"source", "base_dir"}, exclude_none=True)
    raw["dataset"]["path"] = "datasets/capitals.csv"  # a mapping's paths are relative to the current folder
    by_mapping = evalrun.run(raw, sim=True, limit=2, out="m")
    by_experiment = evalrun.run(evalrun.load_spec(SPEC), sim=True, limit=2, out="e")
    assert by_mapping.status == by_experiment.status == "complete"
    assert len(by_mapping.results) == len(by_experiment.results) == 8


def test_a_budget_stop_returns_a_run_that_says_so(tmp_path: Path) -> None:
    run = evalrun.run(SPEC, sim=True, limit=20, out=tmp_path / "b", budget=0.001)
    assert (run.status, run.exit_code) == ("stopped at budget", 3)
    assert run.message is not None and "budget" in run.message
    assert run.stop_reason is not None and "budget" in run.stop_reason
    assert run.cost_usd > 0
    assert evalrun.Run.open(run.folder).status == "stopped at budget"


def test_an_unknown_model_raises_and_the_folder_says_why(tmp_path: Path) -> None:
    spec = tmp_path / "typo.yaml"
    text = SPEC.read_text().replace("../datasets/", str(REPO / "datasets") + "/")
    text = text.replace("  - {name: claude-sonnet-4-6, label: sonnet-4.6}", "  - claude-sonet-4-6")
    spec.write_text(text.replace("  - claude-haiku-4-5 ", "  # "))
    with pytest.raises(RunStopped, match="does not know model 'claude-sonet-4-6'") as caught:
        evalrun.run(spec, sim=True, limit=3, out=tmp_path / "typo")
    assert caught.value.model == "claude-sonet-4-6"
    opened = evalrun.Run.open(tmp_path / "typo")
    assert opened.status == "stopped" and opened.stop_reason is not None
    assert "claude-sonet-4-6" in opened.stop_reason and "Did you mean 'claude-sonnet-4-6'?" in opened.stop_reason


def test_run_open_reads_an_existing_folder(tmp_path: Path) -> None:
    first = evalrun.run(SPEC, sim=True, limit=4, out=tmp_path / "o")
    opened = evalrun.Run.open(tmp_path / "o")
    assert (opened.status, opened.exit_code, opened.cost_usd) == (first.status, first.exit_code, first.cost_usd)
    pd.testing.assert_frame_equal(opened.results, first.results)
    with pytest.raises(evalrun.EvalrunError, match="no such folder"):
        evalrun.Run.open(tmp_path / "nowhere")


def test_estimate_has_the_json_fields_as_attributes(tmp_path: Path) -> None:
    estimate = evalrun.estimate(SPEC, sim=True, limit=5, local=True)
    cli = subprocess.run(
        [sys.executable, "-m", "evalrun", "estimate", str(SPEC), "--sim", "--limit", "5", "--local", "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    got = estimate.to_json()
    for key in ("cells", "requests", "input_tokens", "output_tokens", "cost_usd", "cost_usd_max", "sent_as"):
        assert got[key] == expected[key] and getattr(estimate, key) == expected[key]


def test_compare_returns_the_comparison_csv(tmp_path: Path) -> None:
    run = evalrun.run(SPEC, sim=True, limit=6, out=tmp_path / "c")
    table = evalrun.compare(run, by="model")
    assert len(table) == 2 and set(table["by"]) == {"model"}
    pd.testing.assert_frame_equal(table.reset_index(drop=True), pd.read_csv(run.folder / "comparison.csv"),
                                  check_dtype=False)  # fmt: skip
    with pytest.raises(SpecError, match="baseline"):
        evalrun.compare(run.folder, baseline="nonesuch")


def test_import_evalrun_stays_light() -> None:
    code = "import sys, evalrun; evalrun.Run; print(sorted(m for m in ('pandas', 'numpy', 'httpx', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_user_script_passes_mypy_strict(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(
        """
        from pathlib import Path

        import evalrun


        def main() -> float:
            try:
                run: evalrun.Run = evalrun.run("spec.yaml", sim=True, limit=5, budget=1.0, deadline="10m")
            except evalrun.SpecError as error:
                print(error)
                return 0.0
            folder: Path = run.folder
            status: str = run.status
            code: int = run.exit_code
            estimate = evalrun.estimate("spec.yaml", local=True)
            requests: int = estimate.requests
            again = evalrun.Run.open(folder)
            print(status, code, requests, again.report_html, len(run.results))
            return run.cost_usd + estimate.cost_usd


        async def later() -> str:
            return (await evalrun.arun("spec.yaml", sim=True)).status
        """
    ))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(script)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MYPYPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_example_notebook_runs_in_a_running_loop(tmp_path: Path) -> None:
    """Its code cells in order, in one namespace, inside a running asyncio loop (as Jupyter runs them)."""
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    shutil.copytree(REPO / "datasets", tmp_path / "datasets")
    (tmp_path / "examples").mkdir()
    os.chdir(tmp_path / "examples")
    notebook = json.loads((REPO / "examples" / "quickstart.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    namespace: dict[str, object] = {}

    async def kernel() -> None:
        for number, source in enumerate(cells):
            exec(compile(source, f"<cell {number}>", "exec"), namespace)

    asyncio.run(kernel())
    run = namespace["run"]
    assert isinstance(run, evalrun.Run) and run.status == "complete"
    assert (tmp_path / "examples" / "reports" / "quickstart" / "report.html").exists()


def test_an_interrupt_in_a_notebook_stops_the_run_and_keeps_what_arrived(tmp_path: Path) -> None:
    """Jupyter's interrupt is a SIGINT to the kernel's main thread, which waits on the run's worker."""
    import signal
    import threading

    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main
    sent: list[bool] = []

    def progress(stats: object) -> None:
        if not sent and getattr(stats, "answered", 0) >= 1:
            sent.append(True)
            signal.pthread_kill(main, signal.SIGINT)

    async def cell() -> evalrun.Run:
        return evalrun.run(SPEC, sim=True, out=tmp_path / "stopped", progress=progress)

    # A loop run as ipykernel runs it (asyncio.run would put its own SIGINT handler in).
    loop = asyncio.new_event_loop()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = loop.run_until_complete(cell())
    finally:
        signal.signal(signal.SIGINT, previous)
        loop.close()
    assert sent and (run.status, run.exit_code) == ("interrupted", 130)
    assert len(evalrun.load_results(run.folder).query("status == 'ok'")) >= 1  # what arrived is stored
    # Running it again resumes: the rest is sent, nothing stored is sent again.
    assert evalrun.run(SPEC, sim=True, out=tmp_path / "stopped").status == "complete"


def test_the_specs_baseline_is_honoured_by_the_python_api_too(tmp_path: Path) -> None:
    # `baseline:` in the spec is the engine's to record, not only the CLI's: a notebook run of the
    # same spec gets the same "Compared with the baseline" section.
    first = evalrun.run(SPEC, sim=True, limit=3, out=tmp_path / "first")
    shutil.copytree(REPO / "datasets", tmp_path / "datasets")
    raw = evalrun.load_spec(SPEC).model_dump(exclude={"source", "base_dir"}, exclude_none=True)
    raw["dataset"]["path"] = str(tmp_path / "datasets" / "capitals.csv")
    raw["baseline"] = str(first.folder)
    second = evalrun.run(raw, sim=True, limit=3, out=tmp_path / "second")
    assert "## Compared with the baseline" in (second.folder / "report.md").read_text(encoding="utf-8")
    with pytest.raises(evalrun.EvalrunError, match="not a run folder"):
        evalrun.run({**raw, "baseline": str(tmp_path / "nowhere")}, sim=True, limit=3, out=tmp_path / "third")
    assert not (tmp_path / "third" / "store.sqlite").exists()  # refused before anything was written
