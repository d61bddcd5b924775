"""The Message Batches API of the simulator: in-process through httpx, and with the official SDK."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from evalrun.sim import SimConfig, count_request_tokens, create_app, running_server

V1 = {"anthropic-version": "2023-06-01"}
V2 = {"anthropic-version": "2026-10-21"}
MCQ = "Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Mercury"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
COUNT_KEYS = {"processing", "succeeded", "errored", "canceled", "expired"}

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client() -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    def make(
        config: SimConfig | None = None, headers: dict[str, str] = V1, clock: Callable[[], float] | None = None
    ) -> httpx.AsyncClient:
        app = create_app(config or SimConfig())
        if clock is not None:  # the batches' time source: a test moves it by hand
            app.state.simulator.batches.clock = clock
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim", headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def params(
    content: str = MCQ, *, model: str = "claude-sonnet-4-5", max_tokens: int = 50, **extra: Any
) -> dict:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def requests(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "params": params(f"Question {i}\n{MCQ}", **extra)} for i in range(n)]


async def create(client: httpx.AsyncClient, reqs: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/v1/messages/batches", json={"requests": reqs}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


class ManualClock:
    """A time source that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def wait_ended(client: httpx.AsyncClient, batch_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = (await client.get(f"/v1/messages/batches/{batch_id}")).json()
        if batch["processing_status"] == "ended":
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.02)


