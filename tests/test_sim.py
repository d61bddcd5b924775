"""The simulator answers like the Messages API: in-process through httpx.ASGITransport."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

import evalrun.sim
from evalrun.errors import DatasetError
from evalrun.sim import (
    AnswerKey,
    ConnectionDropped,
    SimConfig,
    count_request_tokens,
    count_text_tokens,
    create_app,
)
from evalrun.tokens import cut_to_tokens

V1 = {"anthropic-version": "2023-06-01"}
V2 = {"anthropic-version": "2026-10-21"}
MCQ = "Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Mercury"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client() -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    def make(config: SimConfig | None = None) -> httpx.AsyncClient:
        app = create_app(config or SimConfig())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim", headers=V1)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def body(
    content: Any = MCQ, *, model: str = "claude-sonnet-4-5", max_tokens: int = 100, **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def prefill(
    text: str, *, question: str = MCQ, model: str = "claude-sonnet-4-5", max_tokens: int = 100
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": text}],
    }


async def error_of(client: httpx.AsyncClient, payload: Any, status: int, **kwargs: Any) -> str:
    response = await client.post("/v1/messages", json=payload, **kwargs)
    assert response.status_code == status, response.text
    data = response.json()
    assert set(data) == {"type", "error", "request_id"}
    assert data["type"] == "error" and data["request_id"].startswith("req_")
    assert response.headers["request-id"] == data["request_id"]
    return f"{data['error']['type']}: {data['error']['message']}"


def test_public_names_are_sorted_and_complete() -> None:
    names = evalrun.sim.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))  # constants first, as ruff sorts
    modules = {"answers", "config", "ratelimit", "tokens", "annotations"}
    exported = {n for n in dir(evalrun.sim) if not n.startswith("_")} - modules
    assert exported == set(names)


# -- validation ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model: Field required"),
        (
            {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
            "max_tokens: Field required",
        ),
        ({"model": "claude-sonnet-4-5", "max_tokens": 5}, "messages: Field required"),
        (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
        ({**body(), "max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
        ({**body(), "messages": []}, "messages: at least one message is required"),
        ({**body(), "foo": 1}, "foo: Extra inputs are not permitted"),
        (
            {**body(), "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            {**body(), "messages": [{"role": "assistant", "content": "x"}]},
            'messages: first message must use the "user" role',
        ),
        (prefill("The answer is "), "messages: final assistant content cannot end with trailing whitespace"),
        (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
        (
            body([{"type": "audio", "data": "x"}]),
            "messages.0.content.0: Input tag 'audio' found using 'type' does not match",
        ),
        (
            body(
                [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}}]
            ),
            "messages.0.content.0.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
        ),
    ],
)
async def test_invalid_requests_get_the_api_400(
    make_client: Client, payload: dict[str, Any], expected: str
) -> None:
    message = await error_of(make_client(), payload, 400)
    assert message.startswith("invalid_request_error: " + expected)


@pytest.mark.anyio
async def test_error_json_is_exactly_the_api_shape(make_client: Client) -> None:
    response = await make_client().post("/v1/messages", json={**body(), "foo": 1})
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "foo: Extra inputs are not permitted"},
        "request_id": response.headers["request-id"],
    }
    assert re.fullmatch(r"req_\w{24}", response.headers["request-id"])


@pytest.mark.anyio
async def test_missing_version_header_and_bad_json(make_client: Client) -> None:
    client = make_client()
    response = await client.post("/v1/messages", json=body(), headers={"anthropic-version": ""})
    assert response.status_code == 400
    bare = httpx.AsyncClient(transport=client._transport, base_url="http://sim")
    async with bare:
        assert (
            await error_of(bare, body(), 400)
            == "invalid_request_error: anthropic-version: header is required"
        )
    response = await client.post(
        "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_model_table_rules(make_client: Client) -> None:
    client = make_client()
    assert await error_of(client, body(model="claude-nope-9"), 404) == "not_found_error: model: claude-nope-9"
    assert await error_of(client, prefill("The answer is (", model="claude-sonnet-4-6"), 400) == (
        "invalid_request_error: This model does not support assistant message prefill. "
        "The conversation must end with a user message."
    )
    assert await error_of(client, body(model="claude-opus-4-7", temperature=0), 400) == (
        "invalid_request_error: `temperature` is deprecated for this model."
    )
    assert await error_of(client, body(model="claude-opus-4-8", top_k=5), 400) == (
        "invalid_request_error: `top_k` is deprecated for this model."
    )
    message = await error_of(client, body(model="claude-sonnet-4-5", temperature=0.5, top_p=0.9), 400)
    assert "`temperature` and `top_p` cannot both be specified" in message
    ok = await client.post("/v1/messages", json=body(model="claude-sonnet-4-5", temperature=0))
    assert ok.status_code == 200


@pytest.mark.anyio
async def test_api_version_2026_removes_sampling_params(make_client: Client) -> None:
    client = make_client()
    for param, value in (("temperature", 1.0), ("top_p", 0.9), ("top_k", 5)):
        message = await error_of(client, body(**{param: value}), 400, headers=V2)
        assert message == f"invalid_request_error: {param}: Extra inputs are not permitted"
    ok = await client.post("/v1/messages", json=body(), headers=V2)
    assert ok.status_code == 200


@pytest.mark.anyio
async def test_authentication(make_client: Client) -> None:
    client = make_client(SimConfig(api_key="sk-right"))
    assert (await error_of(client, body(), 401)).startswith("authentication_error: ")
    assert (await error_of(client, body(), 401, headers={"x-api-key": "sk-wrong"})).startswith(
        "authentication_error"
    )
    assert (
        await client.post("/v1/messages", json=body(), headers={"x-api-key": "sk-right"})
    ).status_code == 200
    bearer = {"authorization": "Bearer sk-right"}
    assert (await client.post("/v1/messages", json=body(), headers=bearer)).status_code == 200
    # x-api-key wins over the bearer token when both are sent.
    both_bad_key = {"authorization": "Bearer sk-right", "x-api-key": "sk-wrong"}
    assert (await client.post("/v1/messages", json=body(), headers=both_bad_key)).status_code == 401
    both_good_key = {"authorization": "Bearer sk-wrong", "x-api-key": "sk-right"}
    assert (await client.post("/v1/messages", json=body(), headers=both_good_key)).status_code == 200


@pytest.mark.anyio
async def test_unknown_path_is_a_json_404(make_client: Client) -> None:
    response = await make_client().post("/v1/nothing", json={})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


# -- replies ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reply_shape(make_client: Client) -> None:
    response = await make_client().post("/v1/messages", json=body())
    assert response.status_code == 200
    data = response.json()
    assert data["id"].startswith("msg_") and data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == "claude-sonnet-4-5-20250929"  # the dated id of the alias
    assert re.fullmatch(r"The answer is \([ABCD]\)\.", data["content"][0]["text"])
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    usage = data["usage"]
    assert usage == {
        "input_tokens": count_request_tokens(body()),
        "output_tokens": count_text_tokens(data["content"][0]["text"]),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


@pytest.mark.anyio
async def test_prefill_gets_only_the_continuation(make_client: Client) -> None:
    client = make_client()
    one = (await client.post("/v1/messages", json=prefill("The answer is (", max_tokens=1))).json()
    assert re.fullmatch(r"[ABCD]", one["content"][0]["text"])
    assert one["stop_reason"] == "max_tokens" and one["usage"]["output_tokens"] == 1
    full = (await client.post("/v1/messages", json=prefill("The answer is ("))).json()
    assert full["content"][0]["text"] == one["content"][0]["text"] + ")"
    assert full["stop_reason"] == "end_turn"


@pytest.mark.anyio
async def test_max_tokens_cuts_the_reply(make_client: Client) -> None:
    data = (await make_client().post("/v1/messages", json=body(max_tokens=5))).json()
    assert data["content"][0]["text"] == "The answer is ("
    assert data["stop_reason"] == "max_tokens" and data["usage"]["output_tokens"] == 5


@pytest.mark.anyio
async def test_stop_sequence_cuts_before_it(make_client: Client) -> None:
    data = (await make_client().post("/v1/messages", json=body(stop_sequences=["xyz", "("]))).json()
    assert data["content"][0]["text"] == "The answer is "
    assert data["stop_reason"] == "stop_sequence" and data["stop_sequence"] == "("


@pytest.mark.anyio
async def test_multi_turn_and_images(make_client: Client) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    payload = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": MCQ},
                ],
            },
        ],
    }
    client = make_client()
    data = (await client.post("/v1/messages", json=payload)).json()
    assert data["model"] == "claude-haiku-4-5-20251001"
    assert data["usage"]["input_tokens"] == count_request_tokens(payload) > 3000  # two images
    bad = json.loads(json.dumps(payload))
    bad["messages"][2]["content"][0]["source"]["media_type"] = "image/jpeg"
    assert "does not appear to be a valid jpeg image" in await error_of(client, bad, 400)


SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "answer": {"type": "string", "enum": ["W", "X", "Y", "Z"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "votes": {"type": "array", "items": {"type": "integer", "minimum": 3}, "minItems": 2},
        "sure": {"type": "boolean"},
        "meta": {
            "type": "object",
            "properties": {"tag": {"type": "string", "minLength": 30}},
            "required": ["tag"],
        },
    },
    "required": ["answer", "confidence", "votes", "sure", "meta"],
    "additionalProperties": False,
}


@pytest.mark.anyio
async def test_structured_output_validates_against_the_schema(make_client: Client) -> None:
    fmt = {"format": {"type": "json_schema", "schema": SCHEMA}}
    client = make_client()
    seen = set()
    for i in range(12):
        data = (await client.post("/v1/messages", json=body(f"Question {i}?", output_config=fmt))).json()
        value = json.loads(data["content"][0]["text"])
        jsonschema.validate(value, SCHEMA)
        seen.add(value["answer"])
    assert len(seen) > 1  # the letters come from the enum, not A-D


# -- answers ------------------------------------------------------------------------------


def _dataset(n: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"q{i}",
            "question": f"Item {i}: which option names the number {i * 7 + 3}?",
            "answer": "ABCD"[i % 4],
        }
        for i in range(n)
    ]


@pytest.mark.anyio
async def test_answer_key_accuracy_is_about_the_skill(make_client: Client) -> None:
    rows = _dataset(400)
    key = AnswerKey.from_rows(rows, "answer", id_column="id")
    client = make_client(SimConfig(answers=key, skills={"sonnet": 0.75}, seed=3))
    right = 0
    for row in rows:
        prompt = f"Answer the question.\n\n{row['question']}\n(A) one\n(B) two\n(C) three\n(D) four"
        text = (
            await client.post("/v1/messages", json=prefill("The answer is (", question=prompt, max_tokens=1))
        ).json()
        right += text["content"][0]["text"] == row["answer"]
    assert 0.75 - 0.07 < right / len(rows) < 0.75 + 0.07  # about 3.2 standard errors


@pytest.mark.anyio
async def test_answers_are_deterministic_per_seed_and_differ_between_models(make_client: Client) -> None:
    async def answers(seed: int, model: str) -> list[str]:
        client = make_client(SimConfig(seed=seed))
        out = []
        for i in range(40):
            data = (await client.post("/v1/messages", json=body(f"Question {i}\n{MCQ}", model=model))).json()
            out.append(data["content"][0]["text"])
        return out

    first = await answers(1, "claude-sonnet-4-5")
    assert first == await answers(1, "claude-sonnet-4-5")
    assert first == await answers(1, "claude-sonnet-4-5-20250929")  # an alias is the same model
    assert first != await answers(2, "claude-sonnet-4-5")
    assert first != await answers(1, "claude-haiku-4-5")


@pytest.mark.anyio
async def test_free_text_targets_and_letters_from_the_prompt(make_client: Client, tmp_path: Path) -> None:
    path = tmp_path / "key.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "target"])
        writer.writerow(["What is the capital city of France?", "Paris"])
        writer.writerow(["Which of these is prime? (E) and (F) are new.", "F"])
    key = AnswerKey.from_csv(path, "target")
    client = make_client(SimConfig(answers=key, skills={"claude-opus-4-5": 1.0}))
    data = (
        await client.post(
            "/v1/messages", json=body("Q: What is the capital   city of France?", model="claude-opus-4-5")
        )
    ).json()
    assert data["content"][0]["text"] == "Paris"
    question = "Which of these is prime? (E) and (F) are new.\nE) 4\nF) 5"
    data = (await client.post("/v1/messages", json=body(question, model="claude-opus-4-5"))).json()
    assert data["content"][0]["text"] == "The answer is (F)."
    with pytest.raises(DatasetError, match="no column 'answer'"):
        AnswerKey.from_csv(path, "answer")


def test_answer_key_prefers_the_longest_matching_question() -> None:
    key = AnswerKey.from_rows(
        [{"q": "What is 2+2?", "a": "A"}, {"q": "What is 2+2? Explain in one word.", "a": "B"}], "a"
    )
    match = key.match("Question: What is 2+2?\nExplain in one word.")
    assert match is not None and match.target == "B"
    assert key.match("Something else entirely") is None


# -- tokens and caching ---------------------------------------------------------------------


def test_token_rule() -> None:
    assert count_text_tokens("C") == 1
    assert count_text_tokens("The answer is (C).") == 8
    assert count_text_tokens("") == 0
    assert count_request_tokens(body("C")) == 1 + 3


@pytest.mark.anyio
async def test_count_tokens_endpoint(make_client: Client) -> None:
    client = make_client()
    payload = {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": MCQ}],
    }
    response = await client.post("/v1/messages/count_tokens", json=payload)
    assert response.json() == {"input_tokens": count_request_tokens(payload)}
    assert (
        "max_tokens: Extra inputs"
        in (await client.post("/v1/messages/count_tokens", json={**payload, "max_tokens": 5})).json()[
            "error"
        ]["message"]
    )
    response = await client.post("/v1/messages/count_tokens", json={**payload, "model": "nope"})
    assert response.status_code == 404


@pytest.mark.anyio
async def test_prompt_caching_counters(make_client: Client) -> None:
    client = make_client()
    long_doc = "word " * 1500  # 1,500 tokens: above Sonnet's 1,024 minimum, below Haiku's 4,096
    system = [{"type": "text", "text": long_doc, "cache_control": {"type": "ephemeral"}}]

    async def usage(model: str, question: str) -> dict[str, Any]:
        payload = {**body(question, model=model), "system": system}
        return (await client.post("/v1/messages", json=payload)).json()["usage"]

    first = await usage("claude-sonnet-4-5", "Q1")
    assert first["cache_creation_input_tokens"] == 1500 and first["cache_read_input_tokens"] == 0
    assert first["cache_creation"]["ephemeral_5m_input_tokens"] == 1500
    assert first["input_tokens"] == count_text_tokens("Q1") + 3
    second = await usage("claude-sonnet-4-5", "Q2")
    assert second["cache_read_input_tokens"] == 1500 and second["cache_creation_input_tokens"] == 0
    small = await usage("claude-haiku-4-5", "Q1")
    assert small["cache_read_input_tokens"] == small["cache_creation_input_tokens"] == 0
    assert small["input_tokens"] == 1500 + count_text_tokens("Q1") + 3

    auto = {
        **body(long_doc + " tail", model="claude-sonnet-4-6"),
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    written = (await client.post("/v1/messages", json=auto)).json()["usage"]
    assert written["cache_creation"]["ephemeral_1h_input_tokens"] == count_request_tokens(auto)
    read = (await client.post("/v1/messages", json=auto)).json()["usage"]
    assert read["cache_read_input_tokens"] == count_request_tokens(auto) and read["input_tokens"] == 0


# -- rate limits and faults -------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_headers_and_429(make_client: Client) -> None:
    # 6 a minute: a request token takes 10 s to come back, not the 1 s a loaded machine may take.
    client = make_client(SimConfig(rpm=6, burst=2, itpm=600, otpm=600))
    first = await client.post("/v1/messages", json=body())
    h = first.headers
    assert h["anthropic-ratelimit-requests-limit"] == "6"
    assert h["anthropic-ratelimit-requests-remaining"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["anthropic-ratelimit-requests-reset"])
    # burst 2 of 6 rpm is 20 s of a minute, so the token buckets hold 200 tokens.
    assert int(h["anthropic-ratelimit-input-tokens-remaining"]) == 200 - first.json()["usage"]["input_tokens"]
    assert (
        int(h["anthropic-ratelimit-output-tokens-remaining"]) == 200 - first.json()["usage"]["output_tokens"]
    )
    assert "anthropic-ratelimit-tokens-limit" in h
    await client.post("/v1/messages", json=body())
    limited = await client.post("/v1/messages", json=body())
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] == "10"
    assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
    # Another family has its own buckets; the rejected request was not charged.
    assert (await client.post("/v1/messages", json=body(model="claude-haiku-4-5"))).status_code == 200


@pytest.mark.anyio
async def test_input_token_limit_gives_long_retry_after(make_client: Client) -> None:
    client = make_client(SimConfig(itpm=600))  # 10 tokens a second, one minute's worth of capacity
    assert (await client.post("/v1/messages", json=body("word " * 590))).status_code == 200
    limited = await client.post("/v1/messages", json=body("word " * 100))
    assert limited.status_code == 429
    assert 9 <= int(limited.headers["retry-after"]) <= 11
    assert "anthropic-ratelimit-requests-limit" not in limited.headers


@pytest.mark.anyio
async def test_faults_are_seeded(make_client: Client) -> None:
    async def statuses(seed: int) -> list[int]:
        client = make_client(SimConfig(p500=0.2, p529=0.2, seed=seed))
        return [(await client.post("/v1/messages", json=body())).status_code for _ in range(60)]

    first = await statuses(5)
    assert first == await statuses(5) and first != await statuses(6)
    assert {200, 500, 529} == set(first)
    client = make_client(SimConfig(p529=1.0))
    response = await client.post("/v1/messages", json=body())
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    client = make_client(SimConfig(p500=1.0))
    assert (await client.post("/v1/messages", json=body())).json()["error"]["type"] == "api_error"


@pytest.mark.anyio
async def test_dropped_connection_in_process(make_client: Client) -> None:
    client = make_client(SimConfig(pdrop=1.0))
    with pytest.raises(httpx.RemoteProtocolError) as info:
        await client.post("/v1/messages", json=body())
    assert isinstance(info.value, ConnectionDropped)


def test_dropped_connection_over_loopback() -> None:
    with (
        evalrun.sim.running_server(SimConfig(pdrop=1.0)) as url,
        httpx.Client(base_url=url, headers=V1) as client,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        client.post("/v1/messages", json=body())
    seeded = SimConfig(pdrop=0.5, seed=1)
    with evalrun.sim.running_server(seeded) as url, httpx.Client(base_url=url, headers=V1) as client:
        outcomes = []
        for _ in range(20):
            try:
                outcomes.append(client.post("/v1/messages", json=body()).status_code)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                outcomes.append(0)
        assert 0 in outcomes and 200 in outcomes  # the server survives its own drops


@pytest.mark.anyio
async def test_latency_is_added(make_client: Client) -> None:
    import time

    client = make_client(SimConfig(latency_ms=50, latency_spread=0.0, latency_per_output_token_ms=10))
    start = time.perf_counter()
    await client.post("/v1/messages", json=body(max_tokens=5))
    # A lower bound only: a loaded machine can make the reply later, never earlier. How close
    # to 100 ms it comes is for bench/timed.py.
    assert time.perf_counter() - start >= 0.1 - 0.005  # 50 ms + 5 tokens x 10 ms


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="p500"):
        SimConfig(p500=2)
    with pytest.raises(ValueError, match="burst"):
        SimConfig(burst=0)


@given(st.text(), st.integers(min_value=0, max_value=50))
def test_cut_to_tokens_is_a_prefix_within_the_budget(text: str, limit: int) -> None:
    cut, was_cut = cut_to_tokens(text, limit)
    assert text.startswith(cut)
    assert count_text_tokens(cut) <= limit
    assert was_cut == (count_text_tokens(text) > limit)


@pytest.mark.anyio
async def test_more_than_four_cache_breakpoints_is_a_400(make_client: Client) -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    message = await error_of(make_client(), body(blocks), 400)
    assert message.endswith("A maximum of 4 blocks with cache_control may be provided. Found 5.")
