"""What carries a request: bytes in, bytes out, below the client's error mapping.

`MessagesClient` (client.py) builds every request, reads every reply and maps every failure in
one code path; a `Transport` only moves bytes. `AiohttpTransport` is what users run;
`HttpxTransport` adapts any HTTPX transport (`httpx.MockTransport` handlers in tests,
`httpx.ASGITransport` for the simulator in the same process) to the same interface, so a test
goes through the same mapping, scrubbing, validation and size caps. The HTTP libraries'
exceptions stop here: a transport reports its failures as `WireError` (or TimeoutError at the
attempt's deadline), and client.py alone turns them, and status codes, into ApiError kinds.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["AiohttpTransport", "HttpxTransport", "Transport", "WireError", "WireRequest", "WireResponse"]

CONNECT_TIMEOUT_S = 5.0
# A reply must start arriving, and keep arriving, within this many seconds of silence.
READ_IDLE_TIMEOUT_S = 120.0
_STREAM_ABOVE = 512 * 1024  # bytes of request body sent in one piece
_MAX_HEADER_LINE = 65536  # aiohttp's default 8,190 would fail (and retry) a long set-cookie


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY)."""
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


async def _chunks(content: bytes, size: int = 1 << 18) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


# -- transports: bytes in, bytes out ---------------------------------------------------------------
@dataclass(frozen=True)
class WireRequest:
    """One HTTP request as the client builds it. `timeout` is the attempt's whole deadline
    (None: only the idle-read timeout applies)."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes
    timeout: float | None


@dataclass
class WireResponse:
    """A response whose head has arrived; its body is read from `chunks` (decoded, in pieces)
    and `close` gives the connection back. `sent_at` (time.monotonic) is when the request left:
    after any wait for a connection."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    reason: str
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None] | None]  # None when the connection went back at once
    sent_at: float


class WireError(Exception):
    """A transport's own failure, before the client maps it to an ApiError kind: `connection`
    when no connection was made (nothing reached the server), `permanent` when trying again
    cannot help (a URL that cannot be sent to), `timeout` for a timeout of the transport's."""

    def __init__(
        self, message: str, *, connection: bool = False, permanent: bool = False, timeout: bool = False
    ) -> None:
        super().__init__(message)
        self.connection = connection
        self.permanent = permanent
        self.timeout = timeout


class Transport(Protocol):
    """What carries a request: `send` returns once the response head is in (raising WireError,
    or TimeoutError at the deadline, on failure). `keeps_deadline` when the transport enforces
    `WireRequest.timeout` over the whole exchange itself; otherwise the client does."""

    keeps_deadline: bool

    async def send(self, request: WireRequest) -> WireResponse: ...

    async def aclose(self) -> None: ...


