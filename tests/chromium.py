"""A small headless-Chromium driver for the report tests: the DevTools protocol over a pipe.

Chromium is started with ``--remote-debugging-pipe`` (what Puppeteer uses): it reads commands
on fd 3 and writes replies on fd 4, each a JSON message ended by a NUL byte. No websocket, no
extra package, no port. Only what the tests need: open a page, evaluate JavaScript, take a
screenshot, resize the window.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Browser", "chromium"]


def _find() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _find()
_TRAMPOLINE = (
    "import os, sys\n"
    "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page (tab), driven over the DevTools pipe."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="evalrun-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # A tiny Python trampoline moves our pipe ends to fds 3 and 4 and execs Chromium; ends
        # above 9 cannot be overwritten by those moves.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(high_r), str(high_w), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, pass_fds=(high_r, high_w),
        )  # fmt: skip
        to_child_r, from_child_w = high_r, high_w
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._url: str | None = None
        self._next = 0
        self._events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip

    # -- protocol ----------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._to_child, data)
            data = data[written:]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def _call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
              timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            if "method" in reply:
                self._events.append(reply)

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60.0) -> dict[str, Any]:
        return self._call(method, params, session=self.session, timeout=timeout)

    # -- what the tests use ------------------------------------------------------------------
    def open(self, url: str, *, timeout: float = 60.0) -> float:
        """Load `url` as a new document and wait for its load event; the seconds it took."""
        if self._url is not None and self._url.split("#")[0] == url.split("#")[0]:
            # Only the #fragment would change: no new document, no load event. Leave the page first.
            self._load("about:blank", timeout)
        self._url = url
        return self._load(url, timeout)

    def _load(self, url: str, timeout: float) -> float:
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        start = time.monotonic()
        self.call("Page.navigate", {"url": url}, timeout=timeout)
        deadline = start + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            event = self._receive(deadline)
            if "method" in event:
                self._events.append(event)
        return time.monotonic() - start

    def eval(self, expression: str, *, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                           timeout=timeout)  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip

    def screenshot(self, path: Path, *, full_page: bool = False, clip: dict[str, float] | None = None) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page and clip is None:
            metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"]}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call("Browser.close", timeout=5)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def chromium(*, width: int = 1400, height: int = 1000) -> Iterator[Browser]:
    if CHROMIUM is None:
        raise BrowserError("Chromium is not installed")
    browser = Browser(CHROMIUM, width=width, height=height)
    try:
        yield browser
    finally:
        browser.close()
