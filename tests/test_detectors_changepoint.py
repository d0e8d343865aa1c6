"""cusum(): Page's tabular CUSUM against a plain loop, seeded steps and theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import ruptures

import detectors._arrays as arrays
from detectors import cusum

FIELDS = ("detected", "alarm_index", "change_index", "shift", "statistic")


def reference(x, mean, scale, threshold=5.0, drift=0.5, direction="increase"):
    """The textbook recursion, one step at a time, for one series."""
    if not (np.isfinite(mean) and np.isfinite(scale) and scale > 0) or np.isnan(x).all():
        return dict(detected=False, alarm_index=-1, change_index=-1, shift=np.nan, statistic=np.nan)
    sides = {"increase": ["up"], "decrease": ["down"], "both": ["up", "down"]}[direction]
    level = {"up": 0.0, "down": 0.0}
    last_zero = {"up": -1, "down": -1}
    peak, alarm, change = 0.0, -1, -1
    for t, value in enumerate(x):
        if not np.isnan(value):
            z = (value - mean) / scale
            level["up"] = max(0.0, level["up"] + z - drift)
            level["down"] = max(0.0, level["down"] - z - drift)
        peak = max([peak] + [level[s] for s in sides])
        if alarm >= 0:
            continue
        fired = [s for s in sides if level[s] > threshold]
        if fired:
            alarm, change = t, last_zero[fired[0]] + 1
            continue
        for s in sides:
            if level[s] == 0.0:
                last_zero[s] = t
    shift = np.nanmean(x[change:]) - mean if alarm >= 0 else np.nan
    return dict(detected=alarm >= 0, alarm_index=alarm, change_index=change, shift=shift, statistic=peak)


def step_signals(n_series, length, change_at, delta, noise_std, seed):
    """Seeded noise with one step of `delta` (per series) at `change_at` (pw_constant-like)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, noise_std, (n_series, length))
    signal[:, change_at:] += np.asarray(delta, dtype=float).reshape(-1, 1)
    return signal


def assert_rows_match(values, mean, scale, **kwargs):
    result = cusum(values, reference_mean=mean, reference_scale=scale, **kwargs)
    for row in range(values.shape[0]):
        expected = reference(values[row], mean[row], scale[row], **kwargs)
        for field in FIELDS:
            np.testing.assert_allclose(
                getattr(result, field)[row], expected[field], rtol=1e-10, err_msg=f"row {row} field {field}"
            )


def ragged(values, seed):
    """Rows keeping 0, 1, 2, n-2 and n of their values (the rest NaN), then full rows."""
    rng = np.random.default_rng(seed)
    out = values.copy()
    length = values.shape[1]
    for row, keep in enumerate([0, 1, 2, length - 2, length]):
        out[row, rng.choice(length, size=length - keep, replace=False)] = np.nan
    return out


@pytest.mark.parametrize("direction", ["increase", "decrease", "both"])
def test_rows_equal_the_reference_loop(direction):
    up = step_signals(6, 120, 50, 2.0, 1.0, seed=1)
    down = step_signals(6, 120, 70, -1.5, 1.0, seed=2)
    values = ragged(np.vstack([up, down]), seed=3)
    values[7, 10:40] = np.nan  # a gap in the middle of a full row
    mean = np.zeros(len(values))
    scale = np.ones(len(values))
    scale[9] = 0.0  # no usable scale: its own row gets NaN
    mean[10] = np.nan
    assert_rows_match(values, mean, scale, direction=direction)
    assert_rows_match(values * 3 + 7, mean * 3 + 7, scale * 3, direction=direction, threshold=3.0, drift=0.25)


def test_chunking_and_threads_do_not_change_results(monkeypatch):
    values = step_signals(40, 200, 120, np.linspace(-2, 2, 40), 1.0, seed=4)
    monkeypatch.setattr(arrays, "WORKERS", 1)
    whole = cusum(values, reference_mean=0.0, reference_scale=1.0, direction="both")
    monkeypatch.setattr(arrays, "WORKERS", 2)
    monkeypatch.setattr(arrays, "CHUNK_ELEMENTS", 1000)  # chunks of five rows, on two threads
    chunked = cusum(values, reference_mean=0.0, reference_scale=1.0, direction="both")
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))


