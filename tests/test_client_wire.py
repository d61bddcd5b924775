"""The client's own wire path (aiohttp, no injected transport) against raw loopback servers:
what a hostile or misconfigured server can do to a request and to the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from evalrun.errors import PermanentApiError, TransientApiError
from evalrun.send.client import MessagesClient

KEY = "sk-ant-test-SECRETKEY-0123456789abcdefghijklmnopqrstuvwxyz"
BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = json.dumps({
    "type": "message", "id": "msg_1", "role": "assistant", "model": "m",
    "content": [{"type": "text", "text": "B"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 1},
}).encode()  # fmt: skip

Handler = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback HTTP/1.1 server that hands each request (head and body) to `handler`."""
    seen: list[bytes] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            request = head + (await reader.readexactly(length) if length else b"")
            seen.append(request)
            await handler(writer, request)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


def response(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n{headers}\r\n".encode() + body)  # fmt: skip (one request per connection)


async def answer(writer: asyncio.StreamWriter, _: bytes) -> None:
    writer.write(response("200 OK", MESSAGE))
    await writer.drain()


@pytest.mark.anyio
async def test_the_wire_path_answers() -> None:
    async with raw_server(answer) as (port, seen), MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY) as client:
        reply = await client.create(BODY)
    assert reply.message["content"][0]["text"] == "B"
    assert b"x-api-key: " + KEY.encode() in seen[0]


@pytest.mark.anyio
async def test_a_redirect_is_never_followed_and_the_key_stays_home() -> None:
    async with raw_server(answer) as (elsewhere, stolen):

        async def redirect(writer: asyncio.StreamWriter, request: bytes) -> None:
            status = "307 Temporary Redirect" if request.startswith(b"POST") else "302 Found"
            writer.write(response(status, headers=f"location: http://127.0.0.1:{elsewhere}/steal\r\n"))
            await writer.drain()

        async with raw_server(redirect) as (port, _), MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY) as client:
            with pytest.raises(PermanentApiError, match=r"redirects \(307\).*does not follow redirects"):
                await client.create(BODY)
            with pytest.raises(PermanentApiError, match=r"redirects \(302\)"):
                _ = [line async for line in client.batch_results("/v1/messages/batches/b/results")]
    assert stolen == []  # the other host never heard of the request, nor of the key


@pytest.mark.anyio
async def test_the_attempt_deadline_says_so_on_the_wire_path() -> None:
    async def trickle(writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(100):  # a byte at a time: never idle long enough for the read timeout
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with raw_server(trickle) as (port, _), MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY) as client:
        # The message says the deadline ended it (the trickle itself lasts 10 s and then
        # ends short of its content-length, a different error).
        with pytest.raises(TransientApiError, match=r"no complete reply within 1\.5 s \(the attempt's deadline\)"):
            await client.create(BODY, timeout=1.5)


@pytest.mark.anyio
async def test_a_server_cookie_is_not_sent_back() -> None:
    async def with_cookie(writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(response("200 OK", MESSAGE, headers="set-cookie: track=me; Path=/\r\n"))
        await writer.drain()

    async with raw_server(with_cookie) as (port, seen), MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY) as client:
        await client.create(BODY)
        await client.create(BODY)
    assert b"track=me" not in seen[1]


@pytest.mark.anyio
async def test_a_long_response_header_is_accepted() -> None:
    async def long_header(writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(response("200 OK", MESSAGE, headers=f"set-cookie: c={'x' * 20_000}\r\n"))
        await writer.drain()

    async with raw_server(long_header) as (port, _), MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY) as client:
        assert (await client.create(BODY)).message["id"] == "msg_1"


def test_a_key_echoed_in_part_is_blanked_too() -> None:
    client = MessagesClient(base_url="http://127.0.0.1:1", api_key=KEY)
    cut = f"Got more than 8190 bytes when reading: b'x-echo: {KEY[:30]}"  # an error text quoting a line cut short
    assert KEY[:12] not in client.scrub(cut)
    assert KEY[-12:] not in client.scrub(f"...{KEY[-20:]}' (tail)")
    assert client.scrub(f"a {KEY} b") == "a [redacted key] b"
    assert client.scrub("nothing of the key here") == "nothing of the key here"


def test_a_reply_that_names_the_public_key_prefix_is_left_alone() -> None:
    key = "sk-ant-api03-EXAMPLE-not-a-real-key-0000000000"
    client = MessagesClient(base_url="http://127.0.0.1:1", api_key=key)
    answer = b'{"text": "set api_key=\\"sk-ant-api03-...\\" in the environment"}'
    assert client.unechoed(answer) == answer  # an answer about keys, not a leak
    echoed = client.unechoed(f'{{"text": "yours is {key}, or {key[:24]}"}}'.encode()).decode()
    assert key[13:21] not in echoed and "yours is [redacted key]" in echoed


@pytest.mark.anyio
async def test_closing_under_cancellation_closes_every_session() -> None:
    async with raw_server(answer) as (port, _):
        clients = [MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY, api_version=v)
                   for v in ("2023-06-01", "2026-10-21")]  # fmt: skip
        sessions = []
        for client in clients:
            await client.create(BODY)
            sessions.append(client._transport._session)  # type: ignore[attr-defined]  # the aiohttp session it opened
        with anyio.CancelScope() as scope:
            scope.cancel()  # as after a second Ctrl-C
            for client in clients:
                await client.aclose()
    assert all(session.closed for session in sessions)


@pytest.mark.anyio
async def test_requests_go_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    async def proxy(writer: asyncio.StreamWriter, _: bytes) -> None:
        writer.write(response("200 OK", MESSAGE))
        await writer.drain()

    async with raw_server(proxy) as (port, seen):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with MessagesClient(base_url="http://api.invalid", api_key=KEY) as client:
            assert (await client.create(BODY)).message["id"] == "msg_1"
        monkeypatch.setenv("NO_PROXY", "api.invalid")
        async with MessagesClient(base_url="http://api.invalid", api_key=KEY) as client:
            with pytest.raises(TransientApiError, match="connection failed"):  # straight to a host that does not exist
                await client.create(BODY, timeout=5)
    assert len(seen) == 1 and seen[0].startswith(b"POST http://api.invalid/v1/messages")
