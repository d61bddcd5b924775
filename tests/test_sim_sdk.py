"""The official anthropic SDK, over loopback, parses every simulator response and error."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from evalrun.sim import SimConfig, running_server

KEY = "sk-sim-test"
MCQ = "Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Mercury"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(SimConfig(api_key=KEY, seed=7)) as base_url:
        yield base_url


@pytest.fixture
def client(url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as sdk:
        yield sdk


def tiny_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00\xff\x00\x00"  # one red pixel, filter byte first
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def test_basic_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": MCQ}]
    )
    assert message.id.startswith("msg_") and message.model == "claude-sonnet-4-6"
    assert message.content[0].type == "text" and message.content[0].text.startswith("The answer is (")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 8
    assert message.usage.cache_creation is not None and message.usage.service_tier == "standard"
    assert message._request_id is not None and message._request_id.startswith("req_")


def test_multi_turn_and_prefill(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-haiku-4-5",  # prefill is accepted up to the 4.5 models
        max_tokens=1,
        system="Answer with one letter.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi. Ask away."},
            {"role": "user", "content": MCQ},
            {"role": "assistant", "content": "The answer is ("},
        ],
    )
    assert message.model == "claude-haiku-4-5-20251001"
    assert message.content[0].text in {"A", "B", "C", "D"} and message.stop_reason == "max_tokens"


def test_images(client: anthropic.Anthropic, tmp_path: Path) -> None:
    data = base64.standard_b64encode(tiny_png(tmp_path / "pixel.png").read_bytes()).decode()
    message = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.webp"}},
                    {"type": "text", "text": "What colour is the first image?"},
                ],
            }
        ],
    )
    assert message.usage.input_tokens > 3000 and message.content


def test_structured_output(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["A", "B", "C", "D"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model="claude-opus-4-8",
        max_tokens=32,
        messages=[{"role": "user", "content": MCQ}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert json.loads(message.content[0].text)["answer"] in {"A", "B", "C", "D"}


def test_count_tokens(client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": MCQ}]
    )
    assert count.input_tokens > 10


def test_bad_requests(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Field required"):
        # messages.create checks its own arguments, so go one level down to send a bad body.
        client.post(
            "/v1/messages",
            cast_to=anthropic.types.Message,
            body={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]},
        )
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace") as info:
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is "}],
        )
    assert info.value.status_code == 400 and info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is ("}],
        )
    # The SDK sends anthropic-version 2026-10-21, where temperature no longer exists.
    with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs are not permitted"):
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"temperature": 0},
        )


def test_auth_and_not_found(url: str, client: anthropic.Anthropic) -> None:
    with (
        anthropic.Anthropic(api_key="sk-wrong", base_url=url, max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError),
    ):
        wrong.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.NotFoundError, match="model: claude-unknown"):
        client.messages.create(
            model="claude-unknown", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def test_rate_limit_and_overload() -> None:
    with (
        running_server(SimConfig(rpm=1, burst=1)) as url,  # refills in a minute: no race with a slow machine
        anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as sdk,
    ):
        sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(anthropic.RateLimitError) as info:
            sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.response.headers["retry-after"] == "60"
        assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with (
        running_server(SimConfig(p529=1.0)) as url,
        anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as sdk,
    ):
        # anthropic 2.x maps 529 to OverloadedError, a subclass of InternalServerError.
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert (
            isinstance(overloaded.value, anthropic.InternalServerError)
            and overloaded.value.status_code == 529
        )
    with (
        running_server(SimConfig(p500=1.0)) as url,
        anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as sdk,
    ):
        with pytest.raises(anthropic.InternalServerError) as failed:
            sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert failed.value.status_code == 500


def test_dropped_connection_is_a_connection_error() -> None:
    with (
        running_server(SimConfig(pdrop=1.0)) as url,
        anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as sdk,
        pytest.raises(anthropic.APIConnectionError),
    ):
        sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def test_hammered_limiter_lets_through_its_rate() -> None:
    # Many more attempts than the rate, at times the test chooses: exactly the burst plus the
    # refill gets through. (The same hammering by SDK clients over loopback, in real time, is
    # measured by bench/timed.py: a count within 10 % of the rate failed on a loaded machine.)
    from evalrun.sim import RateLimiter

    rpm, burst, seconds = 3000.0, 10, 2.0  # 50 requests a second
    limiter = RateLimiter(rpm=rpm, itpm=None, otpm=None, burst=burst)
    attempts = [i * 0.001 for i in range(int(seconds * 1000) + 1)]  # 1,000 a second, for 2 s
    admitted = sum(limiter.admit("haiku", 10, now=1000.0 + t) is None for t in attempts)
    assert admitted == burst + rpm / 60 * seconds
