"""Issue 25's done-when, end to end on a real `evalrun view` process: the run list over the API,
reviews posted (refused without the token), appended in the store, and after `evalrun report`
the reviewed cells scored `human`, with accuracy, comparisons and the judge's agreement equal to
a recomputation from results.csv and the reviews (statsmodels for kappa)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from statsmodels.stats.inter_rater import cohens_kappa

from evalrun.cli import cli
from evalrun.store.run_store import Store

from .fakes_view import make_run, running_viewer


def _listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP port listens on (Linux's /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


def _post(base: str, run: str, body: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"X-Evalrun-Token": token} if token else {}
    return httpx.post(f"{base}/api/runs/{run}/reviews", json=body, headers=headers, timeout=30)


def _cells(base: str, run: str) -> list[dict[str, Any]]:
    return httpx.get(f"{base}/api/runs/{run}/cells", params={"limit": 500}, timeout=30).json()["cells"]


def _key(cell: Any) -> tuple[str, str, str, int]:
    return (str(cell["model"]), str(cell["prompt"]), str(cell["row_id"]), int(cell["repeat"]))


def _accuracy(results: pd.DataFrame) -> dict[tuple[str, str], float]:
    answered = results[results["status"].isin(["ok", "unparsed"])]
    return {key: float(group["score"].mean()) for key, group in answered.groupby(["model", "prompt"])}


def test_reviews_from_the_viewer_rescore_the_reports_exactly(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    make_run("capitals", root / "capitals" / "r1")
    make_run("definitions", root / "definitions" / "r1")
    with running_viewer(root, "--reviewer", "grace") as viewer:
        host_port = viewer.base.removeprefix("http://")
        assert host_port.startswith("127.0.0.1:")
        assert _listening_addresses(int(host_port.rsplit(":", 1)[1])) == {"127.0.0.1"}
        listed = httpx.get(f"{viewer.base}/api/runs", timeout=30).json()["runs"]
        assert {r["run"] for r in listed} == {"capitals/r1", "definitions/r1"}

        # Multiple choice: turn a right answer wrong, a wrong one right, and confirm one.
        cells = _cells(viewer.base, "capitals/r1")
        right = [c for c in cells if c["outcome"] == "correct"]
        wrong = [c for c in cells if c["outcome"] == "wrong"]
        chosen = {_key(right[0]): "wrong", _key(wrong[0]): "correct", _key(right[1]): "correct"}
        bodies = [dict(zip(("model", "prompt", "row_id", "repeat"), key, strict=True)) | {"verdict": verdict}
                  for key, verdict in chosen.items()]  # fmt: skip
        assert _post(viewer.base, "capitals/r1", bodies[0], None).status_code == 403
        assert _post(viewer.base, "capitals/r1", bodies[0], "not-the-token").status_code == 403
        with Store.open_readonly(root / "capitals" / "r1") as store:
            assert store.reviews() == []
        for body in bodies:
            assert _post(viewer.base, "capitals/r1", body, viewer.token).status_code == 201

        # The judge: a grade against the grader, a verdict, and a grade where the grader agreed.
        graded = [c for c in _cells(viewer.base, "definitions/r1") if c["grade"]]
        passed = [c for c in graded if c["grade"] == "pass"]
        judge_reviews = {_key(passed[0]): {"grade": "fail"}, _key(passed[1]): {"verdict": "correct"},
                         _key(graded[-1]): {"grade": graded[-1]["grade"], "note": "agree"}}  # fmt: skip
        for key, review in judge_reviews.items():
            body = dict(zip(("model", "prompt", "row_id", "repeat"), key, strict=True)) | review
            assert _post(viewer.base, "definitions/r1", body, viewer.token).status_code == 201

    with Store.open_readonly(root / "capitals" / "r1") as store:
        stored = store.reviews()
    assert [(r.key, r.verdict, r.reviewer) for r in stored] == [(k, v, "grace") for k, v in chosen.items()]

    for run in ("capitals/r1", "definitions/r1"):
        assert CliRunner().invoke(cli, ["report", str(root / run)]).exit_code == 0

    # Multiple choice: the human verdicts count, the automatic ones are kept beside them.
    folder = root / "capitals" / "r1"
    results = pd.read_csv(folder / "results.csv", keep_default_na=False, dtype={"row_id": str})
    keys = list(zip(results["model"], results["prompt"], results["row_id"], results["repeat"], strict=True))
    results["key"] = keys
    human = results[results["score_source"] == "human"]
    assert set(human["key"]) == set(chosen)
    for _, row in human.iterrows():
        assert row["correct"] == (chosen[row["key"]] == "correct")
        assert row["score"] == (1.0 if chosen[row["key"]] == "correct" else 0.0)
    assert {str(v) for v in human["correct_auto"]} == {"True", "False"}
    assert set(results.loc[results["score_source"] != "human", "score_source"]) == {"auto"}
    summary = pd.read_csv(folder / "summary.csv")
    expected = _accuracy(results.assign(score=results["score"].astype(float)))
    for _, row in summary.iterrows():
        assert row["accuracy"] == pytest.approx(expected[(row["model"], row["prompt"])], abs=1e-12)
    assert summary["human_reviewed"].fillna(0).sum() == 3 and summary["human_overridden"].fillna(0).sum() == 2
    comparison = pd.read_csv(folder / "comparison.csv")
    for _, row in comparison.iterrows():
        model = row["group"]
        assert row["acc_a"] == pytest.approx(expected[(model, row["a"])], abs=1e-12)
        assert row["acc_b"] == pytest.approx(expected[(model, row["b"])], abs=1e-12)
    assert "human review: 3 cells" in (folder / "report.md").read_text(encoding="utf-8")

    # The judge: accuracy and the grader's agreement with humans, reviews before the column.
    folder = root / "definitions" / "r1"
    results = pd.read_csv(folder / "results.csv", keep_default_na=False, dtype={"row_id": str})
    dataset = pd.read_csv(Path(__file__).resolve().parents[1] / "datasets" / "definitions.csv", dtype=str)
    column = dict(zip(dataset["id"], dataset["human_grade"], strict=True))
    expected = _accuracy(results.assign(score=results["score"].astype(float)))
    summary = pd.read_csv(folder / "summary.csv")
    for _, row in summary.iterrows():
        variant = (row["model"], row["prompt"])
        graded_here = results[(results["model"] == variant[0]) & (results["prompt"] == variant[1]) & (results["grade"] != "")]
        judge, humans, from_reviews = [], [], 0
        for _, cell in graded_here.iterrows():
            review = judge_reviews.get(_key(cell))
            if review is not None:
                humans.append(review.get("grade") or ("pass" if review.get("verdict") == "correct" else "fail"))
                from_reviews += 1
            else:
                humans.append(column[cell["row_id"]])
            judge.append(cell["grade"])
        table = np.array([[sum(1 for j, h in zip(judge, humans, strict=True) if (j, h) == (a, b)) for b in ("pass", "fail")]
                          for a in ("pass", "fail")])  # fmt: skip
        assert row["accuracy"] == pytest.approx(expected[variant], abs=1e-12)
        assert row["judge_agreement_n"] == len(judge)
        assert row["judge_agreement"] == pytest.approx(np.trace(table) / table.sum(), abs=1e-12)
        assert row["judge_kappa"] == pytest.approx(cohens_kappa(table).kappa, abs=1e-9)
        assert row["judge_agreement_from_reviews"] == from_reviews
        assert row["judge_agreement_from_column"] == len(judge) - from_reviews
    human = results[results["score_source"] == "human"]
    assert len(human) == 3
    assert "from reviews in the viewer" in (folder / "report.md").read_text(encoding="utf-8")
