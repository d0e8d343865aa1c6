"""A/A calibration: how far apart healthy windows of the same release already are.

Health signals are autocorrelated, drift with the time of day and carry bursts, so a
textbook test finds "significant" differences between two healthy windows all the time.
Instead of trusting a model of the noise, the baseline release is cut into consecutive
windows of several lengths (a ladder of 2, 4, 8, ... samples, half overlapping) and, for
each length, the root mean square of the window medians' distances from the release's
median is measured: how far a healthy window of that length already strays, drift and all
(a robust spread of a handful of windows would call a wandering series steady). A
candidate window of the same length must stand well outside that spread (its z against
it) to count. A ratio's windows are measured as what its test compares, their errors over
their requests pooled, not as medians of per-interval ratios. Leak signals get the same for
the slope of their lower envelope.

The spread is never taken below that of a mean of as many independent samples (the
per-sample spread over the square root of the length; a median's would be a quarter
wider; for a ratio, the binomial one): autocorrelation only ever widens it.

A series that drifts (a random walk, a trend) strays further from the past than from its
own median: a candidate window comes after the whole baseline, not inside it. So the
release is also split as an A/A release of its own, its first half the baseline and its
second half's windows the candidates; where those windows stray clearly further than
stationary noise would take them (see `drift_bar`), the series drifts and the forward
spread is used where it is the larger. A series whose forward spread stays close to its
inside one is steady: its spreads hold for windows after the baseline too, which lets the
checking period's final look use a lower bar (`monitor.evaluate.Z_FINAL`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from detectors import trend
from detectors._arrays import nan_median

LADDER = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
MIN_WINDOWS = 4
# A series drifts when its forward spread is at least DRIFT_RATIO times its inside one and
# above 1 + DRIFT_NOISE / sqrt(n), which white noise of n samples stays under in 99
# releases of 100 (its measured 99th percentiles: 2.08 at n = 10, 1.61 at 24, 1.25 at 96;
# the first half's median adds its own error, and few windows make the ratio vary).
DRIFT_RATIO = 1.5
DRIFT_NOISE = 3.5
# A series is steady (measured not to drift) when the ratio is at most 1 + STEADY_NOISE /
# sqrt(n): white noise is, in 94% of releases at n = 24, 97% at 96 and 99% at 480; a random
# walk in 42%, 26% and 18% (a walk that happens to come back looks steady).
STEADY_NOISE = 2.0
_MAD_TO_SD = 1.4826


def robust_spread(values: np.ndarray) -> np.ndarray:
    """Per-row spread that survives spikes and mostly-constant series.

    The MAD-based sd, else the interquartile range, else the 5-95% range, each scaled to a
    normal's sd; 0 only for a row that is truly constant (or has no values at all).
    """
    if values.size == 0:
        return np.zeros(values.shape[0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(values, axis=1)
        mad = np.nanmedian(np.abs(values - median[:, None]), axis=1) * _MAD_TO_SD
        q05, q25, q75, q95 = np.nanquantile(values, [0.05, 0.25, 0.75, 0.95], axis=1)
    iqr = (q75 - q25) / 1.349
    wide = (q95 - q05) / 3.29
    spread = np.where(mad > 0, mad, np.where(iqr > 0, iqr, wide))
    return np.nan_to_num(spread)


def window_spreads(values: np.ndarray, lengths: tuple[int, ...] = LADDER, *,
                   trials: np.ndarray | None = None) -> np.ndarray:
    """(series, lengths): RMS distance of consecutive windows' medians from the median, or
    with `trials`, of windows' pooled ratios (values are then the events) from the whole's.

    NaN where the release is too short for MIN_WINDOWS windows of that length.
    """
    rows, columns = values.shape
    out = np.full((rows, len(lengths)), np.nan)
    if columns == 0:
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = _centre(values, trials)
        for index, length in enumerate(lengths):
            if columns // length < MIN_WINDOWS:
                break
            distances = _windows(values, trials, length) - centre[:, None]
            out[:, index] = np.sqrt(np.nanmean(distances**2, axis=1))
    floor = _independent(values, trials)[:, None] / np.sqrt(np.asarray(lengths, dtype=float))[None, :]
    return np.where(np.isnan(out), np.nan, np.fmax(out, floor))


def _independent(values: np.ndarray, trials: np.ndarray | None) -> np.ndarray:
    """(series,): the spread of one sample if samples were independent: robust, or for
    counts the binomial one of an interval's ratio (a robust spread of a few errors per
    interval is one error's share, whatever their rate)."""
    if trials is None:
        return robust_spread(values)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = np.nansum(values, axis=1) / np.nansum(trials, axis=1)
        per_interval = np.nanmean(np.where(np.isnan(values), np.nan, trials), axis=1)
        return np.nan_to_num(np.sqrt(ratio * (1.0 - ratio) / per_interval))


