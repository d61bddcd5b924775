"""Message Batches and prompt caching: planned, paced, priced and proven against the simulator
and an independent fake of the Batches API."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.errors import BudgetExceeded
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results

from .conftest import QUESTIONS, FakeClock
from .fakes_process import PATIENCE_S, wait_until

EXAMPLE = " ".join(f"word{i}" for i in range(900))  # ~900 tokens of few-shot context each


def five_shot_spec(tmp_path: Path, rows: int, *, cache: str = "auto", extra: str = "") -> Path:
    lines = ["id,question,A,B,C,D,answer"]
    lines += [f"r{i},Which option is number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}" for i in range(rows)]
    (tmp_path / "mc.csv").write_text("\n".join(lines) + "\n")
    shots = "".join(
        f"      - {{role: user, content: \"Example {k}: {EXAMPLE} (A) x (B) y (C) z (D) w\"}}\n"
        f"      - {{role: assistant, content: \"The answer is ({'ABCD'[k % 4]})\"}}\n"
        for k in range(5)
    )
    spec = tmp_path / f"five-shot-{cache}.yaml"
    spec.write_text(
        f"name: five-shot\ndataset: {{path: mc.csv, id: id}}\nmodels: [claude-haiku-4-5]\nparams: {{max_tokens: 1}}\n"
        f"cache: {cache}\n"
        "prompts:\n  five-shot:\n    system: Answer with the letter of the correct option.\n    messages:\n"
        + shots
        + "      - {role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}\n"
        "    prefill: \"The answer is (\"\n"
        "scorer: {type: choice, target: answer}\n" + extra
    )
    return spec


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_cached_five_shot_batch_costs_under_a_tenth_with_the_same_answers(tmp_path: Path) -> None:
    naive = invoke("run", str(five_shot_spec(tmp_path, 120, cache="off")), "--sim", "--out", "naive")
    assert naive.exit_code == 0, naive.output
    spec = five_shot_spec(tmp_path, 120)
    estimate = json.loads(invoke("estimate", str(spec), "--sim", "--batch", "--json").output)
    both = invoke("run", str(spec), "--sim", "--batch", "--out", "both")
    assert both.exit_code == 0, both.output
    plain, cheap = load_results(tmp_path / "naive"), load_results(tmp_path / "both")
    assert list(cheap["answer"]) == list(plain["answer"])
    assert (cheap["source"] == "batch").all()
    assert cheap["cache_read_input_tokens"].gt(0).sum() == 119  # the first request wrote, the rest read
    ratio = cheap["cost_usd"].sum() / plain["cost_usd"].sum()
    assert ratio <= 0.1, ratio
    tokens = cheap[["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]].to_numpy().sum()
    assert estimate["input_tokens"] == pytest.approx(tokens, rel=0.02)
    assert estimate["cache_read_tokens"] == pytest.approx(cheap["cache_read_input_tokens"].sum(), rel=0.02)
    assert estimate["cost_usd"] == pytest.approx(cheap["cost_usd"].sum(), rel=0.05)
    assert estimate["cost_usd_uncached"] == pytest.approx(plain["cost_usd"].sum(), rel=0.05)
    summary = (tmp_path / "both" / "report.md").read_text()
    assert "saved by prompt caching" in summary


def test_caching_is_left_off_below_the_models_minimum(tmp_path: Path, write_spec) -> None:
    prepared = prepare(write_spec("prompts:\n  p:\n    system: Short system prompt.\n    messages: [{role: user, content: \"{question}\"}]\n"))
    assert all(v.cache is None for v in prepared.plan.variants)
    # An explicit TTL does not lower the minimum: the API would not cache it (#21.1).
    forced = prepare(write_spec("cache: 5m\nprompts:\n  p:\n    system: Short.\n    messages: [{role: user, content: \"{question}\"}]\n"))
    _, request = next(forced.plan.cells())
    assert json.loads(request.body_json)["system"] == "Short."
    assert any("marked for caching (cache: 5m) but below the" in w for w in forced.plan.warnings)


class BatchFake:
    """An independent fake of the Batches API: answers every question right, errors 5 % of the
    requests of each batch (by a hash of the custom_id and the batch), returns results shuffled.
    A batch ends at its `polls_to_end`-th poll; `on_poll` is called at each poll."""

    def __init__(self, error_share: float = 0.05, polls_to_end: int = 1) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.error_share = error_share
        self.polls_to_end = polls_to_end
        self.on_poll: Callable[[], None] | None = None
        self.created = 0
        self.origin = "http://api.test"

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if request.method == "POST" and path == "/v1/messages/batches":
            self.created += 1
            batch_id = f"msgbatch_{self.created}"
            requests = json.loads(request.content)["requests"]
            self.batches[batch_id] = {"requests": requests, "polls": 0}
            return httpx.Response(200, json=self._view(batch_id))
        if request.method == "GET" and path.endswith("/results"):
            batch_id = path.split("/")[-2]
            lines = [json.dumps(self._result(batch_id, r)) for r in reversed(self.batches[batch_id]["requests"])]
            return httpx.Response(200, content="\n".join(lines).encode())
        if request.method == "GET" and path.startswith("/v1/messages/batches/"):
            batch_id = path.split("/")[-1]
            self.batches[batch_id]["polls"] += 1
            if self.on_poll is not None:
                self.on_poll()
            return httpx.Response(200, json=self._view(batch_id))
        return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": path}})

    def _view(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        ended = batch["polls"] >= self.polls_to_end
        n = len(batch["requests"])
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0, "errored": 0,
                                   "canceled": 0, "expired": 0},
                "results_url": f"{self.origin}/v1/messages/batches/{batch_id}/results"}  # fmt: skip

    def _result(self, batch_id: str, item: dict[str, Any]) -> dict[str, Any]:
        draw = int(hashlib.sha256(f"{batch_id}:{item['custom_id']}".encode()).hexdigest()[:8], 16) / 16**8
        if draw < self.error_share:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return {"custom_id": item["custom_id"], "result": {"type": "errored", "error": error}}
        text = json.dumps(item["params"]["messages"])
        letter = next((q[5] for q in QUESTIONS.values() if q[0] in text), "A")
        message = {"id": "msg", "type": "message", "role": "assistant", "content": [{"type": "text", "text": letter}],
                   "stop_reason": "max_tokens",
                   "usage": {"input_tokens": 50, "output_tokens": 1, "service_tier": "batch"}}  # fmt: skip
        return {"custom_id": item["custom_id"], "result": {"type": "succeeded", "message": message}}


@pytest.mark.anyio
async def test_a_batch_run_with_errored_requests_ends_complete(tmp_path: Path, write_spec) -> None:
    lines = ["id,question,A,B,C,D,answer"] + [f"x{i},Capital of Peru? variant {i},Lima,Quito,Cusco,Bogota,A" for i in range(200)]
    (tmp_path / "mc.csv").write_text("\n".join(lines) + "\n")
    fake = BatchFake()
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    result = await run_prepared(prepared, transport=httpx.MockTransport(fake.handle), batch_poll_s=0.01)
    results = load_results(result.folder)
    assert len(results) == 200 and (results["status"] == "ok").all()
    assert fake.created >= 2  # the errored ones went again, in a new batch
    assert (results["source"] == "batch").all()
    # Half price: Haiku 4.5 at $1/$5 per million tokens, halved.
    assert results["cost_usd"].iloc[0] == pytest.approx((50 * 1 + 1 * 5) / 1e6 / 2)


@pytest.mark.anyio
async def test_the_budget_is_reserved_before_a_batch_is_submitted(tmp_path: Path, write_spec) -> None:
    lines = ["id,question,A,B,C,D,answer"] + [f"x{i},Capital of Peru? take {i},Lima,Quito,Cusco,Bogota,A" for i in range(300)]
    (tmp_path / "mc.csv").write_text("\n".join(lines) + "\n")
    fake = BatchFake(error_share=0.0)
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    with pytest.raises(BudgetExceeded):
        await run_prepared(prepared, transport=httpx.MockTransport(fake.handle), batch_poll_s=0.01, budget_usd=0.004)
    results = load_results(tmp_path / "out")
    assert results["cost_usd"].sum() <= 0.004
    assert 0 < (results["status"] == "ok").sum() < 300


@pytest.mark.anyio
async def test_a_reattached_batch_is_polled_without_spinning_and_not_counted_as_sent(
    tmp_path: Path, write_spec, fake_clock: FakeClock
) -> None:
    # The killed run submitted every request: the run that re-attaches has nothing to hand out
    # and only the earlier run's batch to wait for. It must sleep between polls (the fake
    # clock's driver raises "the tasks never settled" at a loop that never waits), and what it
    # collects was not sent by it.
    fake = BatchFake(error_share=0.0, polls_to_end=4)
    transport = httpx.MockTransport(fake.handle)
    with anyio.CancelScope() as killed:
        fake.on_poll = killed.cancel  # killed while it polls: the batch stays open in the store
        await run_prepared(prepare(write_spec(), out=tmp_path / "out", batch=True), transport=transport)
    assert killed.cancel_called and fake.created == 1
    fake.on_poll = None
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    async with fake_clock.running():
        result = await run_prepared(prepared, transport=transport, clock=fake_clock, batch_poll_s=1.0)
    assert fake.created == 1
    assert fake.batches["msgbatch_1"]["polls"] == 4  # polled at +0, +1 and +2.5 s, then collected
    assert fake_clock.elapsed == 2.5
    assert (result.stats.answered, result.stats.reattached) == (0, len(QUESTIONS))
    results = load_results(result.folder)
    assert len(results) == len(QUESTIONS) and (results["status"] == "ok").all()


@pytest.mark.anyio
async def test_a_deadline_stops_the_wait_for_a_reattached_batch(tmp_path: Path, write_spec, fake_clock: FakeClock) -> None:
    from evalrun.errors import DeadlineReached

    fake = BatchFake(error_share=0.0, polls_to_end=100)  # a batch that takes its time
    transport = httpx.MockTransport(fake.handle)
    with anyio.CancelScope() as killed:
        fake.on_poll = killed.cancel
        await run_prepared(prepare(write_spec(), out=tmp_path / "out", batch=True), transport=transport)
    fake.on_poll = None
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    async with fake_clock.running():
        with pytest.raises(DeadlineReached, match="stopped at the deadline"):
            await run_prepared(prepared, transport=transport, clock=fake_clock, batch_poll_s=1.0, deadline_s=5.0)
    assert fake_clock.elapsed <= 5.0 + 1.0  # the deadline, not the batch's end
    assert fake.created == 1  # the batch stays open in the store, for the next run to collect


@pytest.mark.anyio
async def test_a_request_of_a_reattached_batch_sent_again_counts_as_sent_now(tmp_path: Path, write_spec) -> None:
    fake = BatchFake(error_share=0.5)  # errored requests go again, in a batch of the second run
    transport = httpx.MockTransport(fake.handle)
    with anyio.CancelScope() as killed:
        fake.polls_to_end, fake.on_poll = 2, killed.cancel
        await run_prepared(prepare(write_spec(), out=tmp_path / "out", batch=True), transport=transport)
    fake.on_poll = None
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    result = await run_prepared(prepared, transport=transport, batch_poll_s=0.01)
    again = len(fake.batches["msgbatch_2"]["requests"])
    assert 0 < again < len(QUESTIONS)
    assert (result.stats.answered, result.stats.reattached) == (again, len(QUESTIONS) - again)
    assert (load_results(result.folder)["status"] == "ok").all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_killed_batch_run_reattaches_and_never_creates_a_batch_twice(tmp_path: Path, write_spec) -> None:
    port = _free_port()
    env = {**os.environ, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "evalrun", "sim", "--port", str(port), "--batch-seconds", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, "the simulator to listen")
        spec = write_spec()
        command = [sys.executable, "-m", "evalrun", "run", str(spec), "--batch", "--out", "killed"]
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        store = tmp_path / "killed" / "store.sqlite"

        def batch_open() -> bool:
            if not store.exists():
                return False
            try:
                with contextlib.closing(sqlite3.connect(store)) as db:
                    return ("in_progress",) in db.execute("SELECT status FROM batches").fetchall()
            except sqlite3.Error:
                return False

        # The batch stays open --batch-seconds after it is created: time enough to see it.
        wait_until(batch_open, "the run to store its open batch")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=PATIENCE_S)
        again = subprocess.run(command, capture_output=True, env=env, timeout=60)
        assert again.returncode == 0, again.stderr
        assert b"(0 sent now, 6 from re-attached batches, 0 from the shared cache)" in again.stderr
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/messages/batches", headers={"anthropic-version": "2023-06-01"})
        assert len(listed.json()["data"]) == 1  # the same batch, collected by the second run
        results = pd.read_csv(tmp_path / "killed" / "results.csv")
        assert len(results) == 6 and (results["status"] == "ok").all()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=PATIENCE_S)


@pytest.mark.anyio
async def test_a_batch_run_with_the_realtime_fallback_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Errored batch requests go again in real time; once the last of them is answered and no
    # batch is open, the run ends (it used to wait for a halt that never came).
    from evalrun.sim import SimConfig, running_server

    from .conftest import write_mc_csv, write_mc_spec

    write_mc_csv(tmp_path / "d.csv", 20)
    spec = write_mc_spec(tmp_path / "s.yaml", name="fallback", dataset="d.csv")
    config = SimConfig(api_key="k", batch_error_rate=0.3, batch_seconds=0.2, latency_ms=100, seed=1)
    with running_server(config) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
        prepared = prepare(spec, out=tmp_path / "out", batch=True)
        with anyio.fail_after(120):  # a guard against a hang, not a limit
            result = await run_prepared(prepared, batch_fallback="realtime", batch_poll_s=0.05, use_cache=False,
                                        backoff=lambda attempt, retry_after: 0.01)  # fmt: skip
    assert result.stats.answered > 0
    assert (load_results(tmp_path / "out")["status"] == "ok").all()
