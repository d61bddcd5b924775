"""Serving the app with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from evalrun.sim._app import create_app
from evalrun.sim._errors import ConnectionDropped
from evalrun.sim.config import SimConfig

__all__ = ["running_server", "serve"]

_STARTUP_TIMEOUT = 10.0


class _HideDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every connection the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def _uvicorn_config(config: SimConfig, host: str, port: int) -> uvicorn.Config:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDrops) for f in logger.filters):
        logger.addFilter(_HideDrops())
    return uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # The benchmarks open many connections at once; do not let the backlog be the limit.
        backlog=4096,
    )


@contextmanager
def running_server(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the simulator in a background thread; yields its base URL, stops it on exit.

    `port=0` picks a free port. The socket is bound here, before the thread starts, so the URL
    is known and connectable as soon as this yields.
    """
    # The server's event loop runs in a thread beside the client's: with the default 5 ms GIL
    # switch interval every round trip waits for handoffs. A short interval, while it runs.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, 0.0005))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a reply's head and body leave at once instead of the
    # body waiting ~40 ms for the client's delayed ACK (Nagle's algorithm).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(config, host, bound_port))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"evalrun-sim-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the simulator did not start on {host}:{bound_port}")
        time.sleep(0.005)
    url_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{url_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_STARTUP_TIMEOUT)
        sock.close()
        sys.setswitchinterval(interval)


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None) -> None:
    """Run the simulator in the foreground until interrupted (the `evalrun sim` command).

    `sock`: an already bound socket (so the caller can report a busy port before anything starts)."""
    server = uvicorn.Server(_uvicorn_config(config, host, port))
    server.run(sockets=[sock] if sock is not None else None)
