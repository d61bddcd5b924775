"""evalrun.results.power, checked against statsmodels' NormalIndPower and OLS variances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower

from evalrun.results import power as power_module
from evalrun.results.power import (
    DEFAULT_DISCORDANCE,
    min_detectable_difference,
    rows_needed,
    sd_diff_binary,
    sd_diff_from_data,
)
from evalrun.results.stats import mean_interval, paired_compare

# ratio=0 makes NormalIndPower a one-sample z-test: the paired test on d = b - a.
ONE_SAMPLE = NormalIndPower()


def sm_power(effect_size: float, nobs: float, alpha: float) -> float:
    return float(ONE_SAMPLE.power(effect_size=effect_size, nobs1=nobs, alpha=alpha, ratio=0))


def test_hand_computed_values() -> None:
    k = norm.ppf(0.975) + norm.ppf(0.8)
    assert k == pytest.approx(2.8016, abs=1e-4)
    # 7.849 * 0.25 / 0.0025 = 784.9 -> 785 rows.
    assert rows_needed(0.05, sd_diff=0.5) == 785
    assert min_detectable_difference(785, sd_diff=0.5) == pytest.approx(k * 0.5 / math.sqrt(785))
    # The docstring's example: 1,000 rows at the default discordance detect about 4.9 points.
    mdd = min_detectable_difference(1000, sd_diff=sd_diff_binary(DEFAULT_DISCORDANCE))
    assert round(mdd, 3) == 0.049


@pytest.mark.parametrize(
    ("n_rows", "sd", "alpha", "power"),
    [(100, 0.5, 0.05, 0.8), (400, 0.3, 0.01, 0.9), (2500, 0.55, 0.05, 0.8), (60, 0.2, 0.1, 0.95)],
)
def test_mdd_matches_statsmodels(n_rows: int, sd: float, alpha: float, power: float) -> None:
    effect = ONE_SAMPLE.solve_power(effect_size=None, nobs1=n_rows, alpha=alpha, power=power, ratio=0)
    # statsmodels also counts the far tail's (~1e-6) rejections, hence the tolerance.
    assert min_detectable_difference(n_rows, sd_diff=sd, alpha=alpha, power=power) == pytest.approx(
        effect * sd, rel=1e-4
    )


@pytest.mark.parametrize("design_effect", [1.0, 2.5, 4.0])
@pytest.mark.parametrize(
    ("difference", "sd", "alpha", "power"),
    [(0.05, 0.5, 0.05, 0.8), (0.02, 0.3, 0.05, 0.9), (-0.1, 0.55, 0.01, 0.8), (0.03, 0.4, 0.1, 0.7)],
)
def test_rows_needed_is_the_smallest_n_with_enough_power(
    difference: float, sd: float, alpha: float, power: float, design_effect: float
) -> None:
    n = rows_needed(difference, sd_diff=sd, alpha=alpha, power=power, design_effect=design_effect)
    effect = abs(difference) / sd
    # n rows with design effect D carry the information of n / D independent rows.
    assert sm_power(effect, n / design_effect, alpha) >= power - 1e-9
    # statsmodels also counts rejections in the far tail (1e-6 to 1e-4 of power), so its
    # exact-normal n can be a hair smaller; ours is that n rounded up, never less.
    n_sm = design_effect * ONE_SAMPLE.solve_power(effect_size=effect, nobs1=None, alpha=alpha, power=power, ratio=0)
    assert n_sm <= n < n_sm * (1 + 1e-3) + 1
    mdd = min_detectable_difference(n, sd_diff=sd, alpha=alpha, power=power, design_effect=design_effect)
    assert mdd <= abs(difference) + 1e-12
    assert min_detectable_difference(n - 1, sd_diff=sd, alpha=alpha, power=power,
                                     design_effect=design_effect) > abs(difference)


def test_rows_needed_scales_and_has_a_floor() -> None:
    base = rows_needed(0.04, sd_diff=0.5)
    assert rows_needed(0.02, sd_diff=0.5) == pytest.approx(4 * base, abs=4)
    assert rows_needed(-0.04, sd_diff=0.5) == base
    assert rows_needed(0.9, sd_diff=0.1) == 2  # one row gives no spread
    assert rows_needed(0.9, sd_diff=0.0) == 2
    assert min_detectable_difference(50, sd_diff=0.0) == 0.0


def test_power_validation() -> None:
    with pytest.raises(ValueError, match="n_rows"):
        min_detectable_difference(0, sd_diff=0.5)
    with pytest.raises(ValueError, match="difference"):
        rows_needed(0.0, sd_diff=0.5)
    with pytest.raises(ValueError, match="difference"):
        rows_needed(math.inf, sd_diff=0.5)
    with pytest.raises(ValueError, match="sd_diff"):
        rows_needed(0.1, sd_diff=-0.1)
    with pytest.raises(ValueError, match="design_effect"):
        rows_needed(0.1, sd_diff=0.5, design_effect=0.0)
    with pytest.raises(ValueError, match="alpha"):
        rows_needed(0.1, sd_diff=0.5, alpha=1.0)
    with pytest.raises(ValueError, match="power"):
        min_detectable_difference(10, sd_diff=0.5, power=0.0)


@pytest.mark.parametrize(("discordance", "difference"), [(0.3, 0.0), (0.2, 0.05), (0.5, -0.1), (0.1, 0.1)])
def test_sd_diff_binary_is_the_population_sd_of_d(discordance: float, difference: float) -> None:
    # 10,000 rows with exactly these shares of d = +1 and d = -1.
    n = 10_000
    up = round(n * (discordance + difference) / 2)
    down = round(n * (discordance - difference) / 2)
    d = np.array([1.0] * up + [-1.0] * down + [0.0] * (n - up - down))
    assert sd_diff_binary(discordance, difference) == pytest.approx(float(np.std(d)), rel=1e-9, abs=1e-12)


def test_sd_diff_binary_validation_and_default() -> None:
    assert sd_diff_binary(0.0) == 0.0
    assert sd_diff_binary(DEFAULT_DISCORDANCE) == pytest.approx(math.sqrt(0.3))
    assert 0.0 < DEFAULT_DISCORDANCE < 1.0
    with pytest.raises(ValueError, match="discordance"):
        sd_diff_binary(1.2)
    with pytest.raises(ValueError, match="exceed"):
        sd_diff_binary(0.1, 0.2)


def test_sd_diff_from_data_without_clusters() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.7).astype(float)
    b = np.where(rng.random(300) < 0.8, a, 1 - a)
    sd, deff = sd_diff_from_data(a, b)
    assert sd == pytest.approx(float(np.std(b - a, ddof=1)), rel=1e-12)
    assert deff == 1.0
    # The measured spread is the one paired_compare's standard error uses.
    assert sd / math.sqrt(300) == pytest.approx(paired_compare(a, b).se, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_design_effect_is_the_statsmodels_variance_ratio(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_clusters = 40
    groups = np.repeat(np.arange(n_clusters), rng.integers(2, 7, n_clusters))
    n = groups.size
    shared = rng.normal(0, 0.3, n_clusters)[groups]
    a = rng.random(n)
    b = np.clip(a + 0.05 + shared + rng.normal(0, 0.2, n), 0, 1)
    sd, deff = sd_diff_from_data(a, b, clusters=groups)
    d = b - a
    robust = sm.OLS(d, np.ones(n)).fit(
        cov_type="cluster", cov_kwds={"groups": groups, "use_correction": True, "df_correction": True}
    )
    iid = sm.OLS(d, np.ones(n)).fit()
    assert sd == pytest.approx(float(np.std(d, ddof=1)), rel=1e-12)
    assert deff == pytest.approx((robust.bse[0] / iid.bse[0]) ** 2, rel=1e-10)
    assert deff > 1.0  # a shared per-cluster shift inflates the variance
    assert deff * sd**2 / n == pytest.approx(mean_interval(d, clusters=groups).se ** 2, rel=1e-10)


def test_copies_have_a_design_effect_of_their_number() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(500)
    b = np.clip(a + rng.normal(0.02, 0.2, 500), 0, 1)
    sd, deff = sd_diff_from_data(np.repeat(a, 4), np.repeat(b, 4), clusters=np.repeat(np.arange(500), 4))
    assert deff == pytest.approx(4.0, rel=0.01)
    # So four copies of a question need four times the rows: they add nothing.
    assert rows_needed(0.03, sd_diff=sd, design_effect=deff) == pytest.approx(
        4 * rows_needed(0.03, sd_diff=sd), rel=0.01
    )


def test_sd_diff_from_data_edges() -> None:
    assert sd_diff_from_data([0.5, 0.5, 0.5], [0.7, 0.7, 0.7], clusters=[1, 1, 2]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="two rows"):
        sd_diff_from_data([1.0], [0.0])
    with pytest.raises(ValueError, match="two clusters"):
        sd_diff_from_data([1.0, 0.0], [0.0, 0.0], clusters=["p", "p"])
    with pytest.raises(ValueError, match="one value per row"):
        sd_diff_from_data([1.0, 0.0], [0.0])


def test_all_sorted_and_complete() -> None:
    assert power_module.__all__ == sorted(
        power_module.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    for name in power_module.__all__:
        assert hasattr(power_module, name), name
