"""evalrun.results.stats, every figure checked against scipy / statsmodels or a hand formula."""

from __future__ import annotations

import ast
import itertools
import math
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest, norm, ttest_rel
from scipy.stats import t as student_t
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa
from statsmodels.stats.multitest import multipletests

from evalrun.results import agreement, stats
from evalrun.results.agreement import cohen_kappa
from evalrun.results.stats import (
    BOOTSTRAP_MAX_UNITS,
    holm,
    mcnemar_exact,
    mean_interval,
    paired_compare,
    wilson_interval,
)

# ---------------------------------------------------------------------------
# Independent references


def sm_cluster_fit(y: np.ndarray, groups: np.ndarray) -> sm.regression.linear_model.RegressionResults:
    """OLS of y on a constant with statsmodels' cluster covariance, corrections spelled out.

    use_correction=True multiplies by G/(G-1)·(N-1)/(N-K) (K = 1 here, so G/(G-1));
    df_correction=True makes inference use a t distribution with G - 1 df.
    """
    return sm.OLS(y, np.ones(y.size)).fit(
        cov_type="cluster",
        cov_kwds={"groups": groups, "use_correction": True, "df_correction": True},
        use_t=True,
    )


def naive_cluster_bootstrap(
    d: np.ndarray, groups: np.ndarray, *, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Resample whole clusters row by row (slow and obvious), same random stream as the module."""
    ids = np.unique(groups)
    members = [d[groups == c] for c in ids]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(n_boot, ids.size), dtype=np.int32)
    means = np.array([np.concatenate([members[j] for j in row]).mean() for row in draws])
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def kappa_table(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    table = np.zeros((k, k))
    np.add.at(table, (a, b), 1)
    return table


# ---------------------------------------------------------------------------
# wilson_interval


def test_wilson_known_value_8_of_10() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-5)
    assert high == pytest.approx(0.9433, abs=5e-5)


def test_wilson_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for k, n, conf in [(37, 120, 0.99), (1, 7, 0.95), (55, 60, 0.9)]:
        expected = proportion_confint(k, n, alpha=1 - conf, method="wilson")
        assert wilson_interval(k, n, conf) == pytest.approx(expected, rel=1e-9)


def test_wilson_edges() -> None:
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.0 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


@given(st.integers(0, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_point_estimate(case: tuple[int, int]) -> None:
    k, n = case
    low, high = wilson_interval(k, n)
    if n == 0:
        assert math.isnan(low) and math.isnan(high)
    else:
        assert 0.0 <= low <= k / n <= high <= 1.0


# ---------------------------------------------------------------------------
# mcnemar_exact


def test_mcnemar_hand_computed() -> None:
    # b=1, c=5: P(X <= 1) with X ~ Binom(6, 1/2) is 7/64, doubled 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(4, 4) == 1.0  # capped at 1
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_equals_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


# ---------------------------------------------------------------------------
# holm


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


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ps = rng.random(int(rng.integers(1, 25))) ** 3
    expected = multipletests(ps, method="holm")[1]
    assert holm(ps.tolist()) == pytest.approx(list(expected), abs=1e-12)
    # With NaNs mixed in, the others are adjusted as if the NaNs were not there.
    with_nan = [*ps.tolist(), math.nan]
    assert holm(with_nan)[:-1] == pytest.approx(list(expected), abs=1e-12)


# ---------------------------------------------------------------------------
# mean_interval


def test_mean_binary_is_wilson() -> None:
    x = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1])
    est = mean_interval(x)
    assert est.method == "wilson" and est.n == 10 and est.clusters is None
    assert est.mean == 0.8
    assert (est.low, est.high) == wilson_interval(8, 10)
    assert est.se == pytest.approx(math.sqrt(0.8 * 0.2 / 10))
    assert est.note == ""


def test_mean_binary_one_row_still_gets_a_wilson_interval() -> None:
    est = mean_interval([1])
    assert est.method == "wilson"
    assert (est.low, est.high) == wilson_interval(1, 1)
    assert 0.0 < est.low < 1.0 and est.high == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_mean_per_row_means_match_plain_formula_and_ols(seed: int, confidence: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, 60) / 3  # per-row means of three repeats
    est = mean_interval(x, confidence=confidence)
    n = x.size
    se = np.std(x, ddof=1) / math.sqrt(n)
    q = student_t.ppf(1 - (1 - confidence) / 2, n - 1)
    assert est.method == "clt" and est.n == n
    assert est.mean == pytest.approx(x.mean(), rel=1e-12)
    assert est.se == pytest.approx(se, rel=1e-12)
    assert (est.low, est.high) == pytest.approx((x.mean() - q * se, x.mean() + q * se), rel=1e-12)
    ols = sm.OLS(x, np.ones(n)).fit()
    assert est.se == pytest.approx(ols.bse[0], rel=1e-10)
    assert (est.low, est.high) == pytest.approx(tuple(ols.conf_int(alpha=1 - confidence)[0]), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mean_cluster_se_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_clusters = int(rng.integers(5, 40))
    sizes = rng.integers(1, 8, n_clusters)
    groups = np.repeat(np.arange(n_clusters), sizes)
    effect = rng.normal(0, 0.2, n_clusters)[groups]
    y = np.clip(0.6 + effect + rng.normal(0, 0.1, groups.size), 0, 1)
    est = mean_interval(y, clusters=groups)
    fit = sm_cluster_fit(y, groups)
    assert est.method == "clt-cluster" and est.n == y.size and est.clusters == n_clusters
    assert fit.df_resid_inference == n_clusters - 1
    assert est.se == pytest.approx(fit.bse[0], rel=1e-10)
    low, high = fit.conf_int()[0]
    assert est.low == pytest.approx(max(0.0, low), rel=1e-10)
    assert est.high == pytest.approx(min(1.0, high), rel=1e-10)


def test_mean_cluster_formula_by_hand_and_string_ids() -> None:
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0])
    ids = ["p1", "p1", "p2", "p2", "p2", "p3", "p3"]
    est = mean_interval(y, clusters=ids)
    ybar = y.mean()
    resid_sums = [sum(y[i] - ybar for i in range(7) if ids[i] == c) for c in ("p1", "p2", "p3")]
    g, n = 3, 7
    se = math.sqrt(g / (g - 1) * sum(s * s for s in resid_sums)) / n
    assert est.se == pytest.approx(se, rel=1e-12)
    codes = np.unique(ids, return_inverse=True)[1]
    assert est.se == pytest.approx(sm_cluster_fit(y, codes).bse[0], rel=1e-10)
    # Cluster ids of any hashable kind, including mixed types (object arrays).
    mixed = [1, 1, "b", "b", "b", (3,), (3,)]
    assert mean_interval(y, clusters=np.array(mixed, dtype=object)).se == pytest.approx(se, rel=1e-12)


def test_mean_singleton_clusters_equal_iid_se() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(50)
    clustered = mean_interval(y, clusters=np.arange(50))
    iid = mean_interval(y)
    assert clustered.se == pytest.approx(iid.se, rel=1e-12)
    assert clustered.method == "clt-cluster" and clustered.clusters == 50
    assert (clustered.low, clustered.high) == pytest.approx((iid.low, iid.high), rel=1e-12)


def test_mean_binary_values_with_clusters_use_the_cluster_se() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 1])
    groups = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    est = mean_interval(y, clusters=groups)
    assert est.method == "clt-cluster"
    assert est.se == pytest.approx(sm_cluster_fit(y.astype(float), groups).bse[0], rel=1e-10)


def test_mean_clips_to_unit_interval_only_for_unit_values() -> None:
    est = mean_interval([1.0, 1.0, 0.9, 1.0])
    assert est.high == 1.0 and est.low < 1.0
    scores = np.array([3.0, 5.0, 4.0, 9.0])  # not in [0, 1]: no clipping
    est = mean_interval(scores)
    se = np.std(scores, ddof=1) / 2
    assert est.low == pytest.approx(scores.mean() - student_t.ppf(0.975, 3) * se)


def test_mean_degenerate_inputs() -> None:
    empty = mean_interval([])
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.mean, empty.se, empty.low, empty.high))
    assert empty.note
    one = mean_interval([0.5])
    assert one.mean == 0.5 and one.n == 1 and one.method == "clt"
    assert math.isnan(one.se) and math.isnan(one.low) and math.isnan(one.high)
    assert "one row" in one.note
    single = mean_interval([0.0, 1.0, 1.0], clusters=["x", "x", "x"])
    assert single.clusters == 1 and single.mean == pytest.approx(2 / 3)
    assert math.isnan(single.se) and math.isnan(single.low) and math.isnan(single.high)
    assert "one cluster" in single.note
    flat = mean_interval([0.5, 0.5, 0.5])
    assert flat.se == 0.0 and flat.low == flat.high == 0.5 and "zero width" in flat.note
    empty_clustered = mean_interval([], clusters=[])
    assert empty_clustered.clusters == 0 and empty_clustered.method == "clt-cluster"


def test_mean_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        mean_interval([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="one id per row"):
        mean_interval([1, 0, 1], clusters=[1, 2])
    with pytest.raises(ValueError, match="cluster id"):
        mean_interval([1, 0, 1], clusters=np.array(["a", None, "b"], dtype=object))
    with pytest.raises(ValueError, match="cluster id"):
        mean_interval([1, 0, 1], clusters=[1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1, 0, 1], confidence=0.0)


# ---------------------------------------------------------------------------
# paired_compare: tests and standard errors


def test_paired_binary_is_exact_mcnemar() -> None:
    rng = np.random.default_rng(11)
    a = (rng.random(120) < 0.6).astype(int)
    b = np.where(rng.random(120) < 0.8, a, 1 - a)
    res = paired_compare(a, b)
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
    assert res.test == "mcnemar-exact" and res.n == 120 and res.clusters is None
    assert (res.only_a, res.only_b) == (only_a, only_b)
    table = [[((a == 1) & (b == 1)).sum(), only_a], [only_b, ((a == 0) & (b == 0)).sum()]]
    assert res.p_value == pytest.approx(sm_mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert res.mean_a == a.mean() and res.mean_b == b.mean()
    assert res.diff == pytest.approx(b.mean() - a.mean(), abs=1e-15)
    assert res.se == pytest.approx(np.std(b - a, ddof=1) / math.sqrt(120), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_means_use_paired_t(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 80) / 3
    b = np.clip(a + rng.integers(-1, 3, 80) / 3, 0, 1)
    res = paired_compare(a, b)
    expected = ttest_rel(b, a)
    assert res.test == "paired-t" and res.only_a is None and res.only_b is None
    assert res.p_value == pytest.approx(expected.pvalue, rel=1e-10)
    assert res.diff / res.se == pytest.approx(expected.statistic, rel=1e-10)
    assert res.se == pytest.approx(sm.OLS(b - a, np.ones(80)).fit().bse[0], rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_paired_clusters_use_cluster_t_like_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_clusters = int(rng.integers(6, 40))
    groups = np.repeat(np.arange(n_clusters), rng.integers(1, 6, n_clusters))
    n = groups.size
    skill = rng.normal(0, 1, n_clusters)[groups]
    a = (rng.random(n) < norm.cdf(skill)).astype(float)
    b = (rng.random(n) < norm.cdf(skill + 0.3)).astype(float)
    res = paired_compare(a, b, clusters=groups)
    fit = sm_cluster_fit(b - a, groups)
    assert res.test == "cluster-t" and res.clusters == n_clusters and res.n == n
    assert fit.df_resid_inference == n_clusters - 1  # the df statsmodels uses: G - 1
    assert res.diff == pytest.approx(fit.params[0], rel=1e-12, abs=1e-15)
    assert res.se == pytest.approx(fit.bse[0], rel=1e-10)
    assert res.p_value == pytest.approx(fit.pvalues[0], rel=1e-9)
    # Discordant counts are descriptive and still reported for 0/1 values.
    assert res.only_a == int(((a == 1) & (b == 0)).sum())


def test_paired_p_value_edge_cases() -> None:
    same = paired_compare([0.5, 1.0, 0.0], [0.5, 1.0, 0.0])
    assert same.test == "paired-t" and same.p_value == 1.0 and same.se == 0.0
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    shifted = paired_compare([0.0, 0.5, 0.25], [0.25, 0.75, 0.5])
    assert math.isnan(shifted.p_value) and "same non-zero" in shifted.note
    assert "zero width" in same.note
    binary_same = paired_compare([1, 0, 1], [1, 0, 1])
    assert binary_same.test == "mcnemar-exact" and binary_same.p_value == 1.0
    assert "zero width" in binary_same.note
    assert (binary_same.only_a, binary_same.only_b) == (0, 0)


def test_paired_empty_one_row_one_cluster_and_mismatch() -> None:
    empty = paired_compare([], [])
    assert empty.n == 0 and empty.note == "no rows"
    assert all(math.isnan(v) for v in (empty.mean_a, empty.mean_b, empty.diff, empty.se,
                                       empty.ci_low, empty.ci_high, empty.p_value))
    one = paired_compare([0.2], [0.6])
    assert one.n == 1 and one.diff == pytest.approx(0.4)
    assert math.isnan(one.se) and math.isnan(one.ci_low) and math.isnan(one.p_value)
    assert "one row" in one.note
    single = paired_compare([1, 0, 1], [1, 1, 1], clusters=[7, 7, 7])
    assert single.clusters == 1 and single.test == "cluster-t"
    assert math.isnan(single.se) and math.isnan(single.ci_low) and math.isnan(single.ci_high)
    assert math.isnan(single.p_value) and "one cluster" in single.note
    with pytest.raises(ValueError, match="one value per row"):
        paired_compare([1, 0], [1])
    with pytest.raises(ValueError, match="one id per row"):
        paired_compare([1, 0], [1, 1], clusters=[1])
    with pytest.raises(ValueError, match="n_boot"):
        paired_compare([1, 0], [1, 1], n_boot=0)


# ---------------------------------------------------------------------------
# paired_compare: intervals


def test_bootstrap_contains_diff_is_deterministic_and_mirrors() -> None:
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.6).astype(int)
    b = (rng.random(300) < 0.7).astype(int)
    res = paired_compare(a, b, seed=3)
    assert res.ci_method == "bootstrap"
    assert res.ci_low < res.diff < res.ci_high
    assert paired_compare(a, b, seed=3) == res
    # Sign convention: b - a. Swapping the sides mirrors the interval.
    swapped = paired_compare(b, a, seed=3)
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-res.ci_high, -res.ci_low))
    assert swapped.p_value == res.p_value


def test_bootstrap_equals_naive_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, 40) / 2
    b = rng.integers(0, 3, 40) / 2
    expected = naive_cluster_bootstrap(b - a, np.arange(40), n_boot=500, seed=9, confidence=0.9)
    res = paired_compare(a, b, n_boot=500, seed=9, confidence=0.9)
    assert (res.ci_low, res.ci_high) == pytest.approx(expected, abs=1e-12)
    # Chunking only bounds memory: tiny chunks give the same interval.
    monkeypatch.setattr(stats, "_BOOT_CHUNK_INDICES", 41 * 3)
    assert paired_compare(a, b, n_boot=500, seed=9, confidence=0.9) == res


@pytest.mark.parametrize("seed", [0, 1])
def test_cluster_bootstrap_equals_naive_cluster_resampling(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(25), rng.integers(1, 6, 25))  # unequal sizes
    n = groups.size
    a = (rng.random(n) < 0.6).astype(float)
    b = (rng.random(n) < 0.7).astype(float)
    expected = naive_cluster_bootstrap(b - a, groups, n_boot=400, seed=seed)
    res = paired_compare(a, b, clusters=groups, n_boot=400, seed=seed)
    assert res.ci_method == "cluster-bootstrap"
    assert (res.ci_low, res.ci_high) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(stats, "_BOOT_CHUNK_INDICES", 60)
    chunked = paired_compare(a, b, clusters=groups, n_boot=400, seed=seed)
    assert (chunked.ci_low, chunked.ci_high) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_close_to_analytic_interval_for_moderate_n() -> None:
    rng = np.random.default_rng(21)
    a = (rng.random(2000) < 0.7).astype(float)
    b = np.where(rng.random(2000) < 0.85, a, (rng.random(2000) < 0.75).astype(float))
    res = paired_compare(a, b)
    q = student_t.ppf(0.975, 1999)
    assert res.ci_low == pytest.approx(res.diff - q * res.se, abs=0.1 * q * res.se)
    assert res.ci_high == pytest.approx(res.diff + q * res.se, abs=0.1 * q * res.se)


def test_analytic_interval_above_the_bootstrap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "BOOTSTRAP_MAX_UNITS", 50)
    rng = np.random.default_rng(2)
    a = rng.random(51)
    b = rng.random(51)
    at = paired_compare(a[:50], b[:50])
    assert at.ci_method == "bootstrap"
    above = paired_compare(a, b, confidence=0.9)
    assert above.ci_method == "clt"
    fit = sm.OLS(b - a, np.ones(51)).fit()
    assert (above.ci_low, above.ci_high) == pytest.approx(tuple(fit.conf_int(alpha=0.1)[0]), rel=1e-10)
    # Clusters: the unit is the cluster; 60 rows in 30 clusters still bootstrap.
    groups = np.repeat(np.arange(30), 2)
    x, y = rng.random(60), rng.random(60)
    assert paired_compare(x, y, clusters=groups).ci_method == "cluster-bootstrap"
    groups = np.arange(60)
    res = paired_compare(x, y, clusters=groups)
    assert res.ci_method == "clt-cluster"
    fit = sm_cluster_fit(y - x, groups)
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(fit.conf_int()[0]), rel=1e-10)


def test_threshold_constant_is_what_the_docs_say() -> None:
    assert BOOTSTRAP_MAX_UNITS == 5_000
    # A chunk's indices stay within the 2-4 million the design allows.
    assert 2_000_000 <= stats._BOOT_CHUNK_INDICES <= 4_000_000


@pytest.mark.parametrize("layout", ["rows", "clusters-of-4", "clusters-of-20", "clusters-of-20-uneven"])
def test_100k_rows_take_little_memory(layout: str) -> None:
    # How fast is for bench/timed.py (a time limit here failed on a loaded machine).
    rng = np.random.default_rng(0)
    n = 100_000
    a = (rng.random(n) < 0.70).astype(float)
    b = np.where(rng.random(n) < 0.8, a, (rng.random(n) < 0.72).astype(float))
    clusters: np.ndarray | None = None
    if layout == "clusters-of-4":
        clusters = np.arange(n) // 4  # 25,000 clusters: analytic interval
    elif layout == "clusters-of-20":
        clusters = np.arange(n) // 20  # 5,000 clusters: the largest cluster bootstrap
    elif layout == "clusters-of-20-uneven":
        clusters = np.sort(rng.integers(0, 5_000, n))
    paired_compare(a[:100], b[:100], clusters=None if clusters is None else clusters[:100])  # warm up
    tracemalloc.start()
    res = paired_compare(a, b, clusters=clusters)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert res.n == n
    expected_method = {"rows": "clt", "clusters-of-4": "clt-cluster"}.get(layout, "cluster-bootstrap")
    assert res.ci_method == expected_method
    assert peak < 50e6, f"{layout}: peak {peak / 1e6:.1f} MB"


# ---------------------------------------------------------------------------
# paired_compare: the unit of analysis is the question


def test_identical_repeats_averaged_per_row_equal_one_repeat() -> None:
    rng = np.random.default_rng(4)
    one_a = (rng.random(90) < 0.6).astype(float)
    one_b = (rng.random(90) < 0.7).astype(float)
    cells_a = np.repeat(one_a[:, None], 3, axis=1)  # 3 identical repeats per row
    cells_b = np.repeat(one_b[:, None], 3, axis=1)
    averaged = paired_compare(cells_a.mean(axis=1), cells_b.mean(axis=1))
    single = paired_compare(one_a, one_b)
    assert averaged == single
    assert averaged.n == 90

    # Per-row means that are not 0/1 (two distinct repeats), then repeated again identically.
    means_a = rng.integers(0, 3, 90) / 2
    means_b = rng.integers(0, 3, 90) / 2
    tripled_a = np.repeat(means_a[:, None], 3, axis=1).mean(axis=1)
    tripled_b = np.repeat(means_b[:, None], 3, axis=1).mean(axis=1)
    assert paired_compare(tripled_a, tripled_b) == paired_compare(means_a, means_b)


def test_cells_counted_as_rows_is_the_bug_this_api_prevents() -> None:
    # 3 rows only a got right, 8 only b, 29 both: p = 0.23 over the 40 questions ...
    a = np.array([1] * 3 + [0] * 8 + [1] * 29)
    b = np.array([0] * 3 + [1] * 8 + [1] * 29)
    rows = paired_compare(a, b)
    assert rows.p_value == pytest.approx(0.2265625)
    # ... and p = 0.0135, "significant", if 3 identical repeats were counted as 120 rows.
    cells = paired_compare(np.repeat(a, 3), np.repeat(b, 3))
    assert cells.n == 120 and cells.p_value == pytest.approx(0.01353, abs=1e-5)
    # The per-row means of those repeats are the rows again.
    means = paired_compare(np.repeat(a, 3).reshape(-1, 3).mean(axis=1), np.repeat(b, 3).reshape(-1, 3).mean(axis=1))
    assert means == rows


def test_copies_under_one_cluster_id_do_not_narrow_the_interval() -> None:
    rng = np.random.default_rng(8)
    n_q = 200
    a = (rng.random(n_q) < 0.65).astype(float)
    b = np.where(rng.random(n_q) < 0.75, a, (rng.random(n_q) < 0.7).astype(float))
    original = paired_compare(a, b, seed=1)

    copies_a, copies_b = np.repeat(a, 4), np.repeat(b, 4)
    question = np.repeat(np.arange(n_q), 4)
    clustered = paired_compare(copies_a, copies_b, clusters=question, seed=1)
    naive = paired_compare(copies_a, copies_b, seed=1)

    width = original.ci_high - original.ci_low
    # The cluster bootstrap over the 200 questions is the row bootstrap over the originals.
    assert (clustered.ci_low, clustered.ci_high) == pytest.approx((original.ci_low, original.ci_high), abs=1e-12)
    # CR1 with G/(G-1) and df = G-1 on 4 copies is exactly the paired t-test on the originals.
    t_orig = ttest_rel(b, a)
    assert clustered.p_value == pytest.approx(t_orig.pvalue, rel=1e-9)
    assert clustered.p_value == pytest.approx(original.p_value, rel=0.5)  # t vs exact McNemar: about equal
    assert clustered.se == pytest.approx(original.se, rel=1e-12)
    # Treating the copies as rows halves the interval and the standard error.
    assert (naive.ci_high - naive.ci_low) / width == pytest.approx(0.5, abs=0.05)
    assert naive.se / clustered.se == pytest.approx(0.5, abs=0.01)
    assert naive.p_value < clustered.p_value / 2


# ---------------------------------------------------------------------------
# cohen_kappa


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 3), (2, 4), (3, 3)])
def test_kappa_matches_statsmodels(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    human = rng.integers(0, k, 150)
    grader = np.where(rng.random(150) < 0.7, human, rng.integers(0, k, 150))
    res = cohen_kappa(grader, human)
    ref = sm_cohens_kappa(kappa_table(grader, human, k))  # its interval is kappa ± z_0.975·ASE
    assert res.n == 150 and res.method == "cohen-large-sample"
    assert res.kappa == pytest.approx(ref.kappa, rel=1e-12)
    assert res.kappa_se == pytest.approx(ref.std_kappa, rel=1e-10)
    assert res.kappa_low == pytest.approx(ref.kappa_low, rel=1e-10)
    assert res.kappa_high == pytest.approx(ref.kappa_upp, rel=1e-10)
    agree = int((grader == human).sum())
    assert res.agreement == agree / 150
    assert (res.agreement_low, res.agreement_high) == wilson_interval(agree, 150)
    # Another confidence level: statsmodels fixes 95%, so rebuild from its ASE.
    res90 = cohen_kappa(grader, human, confidence=0.9)
    z90 = norm.ppf(0.95)
    assert res90.kappa_low == pytest.approx(ref.kappa - z90 * ref.std_kappa, rel=1e-10)
    assert res90.kappa_high == pytest.approx(ref.kappa + z90 * ref.std_kappa, rel=1e-10)


def test_kappa_string_labels_and_explicit_label_order() -> None:
    a = ["pass", "fail", "pass", "pass", "partial", "fail", "pass", "fail"]
    b = ["pass", "fail", "fail", "pass", "pass", "fail", "pass", "partial"]
    res = cohen_kappa(a, b)
    assert res.labels == ("fail", "partial", "pass")
    idx = {"fail": 0, "partial": 1, "pass": 2}
    table = kappa_table(np.array([idx[v] for v in a]), np.array([idx[v] for v in b]), 3)
    ref = sm_cohens_kappa(table)
    assert res.kappa == pytest.approx(ref.kappa) and res.kappa_se == pytest.approx(ref.std_kappa)
    # A category nobody used changes nothing but the table's shape.
    wider = cohen_kappa(a, b, labels=["pass", "partial", "fail", "skip"])
    assert wider.labels == ("pass", "partial", "fail", "skip")
    assert wider.kappa == pytest.approx(res.kappa) and wider.kappa_se == pytest.approx(res.kappa_se)
    with pytest.raises(ValueError, match="not in"):
        cohen_kappa(a, b, labels=["pass", "fail"])
    with pytest.raises(ValueError, match="repeat"):
        cohen_kappa(a, b, labels=["pass", "pass", "fail", "partial"])


def test_kappa_hand_computed_two_by_two() -> None:
    # 20 rows: both yes 7, a yes/b no 3, a no/b yes 2, both no 8.
    a = [1] * 7 + [1] * 3 + [0] * 2 + [0] * 8
    b = [1] * 7 + [0] * 3 + [1] * 2 + [0] * 8
    res = cohen_kappa(a, b)
    p_o = 15 / 20
    p_e = (10 / 20) * (9 / 20) + (10 / 20) * (11 / 20)
    assert res.kappa == pytest.approx((p_o - p_e) / (1 - p_e))


def test_kappa_degenerate_cases() -> None:
    empty = cohen_kappa([], [])
    assert empty.n == 0 and math.isnan(empty.kappa) and math.isnan(empty.agreement)
    same = cohen_kappa(["A"] * 10, ["A"] * 10)
    assert same.agreement == 1.0 and math.isnan(same.kappa) and math.isnan(same.kappa_low)
    assert "single label" in same.note
    assert (same.agreement_low, same.agreement_high) == wilson_interval(10, 10)
    one_sided = cohen_kappa(["A"] * 6, ["A", "B", "A", "A", "B", "A"])
    assert one_sided.kappa == pytest.approx(0.0, abs=1e-12)  # a constant rater carries no information
    perfect = cohen_kappa([0, 1, 1, 0, 2], [0, 1, 1, 0, 2])
    assert perfect.kappa == pytest.approx(1.0) and perfect.kappa_se == 0.0
    assert perfect.kappa_low == pytest.approx(1.0) and "agreement interval" in perfect.note
    # A wide interval is clipped to [-1, 1].
    small = cohen_kappa([0, 1, 1, 1], [0, 1, 1, 0])
    ref = sm_cohens_kappa(kappa_table(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 0]), 2))
    assert ref.kappa_upp > 1.0 and small.kappa_high == 1.0
    assert small.kappa_low == pytest.approx(ref.kappa_low, rel=1e-10)
    with pytest.raises(ValueError, match="one label per row"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="missing"):
        cohen_kappa(["A", None], ["A", "B"])
    with pytest.raises(ValueError, match="missing"):
        cohen_kappa(np.array([1.0, np.nan]), np.array([1.0, 0.0]))


# ---------------------------------------------------------------------------
# Module hygiene


def isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order, the project's convention: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("module", [stats, agreement])
def test_all_sorted_and_complete(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__, key=isort_key)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", ["stats.py", "agreement.py", "power.py"])
def test_package_imports_only_numpy_and_scipy(module: str) -> None:
    path = Path(stats.__file__).with_name(module)
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "math", "collections", "dataclasses", "typing", "numpy", "scipy", "evalrun"}


def test_accepts_what_the_reports_pass() -> None:
    import pandas as pd

    frame = pd.DataFrame({
        "a": [True, False, True, True, False, True],
        "b": [True, True, True, False, True, True],
        "passage": pd.array(["p1", "p1", "p2", "p2", "p3", "p3"], dtype="string"),
        "human": ["ok", "bad", "ok", "ok", "bad", "ok"],
        "grader": ["ok", "bad", "bad", "ok", "bad", "ok"],
    })
    res = paired_compare(frame["a"], frame["b"], clusters=frame["passage"])
    expected = paired_compare(frame["a"].to_numpy(float), frame["b"].to_numpy(float),
                              clusters=[1, 1, 2, 2, 3, 3])
    assert res == expected and res.clusters == 3
    with pytest.raises(ValueError, match="cluster id"):
        mean_interval(frame["a"], clusters=pd.array(["p1", None, "p2", "p2", "p3", "p3"], dtype="string"))
    kappa = cohen_kappa(frame["grader"], frame["human"])
    assert kappa == cohen_kappa(list(frame["grader"]), list(frame["human"]))
    assert kappa.labels == ("bad", "ok")
