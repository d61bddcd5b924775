"""Throughput benchmark: evalrun against the simulator, beside a naive client and the official SDK.

Not a test. `make bench` runs it; `--help` lists the knobs. The simulator runs in a separate
process so that the client CPU measured here (`time.process_time()` of this process) is the
client's alone. Each client in each scenario gets a fresh simulator, so buckets start full.

Scenarios:
  a  3,000 RPM, burst 50, 300 ms latency, 1,000 one-token requests (ideal: (N − burst)/rate + latency)
  b  1 s latency, no limits, 1,000 requests (concurrency has to grow without headers)
  c  zero latency, 3,000 requests (client CPU per request)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import multiprocessing
import os
import pstats
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODEL = "claude-haiku-4-5"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Scenario:
    name: str
    n: int
    sim: dict[str, Any]
    ideal_s: float | None = None


def scenarios(scale: float) -> dict[str, Scenario]:
    n_a, n_b, n_c = (max(60, round(n * scale)) for n in (1000, 1000, 3000))
    return {
        "a": Scenario("a: 3k rpm, burst 50, 300 ms", n_a, {"rpm": 3000, "burst": 50, "latency_ms": 300},
                      ideal_s=(n_a - 50) / (3000 / 60) + 0.3),
        "b": Scenario("b: 1 s latency, no limits", n_b, {"latency_ms": 1000}),
        "c": Scenario("c: zero latency", n_c, {}),
    }


@dataclass
class Result:
    client: str
    wall_s: float
    span_s: float
    ok: int
    n: int
    rate_limited: int
    cpu_s: float
    cpu_send_s: float | None = None
    note: str = ""
    statuses: Counter[int] = field(default_factory=Counter)


# -- the simulator, in its own process --------------------------------------------------------------
def _serve(kwargs: dict[str, Any], port: int) -> None:
    from evalrun.sim import SimConfig, serve

    serve(SimConfig(**kwargs), HOST, port)


@contextlib.contextmanager
def simulator(kwargs: dict[str, Any]) -> Iterator[str]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(kwargs, port), daemon=True)
    process.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or not process.is_alive():
                process.terminate()
                raise RuntimeError("the simulator did not start") from None
            time.sleep(0.05)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        process.join(5)


# -- the clients ---------------------------------------------------------------------------------
def _question(i: int) -> str:
    return f"Question {i}: which letter comes first?"


def _body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": _question(i)}]}


async def run_evalrun(url: str, n: int, concurrency: int | None, profile: Path | None) -> Result:
    from evalrun.execute import prepare, run_prepared
    from evalrun.reports.build import load_results

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = ["id,question,A,B,C,D,answer"] + [f"r{i},{_question(i)},a,b,c,d,A" for i in range(n)]
        (folder / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (folder / "spec.yaml").write_text(
            "name: bench\n"
            "dataset: {path: data.csv, id: id}\n"
            f"models: [{MODEL}]\n"
            "params: {max_tokens: 1}\n"
            "prompts:\n  plain:\n    messages:\n"
            "      - {role: user, content: \"{question}\\n(A) {A}\\n(B) {B}\\n(C) {C}\\n(D) {D}\"}\n"
            "scorer: {type: choice, target: answer}\n",
            encoding="utf-8",
        )
        environ = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "bench-key"}
        prepared = prepare(folder / "spec.yaml", out=folder / "run", sim=False, environ=environ)
        marks: dict[str, float] = {}

        def on_runner(runner: Any) -> None:
            marks["start"], marks["cpu_start"] = time.monotonic(), time.process_time()

        def on_progress(stats: Any) -> None:
            if stats.done >= stats.total:
                marks["end"], marks["cpu_end"] = time.monotonic(), time.process_time()

        profiler = cProfile.Profile() if profile else None
        cpu0, t0 = time.process_time(), time.monotonic()
        if profiler:
            profiler.enable()
        result = await run_prepared(
            prepared, concurrency=concurrency, environ=environ, on_runner=on_runner, on_progress=on_progress
        )
        if profiler:
            profiler.disable()
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        if profiler and profile:
            profiler.dump_stats(profile)
        results = load_results(result.folder)
        ok = int(results["status"].isin(["ok", "unparsed"]).sum())  # unparsed: answered, not a letter
    label = f"evalrun (max {concurrency})" if concurrency else "evalrun (default)"
    return Result(
        label,
        wall_s=wall,
        span_s=marks.get("end", t0 + wall) - marks.get("start", t0),
        ok=ok,
        n=n,
        rate_limited=result.stats.rate_limited,
        cpu_s=cpu,
        cpu_send_s=marks.get("cpu_end", 0.0) - marks.get("cpu_start", 0.0),
        note=f"{result.stats.pacing}",
    )


async def run_baseline(url: str, n: int, concurrency: int) -> Result:
    """Plain httpx + asyncio.gather behind a semaphore: no pacing; a 429 or 5xx waits its retry-after."""
    statuses: Counter[int] = Counter()
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def one(i: int) -> bool:
            async with semaphore:
                for _ in range(10):
                    response = await http.post("/v1/messages", json=_body(i))
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        response.json()
                        return True
                    await asyncio.sleep(float(response.headers.get("retry-after", "0.5")))
                return False

        cpu0, t0 = time.process_time(), time.monotonic()
        done = await asyncio.gather(*(one(i) for i in range(n)))
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return Result(f"httpx, fixed {concurrency}", wall, wall, sum(done), n, statuses[429], cpu, statuses=statuses)


async def run_sdk(url: str, n: int, concurrency: int) -> Result | None:
    """The official SDK: AsyncAnthropic behind a semaphore, its own retries (max_retries=2)."""
    try:
        import anthropic
    except ImportError:
        return None
    statuses: Counter[int] = Counter()

    async def count(response: httpx.Response) -> None:
        statuses[response.status_code] += 1

    http = anthropic.DefaultAsyncHttpxClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        event_hooks={"response": [count]},
    )
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=2, http_client=http)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with semaphore:
            try:
                await client.messages.create(**_body(i))
                return True
            except anthropic.APIError:
                return False

    cpu0, t0 = time.process_time(), time.monotonic()
    done = await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    await client.close()
    return Result(f"anthropic SDK, fixed {concurrency}", wall, wall, sum(done), n, statuses[429], cpu, statuses=statuses)


# -- the table -----------------------------------------------------------------------------------
def print_table(scenario: Scenario, results: list[Result]) -> None:
    print(f"\n{scenario.name} — {scenario.n:,} requests" + (f", ideal {scenario.ideal_s:.2f} s" if scenario.ideal_s else ""))
    print(f"  {'client':<26} {'span s':>7} {'wall s':>7} {'×ideal':>7} {'×evalrun':>8} {'ok':>6} {'429s':>5} "
          f"{'cpu ms/req':>10} {'send-only':>9}")
    reference = results[0].span_s if results else None
    for r in results:
        ratio = f"{r.span_s / scenario.ideal_s:.3f}" if scenario.ideal_s else "—"
        versus = f"{r.span_s / reference:.2f}" if reference else "—"
        send = f"{r.cpu_send_s / r.n * 1000:.3f}" if r.cpu_send_s is not None else "—"
        print(f"  {r.client:<26} {r.span_s:7.2f} {r.wall_s:7.2f} {ratio:>7} {versus:>8} {r.ok:>6} "
              f"{r.rate_limited:>5} {r.cpu_s / r.n * 1000:10.3f} {send:>9}")
        if r.note:
            print(f"  {'':<26} pacing: {r.note}")
    sys.stdout.flush()


async def bench(args: argparse.Namespace) -> None:
    chosen = scenarios(args.scale)
    for key in args.scenarios:
        scenario = chosen[key]
        results: list[Result] = []
        evalrun_runs: list[int | None] = [args.concurrency]
        if key == "b" and args.concurrency is not None and not args.quick:
            evalrun_runs.append(None)  # also the default ceiling, to show what it costs
        for concurrency in evalrun_runs:
            with simulator(scenario.sim) as url:
                profile = Path(args.profile) if args.profile and key == "c" and concurrency == args.concurrency else None
                results.append(await run_evalrun(url, scenario.n, concurrency, profile))
        if not args.evalrun_only:
            with simulator(scenario.sim) as url:
                results.append(await run_baseline(url, scenario.n, args.baseline_concurrency))
            with simulator(scenario.sim) as url:
                sdk = await run_sdk(url, scenario.n, args.baseline_concurrency)
                if sdk is not None:
                    results.append(sdk)
        print_table(scenario, results)
    if args.profile:
        print(f"\ncProfile of evalrun in (c): {args.profile}")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="a, b and/or c (default: all)")
    parser.add_argument("--concurrency", type=int, default=512,
                        help="evalrun's max concurrency (default 512; `0` = evalrun's own default)")
    parser.add_argument("--baseline-concurrency", type=int, default=64, help="the fixed pool of httpx and the SDK")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    parser.add_argument("--evalrun-only", action="store_true", help="skip the httpx and SDK clients")
    parser.add_argument("--quick", action="store_true", help="skip the extra default-concurrency run in (b)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile evalrun's run in (c) into FILE and print the top")
    args = parser.parse_args()
    args.concurrency = args.concurrency or None
    args.scenarios = args.scenarios or ["a", "b", "c"]
    if set(args.scenarios) - {"a", "b", "c"}:
        parser.error("scenarios are a, b and c")
    os.environ.pop("ANTHROPIC_BASE_URL", None)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; simulator in a separate process")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
