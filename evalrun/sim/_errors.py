"""The simulator's HTTP error: an API error type, status and message, as the real API words them."""

from __future__ import annotations

__all__ = ["ConnectionDropped", "SimError"]

import httpx


class SimError(Exception):
    """An error response: `status`, the API's `error.type`, its message and extra headers."""

    def __init__(self, status: int, error_type: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> SimError:
    """A 400 invalid_request_error."""
    return SimError(400, "invalid_request_error", message)


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised by the app to drop a connection on purpose (the `pdrop` fault).

    Under uvicorn the response has started, so the server closes the socket mid-response and
    the client sees a protocol error. In-process (`httpx.ASGITransport`) this exception reaches
    the caller directly; it subclasses httpx's own class so client code handles both alike.
    """

    def __init__(self) -> None:
        super().__init__("simulated dropped connection")
