"""deriv, predict_linear, lower_envelope, trend and time_to_exhaustion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import detectors._arrays as arrays
from detectors import deriv, lower_envelope, predict_linear, time_to_exhaustion, trend

DAY = 86_400.0
MINUTE_TIMES = np.arange(0.0, DAY, 60.0)


def ragged(values, seed):
    """Rows keeping 0, 1, 2, n-2 and n of their values (the rest NaN), then rows as given."""
    rng = np.random.default_rng(seed)
    out = np.array(values, dtype=float)
    length = out.shape[1]
    for row, keep in enumerate([0, 1, 2, length - 2, length]):
        out[row, rng.choice(length, size=length - keep, replace=False)] = np.nan
    return out


def reference_envelope(t, v, blocks):
    """Block minima by a plain loop over one row's points in time order."""
    keep = ~np.isnan(t) & ~np.isnan(v)
    t, v = t[keep], v[keep]
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    env_t, env_v = np.full(blocks, np.nan), np.full(blocks, np.nan)
    if len(t) == 0:
        return env_t, env_v
    start, span = t.min(), t.max() - t.min()
    for time, value in zip(t, v, strict=True):
        block = min(int(math.floor((time - start) / span * blocks)), blocks - 1) if span else 0
        if np.isnan(env_v[block]) or value < env_v[block]:
            env_t[block], env_v[block] = time, value
    return env_t, env_v


def saw_tooth(times, period, amplitude):
    """A garbage collector's saw-tooth: a linear climb, then a drop back to the floor."""
    return amplitude * ((times / period) % 1.0)


class TestDerivAndPredictLinear:
    def test_known_answers(self):
        assert deriv([0, 60, 120], [10, 70, 130]) == 1.0
        # Least squares through (0, 0), (10, 10), (20, 0), (30, 10): slope 0.2 per second.
        assert deriv([0, 10, 20, 30], [0, 10, 0, 10]) == pytest.approx(0.2)
        # Line 0.2 t + 2 at t = 30 + 60.
        assert predict_linear([0, 10, 20, 30], [0, 10, 0, 10], at=30, horizon=60) == (pytest.approx(20.0))
        assert predict_linear([0, 60, 120], [10, 70, 130], at=120, horizon=3600) == 3730.0

    def test_constant_series_has_exactly_zero_slope(self):
        values = np.full(50, 0.1)
        assert deriv(np.arange(50.0) * 15 + 1.7e9, values) == 0.0
        assert predict_linear(np.arange(50.0), values, at=49, horizon=1e6) == 0.1

    def test_rows_equal_polyfit(self):
        rng = np.random.default_rng(1)
        times = 1.7e9 + np.arange(0.0, 3600.0, 15.0)
        values = ragged(rng.normal(0, 5, (8, times.size)) + rng.normal(0, 1, (8, 1)) * times / 60, seed=2)
        slopes = deriv(times, values)
        predicted = predict_linear(times, values, at=times[-1], horizon=np.arange(8) * 600.0)
        for row in range(8):
            keep = ~np.isnan(values[row])
            if keep.sum() < 2:
                assert np.isnan(slopes[row]) and np.isnan(predicted[row])
                continue
            fit = np.polyfit(times[keep] - times[0], values[row, keep], 1)
            assert slopes[row] == pytest.approx(fit[0], rel=1e-7, abs=1e-12)
            expected = np.polyval(fit, times[-1] + row * 600.0 - times[0])
            assert predicted[row] == pytest.approx(expected, rel=1e-7, abs=1e-7)

    def test_two_dimensional_times(self):
        rng = np.random.default_rng(3)
        times = np.sort(rng.uniform(0, 1000, (3, 40)), axis=1)
        values = 2.5 * times + rng.normal(0, 1, (3, 40))
        shared = np.array([deriv(times[row], values[row]) for row in range(3)])
        np.testing.assert_allclose(deriv(times, values), shared, rtol=1e-12)
        assert np.all(np.abs(shared - 2.5) < 0.05)

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="times"):
            deriv(np.arange(5.0), np.ones((2, 6)))
        with pytest.raises(ValueError, match="at"):
            predict_linear(np.arange(5.0), np.ones((2, 5)), at=np.ones(3), horizon=1.0)


