"""Nothing lost, nothing paid twice: a hostile fake server, odd specs and odd grids, end to end."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from evalrun.cli import cli
from evalrun.errors import RunFailed, RunStopped
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results

from .conftest import QUESTIONS, FakeClock, write_mc_csv

pytestmark = pytest.mark.anyio
KEY = "sk-test-secret-key-0123456789"


def no_wait(attempt: int, retry_after: float | None) -> float:
    return 0.0


def message(text: str, *, usage: Any = None) -> dict[str, Any]:
    body = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1} if usage is None else usage,
    }  # fmt: skip
    if usage == "missing":
        del body["usage"]
    return body


class Hostile:
    """A fake /v1/messages that answers each question the way `plan` says (default: right)."""

    def __init__(self, plan: dict[str, Any] | None = None) -> None:
        self.plan = plan or {}
        self.bodies: list[dict[str, Any]] = []
        self.seen: Counter[str] = Counter()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        text = json.dumps(body["messages"])
        self.seen[json.dumps(body, sort_keys=True)] += 1
        for question, behaviour in self.plan.items():
            if question in text:
                return behaviour(request, body) if callable(behaviour) else behaviour
        letter = next((q[5] for q in QUESTIONS.values() if q[0] in text), "A")
        return httpx.Response(200, json=message(letter))


MALFORMED = {
    "Capital of Peru?": httpx.Response(200, json={**message("A"), "content": ["B"]}),
    "Capital of Chile?": httpx.Response(200, json={**message("B"), "content": [None]}),
    "Capital of Kenya?": httpx.Response(200, json={**message("C"), "usage": [1, 2]}),
    "Capital of Norway?": httpx.Response(200, json={**message("D"), "usage": {"input_tokens": "12", "output_tokens": 1}}),
    "Capital of Japan?": httpx.Response(200, json={**message("A"), "content": [{"type": "text", "text": 5}]}),
}


async def run(spec: Path, api: Hostile, **options: Any) -> Any:
    prepared = prepare(spec, out=options.pop("out", "run"), limit=options.pop("limit", None))
    return await run_prepared(prepared, transport=api.transport(), backoff=no_wait, **options)


async def test_malformed_replies_are_kept_raw_and_the_run_goes_on(write_spec) -> None:
    api = Hostile(dict(MALFORMED))
    with pytest.raises(RunFailed, match=r"5 cells failed \(most common: 5 × 200 malformed_reply") as failed:
        await run(write_spec(), api)
    results = load_results(failed.value.result.folder).set_index("row_id")
    assert results.loc["q6", "status"] == "ok"  # the one honest reply
    assert (results.drop("q6")["status"] == "error").all()
    assert results.loc["q1", "error"].startswith("200: malformed reply: content[0] is not a content block")
    db = sqlite3.connect(Path("run") / "store.sqlite")
    raws = [json.loads(raw) for (raw,) in db.execute("SELECT raw FROM responses WHERE raw IS NOT NULL")]
    assert len(raws) == 5 and {"B"} in [set(r["content"]) for r in raws if r["content"] == ["B"]]
    # The next run sends again only what failed; an honest server now answers them.
    again = Hostile()
    await run(write_spec(), again)
    assert len(again.bodies) == 5
    assert (load_results("run")["status"] == "ok").all()


async def test_identical_requests_are_sent_once_and_every_cell_keeps_its_answer(write_spec, tmp_path: Path) -> None:
    csv = tmp_path / "mc.csv"
    csv.write_text(csv.read_text() + "q1-again,Capital of Peru?,Lima,Quito,Cusco,Bogota,A\n")
    spec = write_spec(
        "models: [claude-haiku-4-5, {name: claude-haiku-4-5, label: haiku-too}]\n"
        "prompts:\n"
        "  p:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
        "  same:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
    )
    api = Hostile()
    result = await run(spec, api)
    results = load_results(result.folder)
    assert len(results) == 7 * 2 * 2  # every cell is there: 7 rows × 2 labels × 2 prompts
    assert (results["status"] == "ok").all() and results["correct"].all()
    assert len(api.bodies) == 6  # one request per distinct body
    assert set(api.seen.values()) == {1}
    summary = pd.read_csv(result.folder / "summary.csv")
    assert sorted(zip(summary["model"], summary["prompt"], strict=True)) == [
        ("claude-haiku-4-5", "p"), ("claude-haiku-4-5", "same"), ("haiku-too", "p"), ("haiku-too", "same")
    ]
    assert set(summary["n"]) == {7}


async def test_a_larger_limit_and_a_new_folder_pay_nothing_twice(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 40)
    spec = write_spec()
    api = Hostile()
    await run(spec, api, limit=10, out="small")
    assert len(api.bodies) == 10
    full = await run(spec, api, out="full")
    assert len(api.bodies) == 40  # only the 30 new rows were sent
    assert full.stats.from_cache == 10
    await run(spec, api, out="elsewhere")
    assert len(api.bodies) == 40
    results = load_results("elsewhere")
    assert (results["source"] == "cache").all() and len(results) == 40
    summary = pd.read_csv(Path("elsewhere") / "summary.csv")
    assert summary.loc[0, "paid_usd"] == 0 and summary.loc[0, "cost_usd"] > 0
    # --no-cache pays again, on purpose.
    await run(spec, api, out="uncached", use_cache=False)
    assert len(api.bodies) == 80


async def test_the_budget_counts_everything_the_folder_spent(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 30)
    first = write_spec("name: one\n", name="one.yaml")
    api = Hostile()
    await run(first, api, out="shared")
    spent = load_results("shared")["cost_usd"].sum()
    # The same experiment, edited (a folder holds one experiment: another one is refused).
    second = write_spec("name: one\nprompts:\n  q:\n    messages: [{role: user, content: \"Q: {question}\"}]\n", name="two.yaml")
    with pytest.raises(Exception, match="stopped at the budget"):
        await run(second, api, out="shared", budget_usd=spent * 1.2, use_cache=False)
    assert len(api.bodies) < 30 + 30


async def test_a_reply_without_usage_has_an_empty_cost_not_zero(write_spec) -> None:
    api = Hostile({q[0]: httpx.Response(200, json=message(q[5], usage="missing")) for q in QUESTIONS.values()})
    result = await run(write_spec(), api)
    results = load_results(result.folder)
    assert results["cost_usd"].isna().all() and results["input_tokens"].isna().all()
    summary = pd.read_csv(result.folder / "summary.csv")
    assert pd.isna(summary.loc[0, "cost_usd"])


async def test_an_overloaded_error_in_a_200_and_a_429_without_retry_after_are_retried(write_spec) -> None:
    calls: Counter[str] = Counter()

    def flaky(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        if calls["n"] == 2:
            return httpx.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
        return httpx.Response(200, json=message("A"))

    api = Hostile({"Capital of Peru?": flaky})
    result = await run(write_spec(), api)
    results = load_results(result.folder).set_index("row_id")
    assert results.loc["q1", "status"] == "ok" and results.loc["q1", "attempts"] == 3


async def test_a_key_echoed_by_the_server_stays_out_of_the_store(write_spec, tmp_path: Path) -> None:
    echo = httpx.Response(400, json={"type": "error", "error": {"type": "invalid_request_error", "message": f"bad {KEY}"}})
    api = Hostile({"Capital of Peru?": echo})
    with pytest.raises(RunFailed) as failed:
        await run(write_spec(), api)
    assert KEY not in str(failed.value)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


async def test_a_key_echoed_in_a_valid_reply_stays_out_of_the_store_and_reports(write_spec, tmp_path: Path) -> None:
    # A reply that quotes the key (whole, or cut short) in its text: it is a valid answer, and
    # still the key must reach no file.
    whole = httpx.Response(200, json=message(f"B, says {KEY}"))
    part = httpx.Response(200, json=message(f"C, says {KEY[:12]}…"))
    api = Hostile({"Capital of Peru?": whole, "Capital of Chile?": part})
    result = await run(write_spec(), api)
    replies = set(load_results(result.folder)["response_text"])
    assert "B, says [redacted key]" in replies and "C, says [redacted key]…" in replies
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and KEY[:12].encode() not in data, path


async def test_a_server_that_never_answers_hits_the_attempt_deadline(write_spec) -> None:
    class Hang(httpx.AsyncBaseTransport):
        sent = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            Hang.sent += 1
            await anyio.sleep(3600)
            raise AssertionError("unreachable")

    prepared = prepare(write_spec(), out="hang")
    with anyio.fail_after(120), pytest.raises(RunFailed, match="cells"):  # a guard against a hang, not a limit
        await run_prepared(prepared, transport=Hang(), backoff=no_wait, request_timeout_s=0.2, max_retries=1)
    results = load_results("hang")
    assert set(results["status"]) <= {"error", "pending"}
    assert "no complete reply within" in results["error"].iloc[0]
    # A failed request is never a wrong answer, in the DataFrame or in results.csv.
    assert results["correct"].isna().all()
    import csv

    with open("hang/results.csv", encoding="utf-8") as handle:
        assert {row["correct"] for row in csv.DictReader(handle)} == {""}


async def test_the_same_400_on_the_first_requests_stops_after_a_handful(write_spec, tmp_path: Path) -> None:
    write_mc_csv(tmp_path / "mc.csv", 500)
    refuse = httpx.Response(400, json={"type": "error", "error": {"type": "invalid_request_error", "message": "no way"}})
    api = Hostile({"Question": refuse})
    with pytest.raises(RunStopped, match=r"first 5 requests all failed") as stopped:
        await run(write_spec("concurrency: 512\n"), api)
    assert len(api.bodies) <= 6
    assert f"{len(api.bodies)} requests were sent" in str(stopped.value)


def test_an_unreachable_endpoint_stops_early_and_shows_no_accuracy(write_spec, monkeypatch, tmp_path) -> None:
    import socket

    write_mc_csv(tmp_path / "mc.csv", 300)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: every connection is refused
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(cli, ["run", str(write_spec()), "--out", "down"])
    assert result.exit_code == 4, result.output
    # It stops after the first failures instead of trying (and backing off on) all 300 rows.
    assert (load_results(tmp_path / "down")["status"] == "pending").sum() >= 290
    assert "cannot reach" in result.output and "Traceback" not in result.output
    summary = pd.read_csv(tmp_path / "down" / "summary.csv")
    assert pd.isna(summary.loc[0, "accuracy"])
    assert "FAILED RUN" in (tmp_path / "down" / "report.md").read_text()


def test_a_failed_report_write_is_a_failure(write_spec, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.csv").mkdir()  # cannot be replaced by a file
    (tmp_path / "out" / "summary.csv" / "x").write_text("")
    result = CliRunner().invoke(cli, ["run", str(write_spec()), "--sim", "--out", "out"])
    assert result.exit_code != 0
    assert "cannot write the reports" in result.output
    assert "report: out" not in result.output


async def test_a_deadline_does_not_wait_for_a_server_that_never_answers(
    write_spec, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """Requests in flight at the deadline get a short grace, not their own timeout."""
    from evalrun.errors import DeadlineReached
    from evalrun.send.runner import deadline_grace

    write_mc_csv(tmp_path / "mc.csv", 20)

    async def never(request: httpx.Request) -> httpx.Response:
        await fake_clock.sleep(3600)
        raise AssertionError("unreachable")

    prepared = prepare(write_spec(), out="hung")
    async with fake_clock.running():
        with pytest.raises(DeadlineReached, match=r"abandoned in flight"):
            await run_prepared(prepared, transport=httpx.MockTransport(never), deadline_s=0.5, request_timeout_s=60,
                               clock=fake_clock)  # fmt: skip
    assert fake_clock.elapsed <= 0.5 + deadline_grace(0.5)  # not the 60 s attempt timeout
    assert (load_results("hung")["status"] == "pending").all()  # nothing half-stored
    # The abandoned request may have been billed: a budget counts it at its worst case.
    from evalrun.errors import BudgetExceeded
    from evalrun.send.runner import UNCONFIRMED_KEY
    from evalrun.store.run_store import Store

    with Store.open(prepared.folder, create=False) as store:
        unconfirmed = float(store.meta()[UNCONFIRMED_KEY])
    assert unconfirmed > 0
    api = Hostile()
    with pytest.raises(BudgetExceeded, match="abandoned at a deadline"):
        await run_prepared(prepare(write_spec(), out="hung"), transport=api.transport(), budget_usd=unconfirmed)
    assert not api.bodies  # nothing more could be reserved
    await run_prepared(prepare(write_spec(), out="hung"), transport=api.transport(), budget_usd=1.0)
    assert (load_results("hung")["status"] == "ok").all()


async def test_a_run_deadline_stops_sending_and_the_next_run_finishes(
    write_spec, tmp_path: Path, fake_clock: FakeClock
) -> None:
    from evalrun.errors import DeadlineReached

    write_mc_csv(tmp_path / "mc.csv", 60)

    async def slow(request: httpx.Request) -> httpx.Response:
        await fake_clock.sleep(0.2)  # on the run's clock: a loaded machine cannot eat the deadline
        return httpx.Response(200, json=message("A"))

    prepared = prepare(write_spec("concurrency: 2\n"), out="late")
    async with fake_clock.running():
        with pytest.raises(DeadlineReached, match="stopped at the deadline"):
            await run_prepared(prepared, transport=httpx.MockTransport(slow), deadline_s=0.5, clock=fake_clock)
    done = (load_results("late")["status"] != "pending").sum()
    assert 0 < done < 60
    await run_prepared(prepare(write_spec("concurrency: 2\n"), out="late"), transport=Hostile().transport())
    assert (load_results("late")["status"] == "ok").all()


async def test_a_model_without_a_price_is_never_reported_as_costing_nothing(write_spec, tmp_path: Path) -> None:
    from evalrun.cli._app import spent as _spent

    write_mc_csv(tmp_path / "mc.csv", 8)
    spec = write_spec(
        "models: [{name: my-llama, base_url: 'http://localhost:9'}]\n"
        "model_table:\n  my-llama: {prefill: true}\n"
    )
    prepared = prepare(spec, out="free")
    assert any("no known price" in w for w in prepared.plan.warnings)
    await run_prepared(prepared, transport=Hostile().transport())
    summary = pd.read_csv("free/summary.csv")
    assert summary["cost_usd"].isna().all() and summary["paid_usd"].isna().all()
    assert "paid by this run folder in all: unknown" in Path("free/report.md").read_text(encoding="utf-8")
    assert "$0.0000" not in _spent(0.0, 8) and "unknown" in _spent(0.0, 8)
    assert _spent(0.5, 0) == "$0.5000 spent in this folder in total"
