"""The Messages API over one transport path: headers, timeouts, reply validation, error mapping.

This is the only module that maps status codes and transport failures (`WireError`, which the
transports in transports.py make of the HTTP libraries' exceptions) to `ApiError` kinds;
everything above it sees those kinds. Every request takes the same path — build the request, hand it to a
`Transport`, read the reply (decoded size capped), map a failure, scrub the key, validate the
reply — whichever transport carries it: aiohttp in production (`AiohttpTransport`), or any HTTPX
transport (`httpx.MockTransport`, `httpx.ASGITransport`) adapted by `HttpxTransport` in tests
and for the in-process simulator. A transport only moves bytes; it reports its own failures as
`WireError`, which the client maps like everything else.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from evalrun.errors import (
    ApiError,
    AuthError,
    MalformedReplyError,
    PermanentApiError,
    RateLimitError,
    TransientApiError,
)
from evalrun.messages_api import COUNT_TOKENS_FIELDS, is_count, validate_message
from evalrun.send.headers import RateLimitInfo, retry_after_seconds
from evalrun.send.scrub import KeyScrubber
from evalrun.send.transports import (
    CONNECT_TIMEOUT_S,
    READ_IDLE_TIMEOUT_S,
    AiohttpTransport,
    HttpxTransport,
    Transport,
    WireError,
    WireRequest,
    WireResponse,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "READ_IDLE_TIMEOUT_S",
    "AiohttpTransport",
    "ApiResponse",
    "HttpxTransport",
    "MessagesClient",
    "RateLimitInfo",
    "Reply",
    "Transport",
    "WireError",
    "WireRequest",
    "WireResponse",
    "attempt_timeout",
    "check_api_key",
    "validate_message",
]

SIMULATOR_HEADER = "x-evalrun-simulator"
# The most a reply may inflate to once decoded (a gzip body of a few KB can inflate to GBs): far
# above the longest answer max_tokens allows, far below what would exhaust memory.
MAX_REPLY_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024  # an error body is read this far, no further
MAX_RESULT_LINE_BYTES = 64 * 1024 * 1024  # one line of a batch results file
# A retry-after above this is not waited out silently: the wait is capped and the error says so.
MAX_RETRY_AFTER_S = 300.0
_RETRYABLE_STATUS = {408, 409, 429}
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


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in for http and https. Raises ValueError
    for a URL that cannot be read (`http://[::1`)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


@dataclass(frozen=True)
class ApiResponse:
    """A successful Messages reply and what its headers said. `latency_s` is the server's time:
    from the request leaving (after waiting for a connection) to the reply arriving whole;
    `queued_s` is the time before that, spent waiting in the client for a connection."""

    message: dict[str, Any]
    request_id: str | None
    rate_limits: RateLimitInfo
    latency_s: float
    simulated: bool = False
    queued_s: float = 0.0


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange's answer, read completely, whichever transport carried it."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes
    reason_phrase: str = ""
    sent_at: float = 0.0  # time.monotonic() when the request left


class MessagesClient:
    """One endpoint, key and API version, over one `Transport` (aiohttp unless one is given; an
    HTTPX transport is adapted). Every transport's failures map to the same ApiError kinds."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        api_version: str = "2023-06-01",
        transport: Transport | Any | None = None,
        max_connections: int = 512,
        beta: str | None = None,
        read_idle_timeout: float = READ_IDLE_TIMEOUT_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        if api_key is not None and check_api_key(api_key):
            raise ValueError("the API key cannot be sent in a header")
        headers = {"anthropic-version": api_version, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        if beta:
            headers["anthropic-beta"] = beta
        self.base_url = base_url.rstrip("/")
        try:
            self._origin = origin_of(self.base_url)
        except ValueError as exc:
            raise PermanentApiError(
                f"base_url {base_url!r} is not a URL evalrun can send to ({exc})"
            ) from None
        self.api_version = api_version
        self._scrubber = KeyScrubber(api_key)
        if transport is None:
            transport = AiohttpTransport(
                base_url=self.base_url, max_connections=max_connections, read_idle_timeout=read_idle_timeout
            )
        elif not hasattr(transport, "keeps_deadline"):
            transport = HttpxTransport(transport, read_idle_timeout=read_idle_timeout)
        self._transport: Transport = transport
        self._max_reply = max_reply_bytes
        self._headers = headers
        self._get_headers = {k: v for k, v in headers.items() if k != "content-type"}
        self.talks_to_simulator = False  # set once any response announced evalrun's simulator

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
            await self._transport.aclose()

    def scrub(self, text: str) -> str:
        """`text` with this client's key blanked out (whole, or any run of 8+ characters of it)
        and control characters taken out: a server that echoes the key back must not get it
        into the store, the reports or the terminal."""
        return self._scrubber.text(text)

    def unechoed(self, content: bytes) -> bytes:
        """A body as received, with any run of 8+ characters of the key's secret part blanked
        out if the server echoed it anywhere in it — in a reply's text too, which would otherwise
        be stored. Only the secret part counts: every Anthropic key starts `sk-ant-api03-`, and a
        reply that merely names that prefix is an answer, not a leak."""
        return self._scrubber.body(content)

    # -- one exchange --------------------------------------------------------------------------
    def _url(self, path: str, *, what: str = "send to") -> str:
        """`path` under the endpoint, or an absolute URL, which must be on the endpoint's origin:
        the key goes to the configured endpoint and nowhere else."""
        if "://" not in path:
            return self.base_url + path
        try:
            same = origin_of(path) == self._origin
        except ValueError:
            same = False
        if not same:
            raise PermanentApiError(
                f"refusing to {what} {self.scrub(path)}: it is not on the configured endpoint {self.base_url} "
                "(the API key is sent to that endpoint only)"
            )
        return path

    def _wire(self, method: str, url: str, body: Any, timeout: float | None) -> WireRequest:
        if body is None:
            return WireRequest(method, url, self._get_headers, b"", timeout)
        content = (
            body
            if isinstance(body, bytes)
            else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        )
        return WireRequest(method, url, self._headers, content, timeout)

    async def _open(self, request: WireRequest) -> WireResponse:
        try:
            response = await self._transport.send(request)
        except WireError as exc:
            raise self._wire_error(exc, request.url) from exc
        if SIMULATOR_HEADER in response.headers:
            self.talks_to_simulator = True
        return response

    def _wire_error(self, exc: WireError, url: str) -> ApiError:
        if exc.permanent:
            return PermanentApiError(f"cannot send to {self.scrub(url)}: {self.scrub(str(exc))}")
        return TransientApiError(
            self.scrub(str(exc)), connection=exc.connection, error_type="timeout" if exc.timeout else None
        )

    async def _read(self, response: WireResponse, limit: int) -> bytes:
        """The whole body, decoded, at most `limit` bytes (a compressed body can inflate to GBs)."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in response.chunks:
                size += len(chunk)
                if size > limit:
                    raise MalformedReplyError(
                        f"the reply inflated past {limit:,} bytes once decoded; not read further",
                        raw=self.scrub(b"".join(parts)[:4096].decode("utf-8", "replace")),
                        status=response.status,
                        request_id=response.headers.get("request-id"),
                    )
                parts.append(chunk)
        except WireError as exc:
            raise self._wire_error(exc, "") from exc
        return b"".join(parts)

    async def _exchange(self, request: WireRequest) -> Reply:
        response = await self._open(request)
        try:
            limit = self._max_reply if response.status < 300 else MAX_ERROR_BYTES
            content = await self._read(response, limit)
        finally:
            await _close(response)
        return Reply(response.status, response.headers, content, response.reason, response.sent_at)

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Reply:
        """One HTTP exchange, read completely, mapped to ApiError kinds on failure (any status ≥ 300).
        `body` is JSON-able, or the JSON bytes themselves."""
        url = self._url(path)
        wire = self._wire(method, url, body, timeout)
        try:
            if self._transport.keeps_deadline or timeout is None:
                reply = await self._exchange(wire)
            else:
                with anyio.fail_after(timeout):
                    reply = await self._exchange(wire)
        except TimeoutError:
            raise TransientApiError(
                f"no complete reply within {timeout:g} s (the attempt's deadline)", error_type="timeout"
            ) from None
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
            f"{self.scrub(url)} redirects ({reply.status_code}) to {where}; evalrun does not follow redirects: "
            "set base_url to the address the API really answers at",
            status=reply.status_code,
        )

    async def _post(self, path: str, body: Any, *, timeout: float | None) -> tuple[Any, Reply, float, float]:
        start = time.monotonic()
        response = await self.request("POST", path, body, timeout=timeout)
        arrived = time.monotonic()
        sent_at = min(max(response.sent_at, start), arrived)
        content = self.unechoed(response.content)
        try:
            payload = json.loads(content)
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply to read" if isinstance(exc, RecursionError) else "not JSON"
            raise MalformedReplyError(
                f"the server answered {response.status_code} with a body that is {why}",
                raw=self.scrub(content.decode("utf-8", "replace")),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            ) from None
        return payload, response, arrived - sent_at, sent_at - start

    async def create(
        self, body: dict[str, Any] | bytes, *, timeout: float | None = None, max_tokens: int | None = None
    ) -> ApiResponse:
        """POST /v1/messages (`body` as a dict, or its JSON bytes). Raises an ApiError kind on any
        failure; a 200 that is not a valid reply raises MalformedReplyError carrying the raw body
        (it was paid for)."""
        if timeout is None:
            if max_tokens is None:
                max_tokens = int(
                    (json.loads(body) if isinstance(body, bytes) else body).get("max_tokens") or 1
                )
            timeout = attempt_timeout(max_tokens)
        payload, response, latency, queued = await self._post("/v1/messages", body, timeout=timeout)
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise self._error_from(response, payload=payload)
        problem = validate_message(payload)
        if problem is not None:
            raise MalformedReplyError(
                f"malformed reply: {problem}",
                raw=self.scrub(self.unechoed(response.content).decode("utf-8", "replace")),
                status=response.status_code,
                request_id=response.headers.get("request-id"),
            )
        return ApiResponse(
            message=payload,
            request_id=response.headers.get("request-id") or payload.get("id"),
            rate_limits=RateLimitInfo.from_headers(response.headers),
            latency_s=latency,
            simulated=SIMULATOR_HEADER in response.headers,
            queued_s=queued,
        )

    # -- Message Batches ---------------------------------------------------------------------
    async def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.request(method, path, body, timeout=120.0)
        try:
            payload = json.loads(self.unechoed(response.content))
        except (ValueError, RecursionError):
            raise TransientApiError(
                f"{method} {path}: the server answered with a body that is not JSON"
            ) from None
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
        return await self._json("GET", f"/v1/messages/batches/{urllib.parse.quote(batch_id, safe='')}")

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._json(
            "POST", f"/v1/messages/batches/{urllib.parse.quote(batch_id, safe='')}/cancel"
        )

    async def list_batches(self, *, after_id: str | None = None, limit: int = 100) -> dict[str, Any]:
        query = f"?limit={limit}" + (f"&after_id={urllib.parse.quote(after_id, safe='')}" if after_id else "")
        return await self._json("GET", f"/v1/messages/batches{query}")

    async def batch_results(self, results_url: str) -> AsyncIterator[dict[str, Any]]:
        """The lines of a batch's results file, parsed, streamed (a results file can be large).
        A line that is not a JSON object is yielded as `{"raw": line}`. A `results_url` on another
        origin than the endpoint's is refused (PermanentApiError naming it): the key goes nowhere
        else."""
        url = self._url(results_url, what="read batch results from")
        response = await self._open(self._wire("GET", url, None, None))
        try:
            if response.status >= 300:
                reply = Reply(
                    response.status,
                    response.headers,
                    await self._read(response, MAX_ERROR_BYTES),
                    response.reason,
                )
                raise self._redirect_error(reply, url) if response.status < 400 else self._error_from(reply)
            async for line in self._lines(response):
                yield _result_line(self.unechoed(line))
        finally:
            await _close(response)

    async def _lines(self, response: WireResponse) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for chunk in response.chunks:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
                if len(pending) > MAX_RESULT_LINE_BYTES:
                    raise PermanentApiError(
                        f"a line of the batch results is longer than {MAX_RESULT_LINE_BYTES:,} bytes"
                    )
        except WireError as exc:
            raise TransientApiError(f"reading batch results broke off ({self.scrub(str(exc))})") from exc
        if pending.strip():
            yield pending

    async def count_tokens(self, body: Mapping[str, Any]) -> int:
        """POST /v1/messages/count_tokens with a Messages body (max_tokens is dropped). A transient
        failure is tried again (three attempts in all) before it is raised."""
        request = {k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS}
        for attempt in range(3):
            try:
                payload, _, _, _ = await self._post("/v1/messages/count_tokens", request, timeout=60.0)
                break
            except (TransientApiError, MalformedReplyError):
                if attempt == 2:
                    raise
                await anyio.sleep(0.5 * 2**attempt)
        tokens = payload.get("input_tokens") if isinstance(payload, dict) else None
        if not is_count(tokens):
            raise PermanentApiError("count_tokens answered without a whole-number `input_tokens`")
        assert isinstance(tokens, int)
        return tokens

    def _error_from(self, response: Reply, *, payload: Any = None) -> ApiError:
        status = response.status_code
        error_type, message, request_id = _error_fields(response, payload)
        # An error object in a 200 body is judged by what it says it is.
        status_for_kind = _ERROR_TYPE_STATUS.get(error_type or "", 500) if status < 400 else status
        retry_after = retry_after_seconds(response.headers)
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            message += (
                f" (the server asked to wait {retry_after:,.0f} s; waiting {MAX_RETRY_AFTER_S:g} s at most)"
            )
            retry_after = MAX_RETRY_AFTER_S
        return classify_error(
            self.scrub(message),
            status=status,
            kind_status=status_for_kind,
            error_type=error_type,
            request_id=request_id,
            retry_after=retry_after,
            should_retry=response.headers.get("x-should-retry"),
        )

    def error_from_object(self, error: Any) -> ApiError:
        """The ApiError kind of an error object in a batch result (`{"type": "error", "error": {...}}`)."""
        inner = (
            error.get("error") if isinstance(error, dict) and isinstance(error.get("error"), dict) else error
        )
        error_type = (
            inner.get("type") if isinstance(inner, dict) and isinstance(inner.get("type"), str) else None
        )
        message = (
            inner.get("message")
            if isinstance(inner, dict) and isinstance(inner.get("message"), str)
            else None
        )
        status = _ERROR_TYPE_STATUS.get(error_type or "", 500)
        return classify_error(
            self.scrub(message or error_type or "the batch request failed"),
            status=status, kind_status=status, error_type=error_type, request_id=None,
            retry_after=None, should_retry=None,
        )  # fmt: skip


def _error_fields(response: Reply, payload: Any) -> tuple[str | None, str, str | None]:
    """(error type, message, request id) of an error reply."""
    request_id = response.headers.get("request-id")
    error_type, message = None, response.reason_phrase or f"HTTP {response.status_code}"
    try:
        if payload is None:
            payload = json.loads(response.content)
    except (ValueError, RecursionError):
        text = response.content.decode("utf-8", "replace").strip()
        return None, text[:300] if text else message, request_id
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error_type = error.get("type") if isinstance(error.get("type"), str) else None
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
    if isinstance(payload, dict) and isinstance(payload.get("request_id"), str):
        request_id = request_id or payload["request_id"]
    return error_type, message, request_id


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


async def _close(response: WireResponse) -> None:
    closing = response.close()
    if closing is not None:  # shielded: the connection goes back even under cancellation
        with anyio.CancelScope(shield=True):
            await closing


def _result_line(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return {"raw": line.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"raw": line.decode("utf-8", "replace")}
