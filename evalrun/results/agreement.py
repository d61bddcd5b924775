"""Agreement of two raters (a grader model and a human, say): raw agreement and Cohen's kappa.

One label per row, as everywhere in `evalrun.results.stats` (whose conventions hold here:
NaN with a note for what cannot be estimated, never a fake zero-width interval).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from evalrun.results.stats import _check_confidence, _is_missing, _join, _z, wilson_interval

__all__ = ["Agreement", "cohen_kappa"]


@dataclass(frozen=True)
class Agreement:
    """Agreement of two raters' categorical labels on the same rows.

    ``agreement`` is the share of rows with equal labels, with a Wilson interval
    (``agreement_low`` / ``agreement_high``). ``kappa`` is Cohen's kappa with its
    large-sample standard error ``kappa_se`` and the interval ``kappa ± z·se``
    clipped to ``[-1, 1]``. ``labels`` is the category order used for the
    confusion table. ``note`` explains NaNs or a degenerate interval.
    """

    n: int
    agreement: float
    agreement_low: float
    agreement_high: float
    kappa: float
    kappa_se: float
    kappa_low: float
    kappa_high: float
    labels: tuple[Hashable, ...]
    method: str
    note: str = ""


def _labels(values: Sequence[Hashable] | ArrayLike, name: str) -> list[Any]:
    if isinstance(values, list | tuple):
        return list(values)
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per row), got shape {arr.shape}")
    return list(arr.tolist())


def _label_index(a: list[Any], b: list[Any], labels: Sequence[Hashable] | None) -> list[Hashable]:
    if labels is not None:
        order = list(labels)
        if len(set(order)) != len(order):
            raise ValueError("labels must not repeat")
        known = set(order)
        unknown = {v for v in (*a, *b) if v not in known}
        if unknown:
            raise ValueError(f"labels not in `labels`: {sorted(map(repr, unknown))}")
        return order
    seen = list(dict.fromkeys([*a, *b]))
    try:
        return sorted(seen)
    except TypeError:  # mixed types that do not sort: first-seen order
        return seen


def cohen_kappa(
    a: Sequence[Hashable] | ArrayLike,
    b: Sequence[Hashable] | ArrayLike,
    *,
    labels: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
) -> Agreement:
    """Cohen's kappa and raw agreement of two raters' labels on the same rows.

    ``a[i]`` and ``b[i]`` are the two raters' categorical labels for row ``i``
    (e.g. a grader model's grade and a human's). ``labels`` fixes the category
    order (and may include categories neither rater used); by default it is the
    sorted set of labels seen. Missing labels (None/NaN) raise ``ValueError``:
    drop those rows first.

    With ``p_ij`` the share of rows rated ``i`` by ``a`` and ``j`` by ``b``,
    marginals ``p_i.`` and ``p_.j``, observed agreement ``p_o = Σ p_ii`` and
    chance agreement ``p_e = Σ p_i. p_.i``: ``kappa = (p_o - p_e) / (1 - p_e)``.
    Its large-sample variance (Fleiss, Cohen & Everitt 1969; the ``var_kappa``
    of ``statsmodels.stats.inter_rater.cohens_kappa``) is

        var = [Σ_i p_ii (1 - (p_i. + p_.i)(1 - κ))²
               + (1 - κ)² Σ_{i≠j} p_ij (p_.i + p_j.)²
               - (κ - p_e (1 - κ))²] / ((1 - p_e)² n)

    and the interval is ``kappa ± z·sqrt(var)`` clipped to ``[-1, 1]``
    (``method="cohen-large-sample"``). ``agreement = p_o`` gets a Wilson interval.

    Kappa is NaN when ``p_e = 1``, i.e. both raters gave every row the same single
    label: agreement is then total but entirely expected by chance, and 0/0 says
    nothing about skill. At perfect agreement over two or more labels the
    large-sample variance is 0 and the kappa interval collapses to ``[1, 1]``;
    the Wilson interval of ``agreement`` is the honest one there (see ``note``).
    No rows → NaNs.
    """
    _check_confidence(confidence)
    la, lb = _labels(a, "a"), _labels(b, "b")
    if len(la) != len(lb):
        raise ValueError(f"a and b must have one label per row each, got {len(la)} and {len(lb)}")
    if any(_is_missing(v) for v in (*la, *lb)):
        raise ValueError("labels must not be missing (None/NaN); drop those rows first")
    order = _label_index(la, lb, labels)
    n = len(la)
    method = "cohen-large-sample"
    if n == 0:
        nan = math.nan
        return Agreement(0, nan, nan, nan, nan, nan, nan, nan, tuple(order), method, "no rows")

    index = {lab: i for i, lab in enumerate(order)}
    k = len(order)
    ia = np.fromiter((index[v] for v in la), dtype=np.intp, count=n)
    ib = np.fromiter((index[v] for v in lb), dtype=np.intp, count=n)
    table = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k).astype(float)

    agree_count = int(np.trace(table))
    agreement = agree_count / n
    agreement_low, agreement_high = wilson_interval(agree_count, n, confidence)

    p = table / n
    row = p.sum(axis=1)  # p_i. (rater a)
    col = p.sum(axis=0)  # p_.j (rater b)
    p_e = float(row @ col)
    notes: list[str] = []
    if p_e >= 1.0 - 1e-12:
        notes.append("both raters gave every row the same single label: kappa is 0/0 (undefined)")
        nan = math.nan
        return Agreement(n, agreement, agreement_low, agreement_high, nan, nan, nan, nan,
                         tuple(order), method, _join(notes))
    kappa = (agreement - p_e) / (1.0 - p_e)
    diag = np.diag(p)
    term_a = float((diag * (1.0 - (row + col) * (1.0 - kappa)) ** 2).sum())
    # off[i, j] = p_.i + p_j. ; zero the diagonal, which term_a covers.
    off = p * (col[:, None] + row[None, :]) ** 2
    np.fill_diagonal(off, 0.0)
    term_b = (1.0 - kappa) ** 2 * float(off.sum())
    term_c = (kappa - p_e * (1.0 - kappa)) ** 2
    var = max(0.0, (term_a + term_b - term_c) / ((1.0 - p_e) ** 2 * n))
    se = math.sqrt(var)
    if se == 0.0:
        notes.append("the large-sample variance of kappa is 0 here: read the agreement interval instead")
    half = _z(confidence) * se
    low, high = max(-1.0, kappa - half), min(1.0, kappa + half)
    return Agreement(n, agreement, agreement_low, agreement_high, float(kappa), se, low, high,
                     tuple(order), method, _join(notes))
