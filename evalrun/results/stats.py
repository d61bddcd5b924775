"""Statistics for eval results: accuracy intervals and paired comparisons (agreement of two
raters is in `evalrun.results.agreement`).

Every function here takes **one value per question** (a dataset row), never one
per ``(row, repeat)`` cell. Repeats of a row are averaged by the caller first, so
a row's value is its mean score in ``[0, 1]`` (or a single 0/1 when there was one
repeat). Repeats reduce the noise *within* a row; they do not add questions, and
counting them as rows would shrink every interval and p-value by copies of the
same question (Miller 2024, "Adding Error Bars to Evals").

When questions were drawn in groups (several questions about one passage, one
document, one conversation), pass a ``clusters`` id per row: the standard errors
are then cluster-robust and the bootstrap resamples whole clusters.

Conventions:

* A difference is ``b - a`` (the second variant minus the first, or the variant
  minus the baseline), so a positive difference means ``b`` scored higher.
* Results are small frozen dataclasses; a quantity that cannot be estimated is
  NaN and the result's ``note`` says why (never a fake zero-width interval).
* Everything is deterministic: the bootstrap takes an explicit ``seed``.
* Values must be finite; drop rows without an answer before calling.

Interval quantiles: the Wilson interval uses the normal quantile ``z``; every
interval of the form ``estimate ± q·se`` uses the Student t quantile with
``n - 1`` degrees of freedom (``G - 1`` with ``G`` clusters), which is the normal
quantile to three decimals beyond a few hundred rows and keeps small samples
(and few clusters) honest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# scipy.special holds the distribution functions themselves and loads in a third of the time
# of scipy.stats: the normal and Student t quantiles, the t tail, the binomial CDF.
from scipy.special import bdtr, ndtri, stdtr, stdtrit

__all__ = [
    "BOOTSTRAP_MAX_UNITS",
    "MeanEstimate",
    "PairedComparison",
    "holm",
    "mcnemar_exact",
    "mean_interval",
    "paired_compare",
    "wilson_interval",
]

BOOTSTRAP_MAX_UNITS = 5_000
"""Most resampling units (rows, or clusters when given) that ``paired_compare``
bootstraps; above it the interval is analytic (``diff ± t·se``).

