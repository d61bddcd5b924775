"""A run folder belongs to one experiment; an edited spec says what it changed; a run that stops
early records why (the store, report.md, report.html, `runs --json`); typed run settings read
old stores."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.engine.settings import RunSettings


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_a_second_experiment_into_a_first_ones_folder_is_refused_and_changes_nothing(write_spec) -> None:
    first = write_spec("name: first\n", name="first.yaml")
    assert invoke("run", str(first), "--sim", "--out", "shared").exit_code == 0
    before = _snapshot(Path("shared"))
    rows = len(pd.read_csv("shared/results.csv"))
    second = write_spec("name: second\n", name="second.yaml")
    refused = invoke("run", str(second), "--sim", "--out", "shared", "--limit", "3")
    assert refused.exit_code == 2
    assert "'first'" in refused.output and "'second'" in refused.output and "--fresh" in refused.output
    assert _snapshot(Path("shared")) == before  # not a byte changed, no migration, no new run row
    assert len(pd.read_csv("shared/results.csv")) == rows
    # validate and estimate only read: they are not refused; validate says what run would do.
    assert "holds experiment 'first'" in invoke("validate", str(second), "--sim", "--out", "shared").output
    assert invoke("estimate", str(second), "--sim", "--out", "shared", "--local").exit_code == 0


def test_fresh_sets_the_other_experiments_store_aside(write_spec) -> None:
    first = write_spec("name: first\n", name="first.yaml")
    invoke("run", str(first), "--sim", "--out", "shared")
    paid = sqlite3.connect("shared/store.sqlite").execute("SELECT count(*) FROM responses").fetchone()[0]
    second = write_spec("name: second\n", name="second.yaml")
    fresh = invoke("run", str(second), "--sim", "--out", "shared", "--limit", "3", "--fresh")
    assert fresh.exit_code == 0, fresh.output
    aside = [p for p in Path("shared").iterdir() if p.name.startswith("store.sqlite.first.") and p.name.endswith(".old")]
    assert len(aside) == 1 and aside[0].name in fresh.output
    # Nothing paid for was deleted: the old store still holds every answer.
    assert sqlite3.connect(aside[0]).execute("SELECT count(*) FROM responses").fetchone()[0] == paid
    results = pd.read_csv("shared/results.csv")
    assert len(results) == 3
    assert json.loads(invoke("runs", "shared", "--json").output)[0]["name"] == "second"


def test_an_edited_spec_says_what_it_changed(write_spec) -> None:
    spec = write_spec("name: grows\n")
    invoke("run", str(spec), "--sim", "--out", "f", "--limit", "4")
    grown = invoke("run", str(spec), "--sim", "--out", "f", "--limit", "6")
    assert grown.exit_code == 0
    assert "8 cells added" not in grown.output  # one model, one prompt: 2 new rows
    assert "2 cells added, 0 cells no longer in the plan" in grown.output
    shrunk = invoke("run", str(spec), "--sim", "--out", "f", "--limit", "3")
    assert "0 cells added, 3 cells no longer in the plan" in shrunk.output
    same = invoke("run", str(spec), "--sim", "--out", "f", "--limit", "3")
    assert "cells added" not in same.output
    # The 3 cells the shrunk plan dropped are still stored and listed by `report`.
    listed = invoke("report", "f")
    assert listed.exit_code == 0
    assert "3 cells of an earlier plan" in listed.output and "claude-haiku-4-5 · plain: 3 cells, 3 answered" in listed.output
    assert len(pd.read_csv("f/results.csv")) == 3
    grown_back = invoke("run", str(spec), "--sim", "--out", "f", "--limit", "6")
    assert "(6 already stored)" in grown_back.output and "(0 sent now" in grown_back.output  # nothing paid twice
    assert "earlier plan" not in invoke("report", "f").output


def test_a_run_stopped_by_an_unknown_model_says_why_everywhere(write_spec) -> None:
    spec = write_spec("name: typo\nmodels: [claude-sonet-4-6]\n")
    check = invoke("validate", str(spec), "--sim")
    assert "did you mean 'claude-sonnet-4-6'?" in check.output
    stopped = invoke("run", str(spec), "--sim", "--out", "t")
    assert stopped.exit_code == 1
    assert "does not know model 'claude-sonet-4-6'" in stopped.output and "claude-sonnet-4-6" in stopped.output
    reason, model, status = sqlite3.connect("t/store.sqlite").execute(
        "SELECT stop_reason, stop_model, status FROM runs ORDER BY id DESC"
    ).fetchone()
    assert (model, status) == ("claude-sonet-4-6", "stopped") and "404" in reason
    assert "**STOPPED:**" in Path("t/report.md").read_text() and "claude-sonet-4-6" in Path("t/report.md").read_text()
    assert 'id="stopped"' in Path("t/report.html").read_text()
    listed = json.loads(invoke("runs", "t", "--json").output)[0]
    assert listed["stop_model"] == "claude-sonet-4-6" and "404" in listed["stop_reason"]
    assert "stopped: claude-sonet-4-6" in invoke("runs", "t").output


def test_a_run_that_then_completes_has_no_stop_reason(write_spec) -> None:
    spec = write_spec("name: budget\n")
    stopped = invoke("run", str(spec), "--sim", "--out", "b", "--budget", "0.0001")
    assert stopped.exit_code == 3
    assert "STOPPED" in Path("b/report.md").read_text()
    assert invoke("run", str(spec), "--sim", "--out", "b").exit_code == 0
    assert "STOPPED" not in Path("b/report.md").read_text()
    assert json.loads(invoke("runs", "b", "--json").output)[0]["stop_reason"] is None


def test_run_settings_read_old_stored_forms_and_keep_unknown_keys() -> None:
    old = {"name": "x", "scorer": {"type": "choice"}, "models": {"m": "claude-haiku-4-5"}, "prompts": ["p"],
           "endpoint": "simulator", "judge": None, "from_the_future": [1, 2]}  # fmt: skip
    settings = RunSettings.from_json(old)
    assert settings.name == "x" and settings.simulated and settings.labels == ["m"] and settings.repeats == 1
    assert settings.to_json()["from_the_future"] == [1, 2]
    assert RunSettings.from_json(settings.to_json()) == settings


def test_both_stages_plans_keep_the_one_request_plan_contract() -> None:
    """The run loop is fed the answers' Plan and the grading JudgePlan alike (mypy checks the
    assignments below against the Protocol)."""
    from evalrun.engine.prepare import prepare
    from evalrun.plan.contract import RequestPlan

    prepared = prepare(Path(__file__).resolve().parents[1] / "experiments" / "definitions.yaml", sim=True, limit=2)
    answers: RequestPlan = prepared.plan
    grading: RequestPlan | None = prepared.judge_plan(None)
    assert grading is not None
    assert [m.label for m in answers.models] and [m.label for m in grading.models] == [prepared.judge.label]  # type: ignore[union-attr]
    assert answers.total_cells == 2 * len(prepared.models) * len(prepared.experiment.prompts)
    assert grading.total_cells == 0 and dict(grading.learned) == {}  # nothing answered yet: nothing to grade
