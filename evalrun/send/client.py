"""The Messages API over HTTPX: headers, timeouts, response parsing, error mapping.

This is the only module that sees HTTPX exceptions and status codes; everything above it sees
`ApiError` kinds (STYLE.md §2).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from evalrun.errors import (
    ApiError,
    AuthError,
    PermanentApiError,
    RateLimitError,
    TransientApiError,
)

__all__ = ["ApiResponse", "MessagesClient", "RateLimitInfo", "default_transport"]

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
_RETRYABLE_STATUS = {408, 409, 429}
_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
# count_tokens takes the prompt-shaping fields of a Messages body, not the sampling ones.
_COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "mcp_servers",
     "context_management", "cache_control"}
)  # fmt: skip


@dataclass(frozen=True)
class RateLimitInfo:
    """The `anthropic-ratelimit-*` headers of one response: limit, remaining, reset (epoch s)."""

    limits: dict[str, tuple[float | None, float | None, float | None]]

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> RateLimitInfo:
        limits = {}
        for kind in _LIMIT_KINDS:
            prefix = f"anthropic-ratelimit-{kind}-"
            limit = headers.get(prefix + "limit")
            if limit is None:
                continue
            limits[kind] = (
                _number(limit),
                _number(headers.get(prefix + "remaining")),
                _epoch(headers.get(prefix + "reset")),
            )
        return cls(limits=limits)

    def get(self, kind: str) -> tuple[float | None, float | None, float | None]:
        return self.limits.get(kind, (None, None, None))

    def __bool__(self) -> bool:
        return bool(self.limits)


@dataclass(frozen=True)
class ApiResponse:
    """A successful Messages reply and what its headers said."""

    message: dict[str, Any]
    request_id: str | None
    rate_limits: RateLimitInfo
    latency_s: float


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`retry-after-ms` wins over `retry-after` (seconds, or an HTTP date)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        from email.utils import parsedate_to_datetime

        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _error_from_response(response: httpx.Response) -> ApiError:
    status = response.status_code
    request_id = response.headers.get("request-id")
    error_type, message = None, response.reason_phrase or f"HTTP {status}"
    try:
        payload = json.loads(response.content)
        error = payload.get("error") or {}
        error_type = error.get("type")
        message = error.get("message") or message
        request_id = request_id or payload.get("request_id")
    except (ValueError, AttributeError):
        text = response.text.strip()
        if text:
            message = text[:300]
    kwargs: dict[str, Any] = {"status": status, "error_type": error_type, "request_id": request_id}
    retry_after = retry_after_seconds(response.headers)
    should_retry = response.headers.get("x-should-retry")
    if status in (401, 403):
        return AuthError(message, **kwargs)
    if status == 429 and should_retry != "false" and (retry_after is not None or should_retry == "true"):
        return RateLimitError(message, retry_after=retry_after, **kwargs)
    retryable = status in _RETRYABLE_STATUS or status >= 500
    if status == 429 and retry_after is None:
        retryable = False  # a spend cap: waiting will not help
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    if retryable:
        return TransientApiError(message, retry_after=retry_after, **kwargs)
    return PermanentApiError(message, **kwargs)


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """HTTPX's API on aiohttp's transport: several times less client CPU per request."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )


class MessagesClient:
    """One endpoint, key and API version. Pass `transport` to test against a fake or the simulator."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        api_version: str = "2023-06-01",
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_connections: int = 512,
        beta: str | None = None,
    ) -> None:
        headers = {"anthropic-version": api_version, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        if beta:
            headers["anthropic-beta"] = beta
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._transport = transport or default_transport(max_connections)
        # Requests go straight to the transport: HTTPX's client layer (URL merging, auth, cookies,
        # redirects, event hooks) is most of the client CPU per request and evalrun needs none of it.
        # The AsyncClient stays only to own the transport's lifetime.
        self._http = httpx.AsyncClient(transport=self._transport)
        self._headers = headers
        self._urls = {path: httpx.URL(self.base_url + path) for path in ("/v1/messages", "/v1/messages/count_tokens")}
        self._extensions = {"timeout": timeout.as_dict()}

    def __repr__(self) -> str:  # never the key
        return f"MessagesClient(base_url={self.base_url!r}, api_version={self.api_version!r})"

    async def __aenter__(self) -> MessagesClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], httpx.Response, float]:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        start = time.monotonic()
        try:
            request = httpx.Request(
                "POST", self._urls[path], headers=self._headers, content=content, extensions=self._extensions
            )
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            except BaseException:
                await response.aclose()  # give the connection back even when the body broke off
                raise
        except httpx.TimeoutException as exc:
            raise TransientApiError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientApiError(f"connection failed ({type(exc).__name__}: {exc})") from exc
        latency = time.monotonic() - start
        if response.status_code >= 400:
            raise _error_from_response(response)
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise TransientApiError(
                f"the server answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            ) from exc
        if not isinstance(payload, dict):
            raise TransientApiError("the server answered with JSON that is not an object", status=response.status_code)
        return payload, response, latency

    async def create(self, body: dict[str, Any]) -> ApiResponse:
        """POST /v1/messages. Raises an ApiError kind on any failure."""
        payload, response, latency = await self._post("/v1/messages", body)
        if payload.get("type") == "error":
            raise _error_from_response(response)
        if not isinstance(payload.get("content"), list):
            raise TransientApiError(
                "the reply has no `content` list", status=response.status_code, request_id=response.headers.get("request-id")
            )
        return ApiResponse(
            message=payload,
            request_id=response.headers.get("request-id") or payload.get("id"),
            rate_limits=RateLimitInfo.from_headers(response.headers),
            latency_s=latency,
        )

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """POST /v1/messages/count_tokens with a Messages body (max_tokens is dropped)."""
        request = {k: v for k, v in body.items() if k in _COUNT_TOKENS_FIELDS}
        payload, _, _ = await self._post("/v1/messages/count_tokens", request)
        tokens = payload.get("input_tokens")
        if not isinstance(tokens, int):
            raise PermanentApiError("count_tokens answered without `input_tokens`")
        return tokens


def reply_text(message: dict[str, Any]) -> str:
    """The text of a reply: its text blocks joined (tool_use and thinking blocks are skipped)."""
    return "".join(block.get("text", "") for block in message.get("content", []) if block.get("type") == "text")
