"""The pacer: buckets learned from headers, a lane-wide pause on 429, 529s that keep the limit,
concurrency that adapts without headers, and a paced run against the simulator.

The pacer runs on a `FakeClock` (conftest.py): time jumps to the next deadline whenever every
task waits, so each test asserts exact times and takes milliseconds. Only the last test runs
in real time, against the simulator over loopback."""

from __future__ import annotations

import anyio
import httpx
import pytest

from evalrun.send.client import RateLimitInfo
from evalrun.send.limits import OVERLOAD_PAUSE_S, PACE_AFTER_429, RESERVE_S, Pacer, TokenBucket
from evalrun.sim import SimConfig, running_server
from tests.conftest import FakeClock

LANE = "haiku"


def headers(*, limit: int, remaining: int, kind: str = "requests") -> RateLimitInfo:
    prefix = f"anthropic-ratelimit-{kind}-"
    return RateLimitInfo.from_headers(
        httpx.Headers({prefix + "limit": str(limit), prefix + "remaining": str(remaining),
                       prefix + "reset": "2026-01-01T00:00:00Z"})
    )  # fmt: skip


async def acquire_all(pacer: Pacer, clock: FakeClock, needs: list[tuple[int, int]]) -> list[tuple[int, float]]:
    """Start one worker per (input_tokens, max_tokens), in order; (worker, time granted) in grant order."""
    granted: list[tuple[int, float]] = []

    async def worker(index: int, input_tokens: int, max_tokens: int) -> None:
        await pacer.acquire(LANE, input_tokens=input_tokens, max_tokens=max_tokens)
        granted.append((index, clock.elapsed))

    async with anyio.create_task_group() as tg:
        for index, (input_tokens, max_tokens) in enumerate(needs):
            tg.start_soon(worker, index, input_tokens, max_tokens)
    return granted


# -- buckets ------------------------------------------------------------------------------------
def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5.0, level=0.0, updated=100.0)
    assert bucket.wait_for(1, 100.0) == pytest.approx(0.1)
    assert bucket.wait_for(1, 100.2) == 0.0
    assert bucket.level == pytest.approx(2.0)
    assert bucket.wait_for(50, 110.0) == 0.0  # larger than the bucket: waits for a full one
    assert bucket.level == 5.0  # never above its capacity
    bucket.take(50, 110.0)
    assert bucket.level == 0.0
    bucket.give_back(3, 110.0)
    assert bucket.level == 3.0


def test_limits_are_learned_from_the_headers(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=50))
    lane = pacer.lane(LANE)
    assert lane.has_headers and lane.concurrency == 64  # the buckets pace from here on
    bucket = lane.buckets["requests"]
    assert bucket.rate == 50.0  # 3,000 a minute
    assert bucket.capacity == 50.0
    assert bucket.level == 50 - 50 * RESERVE_S  # 0.2 s of refill kept back against send jitter
    assert "3,000 rpm" in pacer.status()
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=2))
    assert bucket.level == 2 - 50 * RESERVE_S  # never above the server's count


@pytest.mark.anyio
async def test_sends_are_paced_at_the_learned_rate(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=600, remaining=0))  # 10 a second, none left
    times = []
    async with fake_clock.running():
        for _ in range(3):
            await pacer.acquire(LANE, input_tokens=10, max_tokens=1)
            times.append(fake_clock.elapsed)
    # The reserve (0.2 s of refill) first, then one request every 0.1 s.
    assert times == [0.3, 0.4, 0.5]


@pytest.mark.anyio
async def test_the_reserve_holds_back_a_fifth_of_a_second_of_the_server_s_count(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=50))  # 50 a second, 50 left
    async with fake_clock.running():
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 42)
    times = [t for _, t in granted]
    assert times[:40] == [0.0] * 40  # 50 left less 10 in reserve go at once
    assert times[40:] == [0.02, 0.04]  # then the refill rate


@pytest.mark.anyio
async def test_a_count_one_round_trip_old_is_brought_forward_not_taken_as_now(fake_clock: FakeClock) -> None:
    # 50 a second. After the first reply a burst of 39 leaves at 0.3 s, emptying our bucket; the
    # replies come back at 0.6 s, each with the count the server had when it admitted it (48 …
    # 10). By then 15 have refilled and nothing else was sent: the server holds 25, and our own
    # bucket 15, which may all go at once (25 less the 10 in reserve). Taking the last count as
    # the present (10, less the reserve: nothing) would hold them back for 0.3 s.
    pacer = Pacer(max_concurrency=512, clock=fake_clock)
    async with fake_clock.running():
        first = await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
        await fake_clock.sleep(0.3)
        pacer.release(LANE, rate_limits=headers(limit=3000, remaining=49), ticket=first)
        burst = [await pacer.acquire(LANE, input_tokens=1, max_tokens=1) for _ in range(39)]
        assert fake_clock.elapsed == 0.3
        await fake_clock.sleep(0.3)
        for left, ticket in zip(range(48, 9, -1), burst, strict=True):
            pacer.release(LANE, rate_limits=headers(limit=3000, remaining=left), ticket=ticket)
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 16)
    times = [t for _, t in granted]
    assert times[:15] == [0.6] * 15
    assert times[15] == pytest.approx(0.62)


