"""Every example experiment — one per request shape of the Messages API guide — runs on the
simulator and is scored the way its comment says."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from evalrun.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("examples")
    shutil.copytree(ROOT / "experiments", base / "experiments")
    shutil.copytree(ROOT / "datasets", base / "datasets")
    out = {}
    for name in EXAMPLES:
        folder = base / "runs" / name
        result = CliRunner().invoke(
            cli, ["run", str(base / "experiments" / f"{name}.yaml"), "--sim", "--out", str(folder)],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, (name, result.output)
        out[name] = folder
    return out


def test_there_is_an_example_for_every_request_shape() -> None:
    assert {"capitals", "definitions", "support", "shapes", "cities-tool", "cities-json", "passages"} <= set(EXAMPLES)
    assert {"trivia-jsonl", "conversations", "documents"} <= set(EXAMPLES)  # datasets as users have them


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_answers_every_cell(runs: dict[str, Path], name: str) -> None:
    results = pd.read_csv(runs[name] / "results.csv", keep_default_na=False)
    assert len(results) > 0 and set(results["status"]) <= {"ok", "unparsed"}
    summary = pd.read_csv(runs[name] / "summary.csv")
    assert summary["accuracy"].between(0, 1).all()
    assert "endpoint: simulator" in (runs[name] / "report.md").read_text()


def _requests(folder: Path) -> list[dict]:
    db = sqlite3.connect(folder / "store.sqlite")
    return [json.loads(body) for (body,) in db.execute("SELECT body_json FROM requests ORDER BY first_seq")]


def test_multi_turn_history_sends_the_synthetic_assistant_turn(runs: dict[str, Path]) -> None:
    body = _requests(runs["support"])[0]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"].startswith("I am sorry to hear that")


def test_vision_sends_a_file_and_a_url(runs: dict[str, Path]) -> None:
    sources = [
        block["source"]["type"]
        for body in _requests(runs["shapes"])[:2]
        for block in body["messages"][0]["content"]
        if block["type"] == "image"
    ]
    assert sorted(sources) == ["evalrun_file", "url"]  # a file is read and base64-encoded when sent


def test_tool_extraction_scores_each_field_against_its_column(runs: dict[str, Path]) -> None:
    results = pd.read_csv(runs["cities-tool"] / "results.csv")
    data = pd.read_csv(ROOT / "datasets" / "cities.csv").set_index("id")
    for _, cell in results.iterrows():
        extracted = json.loads(cell["answer"])
        gold = data.loc[cell["row_id"]]
        assert cell["correct_city"] == (extracted["city"] == gold["city"])
        assert cell["correct_country"] == (extracted["country"] == gold["country"])
        right = abs(extracted["population"] - gold["population"]) <= 0.01 * gold["population"]
        assert cell["correct_population"] == right
        assert cell["correct"] == (cell["correct_city"] and cell["correct_country"] and right)
    summary = pd.read_csv(runs["cities-tool"] / "summary.csv").set_index("model")
    for model, cells in results.groupby("model"):
        assert summary.loc[model, "accuracy_population"] == pytest.approx(cells["correct_population"].mean())
        assert summary.loc[model, "accuracy"] == pytest.approx(cells["correct"].mean())


def test_the_judge_grades_and_agrees_with_humans_as_recomputed(runs: dict[str, Path]) -> None:
    results = pd.read_csv(runs["definitions"] / "results.csv", keep_default_na=False)
    assert set(results["grade"]) <= {"pass", "fail"} and (results["grade_explanation"] != "").all()
    assert (results["correct"].astype(str).eq("True") == results["grade"].eq("pass")).all()
    assert results["judge_cost_usd"].astype(float).gt(0).all()
    human = pd.read_csv(ROOT / "datasets" / "definitions.csv").set_index("id")["human_grade"]
    summary = pd.read_csv(runs["definitions"] / "summary.csv")
    for _, row in summary.iterrows():
        cells = results[(results["model"] == row["model"]) & (results["prompt"] == row["prompt"])]
        pairs = list(zip(cells["grade"], human.loc[cells["row_id"]], strict=True))
        agree = sum(a == b for a, b in pairs) / len(pairs)
        assert row["judge_agreement"] == pytest.approx(agree)
        po, labels = agree, ["pass", "fail"]
        pe = sum((cells["grade"] == lab).mean() * (human.loc[cells["row_id"]] == lab).mean() for lab in labels)
        expected = (po - pe) / (1 - pe) if pe < 1 else float("nan")
        assert row["judge_kappa"] == pytest.approx(expected, nan_ok=True)
    grading = [b for b in _requests(runs["definitions"]) if "<response>" in json.dumps(b)]
    assert grading and all(b["model"] == "claude-sonnet-4-6" and "output_config" in b for b in grading)


def test_clustered_passages_use_cluster_robust_intervals(runs: dict[str, Path]) -> None:
    summary = pd.read_csv(runs["passages"] / "summary.csv")
    assert set(summary["ci_method"]) == {"clt-cluster"} and set(summary["clusters"]) == {5}
    assert set(summary["n"]) == {20} and set(summary["cells"]) == {40}  # repeats are not rows
    results = pd.read_csv(runs["passages"] / "results.csv")
    for _, row in summary.iterrows():
        cells = results[results["prompt"] == row["prompt"]]
        per_row = cells.groupby("row_id").agg(score=("correct", "mean"), cluster=("cluster", "first"))
        mean = per_row["score"].mean()
        sums = per_row.groupby("cluster")["score"].apply(lambda s, m=mean: (s - m).sum())
        g, n = len(sums), len(per_row)
        se = (g / (g - 1) * (sums**2).sum()) ** 0.5 / n
        half = scipy_stats.t.ppf(0.975, g - 1) * se
        assert row["accuracy"] == pytest.approx(per_row["score"].mean())
        assert row["ci_high"] == pytest.approx(min(1.0, per_row["score"].mean() + half))


def test_the_effort_sweep_has_one_configuration_per_value_and_a_frontier(runs: dict[str, Path]) -> None:
    summary = pd.read_csv(runs["effort-sweep"] / "summary.csv").set_index("model")
    assert list(summary.index) == [
        "opus@effort=low", "opus@effort=medium", "opus@effort=high", "sonnet@thinking=off", "sonnet@thinking=2048",
    ]  # fmt: skip
    thinking = summary["mean_thinking_tokens"]
    assert thinking["opus@effort=low"] < thinking["opus@effort=medium"] < thinking["opus@effort=high"]
    assert thinking["sonnet@thinking=off"] == 0 < thinking["sonnet@thinking=2048"]
    assert summary.loc["opus@effort=high", "cost_usd"] > summary.loc["opus@effort=low", "cost_usd"]
    frontier = pd.read_csv(runs["effort-sweep"] / "frontier.csv")
    assert frontier["recommended"].sum() == 1 and frontier["on_frontier"].any()
    bodies = _requests(runs["effort-sweep"])
    assert all(b["messages"][-1]["role"] == "user" for b in bodies if "thinking" in b)


def test_a_jsonl_option_list_is_lettered_per_row_and_scored_from_its_index(runs: dict[str, Path]) -> None:
    rows = [json.loads(line) for line in (ROOT / "datasets" / "trivia.jsonl").read_text().splitlines()]
    bodies = {json.dumps(b).split("\\n\\n")[1].split("\\n")[0]: b for b in _requests(runs["trivia-jsonl"])}
    for row in rows:
        content = bodies[row["question"]]["messages"][0]["content"]
        assert content.startswith(f"Topic: {row['meta']['topic']}\n\n")
        assert content.splitlines()[-len(row["choices"]):] == [f"({'ABCDE'[i]}) {c}" for i, c in enumerate(row["choices"])]
    results = pd.read_csv(runs["trivia-jsonl"] / "results.csv", keep_default_na=False).set_index("row_id")
    assert {r["id"]: "ABCDE"[r["answer_index"]] for r in rows} == results["target"].to_dict()
    assert "E" in set(results["target"])  # five-option rows are scored A–E


def test_a_conversation_dataset_sends_each_rows_turns(runs: dict[str, Path]) -> None:
    rows = [json.loads(line) for line in (ROOT / "datasets" / "conversations.jsonl").read_text().splitlines()]
    bodies = _requests(runs["conversations"])
    for row in rows:
        assert row["messages"] in [b["messages"] for b in bodies]
        assert [{"role": "user", "content": "You will see a customer conversation. Ready?"},
                {"role": "assistant", "content": "Ready."}, *row["messages"]] in [b["messages"] for b in bodies]  # fmt: skip


def test_a_pdf_question_plans_a_document_file_with_citations(runs: dict[str, Path]) -> None:
    blocks = [b["messages"][0]["content"][0] for b in _requests(runs["documents"])]
    assert {b["source"]["media_type"] for b in blocks} == {"application/pdf", "text/plain"}
    assert all(b["type"] == "document" and b["citations"] == {"enabled": True} for b in blocks)
    assert sorted(b["source"].get("pages", 0) for b in blocks) == [0, 1, 1, 2, 2]
