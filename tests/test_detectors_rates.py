"""rate_increase() and dispersion(): error ratios judged as counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import detectors._arrays as arrays
from detectors import dispersion, rate_increase


def reference_pvalue(base_events, base_trials, cand_events, cand_trials):
    """The conditional test of two Poisson rates, straight from scipy's binomial test."""
    total = base_events + cand_events
    if total == 0:
        return 1.0
    share = cand_trials / (base_trials + cand_trials)
    return stats.binomtest(cand_events, total, share, alternative="greater").pvalue


def reference_dispersion(events, trials):
    """Pearson chi-square / (k - 1) of one row, floored at 1 (NaN below two intervals)."""
    keep = ~np.isnan(events) & ~np.isnan(trials) & (trials > 0) & (events >= 0)
    ev, tr = events[keep], trials[keep]
    if len(ev) < 2:
        return np.nan
    rate = ev.sum() / tr.sum()
    chi2 = sum((e - t * rate) ** 2 / (t * rate) for e, t in zip(ev, tr, strict=True) if t * rate > 0)
    return max(chi2 / (len(ev) - 1), 1.0)


def test_pvalue_equals_scipy_binomtest_for_integer_counts():
    rng = np.random.default_rng(1)
    base_trials = rng.integers(1_000, 100_000, 200)
    cand_trials = rng.integers(500, 50_000, 200)
    base_events = rng.binomial(base_trials, 0.002)
    cand_events = rng.binomial(cand_trials, rng.choice([0.002, 0.004], 200))
    result = rate_increase(base_events, base_trials, cand_events, cand_trials)
    expected = [
        reference_pvalue(*row) for row in zip(base_events, base_trials, cand_events, cand_trials, strict=True)
    ]
    np.testing.assert_allclose(result.pvalue, expected, rtol=1e-9, atol=1e-300)
    assert result.pvalue.shape == (200,)


def test_rates_ratio_and_excess():
    result = rate_increase([10, 0, 0], [1000, 100, 100], [30, 5, 0], [2000, 50, 50])
    np.testing.assert_allclose(result.base_rate, [0.01, 0.0, 0.0])
    np.testing.assert_allclose(result.cand_rate, [0.015, 0.1, 0.0])
    assert result.ratio[0] == pytest.approx(1.5)
    assert result.ratio[1] == np.inf and np.isnan(result.ratio[2])
    np.testing.assert_allclose(result.excess, [10.0, 5.0, 0.0])
    assert result.pvalue[2] == 1.0 and result.ratio_lower[2] == 0.0


def test_zero_baseline_errors_do_not_hide_a_real_rise():
    result = rate_increase(0, 100_000, 50, 10_000)
    assert result.pvalue == pytest.approx((10_000 / 110_000) ** 50, rel=1e-9)
    assert result.pvalue < 1e-40
    assert result.ratio == np.inf and result.ratio_lower > 1.0


def test_no_rise_is_not_significant():
    result = rate_increase(100, 100_000, 10, 10_000)
    assert 0.3 < result.pvalue < 0.7
    assert result.ratio_lower < 1.0 < result.ratio * 1.01


def test_dispersion_weakens_the_evidence_like_fewer_counts():
    plain = rate_increase(40, 10_000, 80, 10_000)
    damped = rate_increase(40, 10_000, 80, 10_000, dispersion=4.0)
    same_as = rate_increase(10, 10_000, 20, 10_000)
    assert damped.pvalue == pytest.approx(same_as.pvalue, rel=1e-12)
    assert plain.pvalue < 1e-3 and damped.pvalue > 0.01
    assert damped.ratio == plain.ratio and damped.excess == plain.excess


def test_non_integer_counts_sit_between_their_neighbours():
    low, mid, high = (rate_increase(5, 1000, c, 1000).pvalue for c in (12.0, 12.5, 13.0))
    assert high < mid < low


def test_ratio_lower_is_the_clopper_pearson_bound():
    be, bt, ce, ct = 30, 20_000, 45, 10_000
    result = rate_increase(be, bt, ce, ct, confidence=0.9)
    share = stats.binomtest(ce, be + ce).proportion_ci(confidence_level=0.8).low
    assert result.ratio_lower == pytest.approx(share / (1 - share) * bt / ct, rel=1e-9)