class _SentAt:
    """Where aiohttp's trace hook notes when a request's headers went out."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0.0


class AiohttpTransport:
    """Requests straight to aiohttp (one session, a connection pool sized to the concurrency):
    an HTTP client layer on top of it is most of the client CPU per request and evalrun needs
    none of it."""

    keeps_deadline = True  # aiohttp keeps the deadline itself: cheaper than a cancel scope per request

    def __init__(
        self, *, base_url: str, max_connections: int = 512, read_idle_timeout: float = READ_IDLE_TIMEOUT_S
    ) -> None:
        self.base_url = base_url
        self._max_connections = max_connections
        self._read_idle = read_idle_timeout
        self._session: Any = None  # an aiohttp.ClientSession, made inside the running event loop
        self._timeouts: dict[float | None, Any] = {}

    def _aiohttp(self) -> Any:
        if self._session is None:
            import aiohttp

            async def headers_sent(session: Any, context: Any, params: Any) -> None:
                if isinstance(context.trace_request_ctx, _SentAt):
                    context.trace_request_ctx.at = time.monotonic()

            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(headers_sent)
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300, ssl=_ssl_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self._read_idle
                ),
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
                trace_configs=[trace],
            )
        return self._session

    async def send(self, request: WireRequest) -> WireResponse:
        import aiohttp

        session = self._aiohttp()
        limits = self._timeouts.get(request.timeout)
        if limits is None:
            limits = self._timeouts[request.timeout] = aiohttp.ClientTimeout(
                total=request.timeout, sock_connect=CONNECT_TIMEOUT_S, sock_read=self._read_idle
            )
        data: Any = request.content or None
        headers = request.headers
        if len(request.content) > _STREAM_ABOVE:
            # A large body (a batch) goes in chunks, so sending it does not hold the event loop.
            data = _chunks(request.content)
            headers = {**headers, "content-length": str(len(request.content))}
        sent = _SentAt()
        try:
            response = await session.request(
                request.method, request.url, data=data, headers=headers, timeout=limits,
                allow_redirects=False, trace_request_ctx=sent,
            )  # fmt: skip
        except Exception as exc:
            if (failure := _aiohttp_failure(exc)) is None:
                raise
            raise failure from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_chunked(1 << 16):
                    yield chunk
            except Exception as exc:
                if (failure := _aiohttp_failure(exc)) is None:
                    raise
                raise failure from exc

        def close() -> None:
            response.release()

        return WireResponse(
            response.status,
            response.headers,
            response.reason or "",
            chunks(),
            close,
            sent.at or time.monotonic(),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _aiohttp_failure(exc: Exception) -> WireError | None:
    """An aiohttp exception as a WireError; None for one that goes up as it is (TimeoutError at
    the attempt's deadline, anything unknown)."""
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.SocketTimeoutError):
        connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
        return WireError(f"timed out ({type(exc).__name__})", connection=connect, timeout=True)
    if isinstance(exc, TimeoutError):  # before OSError, its base class: the attempt's own deadline
        return None
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return WireError(str(exc), permanent=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # aiohttp's own text names `ssl:default` even for a plain-http URL: say it plainly.
        error = exc.os_error
        number = error.errno or 0
        why = os.strerror(number) if number > 0 else (error.strerror or str(error))
        return WireError(f"connection failed (cannot connect to {exc.host}:{exc.port}: {why})", connection=True)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return WireError(f"connection failed ({type(exc).__name__}: {exc})")
    return None


class HttpxTransport:
    """Any HTTPX transport behind the `Transport` interface: `httpx.MockTransport` handlers in
    tests, `httpx.ASGITransport` for an app in the same process."""

    keeps_deadline = False

    def __init__(self, transport: Any, *, read_idle_timeout: float = READ_IDLE_TIMEOUT_S) -> None:
        import httpx

        self.inner: httpx.AsyncBaseTransport = transport
        timeout = httpx.Timeout(read_idle_timeout, connect=CONNECT_TIMEOUT_S)
        self._extensions = {"timeout": timeout.as_dict()}

    async def send(self, request: WireRequest) -> WireResponse:
        import httpx

        payload: bytes | AsyncIterator[bytes] = request.content
        headers = request.headers
        if len(request.content) > _STREAM_ABOVE:
            headers = {**headers, "content-length": str(len(request.content))}
            payload = _chunks(request.content)
        try:
            outgoing = httpx.Request(
                request.method, request.url, headers=headers, content=payload, extensions=self._extensions
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise WireError(str(exc), permanent=True) from None
        sent_at = time.monotonic()
        try:
            response = await self.inner.handle_async_request(outgoing)
        except Exception as exc:
            if (failure := _httpx_failure(exc)) is None:
                raise
            raise failure from exc
        response.request = outgoing

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            except Exception as exc:
                if (failure := _httpx_failure(exc)) is None:
                    raise
                raise failure from exc

        return WireResponse(
            response.status_code, response.headers, response.reason_phrase, chunks(), response.aclose, sent_at
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def _httpx_failure(exc: Exception) -> WireError | None:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return WireError(
            f"timed out ({type(exc).__name__})",
            connection=isinstance(exc, httpx.ConnectTimeout),
            timeout=True,
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return WireError(str(exc), permanent=True)
    if isinstance(exc, httpx.TransportError | httpx.DecodingError):
        return WireError(
            f"connection failed ({type(exc).__name__}: {exc})", connection=isinstance(exc, httpx.ConnectError)
        )
    return None
