"""A run against the simulator over loopback while it throws 500s, 529s, drops and 429s."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evalrun.execute import prepare, run_prepared
from evalrun.sim import AnswerKey, SimConfig, running_server

pytestmark = pytest.mark.anyio


async def test_every_cell_completes_once_under_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = "\n".join(f"r{i},Question number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}" for i in range(150))
    (tmp_path / "d.csv").write_text("id,question,A,B,C,D,answer\n" + rows + "\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: faults\ndataset: {path: d.csv, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 1}\n"
        "prompts:\n  p:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "    prefill: \"The answer is (\"\nscorer: {type: choice, target: answer}\nmax_retries: 10\n"
    )
    answers = AnswerKey.from_csv(tmp_path / "d.csv", "answer", id_column="id")
    config = SimConfig(api_key="k", p500=0.05, p529=0.05, pdrop=0.03, rpm=3000, burst=20, seed=3, answers=answers)
    with running_server(config) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
        prepared = prepare(spec, out=tmp_path / "out")
        result = await run_prepared(prepared, concurrency=16, backoff=lambda attempt, retry_after: 0.01)
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 150
    assert (results["status"] == "ok").all()
    assert results["row_id"].is_unique
    assert result.stats.retries > 0  # the faults really happened
    assert (results["attempts"] >= 1).all() and results["attempts"].max() <= 11