def forward_spreads(values: np.ndarray, lengths: tuple[int, ...] = LADDER, *,
                    trials: np.ndarray | None = None) -> np.ndarray:
    """(series, lengths): RMS distance of the second half's windows from the first half's
    median (or pooled ratio, with `trials`). The windows overlap by half, as in
    `window_spreads`; NaN where the second half holds fewer than MIN_WINDOWS of them
    (counted in columns, missing samples included)."""
    rows, columns = values.shape
    out = np.full((rows, len(lengths)), np.nan)
    half = columns // 2
    if half == 0:
        return out
    later = values[:, half:]
    later_trials = None if trials is None else trials[:, half:]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = _centre(values[:, :half], None if trials is None else trials[:, :half])
        for index, length in enumerate(lengths):
            stride = max(1, length // 2)
            if later.shape[1] < length or (later.shape[1] - length) // stride + 1 < MIN_WINDOWS:
                break
            distances = _windows(later, later_trials, length) - centre[:, None]
            out[:, index] = np.sqrt(np.nanmean(distances**2, axis=1))
    return out


def _centre(values: np.ndarray, trials: np.ndarray | None) -> np.ndarray:
    if trials is None:
        return np.nanmedian(values, axis=1)
    return np.nansum(values, axis=1) / np.nansum(trials, axis=1)


def _windows(values: np.ndarray, trials: np.ndarray | None, length: int) -> np.ndarray:
    """Each half-overlapping window's median, or with `trials` its events over its trials:
    the statistic a ratio is tested on. A median of per-interval ratios with a few errors
    per interval jumps between 0 and one error's share, and hardly narrows with length."""
    if trials is None:
        return _window_medians(values, length)
    index = _window_index(values.shape[1], length)
    counted = ~np.isnan(values) & ~np.isnan(trials)
    events = np.where(counted, values, 0.0)[:, index].sum(axis=-1)
    total = np.where(counted, trials, 0.0)[:, index].sum(axis=-1)
    return np.where(total > 0, events / np.where(total > 0, total, 1.0), np.nan)


def _per_sample(values: np.ndarray, trials: np.ndarray | None) -> np.ndarray:
    """Each interval's value: the sample, or its ratio of events to trials."""
    if trials is None:
        return values
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(trials > 0, values / trials, np.nan)


def drift_bar(values: np.ndarray) -> np.ndarray:
    """(series,): the ratio of forward to inside spread beyond which a row drifts."""
    count = np.sum(~np.isnan(values), axis=1)
    with np.errstate(divide="ignore"):
        return np.fmax(DRIFT_RATIO, 1.0 + DRIFT_NOISE / np.sqrt(count))


class DriftAware(NamedTuple):
    """A/A spreads per ladder length, and which rows were measured not to drift."""

    spreads: np.ndarray
    steady: np.ndarray


def drift_aware_spreads(values: np.ndarray, lengths: tuple[int, ...] = LADDER, *,
                        trials: np.ndarray | None = None) -> DriftAware:
    """`window_spreads`, or for a series that drifts the larger of it and `forward_spreads`
    (NaN wherever `window_spreads` is: a length too long to calibrate stays so); and whether
    each row is steady, its forward spread measured and close to its inside one (see
    STEADY_NOISE): then windows after the baseline stray as far as windows inside it.

    Whether a series drifts is read at the shortest length, whose many windows make the
    ratio of the two spreads most precise: a random walk strays from its past at every
    length, while at the long lengths a handful of windows make the ratio a matter of chance.
    """
    inside = window_spreads(values, lengths, trials=trials)
    forward = forward_spreads(values, lengths, trials=trials)
    per_sample = _per_sample(values, trials)
    with np.errstate(invalid="ignore"):
        drifting = forward[:, :1] > drift_bar(per_sample)[:, None] * inside[:, :1]
        wider = np.where(np.isnan(inside), np.nan, np.maximum(inside, np.nan_to_num(forward)))
    # Steady: the forward spread measured, and within what white noise shows (NaN is not).
    count = np.sum(~np.isnan(per_sample), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        steady = forward[:, :1] <= (1.0 + STEADY_NOISE / np.sqrt(count))[:, None] * inside[:, :1]
    return DriftAware(np.where(drifting, wider, inside), steady.any(axis=1))


def _window_medians(values: np.ndarray, length: int) -> np.ndarray:
    """Medians of windows of `length` samples, half overlapping (twice the windows for the
    same history, so the spread is less at the mercy of where the cuts fall)."""
    return nan_median(values[:, _window_index(values.shape[1], length)])


def _window_index(columns: int, length: int) -> np.ndarray:
    """(windows, length): the columns of each window, a new one every half length."""
    stride = max(1, length // 2)
    starts = np.arange(0, columns - length + 1, stride)
    return starts[:, None] + np.arange(length)[None, :]


def step_spreads(values: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """(series, widths): RMS of the step between adjacent windows of `w` samples, anywhere in
    healthy history: how far a series already jumps at an ordinary moment.

    NaN where the release holds fewer than 2 x MIN_WINDOWS windows of that width. Never
    below what independent samples would give, with their noise taken from one sample to
    the next (the spread of the levels would count a daily swing as noise).
    """
    rows, columns = values.shape
    out = np.full((rows, len(widths)), np.nan)
    for index, width in enumerate(widths):
        if columns // width < 2 * MIN_WINDOWS:
            break
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = _window_medians(values, width)
            # Windows start every `stride` samples, so the first that does not overlap
            # this one is `lag` windows on.
            stride = max(1, width // 2)
            lag = -(-width // stride)
            steps = medians[:, lag:] - medians[:, :-lag]
            out[:, index] = np.sqrt(np.nanmean(steps**2, axis=1))
    noise = robust_spread(np.diff(values, axis=1)) / np.sqrt(2.0) if columns > 1 else np.zeros(rows)
    # Two medians of w independent samples differ by about noise x sqrt(pi/2) x sqrt(2/w).
    floor = noise[:, None] * np.sqrt(np.pi / np.asarray(widths, dtype=float))[None, :]
    return np.where(np.isnan(out), np.nan, np.fmax(out, floor))


def slope_spreads(times: np.ndarray, values: np.ndarray, block: float,
                  lengths: tuple[int, ...] = LADDER) -> np.ndarray:
    """(series, lengths): how far lower-envelope slopes of healthy windows stray from their
    median, as a root mean square: a cache that fills for a while every few hours climbs
    in a third of the windows, which a median absolute deviation would not see at all."""
    rows, columns = values.shape
    out = np.full((rows, len(lengths)), np.nan)
    for index, length in enumerate(lengths):
        windows = columns // length
        if windows < MIN_WINDOWS or length < 8:
            if windows < MIN_WINDOWS:
                break
            continue
        cut = windows * length
        span = float(times[length - 1] - times[0]) if length > 1 else 0.0
        if span < 2 * block:
            # Shorter than two garbage-collection cycles, a window's lower envelope follows
            # the saw-tooth's phase, not a trend: its slopes measure nothing a leak is.
            continue
        blocks = max(4, min(48, int(span // block))) if span > 0 else 4
        window_times = np.tile(times[:cut].reshape(windows, length), (rows, 1))
        window_values = values[:, :cut].reshape(rows * windows, length)
        slopes = np.asarray(trend(window_times, window_values, blocks=blocks).slope)
        slopes = slopes.reshape(rows, windows)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(slopes, axis=1, keepdims=True)
            out[:, index] = np.sqrt(np.nanmean((slopes - centre) ** 2, axis=1))
    return out


def spread_at(spreads: np.ndarray, length: np.ndarray,
              lengths: tuple[int, ...] = LADDER) -> np.ndarray:
    """Each row's spread for a window of `length` samples, interpolated on log-log axes.

    Longer than the longest calibrated window: the longest's spread (conservative, as
    spreads shrink with length). Shorter than the shortest: the shortest's.
    NaN for a row with no calibrated length at all.
    """
    spreads = np.atleast_2d(spreads)
    rows = spreads.shape[0]
    ladder = np.log(np.asarray(lengths, dtype=float))
    known = ~np.isnan(spreads)
    first = np.argmax(known, axis=1)
    last = np.where(known.any(axis=1), known.shape[1] - 1 - np.argmax(known[:, ::-1], axis=1), -1)
    target = np.log(np.clip(np.asarray(length, dtype=float), lengths[0], None))
    # Within the row's calibrated lengths (slope spreads have none at the shortest).
    target = np.clip(target, ladder[first], ladder[np.maximum(last, 0)])
    upper = np.clip(np.searchsorted(ladder, target), 1, len(lengths) - 1)
    lower = upper - 1
    row = np.arange(rows)
    with np.errstate(all="ignore"):
        log_low = np.log(np.fmax(spreads[row, lower], 1e-300))
        log_high = np.log(np.fmax(spreads[row, upper], 1e-300))
        weight = np.clip((target - ladder[lower]) / (ladder[upper] - ladder[lower]), 0.0, 1.0)
        mixed = np.exp(log_low + weight * (log_high - log_low))
    result = np.where(np.isnan(spreads[row, upper]), spreads[row, lower], mixed)
    result = np.where(np.isnan(spreads[row, lower]), spreads[row, upper], result)
    # Between a zero spread and the next, no log-log line: zero, except at the next length itself.
    result = np.where((spreads[row, lower] == 0) & (weight < 1.0), 0.0, result)
    return np.where(last < 0, np.nan, result)
