from __future__ import annotations

import json
import re

import httpx
import pytest

from evalrun.errors import (
    AuthError,
    MalformedReplyError,
    PermanentApiError,
    RateLimitError,
    TransientApiError,
)
from evalrun.send.client import MessagesClient, attempt_timeout, check_api_key

pytestmark = pytest.mark.anyio


def client_for(handler) -> MessagesClient:
    return MessagesClient(base_url="http://api.test", api_key="k-123", transport=httpx.MockTransport(handler))


def error(status: int, kind: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": "nope"}, "request_id": "req_1"}
    return httpx.Response(status, json=body, headers=headers or {})


async def test_sends_key_version_and_parses_rate_limit_headers() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        headers = {
            "request-id": "req_9",
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": "2026-11-24T16:00:00Z",
        }
        return httpx.Response(200, json={"id": "msg_1", "content": [{"type": "text", "text": "C"}]}, headers=headers)

    async with client_for(handler) as client:
        response = await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert seen["x-api-key"] == "k-123" and seen["anthropic-version"] == "2023-06-01"
    assert response.request_id == "req_9"
    limit, remaining, reset = response.rate_limits.get("requests")
    assert (limit, remaining) == (4000, 3999) and reset is not None
    assert "k-123" not in repr(client)


@pytest.mark.parametrize(
    ("response", "kind", "retry_after"),
    [
        (error(429, "rate_limit_error", {"retry-after": "7"}), RateLimitError, 7.0),
        (error(429, "rate_limit_error", {"retry-after-ms": "1500", "retry-after": "9"}), RateLimitError, 1.5),
        # No retry-after (a proxy, or a spend cap): still retried on the back-off schedule; a cap
        # that keeps answering 429 stops the run once the first requests' retries run out.
        (error(429, "rate_limit_error"), RateLimitError, None),
        (error(529, "overloaded_error"), TransientApiError, None),
        (error(500, "api_error"), TransientApiError, None),
        (error(408, "timeout_error"), TransientApiError, None),
        (error(401, "authentication_error"), AuthError, None),
        (error(403, "permission_error"), AuthError, None),
        (error(400, "invalid_request_error"), PermanentApiError, None),
        (error(404, "not_found_error"), PermanentApiError, None),
        (error(400, "invalid_request_error", {"x-should-retry": "true"}), TransientApiError, None),
        (error(500, "api_error", {"x-should-retry": "false"}), PermanentApiError, None),
        (httpx.Response(502, text="<html>bad gateway</html>"), TransientApiError, None),
    ],
)
async def test_errors_map_to_their_kind(response: httpx.Response, kind: type, retry_after: float | None) -> None:
    async with client_for(lambda request: response) as client:
        with pytest.raises(kind) as info:
            await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert type(info.value) is kind
    assert getattr(info.value, "retry_after", None) == retry_after
    assert info.value.status == response.status_code


async def test_connection_errors_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client_for(handler) as client:
        with pytest.raises(TransientApiError, match="connection failed"):
            await client.create({"model": "m", "max_tokens": 1, "messages": []})


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn",
           "content": [{"type": "text", "text": "C"}], "usage": {"input_tokens": 3, "output_tokens": 1}}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({**MESSAGE, "content": ["B"]}, "content[0] is not a content block"),
        ({**MESSAGE, "content": [None]}, "content[0] is not a content block"),
        ({**MESSAGE, "content": [{"type": "text", "text": 7}]}, "text block without text"),
        ({**MESSAGE, "usage": [1, 2]}, "`usage` is not an object"),
        ({**MESSAGE, "usage": {"input_tokens": "12", "output_tokens": 1}}, "usage.input_tokens is not a whole number"),
        ({**MESSAGE, "usage": {"input_tokens": -3}}, "usage.input_tokens is not a whole number"),
        ({**MESSAGE, "content": "C"}, "no `content` list"),
        ([MESSAGE], "not a JSON object"),
        ({**MESSAGE, "stop_reason": 5}, "`stop_reason` is not a string"),
        ({**MESSAGE, "content": [{"type": "tool_use", "name": "x", "input": "no"}]}, "tool_use block"),
    ],
)
async def test_a_malformed_reply_keeps_its_raw_body(payload: object, problem: str) -> None:
    async with client_for(lambda request: httpx.Response(200, json=payload)) as client:
        with pytest.raises(MalformedReplyError, match=re.escape(problem)) as info:
            await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert json.loads(info.value.raw) == payload


async def test_a_reply_that_is_not_json_is_malformed_not_lost() -> None:
    async with client_for(lambda request: httpx.Response(200, text="<html>oops</html>")) as client:
        with pytest.raises(MalformedReplyError) as info:
            await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert info.value.raw == "<html>oops</html>"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("overloaded_error", TransientApiError), ("api_error", TransientApiError), ("rate_limit_error", RateLimitError),
     ("invalid_request_error", PermanentApiError), ("authentication_error", AuthError)],
)
async def test_an_error_object_in_a_200_is_judged_by_its_type(kind: str, expected: type) -> None:
    body = {"type": "error", "error": {"type": kind, "message": "busy"}}
    async with client_for(lambda request: httpx.Response(200, json=body)) as client:
        with pytest.raises(expected) as info:
            await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert type(info.value) is expected


async def test_a_key_echoed_back_by_the_server_is_blanked() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad key k-123 for you"}}
    async with client_for(lambda request: httpx.Response(400, json=body)) as client:
        with pytest.raises(PermanentApiError) as info:
            await client.create({"model": "m", "max_tokens": 1, "messages": []})
    assert "k-123" not in str(info.value) and "[redacted key]" in str(info.value)


async def test_a_server_that_never_finishes_hits_the_attempt_deadline() -> None:
    import anyio

    class Trickle(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            async def body():
                while True:
                    yield b" "
                    await anyio.sleep(0.05)

            return httpx.Response(200, content=body())

    client = MessagesClient(base_url="http://api.test", api_key="k", transport=Trickle())
    with pytest.raises(TransientApiError, match="no complete reply within"):
        await client.create({"model": "m", "max_tokens": 1, "messages": []}, timeout=0.3)
    await client.aclose()


def test_attempt_deadlines_fit_the_request() -> None:
    assert attempt_timeout(1) < 120 < attempt_timeout(4096) <= 600
    assert attempt_timeout(100_000) == 600


@pytest.mark.parametrize("key", ["sk-abc\n", "sk ab", "sk-é"])
def test_keys_that_cannot_be_sent_are_refused_without_showing_them(key: str) -> None:
    problem = check_api_key(key)
    assert problem is not None and key.strip() not in problem
