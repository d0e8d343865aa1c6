"""Simple peers of the release judge, run on the very same releases and evaluation times.

Each peer answers what the tools people use instead would answer:

- `static_threshold`: an Argo Rollouts / Flagger analysis, "fail when the value is above
  the baseline's p99 for k consecutive samples";
- `kayenta`: Kayenta's Mann-Whitney classifier (98% confidence, allowed increase or
  decrease on the ratio of means) on the whole candidate so far, at every evaluation;
- `predict_linear_alert`: Prometheus' `predict_linear(x[w], h) > limit` held for k
  evaluations;
- `pelt`: ruptures' PELT on baseline + candidate; a change point after the release that
  moved the mean the bad way is an alarm.

None of them knows minor from major: as analyses that abort a rollout, every alarm is a
rollback. Each returns the verdict and the time of its first alarm.

    >>> base = np.zeros(50)
    >>> times = np.arange(10.0)
    >>> release = PeerInput(base, times, np.full(10, 5.0), times, "increase", None)
    >>> static_threshold(release)
    PeerOutcome(verdict='rollback', first_alarm_at=2.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

PASS, ROLLBACK = "pass", "rollback"
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class PeerInput:
    """One release as a peer sees it: baseline values, then the candidate's samples.

    `evaluations` are the times at which the product was asked (a peer answers at the
    same times); `bad` is "increase", "decrease" or "both"; `limit` a known ceiling
    (memory limit) if the signal has one.
    """

    baseline: np.ndarray
    times: np.ndarray
    values: np.ndarray
    evaluations: np.ndarray
    bad: str
    limit: float | None


@dataclass(frozen=True)
class PeerOutcome:
    verdict: str
    first_alarm_at: float | None


def _outcome(alarm_at: float | None) -> PeerOutcome:
    return PeerOutcome(ROLLBACK if alarm_at is not None else PASS, alarm_at)


def _first_evaluation_at_or_after(release: PeerInput, when: float) -> float | None:
    """The evaluation that would first see a sample taken at `when`."""
    later = release.evaluations[release.evaluations >= when - 1e-6]
    return float(later[0]) if later.size else None


def _first_run(flags: np.ndarray, k: int) -> int:
    """Index where the first run of `k` consecutive True values completes (-1 if none)."""
    run = 0
    for index, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run >= k:
            return index
    return -1


def _bounds(baseline: np.ndarray, bad: str, upper_q: float) -> tuple[float, float]:
    """(low, high) alarm thresholds from baseline quantiles; +-inf on the harmless side."""
    valid = baseline[~np.isnan(baseline)]
    if valid.size == 0:
        return -np.inf, np.inf
    high = float(np.quantile(valid, upper_q)) if bad in ("increase", "both") else np.inf
    low = float(np.quantile(valid, 1.0 - upper_q)) if bad in ("decrease", "both") else -np.inf
    return low, high


def static_threshold(release: PeerInput, *, quantile: float = 0.99, k: int = 3) -> PeerOutcome:
    """Alarm when k consecutive candidate samples lie beyond the baseline's p99 (p01)."""
    low, high = _bounds(release.baseline, release.bad, quantile)
    with np.errstate(invalid="ignore"):
        beyond = (release.values > high) | (release.values < low)
    index = _first_run(beyond, k)
    if index < 0:
        return _outcome(None)
    return _outcome(_first_evaluation_at_or_after(release, float(release.times[index])))


def kayenta(release: PeerInput, *, confidence: float = 0.98, allowed_increase: float = 1.1,
            allowed_decrease: float = 0.9, min_samples: int = 10) -> PeerOutcome:
    """Kayenta's classifier at every evaluation: two-sided Mann-Whitney at `confidence`,
    and the candidate/baseline ratio of means outside the allowed band in a bad direction."""
    base = release.baseline[~np.isnan(release.baseline)]
    if base.size == 0:
        return _outcome(None)
    base_mean = float(np.mean(base))
    for now in release.evaluations:
        seen = release.values[(release.times <= now + 1e-6)]
        seen = seen[~np.isnan(seen)]
        if seen.size < min_samples:
            continue
        if _kayenta_fails(base, base_mean, seen, release.bad, confidence,
                          allowed_increase, allowed_decrease):
            return _outcome(float(now))
    return _outcome(None)


