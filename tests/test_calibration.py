"""A/A calibration against known answers: independent noise, AR(1) noise, saw-tooth memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from baselines.calibration import (
    DRIFT_RATIO,
    LADDER,
    drift_aware_spreads,
    drift_bar,
    forward_spreads,
    robust_spread,
    slope_spreads,
    spread_at,
    window_spreads,
)
from baselines.frame import SignalFrame
from baselines.summary import Baseline, SignalBaseline, merge, summarize
from detectors import dispersion
from monitor.evaluate import JudgeState, evaluate
from monitor.policy import ServicePolicy, SignalRule


def test_independent_noise_gives_the_spread_of_a_median() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(0.0, 2.0, size=(40, 4096))
    spreads = np.nanmedian(window_spreads(values), axis=0)
    # The median of L normal samples has sd sqrt(pi/2) * sigma / sqrt(L), for large L.
    for index, length in enumerate(LADDER[2:7], start=2):
        assert spreads[index] == pytest.approx(np.sqrt(np.pi / 2) * 2.0 / np.sqrt(length), rel=0.2)


def test_a_ratio_s_windows_are_calibrated_as_binomial_counts_pooled() -> None:
    # 100 requests an interval, each an error with chance 2%: a window of L intervals has
    # a pooled ratio with sd sqrt(p (1 - p) / (100 L)).
    rng = np.random.default_rng(12)
    trials = np.full((20, 8192), 100.0)
    events = rng.binomial(100, 0.02, size=trials.shape).astype(float)
    pooled = np.nanmedian(window_spreads(events, trials=trials), axis=0)
    for index, length in enumerate(LADDER[:7]):
        assert pooled[index] == pytest.approx(np.sqrt(0.02 * 0.98 / (100 * length)), rel=0.1)
    # With under one error an interval (70 requests at 1%), medians of per-interval ratios
    # flip between 0 and 1/70 and stand far wider than the pooled ratio the test uses.
    sparse = rng.binomial(70, 0.01, size=(20, 4096)).astype(float)
    medians = np.nanmedian(window_spreads(sparse / 70.0), axis=0)[3]
    assert np.nanmedian(window_spreads(sparse, trials=np.full_like(sparse, 70.0)), axis=0)[3] == (
        pytest.approx(np.sqrt(0.01 * 0.99 / (70 * 16)), rel=0.1))
    assert medians > 2 * np.sqrt(0.01 * 0.99 / (70 * 16))
    # Summarized, a ratio signal carries the pooled spreads; a missing interval is skipped.
    events[:, 5] = np.nan
    frame = SignalFrame(("errors",), np.arange(8192.0), events[:1] / trials[:1], events[:1],
                        trials[:1])
    stored = summarize(frame)["errors"].aa_spread
    assert stored[3] == pytest.approx(np.sqrt(0.02 * 0.98 / 1600), rel=0.2)


def test_autocorrelated_noise_is_wider_by_the_known_factor() -> None:
    rng = np.random.default_rng(12)
    phi, n = 0.8, 8192
    shocks = rng.normal(size=(20, n))
    values = np.zeros_like(shocks)
    for t in range(1, n):
        values[:, t] = phi * values[:, t - 1] + shocks[:, t]
    spreads = np.nanmedian(window_spreads(values), axis=0)
    sd = 1.0 / np.sqrt(1 - phi**2)
    # For long windows the mean's sd is sd * sqrt((1 + phi) / (1 - phi) / L); the median's is
    # close to it for near-normal data.
    length = 256
    expected = sd * np.sqrt((1 + phi) / (1 - phi) / length)
    assert spreads[LADDER.index(length)] == pytest.approx(expected, rel=0.3)
    # ...three times what independent samples would suggest.
    assert spreads[LADDER.index(length)] > 2.5 * sd / np.sqrt(length)


def test_short_releases_calibrate_only_the_lengths_they_can() -> None:
    spreads = window_spreads(np.random.default_rng(13).normal(size=(2, 40)))
    assert not np.isnan(spreads[:, LADDER.index(8)]).any()      # 5 windows of 8
    assert np.isnan(spreads[:, LADDER.index(16)]).all()         # only 2 windows of 16


def test_forward_spread_is_the_second_halfs_distance_from_the_first_halfs_median() -> None:
    values = np.array([[0.0] * 8 + [4.0] * 8, [1.0, 3.0] * 8])
    forward = forward_spreads(values)
    # Second half all 4 against a first-half median of 0; an alternating row's windows of 2
    # have median 2, its first half's median is 2.
    np.testing.assert_allclose(forward[:, LADDER.index(2)], [4.0, 0.0])
    assert np.isnan(forward[:, LADDER.index(4)]).all()   # 3 windows of 4 in 8 samples


def test_a_random_walk_drifts_and_noise_does_not() -> None:
    rng = np.random.default_rng(21)
    noise = rng.normal(size=(400, 256))
    walks = np.cumsum(rng.normal(size=(400, 256)), axis=1)
    short, length = LADDER.index(2), LADDER.index(16)
    rms_z = {}
    for name, values in (("noise", noise), ("walk", walks)):
        release, after = values[:, :240], values[:, 240:]
        ratio = forward_spreads(release)[:, short] / window_spreads(release)[:, short]
        flagged = np.mean(ratio > DRIFT_RATIO)
        # How far the next 16 samples' median strays, in each kind of spread.
        distance = np.median(after, axis=1) - np.median(release, axis=1)
        rms_z[name] = [float(np.sqrt(np.mean((distance / spreads[:, length]) ** 2)))
                       for spreads in (window_spreads(release), drift_aware_spreads(release).spreads)]
        if name == "noise":
            # The first half's median adds a little error, rarely half again.
            assert np.median(ratio) == pytest.approx(1.0, abs=0.1) and flagged <= 0.02
        else:
            assert flagged >= 0.3
    # Noise keeps its spreads; a walk's next window is nearer what the drift-aware one says.
    assert rms_z["noise"][1] == pytest.approx(rms_z["noise"][0], rel=0.02)
    assert rms_z["walk"][1] < 0.92 * rms_z["walk"][0]


def test_the_drift_bar_rises_for_short_releases_so_noise_is_rarely_called_drift() -> None:
    values = np.full((3, 100), 1.0)
    values[1, 16:] = np.nan
    values[2, :] = np.nan
    np.testing.assert_allclose(drift_bar(values), [DRIFT_RATIO, 1.875, np.inf])
    rng = np.random.default_rng(23)
    for n in (10, 16, 24, 48):
        noise = rng.normal(size=(2000, n))
        ratio = forward_spreads(noise)[:, 0] / window_spreads(noise)[:, 0]
        assert np.mean(ratio > drift_bar(noise)) <= 0.02


def test_drift_never_calibrates_a_length_the_release_cannot() -> None:
    walk = np.cumsum(np.random.default_rng(24).normal(size=(50, 11)), axis=1)
    lengths = (2, 3)
    inside = window_spreads(walk, lengths)
    aware = drift_aware_spreads(walk, lengths).spreads
    assert np.isnan(inside[:, 1]).all() and np.isnan(aware[:, 1]).all()
    assert np.all(aware[:, 0] >= inside[:, 0])


def _noise_and_walk(seed: int) -> tuple[np.ndarray, dict[str, SignalBaseline]]:
    """Four hours of white noise and of a walk with a trend (a backlog that keeps growing),
    one a minute, and their summaries."""
    rng = np.random.default_rng(seed)
    times = 1_000_000.0 + 60.0 * np.arange(240)
    values = np.vstack([rng.normal(size=240), np.cumsum(rng.normal(0.3, 1.0, size=240))])
    nan = np.full_like(values, np.nan)
    return values, summarize(SignalFrame(("noise", "walk"), times, values, nan, nan))


def test_a_drifting_baseline_is_summarized_with_its_forward_spread() -> None:
    values, summary = _noise_and_walk(25)
    aware = drift_aware_spreads(values).spreads
    np.testing.assert_allclose(summary["walk"].aa_spread, aware[1])
    np.testing.assert_allclose(summary["noise"].aa_spread, window_spreads(values)[0])
    assert summary["walk"].aa_spread[0] > DRIFT_RATIO * window_spreads(values)[1, 0]


def test_white_noise_is_steady_and_a_walk_or_a_short_release_is_not() -> None:
    rng = np.random.default_rng(26)
    noise = rng.normal(size=(500, 96))
    walks = np.cumsum(rng.normal(size=(500, 96)), axis=1)
    # STEADY_NOISE's figures: 97% of white noise and 26% of walks (one that comes back
    # looks steady) at 96 samples.
    assert np.mean(drift_aware_spreads(noise).steady) >= 0.96
    assert np.mean(drift_aware_spreads(walks).steady) <= 0.35
    # Too short for a forward spread (4 windows of 2 after its first half), or empty:
    # not measured, so not known to be steady.
    assert not drift_aware_spreads(noise[:, :8]).steady.any()
    assert not drift_aware_spreads(np.full((3, 96), np.nan)).steady.any()


def test_steadiness_is_stored_with_the_baseline_and_not_known_of_a_merge() -> None:
    _, summary = _noise_and_walk(27)
    assert summary["noise"].steady and not summary["walk"].steady
    stored = summary["noise"].to_summary()
    assert stored["steady"] is True
    assert SignalBaseline.from_summary(stored, summary["noise"].reservoir).steady
    # Stored before steadiness was recorded: not known to be steady.
    del stored["steady"]
    assert not SignalBaseline.from_summary(stored, summary["noise"].reservoir).steady
    # Two steady releases may still sit at different levels, which nothing measured.
    merged = merge([Baseline(("v1",), summary), Baseline(("v2",), summary)])
    assert not merged.signals["noise"].steady


def test_a_merge_keeps_the_daily_profile_of_the_releases_that_have_one() -> None:
    _, summary = _noise_and_walk(27)
    flat = summary["noise"]
    daily = replace(flat, hourly=tuple(float(h) for h in range(24)))
    busier = replace(flat, hourly=tuple(float(2 * h) for h in range(24)))

    def merged(*parts: SignalBaseline) -> tuple[float, ...] | None:
        releases = [Baseline((f"v{i}",), {"noise": part}) for i, part in enumerate(parts)]
        return merge(releases).signals["noise"].hourly

    # Whichever comes first: the candidate is taken out of its daily swing either way.
    assert merged(flat, daily) == merged(daily, flat) == daily.hourly
    assert merged(daily, busier) == tuple(1.5 * h for h in range(24))
    assert merged(flat, flat) is None


def test_spread_at_interpolates_on_log_axes_and_clamps() -> None:
    ladder = (2, 4, 8)
    spreads = np.array([[4.0, 2.0, 1.0], [4.0, np.nan, np.nan]])
    assert spread_at(spreads, np.array([4, 4]), ladder) == pytest.approx([2.0, 4.0])
    # Between 2 and 4 the spread follows the power law through both: 8 / L.
    assert spread_at(spreads, np.array([np.sqrt(8), 1000]), ladder) == pytest.approx([8 / np.sqrt(8), 4.0])
    assert spread_at(spreads, np.array([1, 1]), ladder) == pytest.approx([4.0, 4.0])
    assert np.isnan(spread_at(np.full((1, 3), np.nan), np.array([4]), ladder)).all()


def test_spread_at_below_a_rows_shortest_calibrated_length_is_that_length() -> None:
    # Slope spreads have no value at the shortest lengths: shorter windows take the first
    # calibrated one, not an interpolation towards nothing.
    spreads = np.array([[np.nan, np.nan, 8.0, 4.0], [8.0, 4.0, 2.0, 1.0]])
    ladder = (2, 4, 8, 16)
    assert spread_at(spreads, np.array([2, 2]), ladder) == pytest.approx([8.0, 8.0])
    assert spread_at(spreads, np.array([5, 5]), ladder) == pytest.approx([8.0, 16 / 5])
    assert spread_at(spreads, np.array([12, 12]), ladder) == pytest.approx([64 / 12, 16 / 12])


def test_spread_at_a_calibrated_length_next_to_a_zero_spread_is_its_own() -> None:
    # A constant stretch gives the shortest windows no spread; the next length has one.
    spreads = np.array([[0.0, 0.2, 0.1]])
    ladder = (2, 4, 8)
    assert spread_at(spreads, np.array([4]), ladder) == pytest.approx([0.2])
    assert spread_at(spreads, np.array([3]), ladder) == pytest.approx([0.0])
    assert spread_at(spreads, np.array([2]), ladder) == pytest.approx([0.0])


def test_robust_spread_falls_back_for_mostly_constant_series() -> None:
    values = np.zeros((3, 1000))
    values[0] = np.random.default_rng(14).normal(size=1000)
    values[1, ::10] = 5.0            # MAD 0, the interquartile range 0, 5-95% range 5
    values[1, 5::10] = -5.0
    assert robust_spread(values)[0] == pytest.approx(1.0, rel=0.1)
    assert robust_spread(values)[1] == pytest.approx(10 / 3.29)
    assert robust_spread(values)[2] == 0.0


def test_saw_tooth_slopes_are_calibrated_and_a_leak_stands_out() -> None:
    rng = np.random.default_rng(15)
    times = np.arange(2880) * 15.0
    saw = 40e6 * ((times % 180.0) / 180.0)
    healthy = 300e6 + saw + rng.normal(0, 2e5, times.size)
    spreads = slope_spreads(times, healthy[None, :], block=240.0)
    sigma = spread_at(spreads, np.array([120]))[0]
    leak = 20e3                                               # bytes per second
    assert 0 < sigma < leak / 4                               # a 20 kB/s leak is > 4 sigma


def test_slopes_of_a_minority_of_climbing_windows_are_in_the_spread() -> None:
    # Windows of 16 samples, one in three climbing at 3 per second and the others flat: the
    # root mean square distance from the median slope (0) is 3 / sqrt(3). A median
    # absolute deviation would be 0, and a healthy climb like those a leak.
    length, windows = 16, 48
    times = np.arange(length * windows, dtype=float)
    climbs = (np.arange(windows) % 3 == 0).repeat(length)
    within = np.tile(np.arange(length, dtype=float), windows)
    values = np.where(climbs, 3.0 * within, 0.0)[None, :]
    spreads = slope_spreads(times, values, block=2.0, lengths=(length,))
    assert spreads[0, 0] == pytest.approx(3.0 / np.sqrt(3.0))


def test_a_healthy_cache_fill_like_the_baseline_s_is_no_leak() -> None:
    # Memory flat but for a cache that fills 60 MiB over 40 minutes every 3 hours (and is
    # dropped an hour in), under a garbage collector's saw-tooth: a release that starts
    # with a fill climbs as a third of the baseline's half hours did.
    mib, step = 2.0**20, 15.0

    def memory(times: np.ndarray, start: float, seed: int) -> np.ndarray:
        phase = (times - start) % 10800
        cache = np.where(phase < 2400, 60 * phase / 2400, np.where(phase < 3600, 60.0, 0.0))
        saw = 20 * (((times - start) % 180) / 180)
        noise = np.random.default_rng(seed).normal(0, 0.3, times.size)
        return (500 + cache + saw + noise) * mib

    released = 1_000_000.0 + 3 * 3600 * 40
    before = released - 86400 + step * np.arange(int(86400 / step))
    nothing = np.full((1, before.size), np.nan)
    part = summarize(SignalFrame(("memory",), before, memory(before, before[0], 0)[None, :],
                                 nothing, nothing), leak_signals=["memory"], leak_block=300.0)
    rule = SignalRule("memory", bad="increase", leak=True, limit=1024 * mib)
    policy = ServicePolicy(name="svc", signals=(rule,), evaluation_interval=60.0, persistence=3,
                           leak_block=300.0, leak_horizon=86400.0)
    after = released + step * np.arange(int(1800 / step))
    candidate = SignalFrame(("memory",), after, memory(after, released, 5)[None, :],
                            np.full((1, after.size), np.nan), np.full((1, after.size), np.nan))
    state, now = JudgeState(), released
    while True:
        now += 60.0
        result = evaluate(policy, Baseline(("v1",), part), candidate, started=released,
                          period=1800.0, now=now, state=state)
        state = result.state
        if result.done:
            break
    assert result.verdict == "pass", result.reason


def test_a_repeating_daily_pattern_is_taken_out_and_noise_is_left_alone() -> None:
    from baselines.summary import deseasonalize, hourly_offsets

    rng = np.random.default_rng(16)
    times = np.arange(0, 8 * 86400, 300.0)
    daily = 50 * np.sin(2 * np.pi * times / 86400)
    values = np.vstack([100 + daily + rng.normal(0, 5, times.size),
                        100 + rng.normal(0, 5, times.size)])
    offsets = hourly_offsets(times, values)
    assert np.isnan(offsets[1]).all()                  # no pattern: nothing subtracted
    hour_means = 50 * np.sin(2 * np.pi * (np.arange(24) + 0.5) / 24)
    assert offsets[0] == pytest.approx(hour_means, abs=4.0)
    flat = deseasonalize(times, values, offsets)
    assert np.std(flat[0]) < 7.0 < np.std(values[0])
    assert np.array_equal(flat[1], values[1])


def test_less_than_a_week_is_not_enough_to_call_a_pattern_daily() -> None:
    from baselines.summary import hourly_offsets

    times = np.arange(0, 6 * 86400, 300.0)
    values = np.sin(2 * np.pi * times / 86400)[None, :]
    assert np.isnan(hourly_offsets(times, values)).all()


def test_a_week_of_hourly_samples_is_a_week() -> None:
    from baselines.summary import hourly_offsets

    # 168 hourly samples: the first and last are 167 h apart, but each covers its hour.
    times = np.arange(0, 7 * 86400, 3600.0)
    values = np.sin(2 * np.pi * times / 86400)[None, :]
    offsets = hourly_offsets(times, values)
    assert offsets[0] == pytest.approx(np.sin(2 * np.pi * np.arange(24) / 24), abs=1e-9)
    assert np.isnan(hourly_offsets(times[1:], values[:, 1:])).all()


def test_nan_median_agrees_with_numpys_on_every_shape_and_gap() -> None:
    import warnings

    from detectors._arrays import nan_median

    rng = np.random.default_rng(17)
    for shape in [(40, 1), (40, 2), (40, 9), (12, 30, 4), (3, 5, 64)]:
        values = rng.normal(size=shape)
        values[rng.random(shape) < 0.35] = np.nan
        values[0] = np.nan                                   # rows with nothing valid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(values, axis=-1)
        np.testing.assert_allclose(nan_median(values), expected, equal_nan=True)


def test_robust_spread_of_no_samples_is_zero_per_row() -> None:
    assert robust_spread(np.zeros((3, 0))).tolist() == [0.0, 0.0, 0.0]
    assert robust_spread(np.zeros((0, 0))).shape == (0,)


def test_the_complement_s_dispersion_is_its_own_and_is_stored() -> None:
    # Hits near 99% in every interval, misses bursting in a few: the misses' factor is
    # the quasi-Poisson factor of the misses, not the hits' (which is about 1).
    rng = np.random.default_rng(5)
    trials = rng.poisson(400, (1, 600)).astype(float)
    misses = rng.binomial(trials.astype(int), np.where(rng.random((1, 600)) < 0.05, 0.9, 0.01))
    hits = trials - misses
    frame = SignalFrame(("hits",), 60.0 * np.arange(600), hits / trials, hits, trials)
    hit = summarize(frame)["hits"]
    assert hit.dispersion == pytest.approx(float(dispersion(hits, trials)[0]))
    assert hit.complement_dispersion == pytest.approx(float(dispersion(misses, trials)[0]))
    assert hit.complement_dispersion > 10 * hit.dispersion
    stored = hit.to_summary()
    assert SignalBaseline.from_summary(stored, hit.reservoir).complement_dispersion == (
        hit.complement_dispersion)
    del stored["complement_dispersion"]     # stored before it was: unknown
    assert np.isnan(SignalBaseline.from_summary(stored, hit.reservoir).complement_dispersion)
    # Merged with a part stored before it was kept, in either order: the known one counts.
    older = replace(hit, complement_dispersion=float("nan"))
    for parts in ((hit, older), (older, hit)):
        merged = merge([Baseline((f"v{i}",), {"hits": part}) for i, part in enumerate(parts)])
        assert merged.signals["hits"].complement_dispersion == hit.complement_dispersion