@pytest.mark.anyio
async def test_a_low_fresh_count_still_slows_the_lane(fake_clock: FakeClock) -> None:
    # Another client drained the bucket: a reply admitted just now says 0 left. What we sent
    # since and what refilled since are brought forward; the count still wins over our own.
    pacer = Pacer(max_concurrency=512, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=50))
    async with fake_clock.running():
        ticket = await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
        pacer.release(LANE, rate_limits=headers(limit=3000, remaining=0), ticket=ticket)
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    assert fake_clock.elapsed == pytest.approx(RESERVE_S + 0.02)


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=600, remaining=0))
    async with fake_clock.running():
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 5)
    assert granted == [(0, 0.3), (1, 0.4), (2, 0.5), (3, 0.6), (4, 0.7)]


@pytest.mark.anyio
async def test_a_small_request_does_not_overtake_a_large_one_at_the_head(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    # 6,000 input tokens a minute (100/s), 100 left, of which 20 are held in reserve.
    pacer.release(LANE, rate_limits=headers(limit=6000, remaining=100, kind="input-tokens"))
    async with fake_clock.running():
        granted = await acquire_all(pacer, fake_clock, [(100, 1), (1, 1), (1, 1)])
    # Alone, a 1-token request would go at once; behind the 100-token head it waits its turn.
    assert granted == [(0, 0.2), (1, 0.21), (2, 0.22)]


@pytest.mark.anyio
async def test_unused_output_tokens_are_given_back(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=6000, remaining=100, kind="output-tokens"))
    bucket = pacer.lane(LANE).buckets["output"]
    assert bucket.level == 80.0
    await pacer.acquire(LANE, input_tokens=1, max_tokens=80)  # charged max_tokens up front
    assert bucket.level == 0.0
    pacer.release(LANE, output_tokens=10, max_tokens=80)
    assert bucket.level == 70.0


# -- 429 and 529 --------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_429_pauses_the_whole_lane_until_retry_after_and_lowers_its_pace(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=60_000, remaining=1000))  # 1,000 a second
    lane = pacer.lane(LANE)
    pacer.rate_limited(LANE, retry_after=0.3)
    assert lane.rate_limited == 1
    assert pacer.backing_off() == pytest.approx(0.3)
    assert lane.buckets["requests"].rate == pytest.approx(1000 * PACE_AFTER_429)  # 900 a second
    assert lane.buckets["requests"].level == 0.0  # what was left is not trusted after a 429
    assert "slowed to 90%" in pacer.status()
    async with fake_clock.running():  # every worker waits out the same pause, then all go
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 5)
    assert [t for _, t in granted] == [0.3] * 5
    assert pacer.backing_off() == 0.0
    # The pace climbs back by 5 % a second: 95 % a second after the 429, 100 % after two.
    fake_clock.advance(0.7)
    assert lane.pace(fake_clock.now()) == pytest.approx(0.95)
    pacer.release(LANE, rate_limits=headers(limit=60_000, remaining=1000))
    assert lane.buckets["requests"].rate == pytest.approx(950.0)
    fake_clock.advance(1.0)
    assert lane.pace(fake_clock.now()) == 1.0
    assert "slowed" not in pacer.status()


@pytest.mark.anyio
async def test_a_429_without_retry_after_pauses_a_second(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, initial_concurrency=32, clock=fake_clock)
    pacer.rate_limited(LANE, retry_after=None)
    assert pacer.lane(LANE).concurrency == 16  # without headers: half the concurrency
    async with fake_clock.running():
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    assert fake_clock.elapsed == 1.0


@pytest.mark.anyio
async def test_a_529_pauses_without_lowering_the_learned_limit(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, clock=fake_clock)
    pacer.release(LANE, rate_limits=headers(limit=3000, remaining=40))
    lane = pacer.lane(LANE)
    assert pacer.overloaded(LANE) == OVERLOAD_PAUSE_S  # 0.25 s
    assert pacer.overloaded(LANE) == 2 * OVERLOAD_PAUSE_S  # longer while they keep coming
    assert pacer.backing_off() == 0.5
    assert lane.buckets["requests"].rate == 50.0  # the learned limit stays
    assert "slowed" not in pacer.status()
    async with fake_clock.running():
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    assert fake_clock.elapsed == 0.5
    pacer.release(LANE, output_tokens=1, max_tokens=1)  # a success ends the streak
    assert pacer.overloaded(LANE) == OVERLOAD_PAUSE_S
    assert pacer.overloaded(LANE, retry_after=3.0) == 3.0  # the server's retry-after wins when longer


# -- concurrency without headers ----------------------------------------------------------------
def _answer(pacer: Pacer, latency: float, n: int = 1) -> None:
    lane = pacer.lane(LANE)
    for _ in range(n):
        lane.in_flight = int(lane.concurrency)  # the limit binds
        pacer.release(LANE, output_tokens=1, max_tokens=1, latency_s=latency)


