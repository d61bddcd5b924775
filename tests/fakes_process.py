"""Waiting for observable states instead of for seconds.

A test that drives another process or a server must not guess how long something takes: on a
loaded machine any guess is wrong. These helpers wait for a condition (a line on stderr, a count
of requests a server holds, a row in a store) with one generous overall timeout, and the gated
simulator makes "a run with requests in flight" a state a test can reach and hold.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import anyio
import uvicorn

from evalrun.sim import SimConfig, create_app

# Generous on purpose: a condition that holds in 50 ms alone may take seconds beside two CPU hogs,
# and a test that times out here fails with the condition's name, not a hang.
PATIENCE_S = 60.0


def wait_until(condition: Callable[[], object], what: str, *, timeout: float = PATIENCE_S) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Lines:
    """The lines of a child's pipe, read by a thread as they come (so the pipe never fills)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                self._queue.put(raw.decode("utf-8", "replace"))
        self._queue.put(None)

    def wait_for(self, text: str, *, timeout: float = PATIENCE_S) -> str:
        """The first line (seen so far or to come) that contains `text`."""
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout:g} s; saw {self.seen!r}") from None
            if line is None:
                raise AssertionError(f"the pipe closed without a line with {text!r}; saw {self.seen!r}")
            self.seen.append(line)
            if text in line:
                return line

    def text(self, *, timeout: float = PATIENCE_S) -> str:
        """Everything, once the pipe has closed (the child has exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)


class Gate:
    """ASGI middleware: lets the first `open_for` POST /v1/messages through, holds the rest.

    Held requests wait until `release()`; `received` counts every request that reached the gate,
    so "every concurrency slot is taken" and "nothing new was sent" are things a test can see.
    """

    def __init__(self, app: Any, open_for: int) -> None:
        self.app = app
        self.open_for = open_for
        self.received = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return 0 if self._released.is_set() else max(0, self.received - self.open_for)

    def release(self) -> None:
        self._released.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/messages":
            with self._lock:
                self.received += 1
                number = self.received
            if number > self.open_for:
                while not self._released.is_set():  # a thread's event, polled from the server's loop
                    await anyio.sleep(0.01)
        await self.app(scope, receive, send)


@contextmanager
def gated_server(config: SimConfig, *, open_for: int) -> Iterator[tuple[str, Gate]]:
    """The simulator on loopback behind a `Gate`; yields its URL and the gate, released on exit."""
    gate = Gate(create_app(config), open_for)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(gate, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the gated simulator to start")
        assert server.started, "the gated simulator did not start"
        yield f"http://127.0.0.1:{port}", gate
    finally:
        gate.release()
        server.should_exit = True
        thread.join(PATIENCE_S)
        sock.close()
