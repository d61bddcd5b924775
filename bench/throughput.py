"""Throughput benchmark: evalrun against an independent fake API, beside other clients.

Not a test. `make bench-throughput` runs it; `--help` lists the knobs. The fake (`bench/fakeapi.py`,
aiohttp, no evalrun code) runs in a separate process, a fresh one per client and scenario (so its
bucket starts full), and `time.process_time()` of this process is the client's CPU alone.

Clients, side by side on the same fake and the same request bodies (taken from evalrun's plan):
  evalrun      `prepare` + `run_prepared`, in-process: pacing, store, scoring, reports
  evalrun-client  evalrun's MessagesClient alone (straight to aiohttp, reply checks),
               fixed pool, no pacing, store or scoring: splits evalrun's CPU into client and the rest
  aiohttp      a bare aiohttp loop: one session, a fixed pool, json.dumps/json.loads per request;
               a 429 waits its retry-after (the floor of client CPU per request)
  httpx        plain httpx.AsyncClient, fixed pool, the same retry rule
  sdk          the official SDK (AsyncAnthropic, max_retries=2), fixed pool
  inspect      inspect_ai's Anthropic provider (`eval(...)` in a child process, its own CPU
               measured there), where inspect_ai is installed; a benchmark-only dependency

Scenarios:
  a  3,000 RPM, burst 50, 300 ms latency, 1,000 one-token requests (ideal: (N − burst)/rate + latency)
  b  1 s latency, no limits, 1,000 requests (concurrency has to grow without headers)
  c  zero latency, 3,000 requests (client CPU per request)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeapi import fake_api, stats

MODEL = "claude-haiku-4-5"
CLIENTS = ("evalrun", "evalrun-client", "aiohttp", "httpx", "sdk", "inspect")


@dataclass(frozen=True)
class Scenario:
    name: str
    n: int
    sim: dict[str, Any]  # the fake's settings
    ideal_s: float | None = None
    span_target: float | None = None  # × ideal
    span_limit_s: float | None = None


def scenarios(scale: float) -> dict[str, Scenario]:
    n_a, n_b, n_c = (max(60, round(n * scale)) for n in (1000, 1000, 3000))
    return {
        "a": Scenario("a: 3k rpm, burst 50, 300 ms", n_a, {"rpm": 3000, "burst": 50, "latency_ms": 300},
                      ideal_s=(n_a - 50) / (3000 / 60) + 0.3, span_target=1.03),
        "b": Scenario("b: 1 s latency, no limits", n_b, {"latency_ms": 1000}, span_limit_s=3.0),
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


# -- the clients ---------------------------------------------------------------------------------
def _question(i: int) -> str:
    return f"Question {i}: which letter comes first?"


def write_spec(folder: Path, n: int) -> Path:
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
    return folder / "spec.yaml"


def evalrun_bodies(n: int) -> list[dict[str, Any]]:
    """The request bodies evalrun sends for the benchmark spec, from its own plan: every client
    sends exactly these."""
    from evalrun.execute import prepare

    with tempfile.TemporaryDirectory() as tmp:
        environ = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "bench-key"}
        prepared = prepare(write_spec(Path(tmp), n), out=Path(tmp) / "run", environ=environ)
        return [json.loads(request.body_json) for _, request in prepared.plan.cells()]


async def run_evalrun(url: str, n: int, concurrency: int | None, profile: Path | None) -> Result:
    from evalrun.execute import prepare, run_prepared
    from evalrun.reports.build import load_results

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        environ = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "bench-key",
                   "EVALRUN_CACHE_DIR": str(folder / "cache")}  # fmt: skip
        prepared = prepare(write_spec(folder, n), out=folder / "run", sim=False, environ=environ)
        marks: dict[str, float] = {}

        def on_runner(runner: Any) -> None:
            marks["start"], marks["cpu_start"] = time.monotonic(), time.process_time()

        def on_progress(stats: Any) -> None:
            # The plan streams in while requests go: the run is done once it is all planned and answered.
            if not stats.planning and stats.total and stats.done >= stats.total and "end" not in marks:
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
    seen = stats(url, times=True)
    arrivals = seen.get("times") or [0.0]
    ramp = Counter(int(t - arrivals[0]) for t in arrivals)  # requests the fake received in each second
    ramp_text = ", ".join(str(ramp[i]) for i in range(max(ramp) + 1))
    return Result(
        label,
        wall_s=wall,
        span_s=marks.get("end", t0 + wall) - marks.get("start", t0),
        ok=ok,
        n=n,
        rate_limited=seen["statuses"].get("429", 0),
        cpu_s=cpu,
        cpu_send_s=marks.get("cpu_end", 0.0) - marks.get("cpu_start", 0.0),
        note=f"{result.stats.pacing}; {result.stats.retries} retries; requests received per second: {ramp_text}",
    )


# A fixed-pool client sends one body and says how it went: (status, retry-after or None). A 429
# or 5xx waits its retry-after (0.5 s without one) and goes again, at most 10 times; any other
# failure gives up.
Post = Callable[[dict[str, Any]], Awaitable[tuple[int, float | None]]]


async def fixed_pool(label: str, bodies: list[dict[str, Any]], concurrency: int, post: Post) -> Result:
    """Every body through `post`, at most `concurrency` at once (asyncio.gather behind a semaphore)."""
    statuses: Counter[int] = Counter()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> bool:
        async with semaphore:
            for _ in range(10):
                status, retry_after = await post(body)
                statuses[status] += 1
                if status == 200:
                    return True
                if status != 429 and status < 500:
                    return False
                await asyncio.sleep(retry_after if retry_after is not None else 0.5)
            return False

    cpu0, t0 = time.process_time(), time.monotonic()
    done = await asyncio.gather(*(one(b) for b in bodies))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return Result(label, wall, wall, sum(done), len(bodies), statuses[429], cpu, statuses=statuses)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    return float(value) if value is not None else None


async def run_aiohttp(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    """A bare aiohttp loop: one session, json.dumps and json.loads per request."""
    import aiohttp

    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency), headers=headers) as session:

        async def post(body: dict[str, Any]) -> tuple[int, float | None]:
            async with session.post("/v1/messages", data=json.dumps(body).encode()) as response:
                json.loads(await response.read())
                return response.status, _retry_after(response.headers)

        return await fixed_pool(f"aiohttp, fixed {concurrency}", bodies, concurrency, post)


async def run_evalrun_client(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    """evalrun's MessagesClient alone: the HTTP layer of evalrun's CPU."""
    from evalrun.errors import ApiError
    from evalrun.send.client import MessagesClient

    async with MessagesClient(base_url=url, api_key="bench-key", max_connections=concurrency) as client:

        async def post(body: dict[str, Any]) -> tuple[int, float | None]:
            try:
                await client.create(body)
                return 200, None
            except ApiError as exc:
                return exc.status or 0, exc.retry_after

        return await fixed_pool(f"evalrun client, fixed {concurrency}", bodies, concurrency, post)


def store_costs(n: int) -> str:
    """CPU per answer of what evalrun does with it besides HTTP: one store commit and one shared-cache
    put per answer (as the run loop does), against one batched commit."""
    from evalrun.store.cache import ResponseCache
    from evalrun.store.records import Outcome
    from evalrun.store.run_store import Store

    message = {"id": "m", "type": "message", "role": "assistant", "model": MODEL, "content": [{"type": "text", "text": "A"}],
               "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 1}}  # fmt: skip
    outcomes = [Outcome(key=f"k{i}", status="ok", message=message) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(Path(tmp) / "run") as store:
            cpu0 = time.process_time()
            for outcome in outcomes:
                store.record(outcome)
            one_by_one = (time.process_time() - cpu0) / n * 1000
            cpu0 = time.process_time()
            store.record_many(outcomes)
            batched = (time.process_time() - cpu0) / n * 1000
        cache = ResponseCache.open(Path(tmp) / "cache")
        cpu0 = time.process_time()
        for outcome in outcomes:
            cache.put([outcome])
        cached = (time.process_time() - cpu0) / n * 1000
        cache.close()
    return (f"store CPU per answer: record() one transaction each {one_by_one:.3f} ms, record_many() batched "
            f"{batched:.3f} ms; shared cache put() one each {cached:.3f} ms")  # fmt: skip


_INSPECT = """
import json, sys, time, tempfile
from inspect_ai import Task, eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

