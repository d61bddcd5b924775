"""Reasoning configurations end to end, against a fake API that thinks (tests/fakes_thinking.py):
sweeps expand to labelled configurations, thinking is counted and never scored, the frontier
matches a recomputation, a pilot forecasts the run it precedes and is never paid twice, and a
thinking budget the API would refuse is refused before anything is sent."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from evalrun.cli import cli
from evalrun.errors import SpecError
from evalrun.execute import estimate_prepared, prepare, run_prepared
from evalrun.pilot import pilot_estimate
from tests.fakes_thinking import ThinkingAPI, config_of, thinking_tokens, write_questions

ROWS = 60
PROMPT = (
    "prompts:\n  p:\n    messages:\n"
    "      - {role: user, content: \"{question}\\n(A) {A}\\n(B) {B}\\n(C) {C}\\n(D) {D}\"}\n"
    "scorer: {type: choice, target: answer}\n"
)


def _spec(tmp_path: Path, model: str, *, extra: str = "", rows: int = ROWS) -> tuple[Path, list[tuple[str, str]]]:
    questions = write_questions(tmp_path / "q.csv", rows)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: sweep\ndataset: {{path: q.csv, id: id}}\nmodels:\n{model}{extra}{PROMPT}", encoding="utf-8")
    return path, questions


SWEEP = "  - name: claude-sonnet-4-6\n    label: sonnet\n    effort: [low, high]\n    thinking: [off, 4096]\n"
LABELS = {
    "sonnet@effort=low,thinking=off": ("low", "off"),
    "sonnet@effort=low,thinking=4096": ("low", "budget"),
    "sonnet@effort=high,thinking=off": ("high", "off"),
    "sonnet@effort=high,thinking=4096": ("high", "budget"),
}


async def _run(spec: Path, api: ThinkingAPI, out: Path, *, use_cache: bool = True) -> Path:
    await run_prepared(prepare(spec, out=out), transport=api.transport(), use_cache=use_cache)
    return out


@pytest.mark.anyio
async def test_a_sweep_is_one_configuration_per_value_with_the_fakes_accuracy_and_cost(tmp_path: Path) -> None:
    spec, questions = _spec(tmp_path, SWEEP)
    api = ThinkingAPI(questions, report_thinking=True)
    out = await _run(spec, api, tmp_path / "run")
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert set(summary.index) == set(LABELS)
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    for label, config in LABELS.items():
        assert summary.loc[label, "accuracy"] == pytest.approx(api.expected_accuracy(config))
        assert summary.loc[label, "n"] == ROWS
    # Every request the fake answered is one cell, and the costs add up to what the fake billed.
    assert len(api.history) == ROWS * 4 == len(results)
    assert results["cost_usd"].astype(float).sum() == pytest.approx(api.cost_usd)
    bodies = {tuple(config_of(b)): b for b in api.history}
    assert "thinking" not in bodies[("low", "off")] and bodies[("high", "off")]["output_config"] == {"effort": "high"}
    assert bodies[("high", "budget")]["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert bodies[("high", "budget")]["max_tokens"] > 4096


@pytest.mark.anyio
async def test_thinking_tokens_are_counted_from_usage_or_estimated_and_never_scored(tmp_path: Path) -> None:
    spec, questions = _spec(tmp_path, SWEEP)
    reported = await _run(spec, ThinkingAPI(questions, report_thinking=True), tmp_path / "reported")
    estimated = await _run(spec, ThinkingAPI(questions), tmp_path / "estimated", use_cache=False)
    by_question = {q: i for i, (q, _) in enumerate(questions)}
    for folder, source in ((reported, "usage"), (estimated, "estimate")):
        results = pd.read_csv(folder / "results.csv", keep_default_na=False)
        for record in results.to_dict("records"):
            question = questions[int(str(record["row_id"])[1:])][0]
            config = LABELS[record["model"]]
            expected = thinking_tokens(question, config, 4096)
            assert record["thinking_tokens"] == expected, (record["model"], by_question[question])
            # What the API reports is used as reported (0 included); an estimate only where it thought.
            assert record["thinking_tokens_source"] == (source if expected or source == "usage" else "")
        # The thinking block names a wrong letter: a scorer that read it would score it.
        assert (results["answer"] == results["target"]).astype(bool).equals(results["correct"].astype(bool))
        summary = pd.read_csv(folder / "summary.csv").set_index("model")
        mean = results.groupby("model")["thinking_tokens"].mean()
        assert summary["mean_thinking_tokens"].to_dict() == pytest.approx(mean.to_dict())
        assert summary.loc["sonnet@effort=low,thinking=off", "mean_thinking_tokens"] == 0


@pytest.mark.anyio
async def test_refusals_and_replies_cut_while_thinking_are_counted_apart(tmp_path: Path) -> None:
    spec, questions = _spec(tmp_path, SWEEP, rows=20)
    api = ThinkingAPI(questions, refuse=[questions[0][0]], overthink=[questions[1][0]])
    out = await _run(spec, api, tmp_path / "run")
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    refused = results[results["row_id"] == "q0"]
    assert set(refused["status"]) == {"refused"} and not refused["correct"].astype(bool).any()
    cut = results[(results["row_id"] == "q1") & results["model"].str.endswith("4096")]
    assert set(cut["status"]) == {"unparsed"} and cut["error"].str.contains("while still thinking").all()
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert (summary["refusals"] == 1).all()
    assert summary["truncated_thinking"].to_dict() == {label: int(label.endswith("4096")) for label in summary.index}
    # A refusal is answered and wrong: in the accuracy's denominator.
    assert (summary["answered"] == 20).all()


def _dominated(row: pd.Series, frame: pd.DataFrame) -> bool:
    acc, cost = row["accuracy"], row["cost_per_1k_rows_usd"]
    better = frame[(frame["accuracy"] >= acc) & (frame["cost_per_1k_rows_usd"] <= cost)]
    return bool(((better["accuracy"] > acc) | (better["cost_per_1k_rows_usd"] < cost)).any())


@pytest.mark.anyio
async def test_frontier_flags_match_a_recomputation(tmp_path: Path) -> None:
    spec, questions = _spec(tmp_path, SWEEP)
    out = await _run(spec, ThinkingAPI(questions), tmp_path / "run")
    frontier = pd.read_csv(out / "frontier.csv")
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(frontier.columns) == [
        "model", "prompt", "accuracy", "ci_low", "ci_high", "cost_per_1k_rows_usd", "mean_output_tokens",
        "on_frontier", "recommended", "reason",
    ]  # fmt: skip
    for _, row in frontier.iterrows():
        cells = results[results["model"] == row["model"]]
        assert row["accuracy"] == pytest.approx(cells["correct"].astype(bool).mean())
        assert row["cost_per_1k_rows_usd"] == pytest.approx(cells["cost_usd"].astype(float).sum() / len(cells) * 1000)
        assert row["mean_output_tokens"] == pytest.approx(cells["output_tokens"].mean())
        assert bool(row["on_frontier"]) == (not _dominated(row, frontier))
    # Recommended: the cheapest whose exact McNemar test (scipy) against the most accurate is not
    # significant at 0.05 (or that shows it better).
    best = frontier.sort_values(["accuracy", "cost_per_1k_rows_usd"], ascending=[False, True]).iloc[0]
    right = results.pivot(index="row_id", columns="model", values="correct").astype(bool)
    expected = None
    for _, row in frontier.sort_values(["cost_per_1k_rows_usd", "accuracy"], ascending=[True, False]).iterrows():
        if row["model"] == best["model"]:
            expected = row["model"]
            break
        only_row = int((right[row["model"]] & ~right[best["model"]]).sum())
        only_best = int((right[best["model"]] & ~right[row["model"]]).sum())
        discordant = only_row + only_best
        p = scipy_stats.binomtest(only_row, discordant, 0.5).pvalue if discordant else 1.0
        if not (p < 0.05 and only_best > only_row):
            expected = row["model"]
            break
    assert frontier.loc[frontier["recommended"], "model"].tolist() == [expected]
    assert frontier["reason"].str.len().gt(0).all()
    report = (out / "report.md").read_text()
    assert f"Recommended configuration: {expected} / p" in report and "frontier.svg" in report
    assert (out / "frontier.svg").read_text().startswith("<svg")
    assert 'id="frontier"' in (out / "report.html").read_text()


@pytest.mark.anyio
async def test_a_pilot_forecasts_the_full_runs_cost_and_is_never_paid_twice(tmp_path: Path) -> None:
    spec, questions = _spec(tmp_path, SWEEP)
    api = ThinkingAPI(questions)
    prepared = prepare(spec, out=tmp_path / "run")
    estimate = await estimate_prepared(prepared, transport=api.transport(), local=True)
    assert {r["output_basis"] for r in estimate.by_cell if r["model"].endswith("4096")} == {"bound"}
    forecast = await pilot_estimate(prepared, estimate, rows=8, transport=api.transport())
    assert forecast.pilot_rows == 8 and forecast.pilot_cells == 8 * 4 == len(api.history)
    assert forecast.pilot_cost_usd == pytest.approx(api.cost_usd)
    await run_prepared(prepare(spec, out=tmp_path / "run"), transport=api.transport())
    # Every request was sent once: the full run took the pilot's answers from the store.
    sent = Counter(json.dumps(body, sort_keys=True) for body in api.history)
    assert len(api.history) == ROWS * 4 and max(sent.values()) == 1
    real = pd.read_csv(tmp_path / "run" / "results.csv")["cost_usd"].sum()
    assert real == pytest.approx(api.cost_usd)
    assert forecast.cost_usd_low <= real <= forecast.cost_usd_high
    for row in forecast.by_config:
        cells = pd.read_csv(tmp_path / "run" / "results.csv").query("model == @row['model']")
        assert row["cost_usd_low"] <= cells["cost_usd"].sum() <= row["cost_usd_high"]
    data = forecast.to_json()
    assert {"pilot_rows", "pilot_cost_usd", "cost_usd_low", "cost_usd_high", "by_config"} <= set(data)


def test_estimate_json_with_a_pilot_on_the_simulator(tmp_path: Path) -> None:
    spec, _ = _spec(tmp_path, "  - {name: claude-opus-4-7, effort: [low, high], thinking: adaptive}\n", rows=12)
    result = CliRunner().invoke(cli, ["estimate", str(spec), "--sim", "--json", "--pilot", "4", "--budget", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pilot_rows"] == 4 and len(data["by_config"]) == 2
    assert data["cost_usd_low"] <= data["cost_usd"] <= data["cost_usd_high"]
    high, low = sorted(data["by_config"], key=lambda r: r["model"])  # effort=high sorts first
    assert high["mean_thinking_tokens"] > low["mean_thinking_tokens"] > 0
    text = CliRunner().invoke(cli, ["estimate", str(spec), "--sim", "--local"])
    assert "is a bound, not a forecast" in text.output


@pytest.mark.parametrize(
    ("model", "extra", "says"),
    [
        ("  - {name: claude-sonnet-4-6, thinking: 4096}\n", "params: {max_tokens: 4096}\n",
         "models.0 (claude-sonnet-4-6): thinking budget 4096 is not below max_tokens 4096"),
        ("  - {name: claude-sonnet-4-6, thinking: [off, 4096]}\n", "params: {max_tokens: 4100}\n",
         "leaves 4 tokens for the answer"),
        ("  - {name: claude-opus-4-7, thinking: 2048}\n", "", "takes no thinking budget (budget_tokens), only adaptive"),
        ("  - {name: claude-haiku-4-5, effort: [low, high]}\n", "", "claude-haiku-4-5 takes no effort level"),
        ("  - {name: claude-sonnet-4-6, effort: [low, extreme]}\n", "", "'extreme' is not a level claude-sonnet-4-6 takes"),
        ("  - {name: claude-haiku-4-5, thinking: adaptive}\n", "", "takes no adaptive thinking"),
        ("  - {name: claude-opus-5-5, thinking: [off, adaptive]}\n", "", "always thinks; `off` is not possible"),
        ("  - {name: claude-sonnet-4-6, thinking: 512}\n", "", "below the API's minimum of 1024"),
        ("  - {name: claude-sonnet-4-6, thinking: 4096, answer_mode: prefill}\n", "",
         "the API refuses prefill with thinking"),
    ],
)  # fmt: skip
def test_a_thinking_setting_the_api_refuses_is_a_spec_error_before_sending(
    tmp_path: Path, model: str, extra: str, says: str
) -> None:
    spec, _ = _spec(tmp_path, model, extra=extra)
    if "prefill" in model:
        spec.write_text(spec.read_text().replace("scorer:", "    prefill: \"The answer is (\"\nscorer:"))
    api = ThinkingAPI([])
    with pytest.raises(SpecError, match=None) as caught:
        prepare(spec, out=tmp_path / "run")
    assert says in str(caught.value)
    assert api.history == []
    result = CliRunner().invoke(cli, ["run", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_forced_tool_use_with_thinking_is_a_spec_error(tmp_path: Path) -> None:
    tools = (
        "params:\n  tools: [{name: pick, input_schema: {type: object, properties: {answer: {type: string}}}}]\n"
        "  tool_choice: {type: tool, name: pick}\n"
    )
    spec, _ = _spec(tmp_path, "  - {name: claude-sonnet-4-6, thinking: 2048}\n", extra=tools)
    with pytest.raises(SpecError, match="forces a tool, which the API refuses with thinking on"):
        prepare(spec, out=tmp_path / "run")


def test_labels_scalars_vary_and_nested_paths(tmp_path: Path) -> None:
    model = (
        "  - name: claude-sonnet-4-6\n    label: s\n    effort: high\n    thinking: [2048, adaptive]\n"
        "    vary: {max_tokens: [3000, 5000]}\n"
    )
    spec, _ = _spec(tmp_path, model, extra="params: {temperature: 0}\n")
    prepared = prepare(spec, out=tmp_path / "run")
    labels = [m.label for m in prepared.models]
    assert labels == [
        f"s@thinking={t},max_tokens={m}" for t, m in itertools.product((2048, "adaptive"), (3000, 5000))
    ]
    params = prepared.plan.params
    assert params[("s@thinking=2048,max_tokens=3000", "p")]["max_tokens"] == 3000
    assert params[("s@thinking=adaptive,max_tokens=5000", "p")]["thinking"] == {"type": "adaptive"}
    # temperature 0 is not sent with thinking (the API takes only 1), and the plan says so.
    assert all("temperature" not in p for p in params.values())
    assert any("temperature 0 not sent" in w for w in prepared.plan.warnings)
    # output_config.effort is set inside output_config: the structured answer format stays.
    body = prepared.plan.first_body()
    assert body is not None and body["output_config"]["effort"] == "high"


def test_effort_joins_a_structured_output_format(tmp_path: Path) -> None:
    spec, _ = _spec(tmp_path, "  - {name: claude-sonnet-4-6, effort: [low, high], thinking: 2048}\n")
    spec.write_text(spec.read_text().replace("scorer:", "    prefill: \"The answer is (\"\nscorer:"))
    prepared = prepare(spec, out=tmp_path / "run")
    assert set(prepared.plan.modes.values()) == {"structured"}
    body = prepared.plan.first_body()
    assert body is not None and set(body["output_config"]) == {"effort", "format"}
    assert body["messages"][-1]["role"] == "user"


def test_sweep_values_are_checked_in_the_spec(tmp_path: Path) -> None:
    for model, says in (
        ("  - {name: claude-sonnet-4-6, effort: []}\n", "an empty list sweeps nothing"),
        ("  - {name: claude-sonnet-4-6, thinking: [2048, 2048]}\n", "a value appears twice"),
        ("  - {name: claude-sonnet-4-6, vary: {temprature: [0, 1]}}\n", "did you mean 'temperature'"),
        ("  - {name: claude-sonnet-4-6, thinking: lots}\n", "is not off, adaptive or a budget"),
    ):
        spec, _ = _spec(tmp_path, model)
        with pytest.raises(SpecError, match=None) as caught:
            prepare(spec, out=tmp_path / "run")
        assert says in str(caught.value) and "models.0" in str(caught.value)


def _sim_cost(folder: Path) -> dict[str, Any]:
    summary = pd.read_csv(folder / "summary.csv").set_index("model")
    return {"accuracy": summary["accuracy"].to_dict(), "cost": summary["cost_usd"].to_dict(),
            "thinking": summary["mean_thinking_tokens"].to_dict()}  # fmt: skip


def test_the_simulator_thinks_more_accurately_and_more_expensively_with_more_effort(tmp_path: Path) -> None:
    spec, _ = _spec(tmp_path, "  - {name: claude-opus-4-7, label: o, effort: [low, high, max], thinking: adaptive}\n",
                    rows=200)  # fmt: skip
    result = CliRunner().invoke(cli, ["run", str(spec), "--sim", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    got = _sim_cost(tmp_path / "run")
    order = ["o@effort=low", "o@effort=high", "o@effort=max"]
    assert [got["thinking"][m] for m in order] == sorted(got["thinking"][m] for m in order)
    assert [got["cost"][m] for m in order] == sorted(got["cost"][m] for m in order)
    assert [got["accuracy"][m] for m in order] == sorted(got["accuracy"][m] for m in order)
    assert got["accuracy"]["o@effort=max"] > got["accuracy"]["o@effort=low"]
    results = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    assert set(results["thinking_tokens_source"]) == {"estimate"}
    # Same rows, more thinking: a row right at low effort stays right at max.
    right = results.pivot(index="row_id", columns="model", values="correct").astype(bool)
    assert not (right["o@effort=low"] & ~right["o@effort=max"]).any()
    assert not math.isnan(got["cost"]["o@effort=low"])


def test_the_cell_ceiling_counts_every_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evalrun.engine.prepare

    # The real ceiling (50 M cells) would need a huge dataset: lower it to see the sweep counted.
    monkeypatch.setattr(evalrun.engine.prepare, "MAX_CELLS", 200)
    spec, _ = _spec(tmp_path, SWEEP)  # 60 rows × 4 configurations of one entry = 240 cells
    with pytest.raises(SpecError, match=r"240 cells .* 4 model configurations"):
        prepare(spec, out=tmp_path / "run")


@pytest.mark.anyio
async def test_a_refusal_naming_a_letter_does_not_win_a_majority_vote(tmp_path: Path) -> None:
    # The repeats' majority reads each cell's counted score, as results.csv does: a refusal whose
    # partial text names the right letter is a wrong answer there too, not a right vote.
    spec, questions = _spec(tmp_path, SWEEP, extra="repeats: 3\nreducer: majority\n", rows=10)
    api = ThinkingAPI(questions, refuse=[questions[0][0]], refusal_names_answer=True)
    out = await _run(spec, api, tmp_path / "run")
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    refused = results[results["row_id"] == "q0"]
    assert set(refused["status"]) == {"refused"} and refused["answer"].eq("").all()
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    for label in LABELS:
        rows = results[results["model"] == label]
        # Every repeat of a row answers alike here, so the majority of a row is its first repeat.
        firsts = rows[rows["repeat"] == 0]
        assert summary.loc[label, "accuracy"] == pytest.approx(firsts["correct"].astype(bool).mean())
