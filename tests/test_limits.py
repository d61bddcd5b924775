"""The pacer: buckets learned from headers, a lane-wide pause on 429, 529s that keep the limit,
concurrency that adapts without headers, and a paced run against the simulator."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from evalrun.send.client import RateLimitInfo
from evalrun.send.limits import Pacer, TokenBucket
from evalrun.sim import SimConfig, running_server

LANE = "haiku"


def headers(*, limit: int, remaining: int, kind: str = "requests") -> RateLimitInfo:
    prefix = f"anthropic-ratelimit-{kind}-"
    return RateLimitInfo.from_headers(
        httpx.Headers({prefix + "limit": str(limit), prefix + "remaining": str(remaining),
                       prefix + "reset": "2026-01-01T00:00:00Z"})
    )


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5.0, level=0.0, updated=100.0)
    assert bucket.wait_for(1, 100.0) == pytest.approx(0.1)
    assert bucket.wait_for(1, 100.2) == 0.0
    assert bucket.wait_for(50, 110.0) == 0.0  # larger than the bucket: waits for a full one
    bucket.take(50, 110.0)
    assert bucket.level == 0.0


def test_limits_are_learned_from_the_headers() -> None:
    pacer = Pacer(max_concurrency=64)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=50))
    lane = pacer.lane(LANE)
    assert lane.has_headers and lane.concurrency == 64
    assert lane.buckets["requests"].rate == pytest.approx(50.0)  # 3,000 a minute
    assert lane.buckets["requests"].level < 50  # a small reserve against send jitter
    assert "3,000 rpm" in pacer.status()
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=2))
    assert lane.buckets["requests"].level <= 2  # never above the server's count


@pytest.mark.anyio
async def test_sends_are_paced_at_the_learned_rate() -> None:
    pacer = Pacer(max_concurrency=64)
    pacer.release(LANE, rate_limits=headers(limit=600, remaining=0))  # 10 a second, none left
    start = time.monotonic()
    for _ in range(3):
        await pacer.acquire(LANE, input_tokens=10, max_tokens=1)
    # The reserve (0.2 s of refill) plus three requests at 10/s.
    assert 0.4 < time.monotonic() - start < 0.8


@pytest.mark.anyio
async def test_a_429_pauses_the_whole_lane_and_lowers_its_pace() -> None:
    pacer = Pacer(max_concurrency=64)
    pacer.release(LANE, rate_limits=headers(limit=60_000, remaining=1000))
    pacer.rate_limited(LANE, retry_after=0.3)
    assert pacer.backing_off() == pytest.approx(0.3, abs=0.05)
    assert pacer.lane(LANE).buckets["requests"].rate < 1000  # slowed below the learned limit
    assert "slowed to 90%" in pacer.status()
    start = time.monotonic()
    async with anyio.create_task_group() as tg:  # every worker waits out the same pause
        for _ in range(5):
            tg.start_soon(lambda: pacer.acquire(LANE, input_tokens=1, max_tokens=1))
    assert time.monotonic() - start >= 0.28
    assert pacer.backing_off() == 0.0


def test_a_529_backs_off_without_lowering_the_learned_limit() -> None:
    pacer = Pacer(max_concurrency=64)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=40))
    first = pacer.overloaded(LANE)
    second = pacer.overloaded(LANE)
    assert second > first > 0  # longer while they keep coming
    assert pacer.backing_off() > 0
    assert pacer.lane(LANE).buckets["requests"].rate == pytest.approx(50.0)
    assert "slowed" not in pacer.status()


def _answer(pacer: Pacer, latency: float, n: int) -> None:
    lane = pacer.lane(LANE)
    for _ in range(n):
        lane.in_flight = int(lane.concurrency)  # the limit binds
        pacer.release(LANE, output_tokens=1, max_tokens=1, latency_s=latency)
        lane.last_cut = 0.0  # let every round trip count in a fast test


def test_concurrency_grows_while_latency_is_flat_and_shrinks_when_it_climbs() -> None:
    pacer = Pacer(max_concurrency=512, initial_concurrency=8)
    _answer(pacer, 0.05, 100)
    lane = pacer.lane(LANE)
    assert lane.concurrency == 512
    assert "concurrency 512/512" in pacer.status()
    _answer(pacer, 0.5, 40)
    assert lane.concurrency < 100
    shrunk = lane.concurrency
    _answer(pacer, 0.05, 200)
    assert lane.concurrency > shrunk  # grows back, now additively


@pytest.mark.anyio
async def test_a_waiter_that_is_cancelled_leaves_the_queue() -> None:
    pacer = Pacer(max_concurrency=1)
    await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    with anyio.move_on_after(0.05):
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    assert not pacer.lane(LANE).waiters
    pacer.release(LANE)
    with anyio.fail_after(1):
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)


@pytest.mark.anyio
async def test_a_paced_run_against_the_simulator_draws_few_429s(write_spec, tmp_path, monkeypatch) -> None:
    from evalrun.execute import prepare, run_prepared
    from evalrun.reports.build import load_results

    rows = ["id,question,A,B,C,D,answer"] + [f"r{i},Question {i}?,a,b,c,d,A" for i in range(200)]
    (tmp_path / "mc.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # 6,000 a minute (100/s) with a burst of 40: 200 requests take about 1.6 s when paced.
    with running_server(SimConfig(rpm=6000, burst=40, latency_ms=20)) as url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        prepared = prepare(write_spec("params: {max_tokens: 1}\n"), out="run")
        start = time.monotonic()
        result = await run_prepared(prepared, concurrency=256)
        elapsed = time.monotonic() - start
    results = load_results(result.folder)
    assert results["status"].isin(["ok", "unparsed"]).all()
    assert result.stats.rate_limited <= 4  # ≤ 2 %
    assert elapsed < 6
