"""Small, dependency-light statistics used by summaries and comparisons.

Every function is pure and deterministic (the bootstrap takes an explicit seed).
Sign convention used throughout evalrun: a difference is ``b - a`` (the second
variant minus the first, or the variant minus the baseline), so a positive
difference means ``b`` scored higher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binom, norm

__all__ = ["holm", "mcnemar_exact", "paired_bootstrap_ci", "wilson_interval"]

# Resamples drawn per batch in the bootstrap; bounds peak memory to roughly
# _BOOT_CHUNK * n * 4 bytes of indices whatever n_boot is.
_BOOT_CHUNK = 1_000


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Returns ``(nan, nan)`` when ``n == 0``. Bounds are clipped to ``[0, 1]``.
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

    ``only_a`` is the number of pairs only ``a`` got right, ``only_b`` the number
    only ``b`` got right. With ``k = min(only_a, only_b)`` and ``X ~ Binom(only_a +
    only_b, 0.5)`` the p-value is ``min(1, 2 * P(X <= k))``; ``1.0`` when there
    are no discordant pairs.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be non-negative, got {only_a}, {only_b}")
    total = only_a + only_b
    if total == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), total, 0.5)))


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
        return out.tolist()
    # Stable sort so tied raw p-values keep their relative order (they get equal
    # adjusted values anyway because of the running maximum).
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.tolist()


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for ``mean(b) - mean(a)`` over paired items.

    ``a`` and ``b`` are aligned per item (e.g. 0/1 correctness of the same
    question under two variants); items are resampled with replacement as pairs.
    Returns ``(nan, nan)`` for empty input. Deterministic for a given ``seed``.
    """
    a_arr = np.asarray(a, dtype=float)
    b_arr = np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"a and b must be 1-D and the same length, got {a_arr.shape} and {b_arr.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    _z(confidence)  # validates confidence
    n = a_arr.size
    if n == 0:
        return (math.nan, math.nan)
    diff = b_arr - a_arr
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        stop = min(n_boot, start + _BOOT_CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32 if n < 2**31 else np.int64)
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(low), float(high))