async def results(client: httpx.AsyncClient, batch: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.get(batch["results_url"])
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert response.text.endswith("\n") and all(lines)
    return [json.loads(line) for line in lines]


def by_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    mapped = {line["custom_id"]: line["result"] for line in lines}
    assert len(mapped) == len(lines)  # every custom_id once
    return mapped


async def run_batch(client: httpx.AsyncClient, reqs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Create, wait for the end, and map each custom_id to its result."""
    batch = await wait_ended(client, (await create(client, reqs))["id"])
    return by_id(await results(client, batch))


# -- the lifecycle -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_poll_end_and_results(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0.3, seed=2))
    created = await create(client, requests(12))
    assert set(created) == {
        "id", "type", "processing_status", "request_counts", "created_at", "ended_at", "expires_at",
        "cancel_initiated_at", "archived_at", "results_url",
    }  # fmt: skip
    assert re.fullmatch(r"msgbatch_\w{24}", created["id"]) and created["type"] == "message_batch"
    assert created["processing_status"] == "in_progress" and created["results_url"] is None
    assert created["request_counts"] == {
        "processing": 12,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert (
        created["ended_at"] is None
        and created["cancel_initiated_at"] is None
        and created["archived_at"] is None
    )
    assert RFC3339.fullmatch(created["created_at"]) and RFC3339.fullmatch(created["expires_at"])
    early = await client.get(f"/v1/messages/batches/{created['id']}/results")
    assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"

    ended = await wait_ended(client, created["id"])
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 12,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert RFC3339.fullmatch(ended["ended_at"]) and ended["ended_at"] > ended["created_at"]
    assert ended["results_url"] == f"http://sim/v1/messages/batches/{created['id']}/results"
    lines = await results(client, ended)
    mapped = by_id(lines)
    assert set(mapped) == {f"req-{i}" for i in range(12)}
    assert [line["custom_id"] for line in lines] != sorted(
        mapped, key=lambda c: int(c.split("-")[1])
    )  # shuffled
    for custom_id, result in mapped.items():
        assert result["type"] == "succeeded"
        message = result["message"]
        assert message["type"] == "message" and message["model"] == "claude-sonnet-4-5-20250929"
        assert message["content"][0]["text"].startswith("The answer is (")
        assert message["usage"]["service_tier"] == "batch"
        number = int(custom_id.split("-")[1])
        assert message["usage"]["input_tokens"] == count_request_tokens(params(f"Question {number}\n{MCQ}"))
    # The results are the same file on every read.
    assert await results(client, ended) == lines


@pytest.mark.anyio
async def test_batch_answers_match_real_time_answers(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0))
    batch = await wait_ended(client, (await create(client, requests(8)))["id"])
    batched = {k: v["message"]["content"] for k, v in by_id(await results(client, batch)).items()}
    for i in range(8):
        live = (await client.post("/v1/messages", json=params(f"Question {i}\n{MCQ}"))).json()
        assert live["content"] == batched[f"req-{i}"]
        assert live["usage"]["service_tier"] == "standard"


@pytest.mark.anyio
async def test_error_and_expiry_rates_are_seeded(make_client: Client) -> None:
    async def outcome(seed: int) -> dict[str, dict[str, Any]]:
        client = make_client(
            SimConfig(batch_seconds=0, batch_error_rate=0.2, batch_expire_rate=0.1, seed=seed)
        )
        batch = await wait_ended(client, (await create(client, requests(1000)))["id"])
        counts = batch["request_counts"]
        mapped = by_id(await results(client, batch))
        assert Counter(r["type"] for r in mapped.values()) == {k: v for k, v in counts.items() if v}
        return mapped

    first = await outcome(5)
    kinds = Counter(r["type"] for r in first.values())
    assert abs(kinds["errored"] - 200) < 45 and abs(kinds["expired"] - 100) < 35  # about 3.5 standard errors
    assert kinds["succeeded"] + kinds["errored"] + kinds["expired"] == 1000
    errors = Counter(r["error"]["error"]["type"] for r in first.values() if r["type"] == "errored")
    assert set(errors) == {"api_error", "overloaded_error"}
    sample = next(r for r in first.values() if r["type"] == "errored")
    assert sample["error"]["type"] == "error" and set(sample["error"]["error"]) == {"type", "message"}
    assert next(r for r in first.values() if r["type"] == "expired") == {"type": "expired"}
    again = await outcome(5)
    assert {k: r["type"] for k, r in again.items()} == {k: r["type"] for k, r in first.items()}
    other = await outcome(6)
    assert {k: r["type"] for k, r in other.items()} != {k: r["type"] for k, r in first.items()}


@pytest.mark.anyio
async def test_invalid_requests_are_errored_results_not_a_failed_batch(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0))
    reqs = [
        {"custom_id": "good", "params": params()},
        {"custom_id": "no-max-tokens", "params": {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}},
        {"custom_id": "unknown-model", "params": params(model="claude-nope-9")},
        {"custom_id": "prefill", "params": {**params(model="claude-sonnet-4-6"), "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is ("}]}},
        {"custom_id": "extra", "params": params(colour="red")},
        {"custom_id": "bad-tool", "params": params(tools=[{"name": "w", "input_schema": {"type": "object"}}],
                                                      tool_choice={"type": "tool", "name": "nope"})},
    ]  # fmt: skip
    batch = await wait_ended(client, (await create(client, reqs))["id"])
    assert batch["request_counts"]["succeeded"] == 1 and batch["request_counts"]["errored"] == 5
    mapped = by_id(await results(client, batch))
    assert mapped["good"]["type"] == "succeeded"

    def error(custom_id: str) -> tuple[str, str]:
        result = mapped[custom_id]
        assert result["type"] == "errored" and result["error"]["type"] == "error"
        return result["error"]["error"]["type"], result["error"]["error"]["message"]

    # The same errors, word for word, that the same request gets in real time.
    for custom_id in ("no-max-tokens", "unknown-model", "prefill", "extra", "bad-tool"):
        body = next(r["params"] for r in reqs if r["custom_id"] == custom_id)
        live = (await client.post("/v1/messages", json=body)).json()["error"]
        assert error(custom_id) == (live["type"], live["message"]), custom_id
    assert error("no-max-tokens") == ("invalid_request_error", "max_tokens: Field required")
    assert error("unknown-model") == ("not_found_error", "model: claude-nope-9")


@pytest.mark.anyio
async def test_api_version_2026_rules_apply_to_each_request(make_client: Client) -> None:
    reqs = [
        {"custom_id": "plain", "params": params()},
        {"custom_id": "temperature", "params": params(temperature=0.5)},
        {"custom_id": "top-k", "params": params(top_k=5)},
    ]
    new = make_client(SimConfig(batch_seconds=0), headers=V2)
    mapped = await run_batch(new, reqs)
    assert mapped["plain"]["type"] == "succeeded"
    for custom_id, name in (("temperature", "temperature"), ("top-k", "top_k")):
        assert mapped[custom_id]["error"]["error"] == {
            "type": "invalid_request_error",
            "message": f"{name}: Extra inputs are not permitted",
        }
    old = make_client(SimConfig(batch_seconds=0), headers=V1)
    mapped = await run_batch(old, reqs)
    assert {r["type"] for r in mapped.values()} == {"succeeded"}


@pytest.mark.anyio
async def test_cancel(make_client: Client) -> None:
    clock = ManualClock()
    client = make_client(SimConfig(batch_seconds=5), clock=clock)
    created = await create(client, requests(10))
    response = await client.post(f"/v1/messages/batches/{created['id']}/cancel")
    assert response.status_code == 200
    canceling = response.json()
    assert canceling["processing_status"] == "canceling" and RFC3339.fullmatch(
        canceling["cancel_initiated_at"]
    )
    assert canceling["request_counts"]["processing"] == 10 and canceling["results_url"] is None
    clock.now += 0.49
    still = (await client.get(f"/v1/messages/batches/{created['id']}")).json()
    assert still["processing_status"] == "canceling"
    clock.now += 0.01
    ended = (await client.get(f"/v1/messages/batches/{created['id']}")).json()  # a tenth of batch_seconds later
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 0,
        "errored": 0,
        "canceled": 10,
        "expired": 0,
    }
    assert ended["cancel_initiated_at"] == canceling["cancel_initiated_at"]
    assert {r["type"] for r in by_id(await results(client, ended)).values()} == {"canceled"}
    again = (await client.post(f"/v1/messages/batches/{created['id']}/cancel")).json()
    assert again["processing_status"] == "ended"


@pytest.mark.anyio
async def test_cancel_keeps_what_was_already_processed(make_client: Client) -> None:
    clock = ManualClock()
    client = make_client(SimConfig(batch_seconds=2), clock=clock)
    created = await create(client, requests(4))  # one request due every half second
    clock.now += 0.7
    await client.post(f"/v1/messages/batches/{created['id']}/cancel")
    clock.now += 0.2
    ended = (await client.get(f"/v1/messages/batches/{created['id']}")).json()
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 3, "expired": 0}
    mapped = by_id(await results(client, ended))
    assert mapped["req-0"]["type"] == "succeeded" and mapped["req-3"]["type"] == "canceled"


@pytest.mark.anyio
async def test_prompt_caching_inside_a_batch_shares_the_real_time_cache(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0))
    system = [{"type": "text", "text": "word " * 1500, "cache_control": {"type": "ephemeral"}}]
    reqs = [{"custom_id": f"c{i}", "params": params(f"Q{i}", system=system)} for i in range(3)]
    mapped = await run_batch(client, reqs)
    usage = {k: v["message"]["usage"] for k, v in mapped.items()}
    assert usage["c0"]["cache_creation_input_tokens"] == 1500 and usage["c0"]["cache_read_input_tokens"] == 0
    for custom_id in ("c1", "c2"):
        assert usage[custom_id]["cache_read_input_tokens"] == 1500
        assert usage[custom_id]["cache_creation_input_tokens"] == 0
    live = (await client.post("/v1/messages", json=params("Q9", system=system))).json()["usage"]
    assert live["cache_read_input_tokens"] == 1500 and live["service_tier"] == "standard"


@pytest.mark.anyio
async def test_batches_spare_the_real_time_rate_limits(make_client: Client) -> None:
    client = make_client(SimConfig(rpm=60, burst=1, itpm=600, otpm=600, batch_seconds=0, p500=0.0))
    response = await client.post("/v1/messages/batches", json={"requests": requests(20, max_tokens=100)})
    assert "anthropic-ratelimit-requests-remaining" not in response.headers
    batch = await wait_ended(client, response.json()["id"])
    assert batch["request_counts"]["succeeded"] == 20
    live = await client.post("/v1/messages", json=params())
    assert live.status_code == 200 and live.headers["anthropic-ratelimit-requests-remaining"] == "0"


@pytest.mark.anyio
async def test_faults_spare_batches(make_client: Client) -> None:
    client = make_client(SimConfig(p500=0.5, p529=0.5, batch_seconds=0))
    batch = await wait_ended(client, (await create(client, requests(10)))["id"])
    assert batch["request_counts"]["succeeded"] == 10


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, "requests: Field required"),
        ({"requests": []}, "requests: List should have at least 1 item after validation, not 0"),
        ({"requests": {"custom_id": "a"}}, "requests: Input should be a valid list"),
        (
            {"requests": [{"custom_id": "a b", "params": params()}]},
            "requests.0.custom_id: String should match pattern",
        ),
        (
            {"requests": [{"custom_id": "x" * 65, "params": params()}]},
            "requests.0.custom_id: String should match pattern",
        ),
        ({"requests": [{"params": params()}]}, "requests.0.custom_id: Field required"),
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        (
            {"requests": [{"custom_id": "a", "params": "hi"}]},
            "requests.0.params: Input should be a valid dictionary",
        ),
        (
            {"requests": [{"custom_id": "a", "params": params()}, {"custom_id": "a", "params": params()}]},
            "requests: custom_id 'a' is used more than once",
        ),
        ({"requests": requests(1), "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
async def test_malformed_batches_are_400s(
    make_client: Client, payload: dict[str, Any], expected: str
) -> None:
    response = await make_client().post("/v1/messages/batches", json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(expected)


@pytest.mark.anyio
async def test_too_many_requests_is_a_400(make_client: Client) -> None:
    tiny = {"model": "m", "max_tokens": 1, "messages": []}
    reqs = [{"custom_id": f"r{i}", "params": tiny} for i in range(100_001)]
    response = await make_client().post("/v1/messages/batches", json={"requests": reqs})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "requests: List should have at most 100000 items after validation, not 100001"
    )


@pytest.mark.anyio
async def test_auth_version_and_unknown_batches(make_client: Client) -> None:
    client = make_client(SimConfig(api_key="sk-right"))
    assert (await client.get("/v1/messages/batches")).status_code == 401
    key = {"x-api-key": "sk-right"}
    missing = await client.get("/v1/messages/batches/msgbatch_nope", headers=key)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    for path in ("/cancel", "/results"):
        method = client.post if path == "/cancel" else client.get
        assert (await method(f"/v1/messages/batches/msgbatch_nope{path}", headers=key)).status_code == 404
    bare = httpx.AsyncClient(transport=client._transport, base_url="http://sim", headers=key)
    async with bare:
        response = await bare.get("/v1/messages/batches")
        assert response.status_code == 400 and "anthropic-version" in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_list_pages_newest_first(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0))
    ids = [(await create(client, requests(1)))["id"] for _ in range(3)]
    page = (await client.get("/v1/messages/batches", params={"limit": 2})).json()
    assert [b["id"] for b in page["data"]] == [ids[2], ids[1]]
    assert page["has_more"] is True and page["first_id"] == ids[2] and page["last_id"] == ids[1]
    rest = (await client.get("/v1/messages/batches", params={"limit": 2, "after_id": page["last_id"]})).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    back = (await client.get("/v1/messages/batches", params={"limit": 2, "before_id": ids[0]})).json()
    assert [b["id"] for b in back["data"]] == [ids[2], ids[1]] and back["has_more"] is False
    everything = (await client.get("/v1/messages/batches")).json()
    assert [b["id"] for b in everything["data"]] == ids[::-1] and everything["has_more"] is False
    assert all(b["processing_status"] == "ended" for b in everything["data"])
    bad = await client.get("/v1/messages/batches", params={"limit": 1001})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("limit: ")


@pytest.mark.anyio
async def test_delete_only_once_ended(make_client: Client) -> None:
    client = make_client(SimConfig(batch_seconds=0.2))
    batch_id = (await create(client, requests(2)))["id"]
    busy = await client.delete(f"/v1/messages/batches/{batch_id}")
    assert busy.status_code == 400 and busy.json()["error"]["type"] == "invalid_request_error"
    await wait_ended(client, batch_id)
    deleted = await client.delete(f"/v1/messages/batches/{batch_id}")
    assert deleted.json() == {"id": batch_id, "type": "message_batch_deleted"}
    assert (await client.get(f"/v1/messages/batches/{batch_id}")).status_code == 404


def test_config_checks_the_batch_settings() -> None:
    with pytest.raises(ValueError, match="batch_error_rate must be a probability"):
        SimConfig(batch_error_rate=1.5)
    with pytest.raises(ValueError, match="batch_expire_rate"):
        SimConfig(batch_expire_rate=-0.1)
    with pytest.raises(ValueError, match="must not exceed 1"):
        SimConfig(batch_error_rate=0.6, batch_expire_rate=0.6)
    with pytest.raises(ValueError, match="batch_seconds"):
        SimConfig(batch_seconds=-1)
    assert SimConfig().batch_seconds == 0.2


# -- the official SDK over loopback ------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk() -> Iterator[anthropic.Anthropic]:
    config = SimConfig(api_key="sk-batch", batch_seconds=0.2, batch_error_rate=0.1, seed=3)
    with (
        running_server(config) as url,
        anthropic.Anthropic(api_key="sk-batch", base_url=url, max_retries=0) as client,
    ):
        yield client


def _sdk_requests(n: int) -> list[Any]:
    return [
        {"custom_id": f"q{i}", "params": params(f"Question {i}\n{MCQ}", model="claude-haiku-4-5")}
        for i in range(n)
    ]


def test_sdk_creates_retrieves_and_reads_a_batch(sdk: anthropic.Anthropic) -> None:
    batch = sdk.messages.batches.create(
        requests=[*_sdk_requests(30), {"custom_id": "hot", "params": params(temperature=1.0)}]  # type: ignore[typeddict-item]
    )
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 31 and batch.results_url is None
    deadline = time.monotonic() + 60  # a guard against a hang: the batch ends 0.2 s after creation
    while (batch := sdk.messages.batches.retrieve(batch.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.ended_at is not None and batch.results_url is not None
    assert batch.results_url.startswith(str(sdk.base_url).rstrip("/"))
    counts = batch.request_counts
    assert counts.succeeded + counts.errored == 31 and counts.errored >= 1
    lines = list(sdk.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted([f"q{i}" for i in range(30)] + ["hot"])
    seen: Counter[str] = Counter()
    for line in lines:
        result = line.result
        seen[result.type] += 1
        if result.type == "succeeded":
            assert result.message.usage.service_tier == "batch"
            assert result.message.content[0].type == "text"
        elif line.custom_id == "hot":  # the SDK speaks 2026-10-21, where temperature is gone
            assert result.type == "errored" and result.error.error.type == "invalid_request_error"
            assert result.error.error.message == "temperature: Extra inputs are not permitted"
    assert seen["succeeded"] == counts.succeeded and seen["errored"] == counts.errored
    assert batch.id in [b.id for b in sdk.messages.batches.list(limit=5)]
    assert sdk.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve(batch.id)


def test_sdk_cancels_a_batch() -> None:
    with (
        # Its first request is due 6 s after creation: the cancel comes first on a loaded machine too.
        running_server(SimConfig(batch_seconds=30)) as url,
        anthropic.Anthropic(api_key="k", base_url=url, max_retries=0) as client,
    ):
        batch = client.messages.batches.create(requests=_sdk_requests(5))
        canceled = client.messages.batches.cancel(batch.id)
        assert canceled.processing_status == "canceling" and canceled.cancel_initiated_at is not None
        with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
            client.messages.batches.results(batch.id)
        deadline = time.monotonic() + 60  # it ends a tenth of batch_seconds after the cancel
        while (canceled := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert canceled.request_counts.canceled == 5
        assert {line.result.type for line in client.messages.batches.results(batch.id)} == {"canceled"}
