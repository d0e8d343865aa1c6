"""Baseline vs candidate: Mann-Whitney U, the Hodges-Lehmann shift and its interval.

The numbers follow R's `wilcox.test(candidate, baseline, conf.int=TRUE)`: an exact null
distribution when both samples have fewer than 50 values and no ties, the normal
approximation with tie and continuity corrections otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors._arrays import (
    FloatArray,
    IntArray,
    as_series,
    group_rows,
    row_chunks,
    rows_per_chunk,
    sort_rows,
    tie_groups,
    unbatch,
)

Alternative = Literal["two-sided", "greater", "less"]
ALTERNATIVES: tuple[str, ...] = ("two-sided", "greater", "less")

# R's wilcox.test uses the exact distribution below this size (and only without ties).
EXACT_BELOW = 50
# R's qwilcox nudges the probability down by this much so float noise cannot move a quantile.
_QUANTILE_FUZZ = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class CompareResult:
    """Per-series result of `compare`; every field has the input's shape less time."""

    statistic: FloatArray
    pvalue: FloatArray
    shift: FloatArray
    lower: FloatArray
    upper: FloatArray
    n_baseline: IntArray
    n_candidate: IntArray


def compare(
    baseline: npt.ArrayLike,
    candidate: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    alternative: Alternative = "two-sided",
) -> CompareResult:
    """Rank test of candidate against baseline, with the Hodges-Lehmann shift.

    Both inputs are (series, time) arrays (or one 1-D series each) with NaN for missing
    values; the rows of `baseline` and `candidate` pair up and may differ in length.
    `statistic` is the Mann-Whitney U of the candidate, `shift` the median of all
    differences candidate_j - baseline_i, and [`lower`, `upper`] its confidence interval
    (one side infinite for a one-sided `alternative`; "greater" means the candidate is
    larger). A row without values on either side gives NaN.

    Example (R: wilcox.test(c(10,20,30,40), c(1,2,3,4), conf.int=TRUE)):

    >>> r = compare([1, 2, 3, 4], [10, 20, 30, 40])
    >>> float(r.shift), float(r.lower), float(r.upper), round(float(r.pvalue), 5)
    (22.5, 6.0, 39.0, 0.02857)
    """
    _validate(confidence, alternative)
    base, single = as_series(baseline, "baseline")
    cand, single_candidate = as_series(candidate, "candidate")
    if single != single_candidate or base.shape[0] != cand.shape[0]:
        raise ValueError(
            "baseline and candidate must have the same number of series, "
            f"got shapes {np.shape(baseline)} and {np.shape(candidate)}"
        )
    base, n = sort_rows(base)
    cand, m = sort_rows(cand)
    u, tie_term, tied = _u_statistic(base, cand)
    usable = (n > 0) & (m > 0)
    exact = usable & (n < EXACT_BELOW) & (m < EXACT_BELOW) & ~tied
    sigma = _u_sigma(n, m, tie_term)
    pvalue = _normal_pvalue(u, n, m, sigma, alternative)
    lower_rank = _normal_lower_rank(n, m, sigma, confidence, alternative)
    _apply_exact(exact, u, n, m, confidence, alternative, pvalue, lower_rank)
    shift, lower, upper = _shift_interval(base, cand, n, m, lower_rank, alternative)
    u[~usable] = np.nan
    pvalue[~usable] = np.nan
    return CompareResult(
        statistic=unbatch(u, single),
        pvalue=unbatch(pvalue, single),
        shift=unbatch(shift, single),
        lower=unbatch(lower, single),
        upper=unbatch(upper, single),
        n_baseline=unbatch(n, single),
        n_candidate=unbatch(m, single),
    )