url, concurrency, bodies = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
samples = [Sample(input=b["messages"][0]["content"], target="A") for b in bodies]
task = Task(dataset=MemoryDataset(samples), solver=generate(), scorer=includes())
with tempfile.TemporaryDirectory() as logs:
    cpu0, t0 = time.process_time(), time.monotonic()
    [log] = eval(task, model="anthropic/" + bodies[0]["model"], model_base_url=url, max_connections=concurrency,
                 max_tokens=1, display="none", log_dir=logs, max_retries=10)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    ok = log.results.completed_samples if log.results else 0
print("@@" + json.dumps({"wall": wall, "cpu": cpu, "ok": ok, "status": log.status}))
"""


def run_inspect(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result | None:
    """inspect_ai's Anthropic provider, in a child process (its CPU measured there)."""
    try:
        import inspect_ai  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bodies.json"
        path.write_text(json.dumps(bodies), encoding="utf-8")
        env = {**os.environ, "ANTHROPIC_API_KEY": "bench-key", "ANTHROPIC_BASE_URL": url}
        result = subprocess.run([sys.executable, "-c", _INSPECT, url, str(concurrency), str(path)],
                                env=env, capture_output=True, text=True, cwd=tmp)  # fmt: skip
    if "@@" not in result.stdout:
        sys.stderr.write(result.stderr[-3000:])
        return Result(f"inspect_ai, max {concurrency}", 0.0, 0.0, 0, len(bodies), 0, 0.0, note="failed")
    out = json.loads(result.stdout.rsplit("@@", 1)[1])
    seen = stats(url)
    return Result(f"inspect_ai, max {concurrency}", out["wall"], out["wall"], out["ok"], len(bodies),
                  seen["statuses"].get("429", 0), out["cpu"], note=f"eval status {out['status']}")  # fmt: skip


