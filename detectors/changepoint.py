"""Where, after a release, a signal shifted: Page's tabular CUSUM over whole arrays.

The recursion S_t = max(0, S_{t-1} + y_t) (S_{-1} = 0) equals W_t - min(0, min_{s<=t} W_s)
with W the running sum of y, so the whole (series, time) array is done with a cumulative
sum and a running minimum instead of a loop over time. In exact arithmetic the two agree
to the last digit; in floating point they round differently, so where S comes back to
exactly zero in exact arithmetic (decimal data such as 0.1 + 0.2 - 0.3) either may see a
hair above or below zero, and the change start or the alarm can move by a few samples.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from detectors._arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    Scratch,
    as_series,
    per_series,
    row_chunks,
    run_chunks,
    unbatch,
)

Direction = Literal["increase", "decrease", "both"]
DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "both")


@dataclass(frozen=True)
class ChangeResult:
    """Per-series result of `cusum`; every field has the input's shape less time."""

    detected: BoolArray
    alarm_index: IntArray
    change_index: IntArray
    shift: FloatArray
    statistic: FloatArray


@dataclass(frozen=True)
class _Side:
    """One one-sided CUSUM's outcome per row."""

    alarm: IntArray
    change: IntArray
    peak: FloatArray


def cusum(
    candidate: npt.ArrayLike,
    *,
    reference_mean: npt.ArrayLike,
    reference_scale: npt.ArrayLike,
    threshold: float = 5.0,
    drift: float = 0.5,
    direction: Direction = "increase",
) -> ChangeResult:
    """Page's CUSUM of the candidate standardised by the baseline's mean and scale.

    `candidate` is (series, time) with NaN for missing steps (they leave S unchanged);
    `reference_mean` and `reference_scale` are scalars or one value per series. With
    z = (x - mean) / scale, S_t = max(0, S_{t-1} + z_t - drift) (and the mirrored sum for
    decreases). `alarm_index` is the first t with S_t > threshold, `change_index` the step
    after the last t before the alarm where S was 0 (the estimated start of the shift),
    `shift` the mean of the values from `change_index` on minus the reference mean and
    `statistic` the largest S. Without an alarm: detected False, indices -1, shift NaN. A
    row with no values or a scale that is not positive gives NaN and -1.

    >>> r = cusum([0, 0, 0, 3, 3, 3, 3], reference_mean=0, reference_scale=1)
    >>> bool(r.detected), int(r.alarm_index), int(r.change_index), float(r.shift)
    (True, 5, 3, 3.0)
    """
    _validate(threshold, drift, direction)
    values, single = as_series(candidate, "candidate")
    n_series = values.shape[0]
    mean = per_series(reference_mean, n_series, single, "reference_mean")
    scale = per_series(reference_scale, n_series, single, "reference_scale")
    usable = np.isfinite(mean) & np.isfinite(scale) & (scale > 0) & ~np.isnan(values).all(axis=-1)
    result = _empty(n_series)

    def fill(rows: IntArray, _: Scratch) -> None:
        _fill(result, rows, values[rows], mean[rows], scale[rows], threshold, drift, direction)

    chunks = (np.flatnonzero(usable[c]) + c.start for c in row_chunks(n_series, values.shape[1]))
    run_chunks([functools.partial(fill, rows) for rows in chunks if rows.size])
    return ChangeResult(**{name: unbatch(field, single) for name, field in result.items()})


def _validate(threshold: float, drift: float, direction: str) -> None:
    """Reject parameters outside their allowed values."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    if not (np.isfinite(drift) and drift >= 0):
        raise ValueError(f"drift must be a number >= 0, got {drift!r}")


def _empty(n_series: int) -> dict[str, npt.NDArray[np.generic]]:
    """Result fields for rows without an answer."""
    return {
        "detected": np.zeros(n_series, dtype=bool),
        "alarm_index": np.full(n_series, -1, dtype=np.int64),
        "change_index": np.full(n_series, -1, dtype=np.int64),
        "shift": np.full(n_series, np.nan),
        "statistic": np.full(n_series, np.nan),
    }


def _fill(
    result: dict[str, npt.NDArray[np.generic]],
    rows: IntArray,
    values: FloatArray,
    mean: FloatArray,
    scale: FloatArray,
    threshold: float,
    drift: float,
    direction: str,
) -> None:
    """Run the CUSUM(s) on a chunk of usable rows and write their results."""
    z = (values - mean[:, None]) / scale[:, None]
    sides = []
    if direction in ("increase", "both"):
        sides.append(_one_sided(z, drift, threshold))
    if direction in ("decrease", "both"):
        sides.append(_one_sided(-z, drift, threshold))
    side = sides[0] if len(sides) == 1 else _earliest(sides[0], sides[1])
    detected = side.alarm >= 0
    result["detected"][rows] = detected
    result["alarm_index"][rows] = side.alarm
    result["change_index"][rows] = side.change
    result["statistic"][rows] = side.peak
    result["shift"][rows] = _mean_from(values, side.change) - mean


def _one_sided(z: FloatArray, drift: float, threshold: float) -> _Side:
    """Upper CUSUM of z: first alarm, estimated change start and the largest S."""
    length = z.shape[1]
    walk = np.where(np.isnan(z), 0.0, z - drift)
    np.cumsum(walk, axis=-1, out=walk)
    level = np.minimum(walk, 0.0)
    np.minimum.accumulate(level, axis=-1, out=level)
    np.subtract(walk, level, out=level)
    over = level > threshold
    fired = over.any(axis=-1)
    alarm = np.where(fired, over.argmax(axis=-1), -1)
    # The last zero before the alarm: search backwards from the alarm among zeros of S.
    zero = level == 0.0
    zero &= np.arange(length) < np.where(fired, alarm, length)[:, None]
    seen = zero.any(axis=-1)
    last_zero = np.where(seen, length - 1 - zero[:, ::-1].argmax(axis=-1), -1)
    return _Side(
        alarm=alarm,
        change=np.where(fired, last_zero + 1, -1),
        peak=level.max(axis=-1),
    )


def _earliest(up: _Side, down: _Side) -> _Side:
    """Combine both directions: the earlier alarm wins.

    They never first cross at the same step: a step that raises one sum lowers the other.
    """
    up_first = (up.alarm >= 0) & ((down.alarm < 0) | (up.alarm < down.alarm))
    return _Side(
        alarm=np.where(up_first, up.alarm, down.alarm),
        change=np.where(up_first, up.change, down.change),
        peak=np.maximum(up.peak, down.peak),
    )


def _mean_from(values: FloatArray, start: IntArray) -> FloatArray:
    """Mean of each row's non-NaN values from column `start` to the end (NaN if none)."""
    mean = np.full(len(start), np.nan)
    rows = np.flatnonzero(start >= 0)
    if rows.size:
        part = values[rows]
        keep = (np.arange(values.shape[1]) >= start[rows, None]) & ~np.isnan(part)
        count = keep.sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean[rows] = np.where(keep, part, 0.0).sum(axis=-1) / count
    return mean