def test_known_step_is_found_and_timed():
    # 40 in-control steps: few false alarms (average run length ~940) before the step.
    change_at, delta = 40, 1.5
    values = step_signals(500, 160, change_at, delta, 1.0, seed=5) + 20.0
    result = cusum(values, reference_mean=np.full(500, 20.0), reference_scale=np.ones(500))
    assert result.detected.mean() > 0.99
    late = result.alarm_index[result.detected] - change_at
    assert np.median(late) < 12 and np.mean(late < 0) < 0.1
    assert abs(np.median(result.change_index[result.detected]) - change_at) <= 3
    assert np.median(result.shift[result.detected]) == pytest.approx(delta, abs=0.15)


def test_ruptures_pw_constant_breaks_are_located():
    rng = np.random.default_rng(6)
    errors = []
    for seed in range(30):
        clean, bkps = ruptures.pw_constant(400, 1, 1, noise_std=None, delta=(3, 6), seed=seed)
        noisy = clean[:, 0] + rng.normal(0.0, 1.0, 400)
        result = cusum(
            noisy,
            reference_mean=clean[0, 0],
            reference_scale=1.0,
            threshold=10.0,
            drift=1.0,
            direction="both",
        )
        if bkps[0] < 395:
            assert result.detected
            errors.append(int(result.change_index) - bkps[0])
            jump = clean[-1, 0] - clean[0, 0]
            assert result.shift == pytest.approx(jump, abs=0.5)
    assert np.median(np.abs(errors)) <= 2


def test_stationary_noise_rarely_alarms():
    noise = np.random.default_rng(7).normal(size=(2000, 60))
    result = cusum(noise, reference_mean=0.0, reference_scale=1.0)
    assert result.detected.mean() < 0.08
    assert np.all(result.shift[~result.detected] != result.shift[~result.detected])


def test_false_alarm_run_length_matches_siegmund():
    # Siegmund's approximation of the in-control average run length of an upper CUSUM
    # with reference k and limit h: (exp(2kb) - 2kb - 1) / (2k^2), b = h + 1.166.
    k, h = 0.5, 5.0
    b = h + 1.166
    expected = (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
    noise = np.random.default_rng(8).normal(size=(600, 6000))
    result = cusum(noise, reference_mean=0.0, reference_scale=1.0, threshold=h, drift=k)
    assert result.detected.mean() > 0.99
    run_length = result.alarm_index[result.detected] + 1
    assert run_length.mean() == pytest.approx(expected, rel=0.12)


def test_one_series_gives_scalars():
    result = cusum([0, 0, 0, 3, 3, 3, 3], reference_mean=0, reference_scale=1)
    assert np.ndim(result.alarm_index) == 0
    assert (bool(result.detected), int(result.alarm_index), int(result.change_index)) == (True, 5, 3)
    assert result.statistic == pytest.approx(10.0)


def test_missing_steps_leave_the_sum_unchanged():
    plain = cusum([3.0, 3.0, 3.0], reference_mean=0, reference_scale=1)
    gapped = cusum([3.0, np.nan, 3.0, np.nan, 3.0], reference_mean=0, reference_scale=1)
    assert plain.statistic == gapped.statistic == pytest.approx(7.5)
    assert int(gapped.alarm_index) == 4 and int(gapped.change_index) == 0


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"direction": "up"}, "direction"), ({"threshold": 0.0}, "threshold"), ({"drift": -1.0}, "drift")],
)
def test_invalid_parameters_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        cusum([1.0, 2.0], reference_mean=0.0, reference_scale=1.0, **kwargs)


def test_reference_shape_must_match():
    with pytest.raises(ValueError, match="reference_mean"):
        cusum(np.zeros((3, 5)), reference_mean=np.zeros(4), reference_scale=1.0)
