"""The Messages API over HTTPX: headers, timeouts, reply validation, error mapping.

This is the only module that sees HTTPX exceptions and status codes; everything above it sees
`ApiError` kinds. A reply is checked against the shape of the Messages API here, at the
boundary, so nothing above has to guard against a server that answers 200 with nonsense.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import anyio
import httpx

from evalrun.errors import (
    ApiError,
    AuthError,
    MalformedReplyError,
    PermanentApiError,
    RateLimitError,
    TransientApiError,
)
from evalrun.messages_api import COUNT_TOKENS_FIELDS, USAGE_COUNTERS

__all__ = [
    "ApiResponse",
    "MessagesClient",
    "RateLimitInfo",
    "Reply",
    "attempt_timeout",
    "check_api_key",
    "validate_message",
]

CONNECT_TIMEOUT_S = 5.0
# A reply must start arriving, and keep arriving, within this many seconds of silence.
READ_IDLE_TIMEOUT_S = 120.0
SIMULATOR_HEADER = "x-evalrun-simulator"
_STREAM_ABOVE = 512 * 1024  # bytes of request body sent in one piece
_RETRYABLE_STATUS = {408, 409, 429}
_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
# The status an error `type` stands for, when a server puts an error object in a 200 body.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


def attempt_timeout(max_tokens: int) -> float:
    """The most one attempt may take in total: room for the longest reply `max_tokens` allows
    (at a slow 20 tokens/s) plus a minute, at most the SDK's 10 minutes. A one-token answer does
    not need 600 s, and a server that trickles a byte at a time cannot hold a request forever."""
    return min(600.0, 60.0 + max(1, max_tokens) / 20.0)


def check_api_key(key: str) -> str | None:
    """Why `key` cannot be sent in a header, or None when it can (the key itself is never shown)."""
    for position, char in enumerate(key, start=1):
        if char.isspace():
            return f"contains whitespace at character {position} (a stray newline or space?)"
        if not (33 <= ord(char) <= 126):
            return f"contains a character that cannot be sent in an HTTP header at character {position}"
    return None


@dataclass(frozen=True)
class RateLimitInfo:
    """The `anthropic-ratelimit-*` headers of one response: limit, remaining, reset (epoch s)."""

    limits: dict[str, tuple[float | None, float | None, float | None]]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo:
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
    simulated: bool = False


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
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


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate_message(payload: Any) -> str | None:
    """What is wrong with a Messages reply, or None when it has the documented shape."""
    if not isinstance(payload, dict):
        return "the reply is not a JSON object"
    if payload.get("type") not in (None, "message"):
        return f"the reply's type is {payload.get('type')!r}, not 'message'"
    content = payload.get("content")
    if not isinstance(content, list):
        return "the reply has no `content` list"
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"content[{index}] is not a content block"
        kind = block["type"]
        if kind == "text" and not isinstance(block.get("text"), str):
            return f"content[{index}] is a text block without text"
        if kind == "tool_use" and (not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict)):
            return f"content[{index}] is a tool_use block without a name and an input object"
    for name in ("stop_reason", "model", "id"):
        if payload.get(name) is not None and not isinstance(payload.get(name), str):
            return f"the reply's `{name}` is not a string"
    usage = payload.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return "the reply's `usage` is not an object"
        for name in USAGE_COUNTERS:
            if usage.get(name) is not None and not _is_count(usage[name]):
                return f"usage.{name} is not a whole number ≥ 0"
        creation = usage.get("cache_creation")
        if creation is not None and (
            not isinstance(creation, dict) or not all(_is_count(v) for v in creation.values() if v is not None)
        ):
            return "usage.cache_creation is not an object of token counts"
        if usage.get("service_tier") is not None and not isinstance(usage["service_tier"], str):
            return "usage.service_tier is not a string"
    return None


_REDACTED = "[redacted key]"
_LEAK_MIN = 8  # a run of the key this long in an error text is blanked out
_PUBLIC_PREFIX = re.compile(r"^sk-ant-[a-z]+\d*-")  # the part of a key every key shares
_MAX_HEADER_LINE = 65536  # aiohttp's default 8,190 would fail (and retry) a long set-cookie


def _longest(secret: str, text: str, *, head: bool) -> str:
    """The longest head (or tail) of `secret` that appears in `text` (at least _LEAK_MIN long)."""
    low, high = _LEAK_MIN, len(secret)  # the answer is in [low, high]; `low` is known to be in text
    while low < high:
        mid = (low + high + 1) // 2
        if (secret[:mid] if head else secret[-mid:]) in text:
            low = mid
        else:
            high = mid - 1
    return secret[:low] if head else secret[-low:]


def _blank(text: str, secret: str, part: str) -> str:
    """`text` with `secret` blanked out, and the longest head or tail of `part` (its part that
    is secret) still in it: an echo cut short, such as an error quoting a header line up to
    some length."""
    if secret in text:
        text = text.replace(secret, _REDACTED)
    if part[:_LEAK_MIN] in text:
        text = text.replace(_longest(part, text, head=True), _REDACTED)
    if part[-_LEAK_MIN:] in text:
        text = text.replace(_longest(part, text, head=False), _REDACTED)
    return text


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY)."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _ssl_context() -> Any:
    """Trusted certificates as the official SDK has them: certifi's bundle, or SSL_CERT_FILE."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange's answer, read completely, whichever transport carried it."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy or httpx.Headers)
    content: bytes
    reason_phrase: str = ""


