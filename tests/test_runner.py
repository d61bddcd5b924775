"""End to end through execute.run_prepared against an injected fake of the API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evalrun.errors import RunFailed, RunStopped
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results

from .conftest import QUESTIONS, FakeAPI

pytestmark = pytest.mark.anyio


def no_wait(attempt: int, retry_after: float | None) -> float:
    return 0.0


async def run(spec: Path, api: FakeAPI, **kwargs):
    prepared = prepare(spec, out=kwargs.pop("out", "run"))
    return await run_prepared(prepared, transport=api.transport(), backoff=no_wait, **kwargs)


async def test_every_cell_scored_and_a_second_run_sends_nothing(write_spec, fake_api: FakeAPI) -> None:
    fake_api.wrong = {QUESTIONS["q2"][0]}
    spec = write_spec("models: [claude-haiku-4-5, {name: claude-sonnet-4-5, label: s45}]\n")
    result = await run(spec, fake_api)
    summary = pd.read_csv(result.folder / "summary.csv")
    assert list(summary["model"]) == ["claude-haiku-4-5", "s45"]
    assert list(summary["correct"]) == [5, 5]
    assert list(summary["n"]) == [6, 6]
    assert summary["accuracy"].tolist() == pytest.approx([5 / 6, 5 / 6])
    sent = len(fake_api.history)
    assert sent == 12
    again = await run(spec, fake_api)
    assert len(fake_api.history) == sent  # nothing sent twice
    assert again.stats.answered == 0 and again.counts["answered"] == 12


async def test_transient_failures_are_retried_and_nothing_is_lost(write_spec, fake_api: FakeAPI) -> None:
    fake_api.enqueue(429, 500, 529, "drop", 500, 429)
    result = await run(write_spec(), fake_api)
    results = load_results(result.folder)
    assert (results["status"] == "ok").all()
    assert results["correct"].all()
    assert results["attempts"].sum() == 6 + 6
    assert result.stats.retries == 6


async def test_tokens_in_results_equal_what_the_server_reported(write_spec, fake_api: FakeAPI) -> None:
    result = await run(write_spec(), fake_api)
    results = load_results(result.folder)
    assert results["input_tokens"].sum() == fake_api.usage_total["input_tokens"]
    assert results["output_tokens"].sum() == fake_api.usage_total["output_tokens"]
    # Haiku 4.5: $1 / $5 per million tokens.
    expected = (fake_api.usage_total["input_tokens"] * 1 + fake_api.usage_total["output_tokens"] * 5) / 1e6
    assert results["cost_usd"].sum() == pytest.approx(expected)


async def test_a_wrong_key_stops_the_run_after_one_request(write_spec) -> None:
    api = FakeAPI(key="another-key")
    with pytest.raises(RunStopped, match="refused the key"):
        await run(write_spec(), api)
    assert len(api.history) == 1


async def test_an_unknown_model_stops_the_run_with_one_message(write_spec, fake_api: FakeAPI) -> None:
    with pytest.raises(RunStopped, match="does not know model 'claude-unknown-9'"):
        await run(write_spec("models: [claude-unknown-9]\n"), fake_api)
    assert len(fake_api.history) == 1


async def test_an_unknown_model_that_refuses_prefill_switches_mode_once(write_spec) -> None:
    api = FakeAPI({q[0]: q[5] for q in QUESTIONS.values()}, no_prefill=("local-model",), no_temperature=("local-model",))
    spec = write_spec("models: [{name: local-model}]\n")
    result = await run(spec, api)
    results = load_results(result.folder)
    assert (results["answer_mode"] == "structured").all()
    assert results["correct"].all()
    assert api.statuses[400] <= 2  # one prefill refusal, one temperature refusal, not one per row
    again = await run(spec, api)
    assert again.stats.answered == 0 and again.counts["answered"] == 6


async def test_known_models_never_draw_a_refusal(write_spec) -> None:
    api = FakeAPI(
        {q[0]: q[5] for q in QUESTIONS.values()},
        no_prefill=("claude-sonnet-4-6", "claude-opus-4-7"),
        no_temperature=("claude-opus-4-7",),
    )
    spec = write_spec("models: [claude-haiku-4-5, claude-sonnet-4-6, claude-opus-4-7]\n")
    result = await run(spec, api)
    results = load_results(result.folder)
    assert api.statuses[400] == 0
    modes = results.groupby("model")["answer_mode"].first().to_dict()
    assert modes == {"claude-haiku-4-5": "prefill", "claude-sonnet-4-6": "structured", "claude-opus-4-7": "structured"}
    assert results["correct"].all()


async def test_a_permanent_error_is_recorded_on_its_row_and_the_run_goes_on(write_spec, fake_api: FakeAPI) -> None:
    original = fake_api.handle

    def handle(request):
        if b"Kenya" in request.content:
            return fake_api._error(400, "invalid_request_error", "messages.0: something about this row")
        return original(request)

    fake_api.handle = handle  # type: ignore[method-assign]
    with pytest.raises(RunFailed, match=r"1 cells failed \(most common: 1 × 400 invalid_request_error") as failed:
        await run(write_spec(), fake_api)
    results = load_results(failed.value.result.folder).set_index("row_id")
    assert results.loc["q3", "status"] == "error"
    assert "something about this row" in results.loc["q3", "error"]
    assert (results.drop("q3")["status"] == "ok").all()


async def test_the_api_key_is_on_no_file(write_spec, fake_api: FakeAPI, tmp_path: Path) -> None:
    await run(write_spec(), fake_api)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-test-secret-key" not in path.read_bytes(), path
