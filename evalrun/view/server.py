"""Running the viewer: a socket bound first (so the printed address has the real port, even for
`--port 0`), then Uvicorn serving the app on it until Ctrl-C."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from evalrun.errors import EvalrunError

__all__ = ["ViewerBindError", "bind", "serve", "viewer_url"]


class ViewerBindError(EvalrunError):
    """The viewer cannot listen on the address asked for."""

    exit_code = 2


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); `ViewerBindError` with the reason when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ViewerBindError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def viewer_url(host: str, port: int, token: str) -> str:
    """The address printed at start: the page with the session token."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(root: Path, *, host: str, port: int, reviewer: str, announce: Callable[[str], None]) -> None:
    """Serve the viewer over `root` until interrupted; `announce(url)` once it is listening."""
    import uvicorn

    from evalrun.view.app import create_app

    token = secrets.token_urlsafe(24)
    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    allowed = None if host in ("0.0.0.0", "::") else [host, "127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(root, token=token, reviewer=reviewer, allowed_hosts=allowed)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    announce(viewer_url(host, real_port, token))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