class TestLowerEnvelope:
    def test_known_answer(self):
        env_t, env_v = lower_envelope([0, 1, 2, 3], [5, 2, 7, 1], blocks=2)
        assert env_t.tolist() == [1.0, 3.0] and env_v.tolist() == [2.0, 1.0]

    def test_rows_equal_the_reference_loop(self):
        rng = np.random.default_rng(4)
        values = ragged(rng.integers(0, 20, (7, 300)).astype(float), seed=5)  # ties included
        env_t, env_v = lower_envelope(MINUTE_TIMES[:300], values, blocks=24)
        assert env_t.shape == env_v.shape == (7, 24)
        for row in range(7):
            want_t, want_v = reference_envelope(MINUTE_TIMES[:300], values[row], 24)
            np.testing.assert_array_equal(env_t[row], want_t)
            np.testing.assert_array_equal(env_v[row], want_v)

    def test_shared_and_per_row_times_agree(self):
        # Complete rows on one shared time axis take a shortcut; it must match the general path.
        rng = np.random.default_rng(12)
        values = np.round(rng.normal(100, 10, (6, 500)))
        times = MINUTE_TIMES[:500] + 0.5
        shared = lower_envelope(times, values, blocks=7)
        per_row = lower_envelope(np.tile(times, (6, 1)), values, blocks=7)
        for got, want in zip(shared, per_row, strict=True):
            np.testing.assert_array_equal(got, want)
        for row in range(6):
            want_t, want_v = reference_envelope(times, values[row], 7)
            np.testing.assert_array_equal(shared[0][row], want_t)
            np.testing.assert_array_equal(shared[1][row], want_v)

    def test_chunks_give_the_same_trend(self, monkeypatch):
        rng = np.random.default_rng(13)
        values = 1e9 + rng.uniform(0, 100, (30, 1)) * MINUTE_TIMES + rng.normal(0, 1e6, (30, 1440))
        values[::4, ::7] = np.nan
        whole = trend(MINUTE_TIMES, values)
        monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 3000)
        chunked = trend(MINUTE_TIMES, values)
        for field in ("slope", "lower", "upper", "level", "n_points"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))

    def test_unordered_times_give_the_same_envelope(self):
        rng = np.random.default_rng(6)
        times = np.tile(MINUTE_TIMES[:200], (4, 1))
        values = rng.normal(100, 10, (4, 200))
        values[2, ::3] = np.nan
        shuffle = np.argsort(rng.random((4, 200)), axis=1)
        shuffled = lower_envelope(
            np.take_along_axis(times, shuffle, 1), np.take_along_axis(values, shuffle, 1), blocks=10
        )
        ordered = lower_envelope(times, values, blocks=10)
        for got, want in zip(shuffled, ordered, strict=True):
            np.testing.assert_array_equal(got, want)
        for row in range(4):
            np.testing.assert_array_equal(
                shuffled[1][row], reference_envelope(times[row], values[row], 10)[1]
            )

    @pytest.mark.parametrize("blocks", [1, 0, 2.5, True])
    def test_invalid_blocks_raise(self, blocks):
        with pytest.raises(ValueError, match="blocks"):
            lower_envelope(MINUTE_TIMES[:10], np.ones(10), blocks=blocks)


