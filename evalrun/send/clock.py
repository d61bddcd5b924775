"""Time as a dependency: the pacer and the run loop read and wait on a `Clock`, so tests can
hand them a fake one and assert exact pacing without waiting for it."""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    async def wait(self, event: anyio.Event, timeout: float) -> None:
        """Wait until `event` is set or `timeout` seconds have passed, whichever comes first."""
        ...


class SystemClock:
    """The real clock: `time.monotonic` and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def wait(self, event: anyio.Event, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await event.wait()
