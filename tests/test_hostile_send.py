"""The sending layer against a hostile or broken server: every case here was broken once (a
hostile pass of the issue tracker's #21), and each test reproduces it with a fake transport or
a tiny loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from evalrun.errors import (
    BudgetExceeded,
    MalformedReplyError,
    PermanentApiError,
    RateLimitError,
    RunAborted,
    RunFailed,
    RunStopped,
    StoreError,
)
from evalrun.execute import prepare, run_prepared
from evalrun.reports.build import load_results
from evalrun.send.client import MessagesClient, WireRequest, WireResponse
from evalrun.send.scrub import KeyScrubber
from evalrun.store.run_store import Store

from .conftest import QUESTIONS, FakeClock, write_mc_csv
from .fakes_send import BatchAPI, letter_for, message
from .test_client_wire import MESSAGE, raw_server

BODY = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def client_for(handler: Any) -> MessagesClient:
    return MessagesClient(base_url="https://api.anthropic.com", api_key=KEY, transport=httpx.MockTransport(handler))

pytestmark = pytest.mark.anyio


async def batch_run(write_spec, tmp_path: Path, fake: BatchAPI, **kwargs):
    prepared = prepare(write_spec(), out=tmp_path / "out", batch=True)
    return await run_prepared(prepared, transport=fake.transport(), batch_poll_s=0.01, **kwargs)


def all_answered(tmp_path: Path) -> bool:
    results = load_results(tmp_path / "out")
    return len(results) == len(QUESTIONS) and bool((results["status"] == "ok").all())


# -- 6.1 / 6.2: a batch is paid for once ----------------------------------------------------------
async def test_a_batch_create_whose_reply_was_lost_is_not_created_again(write_spec, tmp_path: Path) -> None:
    fake = BatchAPI()
    fake.drop_create = 1  # the server created the batch; the connection dropped before its reply
    await batch_run(write_spec, tmp_path, fake)
    assert fake.created == 1  # found by its custom_ids, not created a second time
    assert all_answered(tmp_path)


async def test_every_create_reply_lost_still_creates_one_batch(write_spec, tmp_path: Path) -> None:
    fake = BatchAPI()
    fake.drop_create = 10
    await batch_run(write_spec, tmp_path, fake)
    assert fake.created == 1 and all_answered(tmp_path)


async def test_a_lost_batch_is_found_by_its_content_beside_another_of_the_same_size(write_spec, tmp_path: Path) -> None:
    # A run killed while it created its batch (the id never reached the store); since then the
    # account holds another batch of the same size. The next run finds its own by its
    # custom_ids instead of giving up on two candidates and paying again.
    fake = BatchAPI()
    fake.drop_create = 1
    with anyio.CancelScope() as killed:
        fake.on_list = killed.cancel  # killed while it looks for the batch it lost
        await batch_run(write_spec, tmp_path, fake)
    fake.on_list = None
    with Store.open(tmp_path / "out") as store:
        assert [b["status"] for b in store.open_batches()] == ["submitting"]
    fake.add_foreign(len(QUESTIONS))
    await batch_run(write_spec, tmp_path, fake)
    assert fake.created == 1 and all_answered(tmp_path)


# -- 6.3: the key goes to the configured endpoint only ----------------------------------------------
async def test_a_results_url_on_another_host_gets_no_key_and_no_second_batch(write_spec, tmp_path: Path) -> None:
    fake = BatchAPI()
    fake.results_origin = "http://127.0.0.1:9"
    for _ in range(2):
        with pytest.raises(RunFailed) as failed:
            await batch_run(write_spec, tmp_path, fake)
    assert fake.foreign_keys == [] and not any("127.0.0.1" in line for line in fake.log)
    assert fake.created == 1  # the batch is kept for a later run, never paid for again
    results = load_results(tmp_path / "out")
    assert results["error"].str.contains("http://127.0.0.1:9/v1/messages/batches/msgbatch_1/results").all()
    assert "not on the configured endpoint" in results["error"].iloc[0]
    assert failed.value.result is not None


# -- 6.7: the results download is bounded; a 404 there sends the requests again once ----------------
async def test_a_failing_results_download_backs_off_and_stops(write_spec, tmp_path: Path, fake_clock: FakeClock) -> None:
    fake = BatchAPI()
    fake.results_status = [500, 0] * 50  # a 500, then a dropped connection, again and again
    async with fake_clock.running():
        with pytest.raises(RunFailed):
            await batch_run(write_spec, tmp_path, fake, clock=fake_clock)
    assert fake.results_fetches == 8  # not 114–228 a minute, forever
    assert fake_clock.elapsed >= 1.0  # backed off between fetches
    fake.results_status = []
    await batch_run(write_spec, tmp_path, fake)  # the next run collects the batch it kept
    assert fake.created == 1 and all_answered(tmp_path)


async def test_results_that_are_gone_send_the_requests_again_once(write_spec, tmp_path: Path) -> None:
    fake = BatchAPI()
    fake.results_status = [404]
    lines: list[str] = []
    await batch_run(write_spec, tmp_path, fake, on_progress=lambda stats: lines.append(stats.pacing))
    assert fake.created == 2 and all_answered(tmp_path)
    assert any("batch msgbatch_1 is gone" in line and "requests are sent again" in line for line in lines)
    with Store.open(tmp_path / "out") as store:
        assert store.open_batches() == []  # the folder is not stuck on the batch that is gone


async def test_a_batch_the_server_no_longer_knows_is_not_reported_as_an_unknown_model(write_spec, tmp_path: Path) -> None:
    fake = BatchAPI(polls_to_end=50)
    with anyio.CancelScope() as killed:
        fake.on_poll = killed.cancel  # killed while it polls: the batch stays open in the store
        await batch_run(write_spec, tmp_path, fake)
    fake.on_poll = None
    fake.batches.clear()  # the server forgot it (deleted, or listed under another key)
    fake.polls_to_end = 1
    await batch_run(write_spec, tmp_path, fake)  # no "does not know model": sent again
    assert fake.created == 1 and all_answered(tmp_path)


# -- 6.4: a piece of the key echoed anywhere is blanked --------------------------------------------
KEY = "sk-test-secret-key-0123456789"  # what the test environment exports


async def test_a_middle_piece_of_the_key_in_a_500_reaches_no_file(write_spec, tmp_path: Path) -> None:
    piece = KEY[4:20]
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        if len(seen) <= 2:  # the first request fails twice, echoing a piece of the key
            body = {"type": "error", "error": {"type": "api_error", "message": f"upstream saw '{piece}'"}}
            return httpx.Response(500, json=body)
        text = json.dumps(json.loads(request.content)["messages"])
        return httpx.Response(200, json=message(f"{letter_for({'messages': json.loads(text)})} {KEY[9:19]}"))

    prepared = prepare(write_spec("max_retries: 1\n"), out=tmp_path / "out")
    with contextlib.suppress(RunFailed):
        await run_prepared(prepared, transport=httpx.MockTransport(handler), backoff=lambda a, r: 0.0)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for start in range(len(KEY) - 7):
                assert KEY[start : start + 8].encode() not in data, (path, KEY[start : start + 8])


def test_any_run_of_eight_characters_of_the_key_is_blanked() -> None:
    scrubber = KeyScrubber("sk-ant-api03-" + "Abc123XyZ789-_qrsTUV456" * 3)
    secret = scrubber.key[13:]
    assert secret[10:18] not in scrubber.text(f"at {secret[10:18]}!")
    assert secret[5:40].encode() not in scrubber.body(f'{{"text": "{secret[5:40]}"}}'.encode())
    assert scrubber.body(b'{"text": "sk-ant-api03-... is a key"}') == b'{"text": "sk-ant-api03-... is a key"}'
    assert scrubber.text(f"a{secret[3:10]}b") == f"a{secret[3:10]}b"  # 7 characters: not a piece


# -- 13: what a server's text may do to a terminal --------------------------------------------------
async def test_escape_sequences_and_carriage_returns_in_an_error_are_taken_out() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad\x1b]0;pwned\x07\rOK \x1b[2Jdone"}}
    async with client_for(lambda request: httpx.Response(400, json=body)) as client:
        with pytest.raises(PermanentApiError) as info:
            await client.create(BODY)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in str(info.value))


async def test_a_huge_retry_after_is_capped_and_said() -> None:
    reply = httpx.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                           headers={"retry-after": "999999"})  # fmt: skip
    async with client_for(lambda request: reply) as client:
        with pytest.raises(RateLimitError) as info:
            await client.create(BODY)
    assert info.value.retry_after is not None and info.value.retry_after <= 300
    assert "999,999 s" in str(info.value) and "300 s at most" in str(info.value)


async def test_count_tokens_tries_a_transient_error_again() -> None:
    answers = [httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
               httpx.Response(200, json={"input_tokens": 42})]  # fmt: skip
    async with client_for(lambda request: answers.pop(0)) as client:
        assert await client.count_tokens(BODY) == 42


# -- 6.10, 6.9: what a reply body can do ------------------------------------------------------------
async def test_a_gzip_bomb_is_not_inflated_past_the_cap() -> None:
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))  # 8 MB of spaces in a few KB

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip", "content-type": "application/json"})

    async with MessagesClient(base_url="https://api.anthropic.com", api_key=KEY, transport=httpx.MockTransport(handler),
                              max_reply_bytes=1024 * 1024) as client:  # fmt: skip
        with pytest.raises(MalformedReplyError, match="inflated past 1,048,576 bytes"):
            await client.create(BODY)


async def test_a_gzip_bomb_on_the_wire_path_is_capped_too() -> None:
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))

    async def handler(writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                     + f"content-length: {len(bomb)}\r\nconnection: close\r\n\r\n".encode() + bomb)  # fmt: skip
        await writer.drain()

    async with (
        raw_server(handler) as (port, _),
        MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_reply_bytes=1024 * 1024) as client,
    ):
        with pytest.raises(MalformedReplyError, match="inflated past"):
            await client.create(BODY)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (json.dumps(message("A", usage={"input_tokens": 2**63, "output_tokens": 1})).encode(), "below 2\\^63"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
async def test_a_reply_no_store_can_hold_is_kept_raw_not_a_traceback(content: bytes, why: str) -> None:
    async with client_for(lambda request: httpx.Response(200, content=content)) as client:
        with pytest.raises(MalformedReplyError, match=why) as info:
            await client.create(BODY)
    assert info.value.raw


# -- 21.3: latency is the server's time -----------------------------------------------------------
async def test_latency_does_not_count_the_wait_for_a_connection() -> None:
    # One connection, three requests at once: the second and third wait in the client for the
    # first to finish. Their latency is the server's time, their wait is reported apart.
    async def slow(writer: asyncio.StreamWriter, _: bytes) -> None:
        await asyncio.sleep(0.3)  # the server's own time
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     + f"content-length: {len(MESSAGE)}\r\n\r\n".encode() + MESSAGE)  # fmt: skip
        await writer.drain()

    replies = []
    async with (
        raw_server(slow) as (port, _),
        MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_connections=1) as client,
    ):

        async def one() -> None:
            replies.append(await client.create(BODY))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    first, _, last = sorted(replies, key=lambda r: r.queued_s)
    assert last.queued_s >= first.latency_s  # it waited for the first's connection …
    assert last.latency_s < first.latency_s + last.queued_s / 2  # … and that wait is not its latency


# -- 6.8: an endpoint that accepts and never answers -----------------------------------------------
class Silent:
    """A transport to an endpoint that takes every request and never answers: each attempt
    lasts its whole deadline on the injected clock."""

    keeps_deadline = True

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timeouts: list[float | None] = []

    async def send(self, request: WireRequest) -> WireResponse:
        self.timeouts.append(request.timeout)
        await self.clock.sleep(request.timeout or 3600.0)
        raise TimeoutError

    async def aclose(self) -> None:
        return None


async def test_a_silent_endpoint_with_default_settings_ends_within_200_seconds(
    write_spec, tmp_path: Path, fake_clock: FakeClock
) -> None:
    silent = Silent(fake_clock)
    prepared = prepare(write_spec("params: {max_tokens: 1024}\n"), out=tmp_path / "out")
    async with fake_clock.running():
        with pytest.raises(RunFailed) as failed:
            await run_prepared(prepared, transport=silent, clock=fake_clock)
    assert fake_clock.elapsed <= 200  # not 15 attempts of 61 s, one at a time
    assert "no answer from" in str(failed.value)
    assert len(silent.timeouts) <= 6


# -- 6.5: a pinned snapshot is sent as written ----------------------------------------------------
@pytest.mark.parametrize("name", ["claude-haiku-4-5-20251001", "claude-3-5-haiku-20241022", "claude-haiku-4-5"])
def test_a_model_id_is_sent_as_written(write_spec, name: str) -> None:
    prepared = prepare(write_spec(f"models: [{name}]\n"), out="out")
    bodies = [json.loads(r.body_json) for chunk in prepared.plan.chunks() for r in chunk.requests]
    assert bodies and {b["model"] for b in bodies} == {name}
    assert prepared.models[0].info.known  # the table's entry (prices, capabilities) still applies


# -- 13: the key goes nowhere that takes none --------------------------------------------------------
async def test_the_key_is_not_sent_to_a_server_that_takes_none(write_spec, tmp_path: Path) -> None:
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        return httpx.Response(200, json=message(letter_for(json.loads(request.content))))

    spec = write_spec(
        "models: [{name: my-llama, base_url: 'http://127.0.0.1:8080'}]\n"
        "model_table:\n  my-llama: {prefill: true, needs_key: false, price: {input: 0, output: 0}}\n"
    )
    await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(handler))
    assert headers and all("x-api-key" not in h for h in headers)


# -- 6.9: a base URL that cannot be read is one clear line ---------------------------------------------
def test_an_unreadable_base_url_is_one_line_and_exit_2(write_spec) -> None:
    from click.testing import CliRunner

    from evalrun.cli import cli

    result = CliRunner().invoke(cli, ["run", str(write_spec('models: [{name: claude-haiku-4-5, base_url: "http://[::1"}]\n'))])
    assert result.exit_code == 2, result.output
    assert "base_url: 'http://[::1' is not a URL" in result.output and "Traceback" not in result.output


# -- 6.9 / 13: a shared cache that holds something else ---------------------------------------------
async def test_a_cache_row_that_is_not_a_message_is_sent_again_not_a_crash(write_spec, tmp_path: Path) -> None:
    import sqlite3

    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(200, json=message(letter_for(json.loads(request.content))))

    await run_prepared(prepare(write_spec(), out=tmp_path / "one"), transport=httpx.MockTransport(handler))
    first = len(sent)
    with sqlite3.connect(tmp_path / "response-cache" / "responses.sqlite") as db:
        db.execute("""UPDATE responses SET message_json = CASE WHEN rowid % 3 = 0 THEN '{"a": 1}'
                      WHEN rowid % 3 = 1 THEN '[1, 2]' ELSE '"text"' END""")
    await run_prepared(prepare(write_spec(), out=tmp_path / "two"), transport=httpx.MockTransport(handler))
    assert len(sent) == 2 * first  # each is sent again, and answered
    assert (load_results(tmp_path / "two")["status"] == "ok").all()


def test_cache_clear_clears_a_corrupt_cache(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evalrun.cli import cli

    folder = tmp_path / "response-cache"
    folder.mkdir()
    (folder / "responses.sqlite").write_bytes(b"this is not a database at all" * 100)
    result = CliRunner().invoke(cli, ["cache", "clear"])
    assert result.exit_code == 0, result.output
    assert not (folder / "responses.sqlite").exists() and "removed" in result.output
    assert CliRunner().invoke(cli, ["cache", "info"]).exit_code == 0  # usable again


# -- 6.6: a store that cannot be written (a full disk) ------------------------------------------------
class FullDisk:
    """The run's store, failing every write after the first `after` (as a disk that fills up)."""

    def __init__(self, store: Store, after: int) -> None:
        self._store, self.after, self.writes = store, after, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record(self, outcome: Any, *, run_id: int | None = None) -> None:
        self.writes += 1
        if self.writes > self.after:
            raise StoreError(f"{self._store.path}: the disk is full; free space and run again to resume")
        self._store.record(outcome, run_id=run_id)

    def record_many(self, outcomes: Any, *, run_id: int | None = None) -> None:
        raise StoreError(f"{self._store.path}: the disk is full")