class TestTrend:
    def test_theil_sen_equals_scipy_on_the_envelope(self):
        rng = np.random.default_rng(7)
        times = 1.7e9 + MINUTE_TIMES
        ramp = rng.uniform(0, 500, (9, 1)) * (times - times[0])
        values = 4e8 + ramp + saw_tooth(times, 600, 5e7) + rng.normal(0, 2e6, (9, times.size))
        values[6] = np.round(values[6] / 1e8) * 1e8  # heavy ties in the envelope values
        values = ragged(values, seed=8)
        result = trend(times, values, blocks=24, confidence=0.9)
        env_t, env_v = lower_envelope(times, values, blocks=24)
        for row in range(9):
            keep = ~np.isnan(env_v[row])
            assert result.n_points[row] == keep.sum()
            if keep.sum() < 2:
                assert np.isnan(result.slope[row]) and np.isnan(result.level[row])
                continue
            last = np.nanmax(np.where(np.isnan(values[row]), np.nan, times))
            fit = stats.theilslopes(env_v[row, keep], env_t[row, keep] - last, alpha=0.9, method="joint")
            assert result.slope[row] == pytest.approx(fit.slope, rel=1e-9, abs=1e-9)
            assert result.lower[row] == pytest.approx(fit.low_slope, rel=1e-9, abs=1e-9)
            assert result.upper[row] == pytest.approx(fit.high_slope, rel=1e-9, abs=1e-9)
            assert result.level[row] == pytest.approx(fit.intercept, rel=1e-9)

    def test_tied_values_follow_scipy(self):
        # With one point per block the envelope is the data itself.
        rng = np.random.default_rng(11)
        times = np.arange(24.0)
        values = rng.integers(0, 4, (40, 24)) + (times // 6)
        result = trend(times, values, blocks=24)
        for row in range(40):
            fit = stats.theilslopes(values[row], times - times[-1], method="joint")
            got = (result.slope[row], result.lower[row], result.upper[row], result.level[row])
            want = (fit.slope, fit.low_slope, fit.high_slope, fit.intercept)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    def test_saw_tooth_without_leak_is_flat(self):
        rng = np.random.default_rng(9)
        values = 6e8 + saw_tooth(MINUTE_TIMES + rng.uniform(0, 430, (50, 1)), 430, 2e8)
        values += rng.normal(0, 1e6, values.shape)
        result = trend(MINUTE_TIMES, values)
        # Bytes per second; the saw-tooth itself climbs at 465,000 and a leak of 30 would
        # be 2.6 MB a day.
        assert np.all(np.abs(result.slope) < 30.0)
        covered = (result.lower <= 0) & (result.upper >= 0)
        assert covered.mean() >= 0.9  # a 95% interval
        assert covered[0]

    def test_saw_tooth_on_a_ramp_recovers_the_ramp(self):
        rng = np.random.default_rng(10)
        leak = rng.uniform(1000.0, 4000.0, (50, 1))  # bytes per second: 86-345 MB a day
        phase = rng.uniform(0, 430, (50, 1))
        values = 6e8 + leak * MINUTE_TIMES + saw_tooth(MINUTE_TIMES + phase, 430, 2e8)
        values += rng.normal(0, 1e6, values.shape)
        result = trend(MINUTE_TIMES, values)
        np.testing.assert_allclose(result.slope, leak[:, 0], rtol=0.05)
        assert np.all(result.lower > 0)
        least_squares = deriv(MINUTE_TIMES, values)
        assert np.all(np.isfinite(least_squares))
        # The level is the floor at the last sample (give or take the climb between two
        # samples, 60 s of a 430 s tooth), not the saw-tooth's average 1e8 higher.
        floor = 6e8 + leak[:, 0] * MINUTE_TIMES[-1]
        assert np.all(result.level > floor - 5e6)
        assert np.all(result.level < floor + 2e8 * 60 / 430)

    def test_one_series_gives_scalars(self):
        result = trend(MINUTE_TIMES, 1e9 + 100.0 * MINUTE_TIMES)
        assert np.ndim(result.slope) == 0 and int(result.n_points) == 24
        assert result.slope == pytest.approx(100.0)
        assert result.level == pytest.approx(1e9 + 100.0 * MINUTE_TIMES[-1])

    def test_invalid_confidence_raises(self):
        with pytest.raises(ValueError, match="confidence"):
            trend(MINUTE_TIMES, MINUTE_TIMES, confidence=1.0)


class TestTimeToExhaustion:
    def test_cases(self):
        got = time_to_exhaustion([1e9, 1e9, 3e9, 2e9, np.nan, 1e9], [1e3, 0.0, 5.0, -1.0, 1.0, np.nan], 2e9)
        np.testing.assert_array_equal(got, [1e6, np.inf, 0.0, 0.0, np.nan, np.nan])

    def test_scalar(self):
        assert time_to_exhaustion(1.5e9, 500.0, 2e9) == 1e6
        assert np.ndim(time_to_exhaustion(1.5e9, 500.0, 2e9)) == 0
