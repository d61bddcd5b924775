from __future__ import annotations

import httpx
import pytest

from evalrun.errors import AuthError, PermanentApiError, RateLimitError, TransientApiError
from evalrun.send.client import MessagesClient

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
        (error(429, "rate_limit_error"), PermanentApiError, None),  # a spend cap: no retry-after
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
