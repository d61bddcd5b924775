"""Timed checks: the wall-clock figures the unit tests used to assert, measured instead.

Not a test. Each of these was a time limit inside `make test`, and each failed when other jobs
shared the machine (issue 20, item 4). The tests now assert the behaviour (the method chosen,
the memory used, what was sent, the deadline named in the error); how long it takes is measured
here, with the old limit beside it and the ratio (measured / limit, under 1 meets it).

    python bench/timed.py [--only stats,latency,...] [--repeat 3]

Checks: `stats` (paired_compare on 100 k rows, four layouts), `latency` (the simulator's added
latency), `hammer` (six SDK clients against a rate-limited simulator), `paced` (a paced run of
200 requests), `deadline` (a trickling server against a 1.5 s attempt deadline) and `page`
(a 100 k-cell report page in headless Chromium; skipped without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' helpers (the Chromium driver, the synthetic explorer)

Result = list[tuple[str, float, float]]  # (what, measured seconds, the old limit)


def stats() -> Result:
    import numpy as np

    from evalrun.results.stats import paired_compare

    rng = np.random.default_rng(0)
    n = 100_000
    a = (rng.random(n) < 0.70).astype(float)
    b = np.where(rng.random(n) < 0.8, a, (rng.random(n) < 0.72).astype(float))
    layouts = {
        "rows": None,
        "clusters-of-4": np.arange(n) // 4,
        "clusters-of-20": np.arange(n) // 20,
        "clusters-of-20-uneven": np.sort(rng.integers(0, 5_000, n)),
    }
    out: Result = []
    for name, clusters in layouts.items():
        paired_compare(a[:100], b[:100], clusters=None if clusters is None else clusters[:100])  # warm up
        start = time.perf_counter()
        paired_compare(a, b, clusters=clusters)
        out.append((f"paired_compare, 100 k rows, {name}", time.perf_counter() - start, 0.5))
    return out


def latency() -> Result:
    import httpx

    from evalrun.sim import SimConfig, create_app

    async def one() -> float:
        config = SimConfig(latency_ms=50, latency_spread=0.0, latency_per_output_token_ms=10)
        transport = httpx.ASGITransport(create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            start = time.perf_counter()
            await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
            return time.perf_counter() - start

    # 100 ms asked for; the test's old window was 95-500 ms.
    return [("simulator latency, 50 ms + 5 tokens x 10 ms (asked 0.1 s)", asyncio.run(one()), 0.5)]


def hammer() -> Result:
    import anthropic

    from evalrun.sim import SimConfig, running_server

    rpm, burst, seconds = 3000.0, 10, 2.0
    counts = {"ok": 0, "limited": 0}
    lock = threading.Lock()
    with (
        running_server(SimConfig(rpm=rpm, burst=burst)) as url,
        anthropic.Anthropic(api_key="k", base_url=url, max_retries=0) as sdk,
    ):
        sdk.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])
        start = time.monotonic()
        stop = start + seconds

        def work() -> None:
            while time.monotonic() < stop:
                try:
                    sdk.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
                    outcome = "ok"
                except anthropic.RateLimitError:
                    outcome = "limited"
                with lock:
                    counts[outcome] += 1

        threads = [threading.Thread(target=work) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    expected = burst + rpm / 60 * elapsed
    shortfall = abs(counts["ok"] - expected) / expected  # the old test allowed 10 %
    print(f"  hammer: {counts['ok']} let through of {expected:.0f} expected, {counts['limited']} limited")
    return [("rate-limited simulator: |let through - rate| / rate (a share, not seconds)", shortfall, 0.10)]


def paced() -> Result:
    from evalrun.execute import prepare, run_prepared
    from evalrun.sim import SimConfig, running_server

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = ["id,question,A,B,C,D,answer"] + [f"r{i},Question {i}?,a,b,c,d,A" for i in range(200)]
        (folder / "mc.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (folder / "spec.yaml").write_text(
            "name: mc\ndataset: {path: mc.csv, id: id}\nmodels: [claude-haiku-4-5]\nparams: {max_tokens: 1}\n"
            "prompts:\n  plain:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B}\"}]\n"
            "scorer: {type: choice, target: answer}\n",
            encoding="utf-8",
        )
        os.environ["EVALRUN_CACHE_DIR"] = str(folder / "cache")
        os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
        with running_server(SimConfig(rpm=6000, burst=40, latency_ms=20)) as url:
            os.environ["ANTHROPIC_BASE_URL"] = url
            prepared = prepare(folder / "spec.yaml", out=folder / "run")
            start = time.monotonic()
            asyncio.run(run_prepared(prepared, concurrency=256))
            elapsed = time.monotonic() - start
        del os.environ["ANTHROPIC_BASE_URL"]
    return [("paced run, 200 requests at 100/s (about 1.6 s)", elapsed, 6.0)]


def deadline() -> Result:
    from evalrun.errors import TransientApiError
    from evalrun.send.client import MessagesClient

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        try:
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):  # the client gave up; the server closes
            writer.close()

    async def measure() -> float:
        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, MessagesClient(base_url=f"http://127.0.0.1:{port}", api_key="k") as client:
            start = time.monotonic()
            with contextlib.suppress(TransientApiError):
                await client.create({"model": "m", "max_tokens": 1, "messages": []}, timeout=1.5)
            return time.monotonic() - start

    return [("a trickling server against a 1.5 s attempt deadline", asyncio.run(measure()), 4.0)]


def page() -> Result:
    import pandas as pd

    from evalrun.reports.html import render_html
    from tests.chromium import CHROMIUM, chromium
    from tests.test_report_browser import _synthetic

    if CHROMIUM is None:
        print("  page: no Chromium, skipped")
        return []
    payload = _synthetic(100_000)
    summary = pd.DataFrame([{"model": f"model-{v // 2}", "prompt": f"prompt-{v % 2}", "n": 25_000, "accuracy": 0.25,
                             "ci_low": 0.24, "ci_high": 0.26, "cost_usd": 1.5} for v in range(4)])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, chromium(width=1400, height=1000) as browser:
        path = Path(tmp) / "report.html"
        path.write_text(render_html(summary=summary, comparison=None, settings={"name": "big"}, cells=100_000,
                                    explorer=payload), encoding="utf-8")  # fmt: skip
        seconds = browser.open(path.as_uri() + "#explore?by=prompt&model=model-1&disagree=prompt-0,prompt-1")
        browser.wait_for("document.documentElement.getAttribute('data-explorer') === 'ready'", timeout=120)
        ready_s = browser.eval("window.evalrunExplorer.readyMs") / 1000
    return [("100 k-cell page: load event", seconds, 3.0), ("100 k-cell page: explorer ready", ready_s, 3.0)]


CHECKS: dict[str, Callable[[], Result]] = {
    "stats": stats, "latency": latency, "hammer": hammer, "paced": paced, "deadline": deadline, "page": page,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated: " + ", ".join(CHECKS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each check; the table shows the worst")
    args = parser.parse_args()
    rows: dict[str, tuple[float, float]] = {}
    for name in args.only.split(","):
        for _ in range(args.repeat):
            for what, measured, limit in CHECKS[name]():
                worst = max(measured, rows.get(what, (0.0, limit))[0])
                rows[what] = (worst, limit)
    width = max((len(w) for w in rows), default=10)
    print(f"{'check':<{width}}  {'measured':>9}  {'old limit':>9}  {'ratio':>5}")
    for what, (measured, limit) in rows.items():
        print(f"{what:<{width}}  {measured:>9.3f}  {limit:>9.3f}  {measured / limit:>5.2f}")


if __name__ == "__main__":
    main()