The bootstrap costs about 3.5 ns per drawn index (draw, gather, sum), 5 ns when
clusters differ in size, so at the default 10,000 resamples this many units take
0.17–0.27 s (measured on a 2-core machine; 20,000 units would take 0.6–1 s, and a
report makes one comparison per pair of variants). With more than 5,000
independent units the central limit theorem makes ``diff ± t·se`` as good an
interval for a mean difference as the percentile bootstrap.
"""

# Indices drawn per bootstrap chunk (2**21 ≈ 2.1 million). Peak memory of the
# bootstrap is about 12 bytes per index (the int32 indices plus the float64 values
# they gather), ≈ 25 MB whatever n and n_boot are.
_BOOT_CHUNK_INDICES = 1 << 21

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


# ----------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class MeanEstimate:
    """A mean over rows with its standard error and confidence interval.

    ``n`` is the number of rows, ``clusters`` the number of clusters (``None``
    when no cluster ids were given). ``method`` is ``"wilson"``, ``"clt"`` or
    ``"clt-cluster"`` (see :func:`mean_interval`). ``note`` explains NaNs or a
    degenerate interval; it is empty otherwise.
    """

    mean: float
    se: float
    low: float
    high: float
    n: int
    clusters: int | None
    method: str
    note: str = ""


@dataclass(frozen=True)
class PairedComparison:
    """Two variants scored on the same rows; ``diff = mean_b - mean_a``.

    ``test`` is ``"mcnemar-exact"``, ``"paired-t"`` or ``"cluster-t"``;
    ``ci_method`` is ``"bootstrap"``, ``"cluster-bootstrap"``, ``"clt"`` or
    ``"clt-cluster"`` (see :func:`paired_compare`). ``only_a`` / ``only_b`` are
    the discordant counts (rows only ``a`` / only ``b`` got right) when every
    value is 0/1, else ``None``. ``note`` explains NaNs or a degenerate result.
    """

    n: int
    clusters: int | None
    mean_a: float
    mean_b: float
    diff: float
    se: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_value: float
    test: str
    only_a: int | None
    only_b: int | None
    note: str = ""


# ----------------------------------------------------------------------------
# Helpers


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _z(confidence: float) -> float:
    _check_confidence(confidence)
    return float(ndtri(1.0 - (1.0 - confidence) / 2.0))


def _t(confidence: float, df: int) -> float:
    _check_confidence(confidence)
    return float(stdtrit(df, 1.0 - (1.0 - confidence) / 2.0))


def _values(values: ArrayLike, name: str) -> FloatArray:
    """One finite float per row, as a 1-D array."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per row), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite; drop rows without a score before calling")
    return arr


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _cluster_codes(clusters: ArrayLike, n: int) -> tuple[IntArray, int]:
    """Integer codes ``0..G-1`` for the cluster ids, and ``G``."""
    arr = np.asarray(clusters)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"clusters must be 1-D with one id per row ({n}), got shape {arr.shape}")
    if arr.dtype.kind == "O":
        if any(_is_missing(v) for v in arr):
            raise ValueError("every row needs a cluster id (give a stand-alone row an id of its own)")
        mapping: dict[Any, int] = {}
        codes = np.fromiter((mapping.setdefault(v, len(mapping)) for v in arr), dtype=np.intp, count=n)
        return codes, len(mapping)
    if arr.dtype.kind in "fc" and np.isnan(arr).any():
        raise ValueError("every row needs a cluster id (give a stand-alone row an id of its own)")
    if arr.dtype.kind == "M" and np.isnat(arr).any():
        raise ValueError("every row needs a cluster id (give a stand-alone row an id of its own)")
    uniques, inverse = np.unique(arr, return_inverse=True)
    return inverse.astype(np.intp, copy=False).reshape(-1), int(uniques.size)


def _all_binary(*arrays: FloatArray) -> bool:
    return all(bool(((x == 0.0) | (x == 1.0)).all()) for x in arrays)


def _all_unit(*arrays: FloatArray) -> bool:
    return all(bool(((x >= 0.0) & (x <= 1.0)).all()) for x in arrays)


def _iid_se(x: FloatArray) -> float:
    """``sd(x, ddof=1) / sqrt(n)``; NaN below two rows."""
    n = x.size
    if n < 2:
        return math.nan
    return float(np.std(x, ddof=1) / math.sqrt(n))


def _cluster_sums(x: FloatArray, codes: IntArray, g: int) -> tuple[FloatArray, FloatArray]:
    sums = np.bincount(codes, weights=x, minlength=g).astype(float, copy=False)
    counts = np.bincount(codes, minlength=g).astype(float)
    return sums, counts


def _cluster_se(sums: FloatArray, counts: FloatArray, mean: float) -> float:
    """Cluster-robust (CR1) standard error of a mean, from per-cluster sums and counts.

    ``se² = G/(G-1) · Σ_g (Σ_{i∈g} (x_i - x̄))² / n²``; NaN below two clusters.
    """
    g = sums.size
    if g < 2:
        return math.nan
    n = float(counts.sum())
    resid = sums - counts * mean
    return float(math.sqrt(g / (g - 1.0) * float(resid @ resid)) / n)


def _join(notes: list[str]) -> str:
    return "; ".join(n for n in notes if n)


