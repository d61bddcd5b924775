"""How many rows a paired comparison of two variants needs, and what it can detect.

Two variants ``a`` and ``b`` are scored on the same rows and compared through the
per-row differences ``d = b - a`` (see :func:`evalrun.results.stats.paired_compare`).
With ``sd_diff`` the standard deviation of ``d`` across rows, a two-sided test at
level ``alpha`` has power ``power`` against a true mean difference ``δ`` when
(normal approximation)

    n = design_effect · ((z_{1-α/2} + z_{power}) · sd_diff / δ)²

rows, and ``n`` rows detect differences down to the minimum detectable difference

    MDD = (z_{1-α/2} + z_{power}) · sd_diff · sqrt(design_effect / n).

``z_q`` is the standard normal quantile (z_{0.975} + z_{0.8} ≈ 1.960 + 0.842 =
2.802 at the defaults). ``design_effect`` is the factor by which clustering
(several questions per passage) inflates the variance of the mean difference;
it is 1 for independent rows (:func:`sd_diff_from_data` estimates it from a run).

Where ``sd_diff`` comes from:

* a finished run: :func:`sd_diff_from_data` (per-row values of both variants);
* 0/1 scores, planned: :func:`sd_diff_binary` from the share of rows on which
  the variants disagree (:data:`DEFAULT_DISCORDANCE` when nothing is known yet).

The formulas ignore the t distribution's heavier tails, which matters only for
small samples: below about 30 rows (or 30 clusters) the real power is somewhat
lower than asked for.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri

from evalrun.results.stats import _cluster_codes, _cluster_se, _cluster_sums, _values

__all__ = [
    "DEFAULT_DISCORDANCE",
    "min_detectable_difference",
    "rows_needed",
    "sd_diff_binary",
    "sd_diff_from_data",
]

DEFAULT_DISCORDANCE = 0.30
"""Share of rows on which two variants disagree (exactly one right), for planning
a comparison of 0/1 scores before any run exists.

Assumption: the two variants disagree on 30% of rows, so that with no true
difference ``sd_diff = sqrt(0.30) ≈ 0.548``. That is what two variants at about
80% accuracy whose mistakes were unrelated would produce (2·0.8·0.2 = 0.32).
Variants of one model (prompt wordings) share most of their mistakes and usually
disagree on far fewer rows, so for them this overstates the rows needed: it is
meant to be conservative, never flattering. It is *not* an upper bound: two
unrelated models near 50% accuracy can disagree on up to half the rows
(``discordance = 0.5``); pass :func:`sd_diff_binary` of a larger share, or
measure it with :func:`sd_diff_from_data`, in that case.
"""


def _z_sum(alpha: float, power: float) -> float:
    """``z_{1-α/2} + z_{power}``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be strictly between 0 and 1, got {power!r}")
    return float(ndtri(1.0 - alpha / 2.0) + ndtri(power))


def _check_spread(sd_diff: float, design_effect: float) -> None:
    if not (math.isfinite(sd_diff) and sd_diff >= 0.0):
        raise ValueError(f"sd_diff must be finite and non-negative, got {sd_diff!r}")
    if not (math.isfinite(design_effect) and design_effect > 0.0):
        raise ValueError(f"design_effect must be finite and positive, got {design_effect!r}")


def min_detectable_difference(
    n_rows: int,
    *,
    sd_diff: float,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
) -> float:
    """Smallest true mean difference ``n_rows`` paired rows detect with this power.

    ``MDD = (z_{1-α/2} + z_{power}) · sd_diff · sqrt(design_effect / n_rows)``
    (two-sided test at level ``alpha``). E.g. 1,000 rows of 0/1 scores at the
    default discordance (``sd_diff ≈ 0.548``) detect about 4.9 points.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows!r}")
    _check_spread(sd_diff, design_effect)
    return _z_sum(alpha, power) * sd_diff * math.sqrt(design_effect / n_rows)


def rows_needed(
    difference: float,
    *,
    sd_diff: float,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
) -> int:
    """Rows a paired comparison needs to detect a true mean difference ``difference``.

    ``n = design_effect · ((z_{1-α/2} + z_{power}) · sd_diff / δ)²`` rounded up
    (two-sided test at level ``alpha``; the sign of ``δ`` does not matter), and
    at least 2, because one row gives no estimate of the spread.
    """
    if not (math.isfinite(difference) and difference != 0.0):
        raise ValueError(f"difference must be finite and non-zero, got {difference!r}")
    _check_spread(sd_diff, design_effect)
    n = design_effect * (_z_sum(alpha, power) * sd_diff / difference) ** 2
    # Shave a rounding error off so an exact integer does not round up to the next.
    return max(2, math.ceil(n * (1.0 - 1e-12)))


def sd_diff_binary(discordance: float, difference: float = 0.0) -> float:
    """Standard deviation of the per-row difference ``d = b - a`` for 0/1 scores.

    ``d`` is -1, 0 or +1; with ``ψ = discordance``, the share of rows where
    exactly one variant is right, and ``δ = difference`` the mean difference,
    ``E[d²] = ψ`` and ``Var(d) = ψ - δ²``, so ``sd_diff = sqrt(ψ - δ²)``. Needs
    ``|δ| <= ψ`` (a difference needs that many discordant rows). ``δ = 0`` gives
    the largest spread, hence the most rows: the conservative choice.
    """
    if not (math.isfinite(discordance) and 0.0 <= discordance <= 1.0):
        raise ValueError(f"discordance must be in [0, 1], got {discordance!r}")
    if not (math.isfinite(difference) and abs(difference) <= discordance + 1e-12):
        raise ValueError(
            f"|difference| must not exceed the discordance, got difference={difference!r}, "
            f"discordance={discordance!r}"
        )
    return math.sqrt(max(0.0, discordance - difference * difference))


def sd_diff_from_data(
    a: ArrayLike,
    b: ArrayLike,
    clusters: ArrayLike | None = None,
) -> tuple[float, float]:
    """``(sd_diff, design_effect)`` measured on a finished run, for planning the next.

    ``a`` and ``b`` are the two variants' per-row values (one per row, repeats
    averaged), ``clusters`` optionally a cluster id per row. ``sd_diff`` is
    ``sd(b - a, ddof=1)``. ``design_effect`` is the cluster-robust variance of the
    mean difference (the CR1 estimator of :func:`evalrun.results.stats.mean_interval`)
    divided by the iid variance ``sd_diff² / n``; exactly 1.0 without clusters,
    and 1.0 by convention when every difference is equal (both variances are 0).
    It carries over to a planned run only if that run's clusters are of similar
    size. Needs at least two rows (two clusters); raises ``ValueError`` otherwise.
    """
    xa = _values(a, "a")
    xb = _values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have one value per row each, got {xa.size} and {xb.size}")
    n = int(xa.size)
    if n < 2:
        raise ValueError(f"need at least two rows to measure a spread, got {n}")
    d = xb - xa
    sd = float(np.std(d, ddof=1))
    if clusters is None:
        return sd, 1.0
    codes, g = _cluster_codes(clusters, n)
    if g < 2:
        raise ValueError(f"need at least two clusters to measure a design effect, got {g}")
    if sd == 0.0:
        return sd, 1.0
    sums, counts = _cluster_sums(d, codes, g)
    se_cluster = _cluster_se(sums, counts, float(d.mean()))
    return sd, se_cluster**2 / (sd * sd / n)