@pytest.mark.parametrize(("events", "trials", "phi"), [(50, 10_000, 1.0), (3, 400, 1.0),
                                                      (120, 5_000, 4.0), (0, 1_000, 1.0)])
def test_cand_rate_lower_is_the_candidate_s_own_clopper_pearson_bound(events, trials, phi):
    # scipy's exact binomial interval of the counts divided by the dispersion factor.
    result = rate_increase(0, 100_000, events, trials, dispersion=phi)
    k, n = events / phi, trials / phi
    expected = 0.0 if k == 0 else stats.beta.ppf(0.05, k, n - k + 1)
    assert float(result.cand_rate_lower) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    if phi == 1.0 and events:
        interval = stats.binomtest(events, trials).proportion_ci(0.90, method="exact")
        assert float(result.cand_rate_lower) == pytest.approx(interval.low, rel=1e-9)


def test_ratio_lower_above_one_exactly_when_significant():
    rng = np.random.default_rng(2)
    base_events = rng.integers(0, 60, 500)
    cand_events = rng.integers(0, 60, 500)
    result = rate_increase(base_events, 10_000, cand_events, 8_000, confidence=0.95)
    significant = result.pvalue < 0.05
    assert significant.any() and not significant.all()
    np.testing.assert_array_equal(result.ratio_lower > 1.0, significant)


def test_bad_slots_are_nan_and_do_not_poison_others():
    result = rate_increase(
        [1, -1, 1, np.nan],
        [100, 100, 0, 100],
        [5, 5, 5, 5],
        [100, 100, 100, 100],
        dispersion=[1.0, 1.0, 1.0, 1.0],
    )
    assert np.isfinite(result.pvalue[0])
    assert np.all(np.isnan(result.pvalue[1:])) and np.all(np.isnan(result.ratio_lower[1:]))
    unknown = rate_increase([1, 1], [100, 100], [5, 5], [100, 100], dispersion=[np.nan, 2.0])
    assert np.isnan(unknown.pvalue[0]) and np.isfinite(unknown.pvalue[1])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"dispersion": 0.5}, "dispersion"),
        ({"dispersion": np.inf}, "dispersion"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_invalid_parameters_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        rate_increase(1, 100, 2, 100, **kwargs)


def test_dispersion_rows_equal_the_reference():
    rng = np.random.default_rng(4)
    length = 30
    trials = rng.integers(50, 500, (7, length)).astype(float)
    steady = rng.poisson(trials * 0.02)
    bursty = rng.poisson(trials * 0.02 * rng.gamma(0.5, 2.0, trials.shape))
    events = np.vstack([steady[:3], bursty[3:]]).astype(float)
    for row, keep in enumerate([0, 1, 2, length - 2, length, length, length]):
        drop = rng.choice(length, size=length - keep, replace=False)
        events[row, drop] = np.nan
    trials[6, :5] = 0.0
    events[5] = 0.0
    result = dispersion(events, trials)
    expected = [reference_dispersion(e, t) for e, t in zip(events, trials, strict=True)]
    np.testing.assert_allclose(result, expected, rtol=1e-12)
    assert np.isnan(result[0]) and np.isnan(result[1]) and result[5] == 1.0
    assert result[4] > 2.0


def test_dispersion_known_answer_and_shape_checks():
    # Expected 5 per interval, observed 0/10 alternating: chi-square 20 on 3 df.
    assert dispersion([0, 10, 0, 10], [100, 100, 100, 100]) == pytest.approx(20 / 3)
    assert dispersion([5, 5, 5, 5], [100, 100, 100, 100]) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        dispersion(np.ones((2, 3)), np.ones((2, 4)))


def test_dispersion_of_poisson_counts_is_near_one():
    rng = np.random.default_rng(5)
    trials = np.full((400, 200), 1000.0)
    phi = dispersion(rng.poisson(trials * 0.01).astype(float), trials)
    assert math.isclose(float(np.median(phi)), 1.0, abs_tol=0.1)


def test_dispersion_chunks_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(6)
    trials = rng.integers(100, 1000, (50, 60)).astype(float)
    events = rng.poisson(trials * 0.01 * rng.gamma(1.0, 1.0, trials.shape)).astype(float)
    whole = dispersion(events, trials)
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 200)
    np.testing.assert_array_equal(dispersion(events, trials), whole)