def _kayenta_fails(base: np.ndarray, base_mean: float, candidate: np.ndarray, bad: str,
                   confidence: float, allowed_increase: float, allowed_decrease: float) -> bool:
    """High or Low as Kayenta's MannWhitneyClassifier would call it, in a direction that hurts."""
    if np.ptp(np.concatenate([base, candidate])) == 0:
        return False
    pvalue = float(stats.mannwhitneyu(candidate, base, alternative="two-sided").pvalue)
    if pvalue >= 1.0 - confidence:
        return False
    cand_mean = float(np.mean(candidate))
    if base_mean == 0:
        ratio = np.inf if cand_mean > 0 else (-np.inf if cand_mean < 0 else 1.0)
    else:
        ratio = cand_mean / base_mean
    high = ratio > allowed_increase and bad in ("increase", "both")
    low = ratio < allowed_decrease and bad in ("decrease", "both")
    return bool(high or low)


def predict_linear_alert(release: PeerInput, *, window_fraction: float = 0.25, k: int = 3,
                         quantile: float = 0.99) -> PeerOutcome:
    """`predict_linear(x[w], h)` beyond the limit for k evaluations in a row.

    The window w is a quarter of the checking period and the horizon h the whole period
    (four windows ahead, as disk- and memory-fill alerts are usually written). The limit
    is the signal's own (a memory limit) or else the baseline's p99 (p01 for decreases).
    """
    period = float(release.evaluations[-1] - release.times[0]) if release.evaluations.size else 0.0
    window, horizon = period * window_fraction, period
    low, high = _bounds(release.baseline, release.bad, quantile)
    if release.limit is not None:
        low, high = -np.inf, release.limit
    flags = np.zeros(release.evaluations.size, dtype=bool)
    for index, now in enumerate(release.evaluations):
        keep = (release.times <= now + 1e-6) & (release.times > now - window) & ~np.isnan(release.values)
        if np.count_nonzero(keep) < 3:
            continue
        t, v = release.times[keep], release.values[keep]
        slope, intercept = np.polyfit(t - now, v, 1)
        projected = intercept + slope * horizon
        flags[index] = projected > high or projected < low
    index = _first_run(flags, k)
    return _outcome(float(release.evaluations[index]) if index >= 0 else None)


def pelt(release: PeerInput, *, model: str = "l2", penalty: float = 2.0, history: int = 96,
         min_size: int = 3, jump: int = 3, checkpoints: int = 8) -> PeerOutcome:
    """PELT on the last `history` baseline samples + the candidate so far, standardised by
    the baseline's median and robust sd, with the BIC-like penalty `penalty` x log(n).

    Run at `checkpoints` evaluations spread over the period; at the first that alarms, the
    evaluations since the previous checkpoint are bisected for the earliest alarm.
    """
    import ruptures

    base = release.baseline[~np.isnan(release.baseline)][-history:]
    if base.size < 2 * min_size:
        return _outcome(None)
    centre, scale = _robust_centre_scale(base)
    values = np.where(np.isnan(release.values), centre, release.values)
    standard_base = (base - centre) / scale
    standard = (values - centre) / scale

    def alarms(eval_index: int) -> bool:
        now = release.evaluations[eval_index]
        seen = standard[release.times <= now + 1e-6]
        series = np.concatenate([standard_base, seen])
        if seen.size < min_size:
            return False
        found = ruptures.Pelt(model=model, min_size=min_size, jump=jump).fit(series).predict(
            pen=penalty * np.log(series.size))
        return _bad_change_after(series, found, standard_base.size, release.bad)

    grid = np.unique(np.linspace(0, release.evaluations.size - 1, checkpoints).round().astype(int))
    previous = -1
    for point in grid:
        if alarms(int(point)):
            low, high = previous + 1, int(point)
            while low < high:
                middle = (low + high) // 2
                if alarms(middle):
                    high = middle
                else:
                    low = middle + 1
            return _outcome(float(release.evaluations[high]))
        previous = int(point)
    return _outcome(None)


def _robust_centre_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based sd (falling back to the sd, then 1, for flat data)."""
    centre = float(np.median(values))
    scale = float(np.median(np.abs(values - centre)) * _MAD_TO_SD)
    if scale <= 0:
        scale = float(np.std(values))
    return centre, scale if scale > 0 else 1.0


def _bad_change_after(series: np.ndarray, ends: list[int], released: int, bad: str) -> bool:
    """A change point at or after the release whose next segment's mean moved the bad way."""
    starts = [0, *ends[:-1]]
    for index in range(1, len(starts)):
        change = starts[index]
        if change < released:
            continue
        before = float(np.mean(series[starts[index - 1] : change]))
        after = float(np.mean(series[change : ends[index]]))
        rose, fell = after > before, after < before
        if (rose and bad in ("increase", "both")) or (fell and bad in ("decrease", "both")):
            return True
    return False


PEERS: dict[str, Callable[[PeerInput], PeerOutcome]] = {
    "static-threshold": static_threshold,
    "kayenta": kayenta,
    "predict-linear": predict_linear_alert,
    "pelt": pelt,
}