# ----------------------------------------------------------------------------
# Kept from evalrun.stats


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    With ``p = successes / n`` and ``z`` the normal quantile:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    Returns ``(nan, nan)`` when ``n == 0``. Bounds are clipped to ``[0, 1]`` and
    pinned to exactly 0 (1) when there are no successes (failures).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Pin the edges exactly: the closed form lands a rounding error away from
    # 0 or 1 there, which would put the interval beside the point estimate.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return (low, high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test on the discordant pair counts.

    ``only_a`` is the number of rows only ``a`` got right, ``only_b`` the number
    only ``b`` got right. With ``k = min(only_a, only_b)`` and ``X ~ Binom(only_a +
    only_b, 1/2)`` the p-value is ``min(1, 2·P(X <= k))``; ``1.0`` when there are
    no discordant rows.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be non-negative, got {only_a}, {only_b}")
    total = only_a + only_b
    if total == 0:
        return 1.0
    return float(min(1.0, 2.0 * bdtr(min(only_a, only_b), total, 0.5)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    NaN inputs stay NaN and do not count towards the number of tests. The
    adjusted values are monotone in the raw ones and capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return [float(x) for x in out]
    # Stable sort so tied raw p-values keep their relative order (they get equal
    # adjusted values anyway because of the running maximum).
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(x) for x in out]


# ----------------------------------------------------------------------------
# Mean of one variant


def mean_interval(
    values: ArrayLike,
    *,
    clusters: ArrayLike | None = None,
    confidence: float = 0.95,
) -> MeanEstimate:
    """Mean of per-row values with a standard error and a confidence interval.

    ``values`` holds one value per row (a row's mean over its repeats, or its
    single 0/1 score); ``clusters`` optionally one cluster id per row.

    * Every value 0/1 and no clusters → ``method="wilson"``: the Wilson score
      interval (:func:`wilson_interval`); ``se = sqrt(p(1-p)/n)`` is reported for
      reference but the interval does not use it (so one row still gets an
      interval, and 0/n or n/n a non-zero width).
    * Otherwise, no clusters → ``method="clt"``: ``mean ± t_{n-1}·se`` with
      ``se = sd(values, ddof=1) / sqrt(n)``.
    * With clusters → ``method="clt-cluster"``: ``mean ± t_{G-1}·se`` with the
      cluster-robust (CR1 sandwich) standard error of a mean,

          se² = G/(G-1) · Σ_g (Σ_{i∈g} (y_i - ȳ))² / n²

      where ``G`` is the number of clusters and ``n`` the number of rows. This is
      the sandwich ``(X'X)⁻¹ (Σ_g X_g'e_g e_g'X_g) (X'X)⁻¹`` for ``X`` a column of
      ones, times the usual small-sample factor ``G/(G-1) · (n-1)/(n-k)``, whose
      second part is 1 for ``k = 1``; it equals statsmodels' ``cov_type="cluster"``
      with ``use_correction=True``. With every row its own cluster it reduces to
      the iid ``sd/sqrt(n)``.

    Bounds are clipped to ``[0, 1]`` when every value lies in ``[0, 1]``.
    Degenerate inputs give NaN with a ``note`` rather than a zero-width interval:
    no rows → everything NaN; one row (``clt``) or one cluster (``clt-cluster``)
    → ``se`` and the interval NaN, since there is no spread to estimate them from.
    """
    x = _values(values, "values")
    _check_confidence(confidence)
    n = int(x.size)
    binary = _all_binary(x)
    codes: IntArray | None = None
    g: int | None = None
    if clusters is not None:
        codes, g = _cluster_codes(clusters, n)
        method = "clt-cluster"
    else:
        method = "wilson" if binary else "clt"

    if n == 0:
        return MeanEstimate(math.nan, math.nan, math.nan, math.nan, 0, g, method, "no rows")
    mean = float(x.mean())

    if method == "wilson":
        successes = int(x.sum())
        low, high = wilson_interval(successes, n, confidence)
        se = math.sqrt(mean * (1.0 - mean) / n)
        return MeanEstimate(mean, se, low, high, n, None, method)

    notes: list[str] = []
    if codes is not None and g is not None:
        sums, counts = _cluster_sums(x, codes, g)
        se = _cluster_se(sums, counts, mean)
        df = g - 1
        if g < 2:
            notes.append("one cluster: the between-cluster spread, hence se and the interval, is undefined")
    else:
        se = _iid_se(x)
        df = n - 1
        if n < 2:
            notes.append("one row: the spread, hence se and the interval, is undefined")
    if math.isnan(se):
        return MeanEstimate(mean, se, math.nan, math.nan, n, g, method, _join(notes))
    if se == 0.0:
        notes.append("no variation between rows: the interval has zero width and understates uncertainty")
    half = _t(confidence, df) * se
    low, high = mean - half, mean + half
    if _all_unit(x):
        low, high = max(0.0, low), min(1.0, high)
    return MeanEstimate(mean, se, low, high, n, g, method, _join(notes))


# ----------------------------------------------------------------------------
# Paired comparison of two variants


def _bootstrap_ratio(
    sums: FloatArray,
    counts: FloatArray | None,
    *,
    n_boot: int,
    seed: int,
    confidence: float,
) -> tuple[float, float]:
    """Percentile interval of ``Σ sums[idx] / Σ counts[idx]`` over resampled units.

    Each resample draws ``G = sums.size`` units with replacement. Indices are
    drawn in chunks of at most ``_BOOT_CHUNK_INDICES`` so memory stays bounded.
    ``counts=None`` means one row per unit.
    """
    g = sums.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    per_chunk = max(1, min(n_boot, _BOOT_CHUNK_INDICES // g))
    # Equal counts (always, without clusters) make the denominator a constant.
    constant_count: float | None = 1.0
    if counts is not None and not (counts == counts[0]).all():
        constant_count = None
    elif counts is not None:
        constant_count = float(counts[0])
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        idx = rng.integers(0, g, size=(stop - start, g), dtype=np.int32)
        # Plain fancy indexing: np.take(..., out=...) buffers a second copy.
        num = sums[idx].sum(axis=1)
        if constant_count is not None:
            stats[start:stop] = num / (g * constant_count)
        else:
            assert counts is not None
            stats[start:stop] = num / counts[idx].sum(axis=1)
        del idx
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _t_pvalue(diff: float, se: float, df: int) -> tuple[float, str]:
    """Two-sided t-test p-value of ``diff / se``; degenerate spreads get a reason."""
    if math.isnan(se):
        return math.nan, ""
    if se == 0.0:
        if diff == 0.0:
            return 1.0, "every row's difference is 0: no evidence of a difference (p = 1)"
        return math.nan, "every row's difference is the same non-zero value: the t-test is undefined"
    return float(2.0 * stdtr(df, -abs(diff / se))), ""


def paired_compare(
    a: ArrayLike,
    b: ArrayLike,
    *,
    clusters: ArrayLike | None = None,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two variants scored on the same rows: ``diff = mean(b) - mean(a)``.

    ``a[i]`` and ``b[i]`` are the two variants' values on row ``i`` (a row's mean
    over its repeats, or its single 0/1 score); ``clusters`` optionally gives a
    cluster id per row. The row differences are ``d = b - a``.

    Test (``test``, ``p_value``, two-sided):

    * every value 0/1, no clusters → ``"mcnemar-exact"``: :func:`mcnemar_exact`
      on the discordant counts;
    * otherwise, no clusters → ``"paired-t"``: ``t = mean(d) / se`` with
      ``se = sd(d, ddof=1)/sqrt(n)`` and ``n - 1`` degrees of freedom (what
      ``scipy.stats.ttest_rel`` computes);
    * with clusters → ``"cluster-t"``: the Wald test ``t = mean(d) / se`` with the
      cluster-robust (CR1) standard error of the mean difference (formula in
      :func:`mean_interval`) and a t distribution with ``G - 1`` degrees of
      freedom. This is statsmodels' OLS of ``d`` on a constant with
      ``cov_type="cluster"``, ``use_t=True`` and its defaults
      ``use_correction=True, df_correction=True`` (``df_resid_inference = G-1``).

    ``se`` is always the standard error of ``diff`` behind the t statistic
    (iid for McNemar too). If every difference is 0 the p-value is 1; if every
    difference is the same non-zero value a t-test is undefined (NaN, with a note).
    Either way the interval has zero width, and ``note`` says it understates the
    uncertainty.

    Interval (``ci_low``, ``ci_high``, ``ci_method``): a paired percentile
    bootstrap that resamples rows (``"bootstrap"``), or whole clusters
    (``"cluster-bootstrap"``): each of ``n_boot`` resamples draws ``G`` units with
    replacement and takes ``Σ sums / Σ counts`` of their per-unit sums of ``d``
    and row counts (a row is its own unit without clusters). Above
    :data:`BOOTSTRAP_MAX_UNITS` units the interval is analytic,
    ``diff ± t_{df}·se`` with ``df = n - 1`` (``"clt"``) or ``G - 1``
    (``"clt-cluster"``). Bounds are clipped to ``[-1, 1]`` when every value is in
    ``[0, 1]``. Fewer than two units → NaN interval (a resample of one unit has
    no spread), with a note.

    Empty input gives NaNs and ``n = 0``; mismatched lengths raise ``ValueError``.
    """
    xa = _values(a, "a")
    xb = _values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have one value per row each, got {xa.size} and {xb.size}")
    _check_confidence(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    n = int(xa.size)
    binary = _all_binary(xa, xb)
    codes: IntArray | None = None
    g: int | None = None
    if clusters is not None:
        codes, g = _cluster_codes(clusters, n)
    only_a = int(((xa == 1.0) & (xb == 0.0)).sum()) if binary else None
    only_b = int(((xa == 0.0) & (xb == 1.0)).sum()) if binary else None
    test = "cluster-t" if codes is not None else "mcnemar-exact" if binary else "paired-t"
    bootstrap = "cluster-bootstrap" if codes is not None else "bootstrap"

    if n == 0:
        return PairedComparison(0, g, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                                bootstrap, math.nan, test, only_a, only_b, "no rows")

    d = xb - xa
    diff = float(d.mean())
    units = _paired_units(d, codes, g)
    notes = list(units.notes)
    if only_a is not None and only_b is not None and test == "mcnemar-exact":
        p_value = mcnemar_exact(only_a, only_b)
    else:
        p_value, why = _t_pvalue(diff, units.se, units.df)
        notes.append(why)
    if units.se == 0.0:
        notes.append("the row differences do not vary: the interval has zero width and understates uncertainty")
    ci_low, ci_high, ci_method = _paired_interval(diff, units, clustered=codes is not None, confidence=confidence,
                                                  n_boot=n_boot, seed=seed)  # fmt: skip
    if _all_unit(xa, xb) and not math.isnan(ci_low):
        ci_low, ci_high = max(-1.0, ci_low), min(1.0, ci_high)

    return PairedComparison(n, g, float(xa.mean()), float(xb.mean()), diff, units.se, ci_low, ci_high, ci_method,
                            p_value, test, only_a, only_b, _join(notes))  # fmt: skip


@dataclass(frozen=True)
class _Units:
    """The units a paired comparison resamples (rows, or clusters) and the standard error."""

    sums: FloatArray  # each unit's sum of row differences
    counts: FloatArray | None  # each unit's row count (None: a row is its own unit)
    se: float
    count: int
    df: int
    notes: tuple[str, ...]


def _paired_units(d: FloatArray, codes: IntArray | None, g: int | None) -> _Units:
    if codes is not None and g is not None:
        sums, counts = _cluster_sums(d, codes, g)
        note = ("one cluster: se, the interval and the p-value are undefined",) if g < 2 else ()
        return _Units(sums, counts, _cluster_se(sums, counts, float(d.mean())), g, g - 1, note)
    n = int(d.size)
    note = ("one row: se and the interval are undefined",) if n < 2 else ()
    return _Units(d, None, _iid_se(d), n, n - 1, note)


def _paired_interval(
    diff: float, units: _Units, *, clustered: bool, confidence: float, n_boot: int, seed: int
) -> tuple[float, float, str]:
    """(low, high, method): a bootstrap up to BOOTSTRAP_MAX_UNITS units, analytic above."""
    if units.count < 2:
        return math.nan, math.nan, "cluster-bootstrap" if clustered else "bootstrap"
    if units.count <= BOOTSTRAP_MAX_UNITS:
        low, high = _bootstrap_ratio(units.sums, units.counts, n_boot=n_boot, seed=seed, confidence=confidence)
        return low, high, "cluster-bootstrap" if clustered else "bootstrap"
    half = _t(confidence, units.df) * units.se
    return diff - half, diff + half, "clt-cluster" if clustered else "clt"