async def run_baseline(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    """Plain httpx.AsyncClient."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def post(body: dict[str, Any]) -> tuple[int, float | None]:
            response = await http.post("/v1/messages", json=body)
            response.json()
            return response.status_code, _retry_after(response.headers)

        return await fixed_pool(f"httpx, fixed {concurrency}", bodies, concurrency, post)


async def run_sdk(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result | None:
    """The official SDK (AsyncAnthropic) with its own retries (max_retries=2); it gives up after them."""
    try:
        import anthropic
    except ImportError:
        return None
    sent: Counter[int] = Counter()

    async def count(response: httpx.Response) -> None:
        sent[response.status_code] += 1

    http = anthropic.DefaultAsyncHttpxClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        event_hooks={"response": [count]},
    )
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key", max_retries=2, http_client=http)

    async def post(body: dict[str, Any]) -> tuple[int, float | None]:
        try:
            await client.messages.create(**body)
            return 200, None
        except anthropic.APIError:
            return -1, None  # its retries are spent

    result = await fixed_pool(f"anthropic SDK, fixed {concurrency}", bodies, concurrency, post)
    await client.close()
    result.rate_limited, result.statuses = sent[429], sent
    return result


# -- the table -----------------------------------------------------------------------------------
def print_table(scenario: Scenario, results: list[Result]) -> list[str]:
    """Print the scenario's table; return its verdict lines."""
    print(f"\n{scenario.name} — {scenario.n:,} requests" + (f", ideal {scenario.ideal_s:.2f} s" if scenario.ideal_s else ""))
    print(f"  {'client':<26} {'span s':>7} {'wall s':>7} {'×ideal':>7} {'×evalrun':>8} {'ok':>6} {'429s':>5} "
          f"{'cpu ms/req':>10} {'send-only':>9}")  # fmt: skip
    reference = results[0].span_s if results else None
    for r in results:
        ratio = f"{r.span_s / scenario.ideal_s:.3f}" if scenario.ideal_s else "—"
        versus = f"{r.span_s / reference:.2f}" if reference else "—"
        send = f"{r.cpu_send_s / r.n * 1000:.3f}" if r.cpu_send_s is not None else "—"
        print(f"  {r.client:<26} {r.span_s:7.2f} {r.wall_s:7.2f} {ratio:>7} {versus:>8} {r.ok:>6} "
              f"{r.rate_limited:>5} {r.cpu_s / r.n * 1000:10.3f} {send:>9}")  # fmt: skip
        if r.note:
            print(f"  {'':<26} {r.note}")
    sys.stdout.flush()
    return verdicts(scenario, results)


def verdicts(scenario: Scenario, results: list[Result]) -> list[str]:
    evalrun = next((r for r in results if r.client.startswith("evalrun")), None)
    if evalrun is None:
        return []
    lines = []

    def line(text: str, measured: float, target: float, unit: str, met: bool) -> None:
        lines.append(f"  {scenario.name[:1]}: {text:<52} {measured:8.3f} {unit:<4} target {target:g}  "
                     f"{'met' if met else 'MISSED'}")  # fmt: skip

    complete = evalrun.ok == evalrun.n
    if scenario.ideal_s and scenario.span_target:
        ratio = evalrun.span_s / scenario.ideal_s
        line("span / ideal", ratio, scenario.span_target, "×", ratio <= scenario.span_target and complete)
        line("429s", evalrun.rate_limited, 0, "", evalrun.rate_limited == 0)
    if scenario.span_limit_s:
        line("span", evalrun.span_s, scenario.span_limit_s, "s", evalrun.span_s <= scenario.span_limit_s and complete)
    bare = next((r for r in results if r.client.startswith("aiohttp")), None)
    if scenario.name.startswith("c") and bare is not None and evalrun.cpu_send_s is not None:
        floor = bare.cpu_s / bare.n
        run_only = evalrun.cpu_send_s / evalrun.n / floor
        line("client CPU/request ÷ bare aiohttp (run loop)", run_only, 2.0, "×", run_only <= 2.0)
        whole = evalrun.cpu_s / evalrun.n / floor
        line("  the same, whole call (store setup, reports)", whole, 2.0, "×", whole <= 2.0)
    return lines


async def one_client(client: str, scenario: Scenario, bodies: list[dict[str, Any]], pool: int,
                     concurrency: int | None, profile: Path | None = None) -> Result | None:  # fmt: skip
    with fake_api(**scenario.sim) as url:
        if client == "evalrun":
            return await run_evalrun(url, scenario.n, concurrency, profile)
        if client == "evalrun-client":
            return await run_evalrun_client(url, bodies, pool)
        if client == "aiohttp":
            return await run_aiohttp(url, bodies, pool)
        if client == "httpx":
            return await run_baseline(url, bodies, pool)
        if client == "sdk":
            return await run_sdk(url, bodies, pool)
        if client == "inspect":
            return run_inspect(url, bodies, pool)
    raise ValueError(client)


async def bench(args: argparse.Namespace) -> None:
    chosen = scenarios(args.scale)
    summary: list[str] = []
    for key in args.scenarios:
        scenario = chosen[key]
        results: list[Result] = []
        bodies = evalrun_bodies(scenario.n)
        # A fixed pool: 64 by default; in (b), one connection a request, the best a fixed pool can do.
        pool = args.baseline_concurrency or (scenario.n if key == "b" else 64)
        # CPU per request at zero latency is noisy (the fake shares the 2 cores): (c) runs each
        # client `--cpu-repeats` times and keeps the run with the median CPU.
        repeats = args.cpu_repeats if key == "c" else 1
        for client in args.clients:
            tries = [await one_client(client, scenario, bodies, pool, args.concurrency) for _ in range(repeats)]
            done = sorted((r for r in tries if r is not None), key=lambda r: r.cpu_send_s or r.cpu_s)
            if done:
                results.append(done[len(done) // 2])
        summary += print_table(scenario, results)
        if key == "c" and "evalrun" in args.clients:
            print("  " + store_costs(scenario.n))
    if summary:
        print("\ntargets (evalrun)")
        print("\n".join(summary))
    if args.profile:  # a run of its own: the profiler more than doubles evalrun's CPU
        scenario = chosen["c"]
        await one_client("evalrun", scenario, [], 0, args.concurrency, Path(args.profile))
        print(f"\ncProfile of evalrun in (c), a separate run (not in the table): {args.profile}")
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats("evalrun|aiohttp/client.py|httpx", 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="a, b and/or c (default: all)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, of {', '.join(CLIENTS)}")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="evalrun's max concurrency (default `0`: evalrun's own default)")  # fmt: skip
    parser.add_argument("--baseline-concurrency", type=int, default=0,
                        help="the fixed pool of the other clients (default 64; in (b) one per request)")  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    parser.add_argument("--profile", metavar="FILE", help="cProfile an extra evalrun run of (c) into FILE and print the top")
    parser.add_argument("--cpu-repeats", type=int, default=3, help="runs per client in (c); the median CPU is kept")
    args = parser.parse_args()
    args.concurrency = args.concurrency or None
    args.scenarios = args.scenarios or ["a", "b", "c"]
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if set(args.scenarios) - {"a", "b", "c"}:
        parser.error("scenarios are a, b and c")
    if set(args.clients) - set(CLIENTS):
        parser.error(f"clients are {', '.join(CLIENTS)}")
    os.environ.pop("ANTHROPIC_BASE_URL", None)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; the fake API (bench/fakeapi.py) in a separate process")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
