from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from evalrun.stats import holm, mcnemar_exact, paired_bootstrap_ci, wilson_interval


def test_wilson_known_value_8_of_10() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-5)
    assert high == pytest.approx(0.9433, abs=5e-5)


def test_wilson_matches_closed_form_at_99_percent() -> None:
    z = 2.5758293035489004
    k, n = 37, 120
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n, 0.99) == pytest.approx((centre - half, centre + half), rel=1e-9)


def test_wilson_edges() -> None:
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.0 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@given(st.integers(0, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_point_estimate(case: tuple[int, int]) -> None:
    k, n = case
    low, high = wilson_interval(k, n)
    if n == 0:
        assert math.isnan(low) and math.isnan(high)
    else:
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_mcnemar_hand_computed() -> None:
    # b=1, c=5: P(X <= 1) with X ~ Binom(6, 1/2) is 7/64, doubled 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(4, 4) == 1.0  # capped at 1


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_equals_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_holm_hand_worked_example() -> None:
    # m = 4: sorted 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.5*1=0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_caps_at_one_and_skips_nan() -> None:
    out = holm([0.6, float("nan"), 0.3])
    assert out[0] == pytest.approx(0.6) and out[2] == pytest.approx(0.6)
    assert math.isnan(out[1])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []
    assert all(math.isnan(x) for x in holm([float("nan")]))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_monotone_and_not_below_raw(ps: list[float]) -> None:
    adj = holm(ps)
    order = np.argsort(ps, kind="stable")
    sorted_adj = [adj[i] for i in order]
    assert all(x <= y + 1e-12 for x, y in itertools.pairwise(sorted_adj))
    assert all(p <= q + 1e-12 and q <= 1.0 for p, q in zip(ps, adj, strict=True))


def test_bootstrap_contains_diff_and_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.6).astype(int)
    b = (rng.random(300) < 0.7).astype(int)
    low, high = paired_bootstrap_ci(a, b, seed=3)
    assert low < b.mean() - a.mean() < high
    assert paired_bootstrap_ci(a, b, seed=3) == (low, high)
    # Sign convention: b - a. Swapping the sides mirrors the interval.
    low2, high2 = paired_bootstrap_ci(b, a, seed=3)
    assert (low2, high2) == pytest.approx((-high, -low))


def test_bootstrap_identical_sides_is_zero_and_empty_is_nan() -> None:
    a = np.array([1, 0, 1, 1])
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)
    assert all(math.isnan(x) for x in paired_bootstrap_ci(np.array([]), np.array([])))
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.array([1, 0]), np.array([1]))


def test_bootstrap_is_fast_for_1000_rows() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 1000)
    b = rng.integers(0, 2, 1000)
    start = time.perf_counter()
    paired_bootstrap_ci(a, b, n_boot=10_000)
    assert time.perf_counter() - start < 1.0