class MessagesClient:
    """One endpoint, key and API version.

    Requests go straight to aiohttp (one session, a connection pool sized to the concurrency):
    an HTTP client layer on top of it is most of the client CPU per request and evalrun needs
    none of it. Pass an HTTPX `transport` instead to test against `httpx.MockTransport` or any
    other transport; both paths map every failure to the same ApiError kinds.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        api_version: str = "2023-06-01",
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
        beta: str | None = None,
        read_idle_timeout: float = READ_IDLE_TIMEOUT_S,
    ) -> None:
        if api_key is not None and check_api_key(api_key):
            raise ValueError("the API key cannot be sent in a header")
        headers = {"anthropic-version": api_version, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        if beta:
            headers["anthropic-beta"] = beta
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._secret = api_key or None
        # What of the key a reply body is searched for: the head and tail of its secret part
        # (after the prefix every key shares), as bytes; none for a key too short to tell.
        self._secret_part = _PUBLIC_PREFIX.sub("", api_key or "", count=1)
        self._echo_marks = (
            (self._secret_part[:_LEAK_MIN].encode(), self._secret_part[-_LEAK_MIN:].encode())
            if len(self._secret_part) >= _LEAK_MIN
            else None
        )
        self._transport = transport
        self._http = httpx.AsyncClient(transport=transport) if transport is not None else None
        self._session: Any = None  # an aiohttp.ClientSession, made inside the running event loop
        self._max_connections = max_connections
        self._read_idle = read_idle_timeout
        self._timeouts: dict[float | None, Any] = {}
        self._headers = headers
        self._get_headers = {k: v for k, v in headers.items() if k != "content-type"}
        self.talks_to_simulator = False  # set once any response announced evalrun's simulator
        timeout = httpx.Timeout(read_idle_timeout, connect=CONNECT_TIMEOUT_S)
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
        # Shielded: closing under a second Ctrl-C must still close every session, not stop at
        # the first await and leave the rest open.
        with anyio.CancelScope(shield=True):
            if self._http is not None:
                await self._http.aclose()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()

    def scrub(self, text: str) -> str:
        """`text` with this client's key blanked out: a server that echoes the key back must not
        get it into the store, the reports or the terminal."""
        return _blank(text, self._secret, self._secret) if self._secret else text

    def unechoed(self, content: bytes) -> bytes:
        """A body as received, with this client's key blanked out if the server echoed it (even
        in part) anywhere in it — in a reply's text too, which would otherwise be stored. Only
        the key's secret part counts: every Anthropic key starts `sk-ant-api03-`, and a reply
        that merely names that prefix is an answer, not a leak. Two byte searches when the key
        is not there (the usual case)."""
        marks = self._echo_marks
        if not marks or (marks[0] not in content and marks[1] not in content):
            return content
        assert self._secret is not None
        return _blank(content.decode("utf-8", "replace"), self._secret, self._secret_part).encode()

    def _aiohttp(self) -> Any:
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300, ssl=_ssl_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self._read_idle),
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Content-Type"),
                # Like the official SDK: HTTP(S)_PROXY and NO_PROXY from the environment (read
                # once here: aiohttp's trust_env reads them, and ~/.netrc, on every request, which
                # tripled the client's CPU per request), no cookies kept between requests, header
                # lines as long as a server may send.
                proxy=_env_proxy(self.base_url),
                cookie_jar=aiohttp.DummyCookieJar(),
                max_line_size=_MAX_HEADER_LINE,
                max_field_size=_MAX_HEADER_LINE,
            )
        return self._session

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Reply:
        """One HTTP exchange, read completely, mapped to ApiError kinds on failure (any status ≥ 400).
        `body` is JSON-able, or the JSON bytes themselves."""
        if body is None:
            content, headers = b"", self._get_headers
        else:
            content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            headers = self._headers
        url = path if "://" in path else self.base_url + path
        try:
            if self._transport is None:
                # aiohttp keeps the attempt's deadline itself: cheaper than a cancel scope per request.
                reply = await self._send_aiohttp(method, url, headers, content, timeout)
            else:
                with anyio.fail_after(timeout) if timeout is not None else _no_deadline():
                    reply = await self._send_httpx(method, url, headers, content)
        except TimeoutError:
            raise TransientApiError(f"no complete reply within {timeout:g} s (the attempt's deadline)") from None
        if SIMULATOR_HEADER in reply.headers:
            self.talks_to_simulator = True
        if reply.status_code >= 400:
            raise self._error_from(reply)
        if reply.status_code >= 300:
            raise self._redirect_error(reply, url)
        return reply

    def _redirect_error(self, reply: Reply, url: str) -> PermanentApiError:
        """Redirects are never followed: the key must not travel to a host nobody named (and a
        301/302 would turn the POST into a GET)."""
        where = self.scrub(reply.headers.get("location") or "nowhere")
        return PermanentApiError(
            f"{url} redirects ({reply.status_code}) to {where}; evalrun does not follow redirects: "
            "set base_url to the address the API really answers at",
            status=reply.status_code,
        )

    async def _send_aiohttp(
        self, method: str, url: str, headers: Mapping[str, str], content: bytes, timeout: float | None
    ) -> Reply:
        import aiohttp

        session = self._aiohttp()
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=timeout, sock_connect=CONNECT_TIMEOUT_S, sock_read=self._read_idle
            )
        data: Any = content
        if len(content) > _STREAM_ABOVE:
            # A large body (a batch) goes in chunks, so sending it does not hold the event loop.
            data = _chunks(content)
            headers = {**headers, "content-length": str(len(content))}
        try:
            async with session.request(
                method, url, data=data or None, headers=headers, timeout=limits, allow_redirects=False
            ) as response:
                payload = await response.read()
                return Reply(response.status, response.headers, payload, response.reason or "")
        except (aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError) as exc:
            connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
            raise TransientApiError(f"timed out ({type(exc).__name__})", connection=connect) from exc
        except TimeoutError:  # before OSError, its base class: the attempt's own deadline
            raise TransientApiError(f"no complete reply within {timeout:g} s (the attempt's deadline)") from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentApiError(f"cannot send to {url}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            # aiohttp's own text names `ssl:default` even for a plain-http URL: say it plainly.
            error = exc.os_error
            number = error.errno or 0
            why = os.strerror(number) if number > 0 else (error.strerror or str(error))
            raise TransientApiError(
                f"connection failed (cannot connect to {exc.host}:{exc.port}: {self.scrub(why)})", connection=True
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientApiError(f"connection failed ({type(exc).__name__}: {self.scrub(str(exc))})") from exc

    async def _send_httpx(self, method: str, url: str, headers: Mapping[str, str], content: bytes) -> Reply:
        assert self._transport is not None
        payload: bytes | AsyncIterator[bytes] = content
        if len(content) > _STREAM_ABOVE:
            headers = {**headers, "content-length": str(len(content))}
            payload = _chunks(content)
        try:
            request = httpx.Request(method, url, headers=headers, content=payload, extensions=self._extensions)
        except (httpx.InvalidURL, ValueError) as exc:
            raise PermanentApiError(f"cannot send to {url}: {exc}") from None
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            except BaseException:
                await response.aclose()  # give the connection back even when the body broke off
                raise
        except httpx.TimeoutException as exc:
            raise TransientApiError(f"timed out ({type(exc).__name__})", connection=isinstance(exc, httpx.ConnectTimeout)) from exc
        except httpx.UnsupportedProtocol as exc:
            raise PermanentApiError(f"cannot send to {self.base_url}: {exc}") from None
        except httpx.TransportError as exc:
            raise TransientApiError(
                f"connection failed ({type(exc).__name__}: {self.scrub(str(exc))})",
                connection=isinstance(exc, httpx.ConnectError),
            ) from exc
        return Reply(response.status_code, response.headers, response.content, response.reason_phrase)

    async def _post(self, path: str, body: Any, *, timeout: float | None) -> tuple[Any, Reply, float]:
        start = time.monotonic()
        response = await self.request("POST", path, body, timeout=timeout)
        latency = time.monotonic() - start
        content = self.unechoed(response.content)
        try:
            payload = json.loads(content)
        except ValueError:
            raise MalformedReplyError(
                f"the server answered {response.status_code} with a body that is not JSON",
                raw=self.scrub(response.content.decode("utf-8", "replace")),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            ) from None
        return payload, response, latency

    async def create(
        self, body: dict[str, Any] | bytes, *, timeout: float | None = None, max_tokens: int | None = None
    ) -> ApiResponse:
        """POST /v1/messages (`body` as a dict, or its JSON bytes). Raises an ApiError kind on any
        failure; a 200 that is not a valid reply raises MalformedReplyError carrying the raw body
        (it was paid for)."""
        if timeout is None:
            if max_tokens is None:
                max_tokens = int((json.loads(body) if isinstance(body, bytes) else body).get("max_tokens") or 1)
            timeout = attempt_timeout(max_tokens)
        payload, response, latency = await self._post("/v1/messages", body, timeout=timeout)
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise self._error_from(response, payload=payload)
        problem = validate_message(payload)
        if problem is not None:
            raise MalformedReplyError(
                f"malformed reply: {problem}",
                raw=self.scrub(response.content.decode("utf-8", "replace")),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            )
        return ApiResponse(
            message=payload,
            request_id=response.headers.get("request-id") or payload.get("id"),
            rate_limits=RateLimitInfo.from_headers(response.headers),
            latency_s=latency,
            simulated=SIMULATOR_HEADER in response.headers,
        )

    # -- Message Batches ---------------------------------------------------------------------
    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.request(method, path, body, timeout=120.0)
        try:
            payload = json.loads(self.unechoed(response.content))
        except ValueError:
            raise TransientApiError(f"{method} {path}: the server answered with a body that is not JSON") from None
        if not isinstance(payload, dict):
            raise TransientApiError(f"{method} {path}: the server answered with JSON that is not an object")
        return payload

    async def create_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /v1/messages/batches: `requests` are `{custom_id, params}`; returns the batch object."""
        batch = await self._json("POST", "/v1/messages/batches", {"requests": requests})
        if not isinstance(batch.get("id"), str):
            raise TransientApiError("the batch was created but the reply has no `id`")
        return batch

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/messages/batches/{batch_id}")

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/messages/batches/{batch_id}/cancel")

    async def list_batches(self, *, after_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        query = f"?limit={limit}" + (f"&after_id={after_id}" if after_id else "")
        return await self._json("GET", f"/v1/messages/batches{query}")

    async def batch_results(self, results_url: str) -> AsyncIterator[dict[str, Any]]:
        """The lines of a batch's results file, parsed, streamed (a results file can be large).
        A line that is not a JSON object is yielded as `{"raw": line}`."""
        url = results_url if "://" in results_url else self.base_url + results_url
        chunks = self._stream_aiohttp(url) if self._transport is None else self._stream_httpx(url)
        pending = b""
        async for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield _result_line(self.unechoed(line))
        if pending.strip():
            yield _result_line(self.unechoed(pending))

    async def _stream_aiohttp(self, url: str) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async with self._aiohttp().get(url, headers=self._get_headers, allow_redirects=False) as response:
                if response.status >= 300:
                    reply = Reply(response.status, response.headers, await response.read(), response.reason or "")
                    raise self._redirect_error(reply, url) if response.status < 400 else self._error_from(reply)
                async for chunk in response.content.iter_chunked(1 << 16):
                    yield chunk
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentApiError(f"cannot read the batch results at {url}: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientApiError(f"reading batch results broke off ({type(exc).__name__})") from exc

    async def _stream_httpx(self, url: str) -> AsyncIterator[bytes]:
        assert self._transport is not None
        try:
            request = httpx.Request("GET", httpx.URL(url), headers=self._get_headers, extensions=self._extensions)
        except (httpx.InvalidURL, ValueError) as exc:
            raise PermanentApiError(f"cannot read the batch results at {url}: {exc}") from None
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
        except httpx.TransportError as exc:
            raise TransientApiError(f"reading batch results failed ({type(exc).__name__}: {self.scrub(str(exc))})") from exc
        try:
            if response.status_code >= 300:
                await response.aread()
                reply = Reply(response.status_code, response.headers, response.content, response.reason_phrase)
                raise self._redirect_error(reply, url) if response.status_code < 400 else self._error_from(reply)
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise TransientApiError(f"reading batch results broke off ({type(exc).__name__})") from exc
        finally:
            await response.aclose()

    async def count_tokens(self, body: Mapping[str, Any]) -> int:
        """POST /v1/messages/count_tokens with a Messages body (max_tokens is dropped)."""
        request = {k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS}
        payload, _, _ = await self._post("/v1/messages/count_tokens", request, timeout=60.0)
        tokens = payload.get("input_tokens") if isinstance(payload, dict) else None
        if not isinstance(tokens, int) or not _is_count(tokens):
            raise PermanentApiError("count_tokens answered without a whole-number `input_tokens`")
        return tokens

    def _error_from(self, response: Reply, *, payload: Any = None) -> ApiError:
        status = response.status_code
        request_id = response.headers.get("request-id")
        error_type, message = None, response.reason_phrase or f"HTTP {status}"
        try:
            if payload is None:
                payload = json.loads(response.content)
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict):
                error_type = error.get("type") if isinstance(error.get("type"), str) else None
                if isinstance(error.get("message"), str) and error["message"]:
                    message = error["message"]
            if isinstance(payload, dict) and isinstance(payload.get("request_id"), str):
                request_id = request_id or payload["request_id"]
        except (ValueError, AttributeError):
            text = response.content.decode("utf-8", "replace").strip()
            if text:
                message = text[:300]
        # An error object in a 200 body is judged by what it says it is.
        status_for_kind = _ERROR_TYPE_STATUS.get(error_type or "", 500) if status < 400 else status
        return classify_error(
            self.scrub(message),
            status=status,
            kind_status=status_for_kind,
            error_type=error_type,
            request_id=request_id,
            retry_after=retry_after_seconds(response.headers),
            should_retry=response.headers.get("x-should-retry"),
        )

    def error_from_object(self, error: Any) -> ApiError:
        """The ApiError kind of an error object in a batch result (`{"type": "error", "error": {...}}`)."""
        inner = error.get("error") if isinstance(error, dict) and isinstance(error.get("error"), dict) else error
        error_type = inner.get("type") if isinstance(inner, dict) and isinstance(inner.get("type"), str) else None
        message = inner.get("message") if isinstance(inner, dict) and isinstance(inner.get("message"), str) else None
        status = _ERROR_TYPE_STATUS.get(error_type or "", 500)
        return classify_error(
            self.scrub(message or error_type or "the batch request failed"),
            status=status, kind_status=status, error_type=error_type, request_id=None,
            retry_after=None, should_retry=None,
        )  # fmt: skip


def classify_error(
    message: str,
    *,
    status: int,
    kind_status: int,
    error_type: str | None,
    request_id: str | None,
    retry_after: float | None,
    should_retry: str | None,
) -> ApiError:
    """Retryability as a type: AuthError, RateLimitError, TransientApiError or PermanentApiError."""
    status_for_kind = kind_status
    kwargs: dict[str, Any] = {"status": status, "error_type": error_type, "request_id": request_id}
    if status_for_kind in (401, 403):
        return AuthError(message, **kwargs)
    if status_for_kind == 429 and should_retry != "false":
        # Without retry-after it is still retried, on the back-off schedule; a spend cap
        # that keeps answering 429 stops the run once its retries run out.
        return RateLimitError(message, retry_after=retry_after, **kwargs)
    retryable = status_for_kind in _RETRYABLE_STATUS or status_for_kind >= 500
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    if retryable:
        return TransientApiError(message, retry_after=retry_after, **kwargs)
    return PermanentApiError(message, **kwargs)


async def _chunks(content: bytes, size: int = 1 << 18) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def _result_line(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {"raw": line.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"raw": line.decode("utf-8", "replace")}


class _no_deadline:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