def test_slow_start_grows_concurrency_while_latency_is_flat(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=512, initial_concurrency=8, clock=fake_clock)
    lane = pacer.lane(LANE)
    _answer(pacer, 0.05)
    assert lane.concurrency == 15  # +7 a success: ×8 a round trip
    _answer(pacer, 0.05, 71)
    assert lane.concurrency == 512  # 8 + 72 × 7, at the ceiling
    assert "concurrency 512/512" in pacer.status()
    lane.in_flight = 0
    pacer.release(LANE, output_tokens=1, max_tokens=1, latency_s=0.05)
    assert lane.concurrency == 512  # and it grows only while the limit binds


def test_concurrency_is_cut_in_proportion_when_latency_climbs(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=512, initial_concurrency=8, clock=fake_clock)
    lane = pacer.lane(LANE)
    _answer(pacer, 0.05, 72)
    assert lane.latency_floor == 0.05  # target: 2 × 0.05 + 0.005 = 0.105 s
    _answer(pacer, 0.5)  # the moving average: 0.095 s, under the target
    assert lane.concurrency == 512
    _answer(pacer, 0.5)  # 0.1355 s: cut by target / latency
    assert lane.concurrency == pytest.approx(512 * 0.105 / 0.1355)
    assert not lane.slow_start
    cut = lane.concurrency
    _answer(pacer, 0.5, 3)  # at most one cut per round trip
    assert lane.concurrency == cut
    fake_clock.advance(1.0)  # a round trip later, far above the target: the cut is at most a half
    _answer(pacer, 5.0)
    assert lane.concurrency == pytest.approx(cut * 0.5)
    while True:  # latency falls back, within the round trip: neither a second cut nor growth
        before = lane.concurrency
        _answer(pacer, 0.05)
        if lane.latency_recent <= 0.105:
            break
        assert lane.concurrency == before
    # Under the target again: it grows back additively, 2 / concurrency a success.
    assert lane.concurrency == pytest.approx(before + 2 / before)
    _answer(pacer, 0.05)
    assert lane.concurrency == pytest.approx(before + 2 / before + 2 / (before + 2 / before))


@pytest.mark.anyio
async def test_the_concurrency_limit_holds_sends_until_a_request_finishes(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=64, initial_concurrency=2, clock=fake_clock)

    async def finish_one_later() -> None:
        await fake_clock.sleep(0.7)
        pacer.release(LANE)

    async with fake_clock.running(), anyio.create_task_group() as tg:
        tg.start_soon(finish_one_later)
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 3)
    assert granted == [(0, 0.0), (1, 0.0), (2, 0.7)]


@pytest.mark.anyio
async def test_a_lane_sends_alone_until_its_first_reply(fake_clock: FakeClock) -> None:
    # Whatever the run loop does (a model answered from the shared cache skips its warm-up),
    # a new lane does not burst to its ceiling before it has heard from the server.
    pacer = Pacer(max_concurrency=1024, clock=fake_clock, probe_first=True)

    async def reply_later() -> None:
        await fake_clock.sleep(0.3)
        pacer.release(LANE)  # a failure is no reply: the next request goes alone too
        await fake_clock.sleep(0.3)
        pacer.release(LANE, output_tokens=1, max_tokens=1, latency_s=0.3)  # a reply, no headers

    async with fake_clock.running(), anyio.create_task_group() as tg:
        tg.start_soon(reply_later)
        granted = await acquire_all(pacer, fake_clock, [(1, 1)] * 4)
    assert sorted(granted) == [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.6)]  # then the lane is open
    assert pacer.lane(LANE).concurrency >= 1024 - 1


@pytest.mark.anyio
async def test_a_waiter_that_is_cancelled_leaves_the_queue(fake_clock: FakeClock) -> None:
    pacer = Pacer(max_concurrency=1, clock=fake_clock)
    async with fake_clock.running():
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
        async with anyio.create_task_group() as tg:

            async def give_up_later() -> None:
                await fake_clock.sleep(0.05)
                tg.cancel_scope.cancel()

            tg.start_soon(give_up_later)
            await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
        assert fake_clock.elapsed == 0.05
        assert not pacer.lane(LANE).waiters
        assert pacer.in_flight(LANE) == 1
        pacer.release(LANE)
        await pacer.acquire(LANE, input_tokens=1, max_tokens=1)
    assert fake_clock.elapsed == 0.05  # at once


def test_the_fake_clock_reports_a_deadlock_instead_of_hanging(fake_clock: FakeClock) -> None:
    async def main() -> None:
        async with fake_clock.running():
            await anyio.Event().wait()

    with pytest.raises(ExceptionGroup) as caught:
        anyio.run(main)
    assert caught.group_contains(RuntimeError, match="deadlock at \\+0 s")


# -- end to end, in real time ---------------------------------------------------------------------
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
        result = await run_prepared(prepared, concurrency=256)
    results = load_results(result.folder)
    assert results["status"].isin(["ok", "unparsed"]).all()
    assert result.stats.rate_limited <= 4  # ≤ 2 %  (how long it takes: bench/timed.py)