def _validate(confidence: float, alternative: str) -> None:
    """Reject parameters outside their allowed values."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")


def _u_statistic(base: FloatArray, cand: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """U of the candidate, the tie term sum(t^3 - t) and whether any value is tied, per row."""
    n_series = base.shape[0]
    u, tie_term, tied = np.zeros(n_series), np.zeros(n_series), np.zeros(n_series, dtype=bool)
    for rows in row_chunks(n_series, base.shape[1] + cand.shape[1]):
        u[rows], tie_term[rows], tied[rows] = _u_statistic_chunk(base[rows], cand[rows])
    return u, tie_term, tied


def _u_statistic_chunk(
    base: FloatArray, cand: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """`_u_statistic` for a chunk of rows."""
    pooled = np.concatenate([cand, base], axis=1)
    # Stable: among equal values the candidate's come first, so a candidate value's
    # position counts the baseline values strictly below it (plus earlier candidates).
    order = np.argsort(pooled, axis=-1, kind="stable")
    pooled = np.take_along_axis(pooled, order, axis=-1)
    is_candidate = (order < cand.shape[1]) & ~np.isnan(pooled)
    m = is_candidate.sum(axis=-1)
    positions = np.where(is_candidate, np.arange(pooled.shape[1]), 0).sum(axis=-1)
    u = (positions - m * (m - 1) / 2.0).astype(np.float64)
    tied = (pooled[:, 1:] == pooled[:, :-1]).any(axis=-1)
    tie_term = np.zeros(len(u))
    rows = np.flatnonzero(tied)
    if rows.size:
        equal_pairs, tie_term[rows] = _tie_counts(pooled[rows], order[rows] >= cand.shape[1])
        u[rows] += equal_pairs / 2.0
    return u, tie_term, tied


def _tie_counts(pooled: FloatArray, from_base: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
    """Candidate-baseline pairs of equal values and sum(t^3 - t) over tie groups, per row."""
    first, size, row = tie_groups(pooled)
    base_before = np.concatenate([[0], np.cumsum(from_base.ravel())])
    n_base = base_before[first + size] - base_before[first]
    n_rows = pooled.shape[0]
    equal_pairs = np.bincount(row, weights=n_base * (size - n_base), minlength=n_rows)
    tie_term = np.bincount(row, weights=size**3 - size, minlength=n_rows)
    return np.asarray(equal_pairs, dtype=np.float64), np.asarray(tie_term, dtype=np.float64)


def _u_sigma(n: IntArray, m: IntArray, tie_term: FloatArray) -> FloatArray:
    """Standard deviation of U under the null, corrected for ties (NaN without data)."""
    total = (n + m).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = n * m / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
        return np.sqrt(np.where((n > 0) & (m > 0), variance, np.nan))


def _normal_pvalue(
    u: FloatArray, n: IntArray, m: IntArray, sigma: FloatArray, alternative: str
) -> FloatArray:
    """p-value from the normal approximation with continuity correction (as scipy)."""
    nm = (n * m).astype(np.float64)
    u_tail, factor = _tail_statistic(u, nm, alternative)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u_tail - nm / 2.0 - 0.5) / sigma
    return np.clip(factor * special.ndtr(-z), 0.0, 1.0)


def _tail_statistic(u: FloatArray, nm: FloatArray, alternative: str) -> tuple[FloatArray, float]:
    """The U whose upper tail is the p-value, and the factor for a two-sided test."""
    if alternative == "greater":
        return u, 1.0
    if alternative == "less":
        return nm - u, 1.0
    return np.maximum(u, nm - u), 2.0


def _tail_probability(confidence: float, alternative: str) -> float:
    """Probability left outside the interval on each finite side."""
    alpha = 1.0 - confidence
    return alpha / 2.0 if alternative == "two-sided" else alpha


def _normal_lower_rank(
    n: IntArray, m: IntArray, sigma: FloatArray, confidence: float, alternative: str
) -> IntArray:
    """1-based rank of the interval's lower end among the sorted pairwise differences.

    The normal counterpart of R's qwilcox: the smallest q with P(U <= q) >= tail, using
    the continuity-corrected approximation P(U <= q) ~ Phi((q + 0.5 - nm/2) / sigma).
    """
    nm = (n * m).astype(np.float64)
    z = special.ndtri(1.0 - _tail_probability(confidence, alternative))
    with np.errstate(invalid="ignore"):
        rank = np.ceil(nm / 2.0 - z * sigma - 0.5)
    return _clip_rank(np.nan_to_num(rank, nan=1.0).astype(np.int64), n * m, alternative)


def _clip_rank(rank: IntArray, nm: IntArray, alternative: str) -> IntArray:
    """Keep a rank inside the differences (and the two-sided interval non-inverted)."""
    top = (nm + 1) // 2 if alternative == "two-sided" else nm
    return np.clip(rank, 1, np.maximum(top, 1))


def _apply_exact(
    exact: npt.NDArray[np.bool_],
    u: FloatArray,
    n: IntArray,
    m: IntArray,
    confidence: float,
    alternative: str,
    pvalue: FloatArray,
    lower_rank: IntArray,
) -> None:
    """Overwrite p-values and interval ranks of tie-free small rows with exact ones."""
    rows_exact = np.flatnonzero(exact)
    tail = _tail_probability(confidence, alternative)
    for (n_base, n_cand), group in group_rows(n[rows_exact], m[rows_exact]):
        rows = rows_exact[group]
        cdf, sf = _u_null_distribution(min(n_base, n_cand), max(n_base, n_cand))
        nm = n_base * n_cand
        u_int = np.rint(u[rows]).astype(np.int64)
        if alternative == "greater":
            pvalue[rows] = sf[u_int]
        elif alternative == "less":
            pvalue[rows] = cdf[u_int]
        else:
            pvalue[rows] = np.minimum(1.0, 2.0 * sf[np.maximum(u_int, nm - u_int)])
        quantile = int(np.searchsorted(cdf, tail - _QUANTILE_FUZZ, side="left"))
        lower_rank[rows] = _clip_rank(np.array([quantile]), np.array([nm]), alternative)[0]


@functools.lru_cache(maxsize=256)
def _u_null_distribution(n: int, m: int) -> tuple[FloatArray, FloatArray]:
    """Exact null CDF P(U <= k) and survival P(U >= k) of U for sample sizes n <= m.

    Dynamic programming over the largest pooled value: it belongs to the sample of size j
    with probability j / (i + j) and then adds i to U. Only additions, so tails keep full
    relative precision.
    """
    previous = [np.ones(1) for _ in range(m + 1)]  # sizes (0, j): U = 0
    for i in range(1, n + 1):
        current = [np.ones(1)]
        for j in range(1, m + 1):
            pmf = np.zeros(i * j + 1)
            pmf[i:] += current[j - 1] * (j / (i + j))
            pmf[: (i - 1) * j + 1] += previous[j] * (i / (i + j))
            current.append(pmf)
        previous = current
    pmf = previous[m]
    # Sum each tail from its own end (full precision) and take the far side as 1 - other.
    from_bottom = np.concatenate([[0.0], np.cumsum(pmf)])  # P(U <= k - 1) at k
    from_top = np.concatenate([np.cumsum(pmf[::-1])[::-1], [0.0]])  # P(U >= k) at k
    k = np.arange(n * m + 1)
    middle = n * m / 2.0
    cdf = np.where(k < middle, from_bottom[1:], 1.0 - from_top[1:])
    sf = np.where(k > middle, from_top[:-1], 1.0 - from_bottom[:-1])
    cdf.flags.writeable = False
    sf.flags.writeable = False
    return cdf, sf


def _shift_interval(
    base: FloatArray,
    cand: FloatArray,
    n: IntArray,
    m: IntArray,
    lower_rank: IntArray,
    alternative: str,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Hodges-Lehmann shift and interval ends from order statistics of the differences."""
    n_series = base.shape[0]
    shift = np.full(n_series, np.nan)
    lower = np.full(n_series, np.nan)
    upper = np.full(n_series, np.nan)
    for (n_base, n_cand), rows in group_rows(n, m):
        if n_base == 0 or n_cand == 0:
            continue
        nm = n_base * n_cand
        low_index = lower_rank[rows] - 1
        high_index = nm - lower_rank[rows]
        wanted = np.unique(np.concatenate([[(nm - 1) // 2, nm // 2], low_index, high_index]))
        step = rows_per_chunk(nm)
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            chunk = rows[part]
            diffs = cand[chunk, :n_cand, None] - base[chunk, None, :n_base]
            diffs = diffs.reshape(len(chunk), nm)
            diffs.partition(wanted, axis=-1)
            picks = np.arange(len(chunk))
            shift[chunk] = (diffs[:, (nm - 1) // 2] + diffs[:, nm // 2]) / 2.0
            lower[chunk] = diffs[picks, low_index[part]]
            upper[chunk] = diffs[picks, high_index[part]]
    if alternative == "greater":
        upper = np.where(np.isnan(shift), np.nan, np.inf)
    elif alternative == "less":
        lower = np.where(np.isnan(shift), np.nan, -np.inf)
    return shift, lower, upper
