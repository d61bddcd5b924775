"""An independent fake of the Messages API for the benchmarks (not evalrun's simulator).

aiohttp only, no evalrun import: what the benchmarks measure against is not evalrun's own code.
It answers POST /v1/messages with a text reply and its usage (a JSON answer when the request asks
for structured output), after an optional latency, and can rate-limit like the API: a request
bucket (`rpm`, `burst`) whose state it reports in `anthropic-ratelimit-requests-*` headers, and a
429 with `retry-after` when the bucket is empty. POST /v1/messages/count_tokens counts words.

GET /_stats gives what it saw: requests by status, and the wall-clock time (time.time()) of the
first and last request (`?times=1`: of every request), so a benchmark in another process can time "start to first request";
POST /_reset forgets it.

Run it alone: `python bench/fakeapi.py --port 8765 --latency-ms 300 --rpm 3000 --burst 50`;
from Python, `with fake_api(latency_ms=300) as url:` starts it in a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"


class Bucket:
    """`rpm` a minute, holding at most `burst` (a minute's worth when unset)."""

    def __init__(self, rpm: float, burst: float | None) -> None:
        self.rate = rpm / 60.0
        self.limit = rpm
        self.capacity = burst if burst is not None else rpm
        self.level = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 when a request may go (and it is charged), else the seconds until one may."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level >= 1.0:
            self.level -= 1.0
            return 0.0
        return (1.0 - self.level) / self.rate

    def headers(self) -> dict[str, str]:
        reset = datetime.now(UTC) + timedelta(seconds=(self.capacity - self.level) / self.rate)
        return {
            "anthropic-ratelimit-requests-limit": str(int(self.limit)),
            "anthropic-ratelimit-requests-remaining": str(max(0, math.floor(self.level))),
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class FakeAPI:
    def __init__(self, *, latency_ms: float = 0.0, rpm: float | None = None, burst: float | None = None) -> None:
        self.latency = latency_ms / 1000.0
        self.bucket = Bucket(rpm, burst) if rpm else None
        self.statuses: Counter[int] = Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0
        self.arrivals: list[float] = []  # time.time() of each request, for `/_stats?times=1`

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_reset", self.reset)
        return app

    def _seen(self) -> None:
        now = time.time()
        self.count += 1
        self.arrivals.append(now)
        if self.first is None:
            self.first = now
        self.last = now

    async def messages(self, request: web.Request) -> web.Response:
        self._seen()
        body = await request.json()
        headers = {"request-id": f"req_{self.count}"}
        if self.bucket is not None:
            wait = self.bucket.take()
            headers.update(self.bucket.headers())
            if wait > 0.0:
                self.statuses[429] += 1
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                error = {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
                return web.json_response(error, status=429, headers=headers)
        if self.latency:
            await asyncio.sleep(self.latency)
        words = len(json.dumps(body.get("messages", []))) // 4 + len(str(body.get("system", ""))) // 4
        structured = (body.get("output_config") or {}).get("format")
        text = json.dumps({"answer": "A"}) if structured else "A"
        message = {
            "id": f"msg_{self.count}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "unknown"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, words), "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "service_tier": "standard"},
        }  # fmt: skip
        self.statuses[200] += 1
        return web.json_response(message, headers=headers)

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"input_tokens": max(1, len(json.dumps(body.get("messages", []))) // 4)})

    async def reset(self, request: web.Request) -> web.Response:
        self.statuses.clear()
        self.first = self.last = None
        self.count = 0
        self.arrivals.clear()
        return web.json_response({})

    async def stats(self, request: web.Request) -> web.Response:
        seen: dict[str, Any] = {"count": self.count, "first": self.first, "last": self.last,
                                "statuses": dict(self.statuses)}  # fmt: skip
        if request.query.get("times"):
            seen["times"] = self.arrivals
        return web.json_response(seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fake_api(*, latency_ms: float = 0.0, rpm: float | None = None, burst: float | None = None) -> Iterator[str]:
    """Serve the fake in a child process (so it never shares a CPU budget with the client being
    measured); yields its base URL."""
    port = free_port()
    args = [sys.executable, os.path.abspath(__file__), "--port", str(port), "--latency-ms", str(latency_ms)]
    if rpm:
        args += ["--rpm", str(rpm)]
    if burst:
        args += ["--burst", str(burst)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the fake API did not start") from None
                time.sleep(0.02)
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        process.wait(5)


def stats(url: str, *, times: bool = False) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_stats" + ("?times=1" if times else ""), timeout=10) as response:
        return dict(json.load(response))


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/_reset", method="POST"), timeout=10).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rpm", type=float)
    parser.add_argument("--burst", type=float)
    args = parser.parse_args()
    api = FakeAPI(latency_ms=args.latency_ms, rpm=args.rpm, burst=args.burst)
    web.run_app(api.app(), host=HOST, port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