async def test_a_full_disk_stops_sending_at_once_and_keeps_what_was_answered(write_spec, tmp_path: Path) -> None:
    import sqlite3
    from collections import Counter

    write_mc_csv(tmp_path / "mc.csv", 300)
    sent: Counter[str] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        sent[request.content.decode()] += 1
        return httpx.Response(200, json=message("A"))

    def fill_disk(runner: Any) -> None:
        runner.store = FullDisk(runner.store, after=40)

    spec = write_spec("concurrency: 8\n")
    with pytest.raises(RunAborted, match=r"disk is full.*sending stopped at once"):
        await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(handler), on_runner=fill_disk)
    first = sum(sent.values())
    assert first <= 40 + 8 + 1  # what was stored, what was in flight, the one that found the disk full
    with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("aborted",)]
    await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(handler))
    paid_again = sum(1 for count in sent.values() if count > 1)
    assert paid_again < 8  # fewer than the in-flight ceiling (here: none, they were in the cache)
    assert (load_results(tmp_path / "out")["status"] == "ok").all()


# -- 6.11: malformed replies were paid for ------------------------------------------------------------
async def test_malformed_replies_count_toward_the_budget_and_every_body_is_kept(write_spec, tmp_path: Path) -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps({**message("A", usage={"input_tokens": 400, "output_tokens": 50}),
                           "content": [None], "n": len(bodies)}).encode()  # fmt: skip
        bodies.append(body)
        return httpx.Response(200, content=body)

    spec = write_spec("models: [claude-haiku-4-5]\n")
    for _ in range(3):
        with contextlib.suppress(RunFailed, BudgetExceeded, RunStopped):
            await run_prepared(prepare(spec, out=tmp_path / "out"), transport=httpx.MockTransport(handler), budget_usd=0.01)
    # Haiku 4.5 at $1 / $5 per million: 400 in + 50 out = $0.00065 a reply.
    with Store.open(tmp_path / "out") as store:
        assert store.spent_usd() == pytest.approx(len(bodies) * 0.00065)
        key = store.cell_rows()[0]["request_key"]
        assert len(store.paid_replies(key)) >= 2  # every re-run's body is kept, none overwritten
    assert len(bodies) * 0.00065 <= 0.01 + 8 * 0.00065  # the budget saw them

