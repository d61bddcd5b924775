"""Independent checks of issues #21–#23 that found a defect (the verifier's regressions)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.errors import RunStopped
from evalrun.execute import prepare, run_prepared


def test_validate_offers_the_nearest_model_for_a_mistyped_name(write_spec, monkeypatch, tmp_path) -> None:
    # #21.2: a typo in a model name (the API would answer 404) is pointed at the model it meant.
    monkeypatch.chdir(tmp_path)
    spec = write_spec("models: [claude-sonet-4-6]\n")
    result = CliRunner().invoke(cli, ["validate", str(spec), "--sim"], catch_exceptions=False)
    assert "claude-sonet-4-6: not in the model table (did you mean 'claude-sonnet-4-6'?)" in result.output


def test_a_model_unlike_any_in_the_table_gets_no_suggestion(write_spec, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write_spec("models: [my-local-llama]\n")
    result = CliRunner().invoke(cli, ["validate", str(spec), "--sim"], catch_exceptions=False)
    assert "my-local-llama: not in the model table;" in result.output
    assert "did you mean" not in result.output


@pytest.mark.anyio
async def test_a_run_stopped_by_a_404_says_why_in_report_md_and_runs_json(write_spec, fake_api, tmp_path) -> None:
    # The verifier's check of #21.2: the model's 404 stops the run; the reader of the report and of
    # `runs --json` must learn that the model name is wrong, not be told to "run again".
    prepared = prepare(write_spec("models: [claude-unknown-9]\n"), out=tmp_path / "reports" / "mc" / "r1")
    with pytest.raises(RunStopped):
        await run_prepared(prepared, transport=fake_api.transport(), backoff=lambda attempt, after: 0.0)
    folder = tmp_path / "reports" / "mc" / "r1"
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert "claude-unknown-9" in report and "does not know model" in report
    listed = CliRunner().invoke(cli, ["runs", str(tmp_path / "reports"), "--json"], catch_exceptions=False)
    assert "does not know model" in listed.output
    # and it does not send the reader back to "retry the failed requests": nothing failed to retry
    assert "retry the failed requests" not in report
    assert "retry the failed requests" not in (folder / "report.html").read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_the_recommendation_states_its_accuracy_difference_with_the_sign_of_its_wording(tmp_path) -> None:
    # "(0.850 vs 0.900; difference …)": the recommended configuration is the less accurate one, so
    # the difference it states (this − the most accurate) is negative; it read +0.050.
    from tests.fakes_thinking import ThinkingAPI
    from tests.test_reasoning import SWEEP, _run, _spec

    skills = {("low", "off"): 0.3, ("high", "off"): 0.85, ("low", "budget"): 0.5, ("high", "budget"): 0.9}
    spec, questions = _spec(tmp_path, SWEEP)
    out = await _run(spec, ThinkingAPI(questions, skills=skills), tmp_path / "run")
    frontier = pd.read_csv(out / "frontier.csv")
    chosen = frontier[frontier["recommended"]].iloc[0]
    best = frontier["accuracy"].max()
    assert chosen["accuracy"] < best  # the scenario: a cheaper, slightly less accurate pick
    stated = float(re.search(r"difference ([+-]\d\.\d+)", chosen["reason"]).group(1))  # type: ignore[union-attr]
    assert stated == pytest.approx(chosen["accuracy"] - best, abs=1e-3)


@pytest.mark.anyio
async def test_a_lost_create_whose_results_url_names_another_host_is_not_paid_twice(write_spec, tmp_path) -> None:
    # The create reply is lost and the account's batch lists a results_url on another host (a
    # gateway passing the upstream's through): looking for the lost batch reads its results at the
    # configured endpoint's own path instead of giving up on it and creating a second batch.
    from evalrun.errors import RunFailed
    from tests.fakes_send import BatchAPI

    fake = BatchAPI()
    fake.results_origin = "http://127.0.0.1:9"
    fake.drop_create = 1
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    with pytest.raises(RunFailed):  # collecting it is still refused: its results_url is elsewhere
        await run_prepared(prepared, transport=fake.transport(), batch_poll_s=0.01)
    assert fake.created == 1
    assert fake.foreign_keys == []  # and no key went to the other host
