"""Stored baselines against answers computed here: a ratio's daily profile, the reservoir
of a long release, several releases merged."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.calibration import drift_aware_spreads
from baselines.frame import SignalFrame
from baselines.summary import RESERVOIR_SIZE, Baseline, merge, summarize, thin
from monitor.evaluate import JudgeState, evaluate
from monitor.policy import ServicePolicy, SignalRule

MIDNIGHT = 1_699_920_000.0   # a UTC midnight
STEP = 60.0
ERRORS = SignalRule("errors", kind="ratio", numerator="e_total", denominator="r_total",
                    bad="increase", critical=True, tolerance=0.5)


def _error_rate(times: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """0.8% of requests fail by day (08-20 UTC), 0.3% at night: under one error a minute."""
    hours = (times // 3600) % 24
    return factor * np.where((hours >= 8) & (hours < 20), 0.008, 0.003)


def _ratio(times: np.ndarray, seed: int, factor: float = 1.0) -> SignalFrame:
    rng = np.random.default_rng(seed)
    trials = rng.poisson(100, times.size).astype(float)
    events = rng.binomial(trials.astype(np.int64), _error_rate(times, factor)).astype(float)
    return SignalFrame(("errors",), times, (events / trials)[None], events[None], trials[None])


def _week_and_a_day() -> SignalFrame:
    return _ratio(MIDNIGHT + STEP * np.arange(8 * 1440), seed=0)


def test_a_ratio_s_daily_profile_is_of_its_errors_over_its_requests_per_hour() -> None:
    frame = _week_and_a_day()
    stored = summarize(frame)["errors"]
    events, trials = frame.events[0], frame.trials[0]
    hours = ((frame.times // 3600) % 24).astype(np.int64)
    overall = events.sum() / trials.sum()
    expected = [events[hours == h].sum() / trials[hours == h].sum() - overall for h in range(24)]
    assert stored.hourly is not None
    np.testing.assert_allclose(stored.hourly, expected, rtol=1e-12)
    # Near the truth (-0.25 and +0.25 points), where medians of per-minute ratios (0 or one
    # error's share) put the night at 0 and the day at +0.9 points.
    assert stored.hourly[3] == pytest.approx(-0.0025, abs=3e-4)
    assert stored.hourly[12] == pytest.approx(0.0025, abs=3e-4)
    # The hours' share taken out of the errors sums to nothing over whole days.
    assert stored.deseasonalized_events == pytest.approx(events.sum(), rel=0.02)


def test_a_ratio_s_windows_are_calibrated_on_a_profile_from_the_other_days() -> None:
    frame = _week_and_a_day()
    events, trials = frame.events[0], frame.trials[0]
    hours = ((frame.times // 3600) % 24).astype(np.int64)
    days = ((frame.times - frame.times[0]) // 86400).astype(np.int64)
    overall = events.sum() / trials.sum()

    def profile(parity: int) -> np.ndarray:
        on = days % 2 == parity
        return np.array([events[on & (hours == h)].sum() / trials[on & (hours == h)].sum()
                         for h in range(24)]) - overall

    other_days = np.where(days % 2 == 0, profile(1)[hours], profile(0)[hours])
    expected = drift_aware_spreads((events - trials * other_days)[None], trials=trials[None])
    stored = summarize(frame)["errors"].aa_spread
    np.testing.assert_allclose(stored, expected.spreads[0], rtol=1e-12)


def test_a_doubled_error_ratio_at_either_hour_is_measured_against_that_hour() -> None:
    baseline = Baseline(("v1",), summarize(_week_and_a_day()))
    policy = ServicePolicy(name="svc", signals=(ERRORS,), evaluation_interval=60.0, persistence=3)

    def verdict(hour: int, seed: int, factor: float = 2.0) -> str:
        started = MIDNIGHT + 8 * 86400 + hour * 3600
        candidate = _ratio(started + STEP * np.arange(60), seed=seed, factor=factor)
        state, now = JudgeState(), started
        while True:
            now += policy.evaluation_interval
            result = evaluate(policy, baseline, candidate, started=started, period=3600.0,
                              now=now, state=state)
            state = result.state
            if result.done:
                return result.verdict

    # By day: 0.8% -> 1.6% over 6,000 requests is a rollback nearly every time (it was a
    # hotfix more often than not, against a profile of per-minute medians).
    noon = [verdict(12, seed) for seed in range(10)]
    assert noon.count("rollback") >= 9, noon
    # At night the same doubling (0.3% -> 0.6%) is about 18 errors more, measured against
    # how far the night's counts stray (the root of its rate), not the busy day's: most are
    # seen (a third, against the whole week's spread).
    night = [verdict(3, seed) for seed in range(20)]
    assert sum(v != "pass" for v in night) >= 12 and night.count("rollback") >= 8, night
    # Healthy releases pass at either hour.
    assert {verdict(hour, seed, factor=1.0) for hour in (3, 12) for seed in range(10)} == {"pass"}


def test_the_reservoir_does_not_fall_on_one_phase_of_a_repeating_pattern() -> None:
    # A job every fourth scrape: at 4 x 511 + 1 samples, evenly spaced picks land on the
    # job every time.
    values = np.where(np.arange(4 * (RESERVOIR_SIZE - 1) + 1) % 4 == 0, 100.0, 1.0)
    reservoir = thin(values, RESERVOIR_SIZE)
    assert reservoir.size == RESERVOIR_SIZE
    assert np.mean(reservoir == 100.0) == pytest.approx(0.25, abs=0.06)
    # The same release gives the same reservoir; each pick comes from its own stretch.
    np.testing.assert_array_equal(thin(values, RESERVOIR_SIZE), reservoir)
    index = np.arange(values.size, dtype=float)
    picks = thin(index, RESERVOIR_SIZE)
    edges = np.linspace(0, values.size, RESERVOIR_SIZE + 1).round()
    assert np.all((picks >= edges[:-1]) & (picks < edges[1:]))
    # NaN gaps are skipped, and a short release is kept whole.
    gappy = np.where(np.arange(values.size) % 3 == 0, np.nan, values)
    assert not np.isnan(thin(gappy, RESERVOIR_SIZE)).any()
    np.testing.assert_array_equal(thin(values[:100], RESERVOIR_SIZE), values[:100])


def test_merged_releases_weigh_in_by_their_samples_not_their_reservoirs() -> None:
    rng = np.random.default_rng(5)
    day = rng.normal(100.0, 5.0, 5760)          # a day at 15 s
    short = rng.normal(130.0, 5.0, 160)         # 40 minutes

    def baseline(name: str, values: np.ndarray) -> Baseline:
        frame = SignalFrame(("latency",), np.arange(values.size) * 15.0, values[None],
                            np.full((1, values.size), np.nan), np.full((1, values.size), np.nan))
        return Baseline((name,), summarize(frame))

    merged = merge([baseline("v1", day), baseline("v2", short)]).signals["latency"]
    share = short.size / (day.size + short.size)
    assert merged.reservoir.size == RESERVOIR_SIZE
    assert np.mean(merged.reservoir > 118.0) == pytest.approx(share, abs=0.015)
    everything = np.concatenate([day, short])
    for name in ("p50", "p75", "p95"):
        q = float(name[1:]) / 100
        assert merged.quantiles[name] == pytest.approx(np.quantile(everything, q), rel=0.02)
    # Releases that fit whole are pooled whole.
    small = merge([baseline("v1", day[:200]), baseline("v2", short[:100])]).signals["latency"]
    np.testing.assert_array_equal(small.reservoir, np.concatenate([day[:200], short[:100]]))
