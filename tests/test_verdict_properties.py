"""Invariants of the evaluation core, over seeded random releases (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baselines.frame import SignalFrame
from baselines.summary import Baseline, summarize
from monitor.evaluate import JudgeState, evaluate
from monitor.policy import ServicePolicy, SignalRule

T0 = 1_000_000.0
STEP = 60.0
SEVERITY = {"pass": 0, "pending": 0, "inconclusive": 0, "hotfix": 1, "rollback": 2}
RULES = (
    SignalRule("latency", bad="increase", critical=True),
    SignalRule("queue", bad="increase"),
    SignalRule("traffic", bad="both"),
    SignalRule("errors", kind="ratio", bad="increase", critical=True,
               numerator="e_total", denominator="r_total"),
)
POLICY = ServicePolicy(name="svc", signals=RULES, evaluation_interval=STEP, persistence=2)
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _frame(seed: int, start: float, points: int, *, level: float = 1.0, shift: float = 0.0,
           error_ratio: float = 0.01, gaps: float = 0.0) -> SignalFrame:
    rng = np.random.default_rng(seed)
    times = start + STEP * np.arange(points)
    noise = rng.normal(size=(3, points)).cumsum(axis=1) * 0.02 + rng.normal(size=(3, points)) * 0.05
    values = level * (np.array([[1.0], [5.0], [40.0]]) * (1.0 + noise))
    values[:2] += shift * level * np.array([[1.0], [5.0]])
    trials = rng.poisson(400, points).astype(float)
    events = rng.binomial(trials.astype(int), min(error_ratio, 1.0)).astype(float)
    if gaps:
        values[rng.random(values.shape) < gaps] = np.nan
    nan = np.full(points, np.nan)
    ratio = np.where(trials > 0, events / np.maximum(trials, 1), np.nan)
    return SignalFrame(("latency", "queue", "traffic", "errors"), times,
                       np.vstack([values, ratio]), np.vstack([nan, nan, nan, events]),
                       np.vstack([nan, nan, nan, trials]))


def _verdict(baseline_frame: SignalFrame, candidate: SignalFrame, period: float = 1800.0) -> str:
    baseline = Baseline(("v1",), summarize(baseline_frame))
    state, now = JudgeState(), T0
    while True:
        now += STEP
        result = evaluate(POLICY, baseline, candidate, started=T0, period=period, now=now,
                          state=state)
        state = result.state
        if result.done:
            return result.verdict


@PROPERTY
@given(seed=st.integers(0, 10_000))
def test_a_candidate_identical_to_its_baseline_passes(seed: int) -> None:
    base = _frame(seed, T0 - 120 * STEP, 120)
    # The very same samples, played back from the last: a candidate that also carries on
    # from where the baseline ended (the same samples in their own order would jump back
    # to where it began, which is a step at the release).
    same = SignalFrame(base.names, base.times + 120 * STEP, base.values[:, ::-1],
                       base.events[:, ::-1], base.trials[:, ::-1])
    assert _verdict(base, same.between(T0, T0 + 1800)) == "pass"


@PROPERTY
@given(seed=st.integers(0, 10_000), shift=st.floats(0.0, 0.6), extra=st.floats(0.0, 0.6))
def test_making_a_candidate_worse_never_improves_its_verdict(
    seed: int, shift: float, extra: float
) -> None:
    base = _frame(seed, T0 - 240 * STEP, 240)
    bad = _frame(seed + 1, T0, 30, shift=shift)
    worse = _frame(seed + 1, T0, 30, shift=shift + extra, error_ratio=0.01 * (1 + 3 * extra))
    assert SEVERITY[_verdict(base, worse)] >= SEVERITY[_verdict(base, bad)]


@PROPERTY
@given(seed=st.integers(0, 10_000), shift=st.floats(0.0, 0.5),
       scale=st.sampled_from([1e-3, 0.5, 7.0, 1e6]))
def test_scaling_baseline_and_candidate_together_changes_nothing(
    seed: int, shift: float, scale: float
) -> None:
    plain = (_frame(seed, T0 - 240 * STEP, 240), _frame(seed + 1, T0, 30, shift=shift))
    scaled = (_frame(seed, T0 - 240 * STEP, 240, level=scale),
              _frame(seed + 1, T0, 30, shift=shift, level=scale))
    assert _verdict(*scaled) == _verdict(*plain)


@PROPERTY
@given(seed=st.integers(0, 10_000), gaps=st.floats(0.0, 0.95), shift=st.floats(0.0, 0.5))
def test_nan_gaps_never_raise(seed: int, gaps: float, shift: float) -> None:
    verdict = _verdict(_frame(seed, T0 - 240 * STEP, 240, gaps=gaps),
                       _frame(seed + 1, T0, 30, shift=shift, gaps=gaps))
    assert verdict in SEVERITY
