"""Error ratios judged as counts: has the candidate's event rate risen above the baseline's?

A ratio such as errors / requests is tested on the counts behind it, not ranked as a
number: the conditional test of two Poisson rates, with counts divided by a quasi-Poisson
dispersion factor so that bursty (overdispersed) errors do not look more certain than they
are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors._arrays import FloatArray, as_series, row_chunks, unbatch


@dataclass(frozen=True)
class RateResult:
    """Per-series result of `rate_increase`; fields have the broadcast input shape."""

    base_rate: FloatArray
    cand_rate: FloatArray
    ratio: FloatArray
    excess: FloatArray
    pvalue: FloatArray
    ratio_lower: FloatArray
    cand_rate_lower: FloatArray


def rate_increase(
    base_events: npt.ArrayLike,
    base_trials: npt.ArrayLike,
    cand_events: npt.ArrayLike,
    cand_trials: npt.ArrayLike,
    *,
    dispersion: npt.ArrayLike = 1.0,
    confidence: float = 0.95,
) -> RateResult:
    """One-sided test that the candidate's event rate is higher than the baseline's.

    Inputs are totals per series (any broadcastable shape, usually (S,)). Given all events,
    the candidate's share is Binomial(total, cand_trials / (base_trials + cand_trials))
    when the rates are equal; `pvalue` is that binomial's upper tail at the candidate's
    events, after dividing the counts by `dispersion` (>= 1; a scalar or per series, NaN
    for unknown). `ratio_lower` is a one-sided `confidence` lower bound of
    cand_rate / base_rate from the Clopper-Pearson bound of the candidate's share; it
    exceeds 1 exactly when `pvalue` < 1 - confidence. `cand_rate_lower` is the same kind
    of bound of the candidate's rate on its own (what a rise from a baseline of zero is at
    least). Negative counts, or trials that are not positive, give NaN in that slot.

    Example: no errors in 100,000 baseline requests, 50 in 10,000 candidate requests:

    >>> r = rate_increase(0, 100_000, 50, 10_000)
    >>> float(r.cand_rate), float(r.ratio), bool(r.pvalue < 1e-40)
    (0.005, inf, True)
    """
    _validate(confidence)
    phi = _validate_dispersion(dispersion)
    arrays = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (base_events, base_trials, cand_events, cand_trials, phi))
    )
    be, bt, ce, ct, phi = (np.array(a, dtype=np.float64, ndmin=1) for a in arrays)
    bad = ~np.isfinite(be + bt + ce + ct) | (be < 0) | (ce < 0) | (bt <= 0) | (ct <= 0)
    be, bt, ce, ct = (np.where(bad, np.nan, a) for a in (be, bt, ce, ct))
    with np.errstate(divide="ignore", invalid="ignore"):
        base_rate = be / bt
        cand_rate = ce / ct
        ratio = cand_rate / base_rate
        excess = ce - ct * base_rate
        share_null = ct / (bt + ct)
        events = ce / phi
        total = (be + ce) / phi
        pvalue = _binomial_upper_tail(events, total, share_null)
        share_lower = _clopper_pearson_lower(events, total, 1.0 - confidence)
        ratio_lower = share_lower / (1.0 - share_lower) * (bt / ct)
        cand_rate_lower = _clopper_pearson_lower(events, ct / phi, 1.0 - confidence)
    single = np.ndim(arrays[0]) == 0
    return RateResult(
        base_rate=unbatch(base_rate, single),
        cand_rate=unbatch(cand_rate, single),
        ratio=unbatch(ratio, single),
        excess=unbatch(excess, single),
        pvalue=unbatch(pvalue, single),
        ratio_lower=unbatch(ratio_lower, single),
        cand_rate_lower=unbatch(cand_rate_lower, single),
    )


def dispersion(events: npt.ArrayLike, trials: npt.ArrayLike) -> FloatArray:
    """Quasi-Poisson dispersion factor of per-interval counts, per series (at least 1.0).

    `events` and `trials` are (series, time) counts per interval. Under a constant rate
    the expected events of an interval are trials * (sum events / sum trials); the factor
    is Pearson's chi-square over (valid intervals - 1), floored at 1. Intervals with NaN
    or non-positive trials are skipped; a row with fewer than two intervals gives NaN.

    >>> round(float(dispersion([[0, 10, 0, 10]], [[100, 100, 100, 100]])[0]), 3)
    6.667
    """
    ev, single = as_series(events, "events")
    tr, single_trials = as_series(trials, "trials")
    if ev.shape != tr.shape or single != single_trials:
        raise ValueError(f"events and trials must have the same shape, got {ev.shape} and {tr.shape}")
    factor = np.full(ev.shape[0], np.nan)
    for rows in row_chunks(ev.shape[0], ev.shape[1]):
        factor[rows] = _pearson_dispersion(ev[rows], tr[rows])
    return unbatch(factor, single)


def _pearson_dispersion(ev: FloatArray, tr: FloatArray) -> FloatArray:
    """Pearson chi-square / (intervals - 1) per row, floored at 1 (NaN below two)."""
    valid = ~np.isnan(ev) & ~np.isnan(tr) & (tr > 0) & (ev >= 0)
    ev = np.where(valid, ev, 0.0)
    tr = np.where(valid, tr, 0.0)
    intervals = valid.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = ev.sum(axis=-1) / tr.sum(axis=-1)
        expected = tr * rate[:, None]
        terms = np.where(expected > 0, (ev - expected) ** 2 / expected, 0.0)
        factor = np.maximum(terms.sum(axis=-1) / (intervals - 1), 1.0)
    return np.where(intervals >= 2, factor, np.nan)


def _validate(confidence: float) -> None:
    """Reject a confidence outside (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")


def _validate_dispersion(dispersion: npt.ArrayLike) -> FloatArray:
    """Dispersion factors must be >= 1 (NaN marks an unknown factor)."""
    phi = np.asarray(dispersion, dtype=np.float64)
    if np.any(phi < 1.0) or np.any(np.isinf(phi)):
        raise ValueError("dispersion must be finite and >= 1 (NaN for unknown)")
    return phi


def _binomial_upper_tail(events: FloatArray, total: FloatArray, share: FloatArray) -> FloatArray:
    """P(X >= events) for X ~ Binomial(total, share), continuous in the counts."""
    # I_p(k, n - k + 1) is the binomial upper tail and stays defined for non-integer counts.
    tail = special.betainc(np.where(events > 0, events, 1.0), total - events + 1.0, share)
    return np.where(events > 0, tail, np.where(np.isnan(events + share), np.nan, 1.0))


def _clopper_pearson_lower(events: FloatArray, total: FloatArray, alpha: float) -> FloatArray:
    """One-sided Clopper-Pearson lower bound of a binomial share (0 without events)."""
    bound = special.betaincinv(np.where(events > 0, events, 1.0), total - events + 1.0, alpha)
    return np.where(events > 0, bound, np.where(np.isnan(events + total), np.nan, 0.0))
