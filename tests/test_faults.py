"""A run against the simulator over loopback while it throws 500s, 529s, drops and 429s."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evalrun.execute import prepare, run_prepared
from evalrun.sim import AnswerKey, SimConfig, running_server

from .conftest import write_mc_csv, write_mc_spec

pytestmark = pytest.mark.anyio


async def test_every_cell_completes_once_under_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mc_csv(tmp_path / "d.csv", 150)
    spec = write_mc_spec(tmp_path / "s.yaml", name="faults", dataset="d.csv", extra="max_retries: 10\n")
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
