"""The step at the release: the detector against a 1-D reference, its calibration, and the
judge using it where a whole-window comparison cannot see a jump."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from baselines.calibration import robust_spread, step_spreads
from baselines.frame import SignalFrame
from baselines.summary import Baseline, summarize
from detectors.step import WIDTHS, release_step
from monitor.evaluate import JudgeState, evaluate
from monitor.policy import ServicePolicy, SignalRule


def _reference_step(before: np.ndarray, after: np.ndarray, width: int) -> float:
    last, first = before[-width:], after[:width]
    last, first = last[~np.isnan(last)], first[~np.isnan(first)]
    if before.size < width or after.size < width or 2 * last.size < width or 2 * first.size < width:
        return float("nan")
    return float(np.median(first) - np.median(last))


def test_release_step_matches_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(31)
    before = rng.normal(0, 1, (6, 80))
    after = rng.normal(0.5, 1, (6, 40))
    before[rng.random(before.shape) < 0.3] = np.nan
    after[rng.random(after.shape) < 0.3] = np.nan
    after[5, 3:] = np.nan                      # too few candidate samples for most widths
    after[4, :10] = np.nan                     # a late start: the first windows are empty
    result = release_step(before, after)
    for row in range(6):
        for index, width in enumerate(WIDTHS):
            expected = _reference_step(before[row], after[row], width)
            got = result.step[row, index]
            assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)


def test_a_single_wild_sample_on_either_side_moves_nothing() -> None:
    before, after = np.zeros((1, 16)), np.zeros((1, 16))
    before[0, -1], after[0, 0] = -1e9, 1e9
    assert np.all(release_step(before, after, (4, 8, 16)).step == 0.0)


def _reference_spreads(values: np.ndarray, width: int) -> float:
    stride = max(1, width // 2)
    medians = [np.median(values[s : s + width]) for s in range(0, values.size - width + 1, stride)]
    lag = width // stride
    steps = np.array(medians[lag:]) - np.array(medians[:-lag])
    return float(np.sqrt(np.mean(steps**2)))


def test_step_spreads_match_a_slow_reference_and_its_floor() -> None:
    rng = np.random.default_rng(32)
    walk = np.cumsum(rng.normal(0, 1, 512))
    flat = np.full(512, 3.0)
    spreads = step_spreads(np.vstack([walk, flat]), (4, 8, 16, 32, 64))
    floor = robust_spread(np.diff(walk)[None, :])[0] / np.sqrt(2)
    for index, width in enumerate((4, 8, 16, 32, 64)):
        expected = max(_reference_spreads(walk, width), floor * np.sqrt(np.pi / width))
        assert spreads[0, index] == pytest.approx(expected)
    assert np.all(spreads[1] == 0.0)
    # 512 samples hold 2 x MIN_WINDOWS windows of at most 64: longer widths are not calibrated.
    assert np.isnan(step_spreads(walk[None, :], (128,))).all()


# --- in the judge --------------------------------------------------------------------

STEP = 60.0
T0 = 86400.0 * 100 + 9 * 3600.0           # released at 09:00, as the morning rush builds
RULE = SignalRule("rps", bad="both")
POLICY = ServicePolicy(name="svc", signals=(RULE,), evaluation_interval=STEP, persistence=3)


def _traffic(start: float, minutes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Requests per second with a daily swing of +-60% and a little noise."""
    rng = np.random.default_rng(seed)
    times = start + STEP * np.arange(minutes)
    daily = 1000 * (1 + 0.6 * np.sin(2 * np.pi * (times / 86400.0 - 0.25)))
    return times, daily * (1 + rng.normal(0, 0.01, minutes))


def _frame(times: np.ndarray, values: np.ndarray) -> SignalFrame:
    nan = np.full((1, times.size), np.nan)
    return SignalFrame(("rps",), times, values[None, :], nan, nan.copy())


def _verdict(candidate: np.ndarray, baseline: Baseline, period: float = 60 * STEP) -> tuple[str, set[str]]:
    times = T0 + STEP * np.arange(candidate.size)
    frame, state, now = _frame(times, candidate), JudgeState(), T0
    while True:
        now += STEP
        result = evaluate(POLICY, baseline, frame, started=T0, period=period, now=now, state=state)
        state = result.state
        if result.done:
            return result.verdict, {f.detector for f in result.findings}


@pytest.fixture(scope="module")
def day() -> tuple[Baseline, np.ndarray]:
    times, values = _traffic(T0 - 86400.0, 1440, seed=33)
    after = _traffic(T0, 60, seed=34)[1]
    return Baseline(("v1",), summarize(_frame(times, values))), after


def test_a_jump_at_the_release_inside_the_daily_swing_is_seen(day: tuple[Baseline, np.ndarray]) -> None:
    baseline, after = day
    assert _verdict(after, baseline)[0] == "pass"             # the day carries on: nothing
    verdict, detectors = _verdict(after * 0.75, baseline)     # a quarter of traffic lost
    assert verdict == "hotfix" and detectors == {"step"}


def test_without_the_moment_before_the_release_the_same_drop_is_lost_in_the_swing(
    day: tuple[Baseline, np.ndarray],
) -> None:
    baseline, after = day
    # The same baseline, had it ended an hour before this release (a rolled-back one between).
    stale = {name: dataclasses.replace(s, tail_end=s.tail_end - 3600.0)
             for name, s in baseline.signals.items()}
    assert _verdict(after * 0.75, Baseline(("v1",), stale))[0] == "pass"


def test_a_cold_start_that_settles_is_no_step(day: tuple[Baseline, np.ndarray]) -> None:
    baseline, after = day
    warming = after.copy()
    warming[:8] *= 0.6                                        # eight slow minutes, then normal
    assert _verdict(warming, baseline)[0] == "pass"


def test_a_release_on_the_hour_of_a_weekly_seasonal_series_carries_on_quietly() -> None:
    # A week of history: the hour-of-day profile is taken out for the comparison, but it is
    # flat within each hour, so the step is judged on the raw values.
    times, values = _traffic(T0 - 7 * 86400.0, 7 * 1440, seed=35)
    baseline = Baseline(("v1",), summarize(_frame(times, values)))
    assert baseline.signals["rps"].hourly is not None
    for seed in range(36, 42):
        assert _verdict(_traffic(T0, 10, seed=seed)[1], baseline, period=10 * STEP)[0] == "pass"


def test_a_candidate_whose_first_samples_are_missing_is_not_judged_for_a_step(
    day: tuple[Baseline, np.ndarray],
) -> None:
    baseline, _ = day
    # Half an hour of the morning rush is missing: drift over the gap is no jump.
    after = _traffic(T0, 90, seed=43)[1]
    after[:30] = np.nan
    times = T0 + STEP * np.arange(after.size)
    frame, state, now = _frame(times, after), JudgeState(), T0
    for _ in range(90):
        now += STEP
        result = evaluate(POLICY, baseline, frame, started=T0, period=90 * STEP, now=now, state=state)
        state = result.state
        assert "step" not in {f.detector for f in result.findings}


def test_streaks_stored_under_a_detectors_name_carry_on_as_one_shift() -> None:
    state = JudgeState.from_json('{"streaks": {"rps/compare": 2, "rps/changepoint": 1, "mem/leak": 4}}')
    assert dict(state.streaks) == {"rps/shift": 2, "mem/leak": 4}
