"""Memory trend: Prometheus-style deriv/predict_linear and a robust leak slope.

A garbage collector's saw-tooth makes least squares on raw memory misleading, so `trend`
fits a Theil-Sen line to the lower envelope (the minimum of each time block): the floor
the collector returns to is what a leak raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors._arrays import (
    FloatArray,
    IntArray,
    as_series,
    per_series,
    row_chunks,
    sort_rows,
    take,
    tie_groups,
    unbatch,
)


@dataclass(frozen=True)
class LeakResult:
    """Per-series result of `trend`; every field has the input's shape less time."""

    slope: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: FloatArray
    n_points: IntArray


def deriv(times: npt.ArrayLike, values: npt.ArrayLike) -> FloatArray:
    """Least-squares slope per second of each series, as PromQL's deriv().

    `times` (seconds) is 1-D and shared by all rows, or has the shape of `values`.
    Fewer than two valid points give NaN; a constant series gives exactly 0.

    >>> float(deriv([0, 60, 120], [10, 70, 130]))
    1.0
    """
    t, v, single = _as_times_values(times, values)
    slope, _, _ = _least_squares(t, v)
    return unbatch(slope, single)


def predict_linear(
    times: npt.ArrayLike, values: npt.ArrayLike, *, at: npt.ArrayLike, horizon: npt.ArrayLike
) -> FloatArray:
    """The least-squares line's value at `at + horizon`, as PromQL's predict_linear().

    `at` is the evaluation time (seconds, like `times`) and `horizon` the seconds ahead;
    both are scalars or one value per series.

    >>> float(predict_linear([0, 60, 120], [10, 70, 130], at=120, horizon=3600))
    3730.0
    """
    t, v, single = _as_times_values(times, values)
    when = per_series(at, v.shape[0], single, "at") + per_series(horizon, v.shape[0], single, "horizon")
    slope, mean_t, mean_v = _least_squares(t, v)
    return unbatch(mean_v + slope * (when - mean_t), single)


def lower_envelope(
    times: npt.ArrayLike, values: npt.ArrayLike, *, blocks: int = 24
) -> tuple[FloatArray, FloatArray]:
    """Minimum of each of `blocks` equal time blocks and the time it was seen, per series.

    The blocks split each row's own span of valid times. Returns (env_times, env_values)
    of shape (series, blocks); a block without values holds NaN in both.

    >>> t, v = lower_envelope([0, 1, 2, 3], [5, 2, 7, 1], blocks=2)
    >>> t.tolist(), v.tolist()
    ([1.0, 3.0], [2.0, 1.0])
    """
    _validate_blocks(blocks)
    t, v, single = _as_times_values(times, values)
    env_t, env_v, _ = _envelope(t, v, blocks)
    return unbatch(env_t, single), unbatch(env_v, single)


def trend(
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    blocks: int = 24,
    confidence: float = 0.95,
) -> LeakResult:
    """Theil-Sen slope per second of the lower envelope, with Sen's confidence interval.

    `slope`, `lower` and `upper` are as scipy.stats.theilslopes computes them on the
    envelope points; `level` is the fitted line (intercept as method="joint") at the
    row's last valid time, `n_points` the number of envelope points used. Rows with fewer
    than two envelope points give NaN.

    >>> t = np.arange(0, 86_400, 60.0)
    >>> r = trend(t, 1e9 + 100.0 * t + 5e7 * ((t / 600) % 1))
    >>> round(float(r.slope), 6), int(r.n_points)
    (100.0, 24)
    """
    _validate_blocks(blocks)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    t, v, single = _as_times_values(times, values)
    env_t, env_v, last_time = _envelope(t, v, blocks)
    # Times relative to the last one keep the intercept well conditioned and make it the level.
    fit = _theil_sen(env_t - last_time[:, None], env_v, confidence)
    return LeakResult(**{name: unbatch(field, single) for name, field in fit.items()})


def time_to_exhaustion(level: npt.ArrayLike, slope: npt.ArrayLike, limit: npt.ArrayLike) -> FloatArray:
    """Seconds until `level` growing at `slope` per second reaches `limit`.

    0 when already at or over the limit (whatever the slope), inf when the slope is not
    positive, NaN when the level or limit is NaN, or the slope is NaN below the limit.
    Inputs broadcast against each other.

    >>> float(time_to_exhaustion(1e9, 1e3, 2e9))
    1000000.0
    """
    lv, sl, lim = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (level, slope, limit)))
    with np.errstate(divide="ignore", invalid="ignore"):
        growing = np.where(sl > 0, (lim - lv) / sl, np.inf)
        seconds = np.where(lv >= lim, 0.0, np.where(np.isnan(sl), np.nan, growing))
    seconds = np.where(np.isnan(lv) | np.isnan(lim), np.nan, seconds)
    return seconds[()] if seconds.ndim == 0 else seconds


def _validate_blocks(blocks: int) -> None:
    """Blocks must be a whole number of at least 2 (a slope needs two points)."""
    if isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or blocks < 2:
        raise ValueError(f"blocks must be an integer >= 2, got {blocks!r}")


def _as_times_values(times: npt.ArrayLike, values: npt.ArrayLike) -> tuple[FloatArray, FloatArray, bool]:
    """(series, time) times (shared 1-D times as a broadcast view) and values."""
    v, single = as_series(values, "values")
    t = np.asarray(times, dtype=np.float64)
    if t.ndim == 1 and t.shape[0] == v.shape[1]:
        return np.broadcast_to(t, v.shape), v, single
    if t.shape != np.shape(values):
        raise ValueError(
            f"times must be 1-D of length {v.shape[1]} or have the shape of values "
            f"{np.shape(values)}, got {t.shape}"
        )
    return t.reshape(v.shape), v, single


def _masked(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """A chunk's times and values with NaN in both wherever either is missing."""
    missing = ~np.isfinite(t) | np.isnan(v)
    return np.where(missing, np.nan, t), np.where(missing, np.nan, v)


def _least_squares(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-row least-squares slope, mean time and mean value, a chunk of rows at a time."""
    slope, mean_t, mean_v = (np.full(v.shape[0], np.nan) for _ in range(3))
    for rows in row_chunks(v.shape[0], v.shape[1]):
        slope[rows], mean_t[rows], mean_v[rows] = _least_squares_chunk(*_masked(t[rows], v[rows]))
    return slope, mean_t, mean_v


def _least_squares_chunk(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Least-squares slope, mean time and mean value (NaN below two points)."""
    valid = ~np.isnan(v)
    count = valid.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t = np.where(valid, t, 0.0).sum(axis=-1) / count
        mean_v = np.where(valid, v, 0.0).sum(axis=-1) / count
        dt = np.where(valid, t - mean_t[:, None], 0.0)
        dv = np.where(valid, v - mean_v[:, None], 0.0)
        slope = (dt * dv).sum(axis=-1) / (dt * dt).sum(axis=-1)
    low = np.nanmin(v, axis=-1, initial=np.inf)
    constant = low == np.nanmax(v, axis=-1, initial=-np.inf)
    # Prometheus answers exactly 0 (and the value itself) for a constant series.
    slope = np.where(constant, 0.0, slope)
    mean_v = np.where(constant, low, mean_v)
    enough = count >= 2
    return (np.where(enough, slope, np.nan), mean_t, np.where(enough, mean_v, np.nan))


def _sorted_by_time(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Rows reordered by time (missing points last) unless they already are in order."""
    valid = ~np.isnan(t)
    seen = np.maximum.accumulate(np.where(valid, t, -np.inf), axis=-1)
    if np.all(~valid[:, 1:] | (t[:, 1:] >= seen[:, :-1])):
        return t, v
    order = np.argsort(np.where(valid, t, np.inf), axis=-1, kind="stable")
    return np.take_along_axis(t, order, axis=-1), np.take_along_axis(v, order, axis=-1)


def _envelope(t: FloatArray, v: FloatArray, blocks: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Block minima, their times and each row's last valid time, a chunk of rows at a time."""
    n_series = v.shape[0]
    env_t, env_v = np.full((n_series, blocks), np.nan), np.full((n_series, blocks), np.nan)
    last_time = np.full(n_series, np.nan)
    shared = _shared_times(t)
    for rows in row_chunks(n_series, v.shape[1]):
        values = v[rows]
        if shared is not None and not np.isnan(values).any():
            found = _envelope_shared(shared, values, blocks)
        else:
            found = _envelope_chunk(*_masked(t[rows], values), blocks)
        env_t[rows], env_v[rows], last_time[rows] = found
    return env_t, env_v, last_time


def _shared_times(t: FloatArray) -> FloatArray | None:
    """The one time axis of all rows when it is shared, finite and in order (else None)."""
    if t.shape[0] == 0 or t.shape[1] == 0 or t.strides[0] != 0:
        return None
    times = t[0]
    ordered = bool(np.isfinite(times).all() and (np.diff(times) >= 0).all())
    return times if ordered else None


def _block_of(t: FloatArray, start: FloatArray, span: FloatArray, blocks: int) -> IntArray:
    """Index of the equal time block each time falls in (the last block is closed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(span > 0, (t - start) / span * blocks, 0.0)
    return np.clip(np.nan_to_num(position, nan=0.0), 0, blocks - 1).astype(np.int64)


def _envelope_shared(
    times: FloatArray, v: FloatArray, blocks: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Block minima when every row has a value at each of the same ordered times."""
    n_series, length = v.shape
    block = _block_of(times, times[:1], times[-1:] - times[:1], blocks)
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    minima = np.minimum.reduceat(v, starts, axis=1)
    widths = np.diff(np.append(starts, length))
    is_min = v == np.repeat(minima, widths, axis=1)
    first = np.minimum.reduceat(np.where(is_min, np.arange(length), length), starts, axis=1)
    env_t, env_v = np.full((n_series, blocks), np.nan), np.full((n_series, blocks), np.nan)
    env_v[:, block[starts]] = minima
    env_t[:, block[starts]] = times[first]
    return env_t, env_v, np.full(n_series, times[-1])


def _envelope_chunk(t: FloatArray, v: FloatArray, blocks: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Block minima and their times via one reduceat pass over time-ordered rows."""
    t, v = _sorted_by_time(t, v)
    n_series = v.shape[0]
    valid = ~np.isnan(v)
    start = np.nanmin(t, axis=-1, initial=np.inf)[:, None]
    end = np.nanmax(t, axis=-1, initial=-np.inf)
    block = _block_of(t, start, end[:, None] - start, blocks)
    # Missing points join the block before them, so block ids never decrease along a row.
    block = np.maximum.accumulate(np.where(valid, block, 0), axis=-1)
    key = (np.arange(n_series)[:, None] * blocks + block).ravel()
    flat_v = np.where(valid, v, np.inf).ravel()
    env_v = np.full(n_series * blocks, np.inf)
    env_t = np.full(n_series * blocks, np.nan)
    if key.size:
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        env_v[key[starts]] = np.minimum.reduceat(flat_v, starts)
        is_min = (flat_v == env_v[key]) & np.isfinite(flat_v)
        first = np.minimum.reduceat(np.where(is_min, np.arange(key.size), key.size), starts)
        found = first < key.size
        env_t[key[starts[found]]] = t.ravel()[first[found]]
    env_v[np.isinf(env_v)] = np.nan
    shape = (n_series, blocks)
    return env_t.reshape(shape), env_v.reshape(shape), np.where(np.isfinite(end), end, np.nan)


def _theil_sen(x: FloatArray, y: FloatArray, confidence: float) -> dict[str, npt.NDArray[np.generic]]:
    """Theil-Sen fit of each row (see `_theil_sen_chunk`), a chunk of rows at a time."""
    n_series, width = x.shape
    fit: dict[str, npt.NDArray[np.generic]] = {
        name: np.full(n_series, np.nan) for name in ("slope", "lower", "upper", "level")
    }
    fit["n_points"] = np.zeros(n_series, dtype=np.int64)
    for rows in row_chunks(n_series, width * width):
        for name, part in _theil_sen_chunk(x[rows], y[rows], confidence).items():
            fit[name][rows] = part
    return fit


def _theil_sen_chunk(x: FloatArray, y: FloatArray, confidence: float) -> dict[str, npt.NDArray[np.generic]]:
    """Theil-Sen slope, Sen's interval (as scipy.stats.theilslopes) and the joint intercept."""
    valid = ~np.isnan(x) & ~np.isnan(y)
    n_points = valid.sum(axis=-1).astype(np.int64)
    first, second = np.triu_indices(x.shape[1], k=1)
    dx = x[:, second] - x[:, first]
    dy = y[:, second] - y[:, first]
    usable = (dx != 0) & ~np.isnan(dx) & ~np.isnan(dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes, n_slopes = sort_rows(np.where(usable, dy / dx, np.nan))
    median = (take(slopes, (n_slopes - 1) // 2) + take(slopes, n_slopes // 2)) / 2.0
    low_index, high_index = _sen_ranks(x, y, n_points, n_slopes, confidence)
    residual, _ = sort_rows(y - median[:, None] * x)
    intercept = (take(residual, (n_points - 1) // 2) + take(residual, n_points // 2)) / 2.0
    enough = n_slopes > 0
    return {
        "slope": np.where(enough, median, np.nan),
        "lower": np.where(enough, take(slopes, low_index), np.nan),
        "upper": np.where(enough, take(slopes, high_index), np.nan),
        "level": np.where(enough, intercept, np.nan),
        "n_points": n_points,
    }


def _sen_ranks(
    x: FloatArray, y: FloatArray, n_points: IntArray, n_slopes: IntArray, confidence: float
) -> tuple[IntArray, IntArray]:
    """0-based ranks of the interval ends among sorted slopes (-1 when undefined).

    Sen (1968), eq. 2.6, with ties in x and y, rounded as scipy.stats.theilslopes does.
    """
    z = special.ndtri((1.0 - confidence) / 2.0)
    n = n_points.astype(np.float64)
    variance = (n * (n - 1) * (2 * n + 5) - _tie_sum(x) - _tie_sum(y)) / 18.0
    with np.errstate(invalid="ignore"):
        sigma = np.sqrt(variance)
    defined = (n_slopes > 0) & np.isfinite(sigma)
    sigma = np.where(defined, sigma, 0.0)
    high = np.minimum(np.round((n_slopes - z * sigma) / 2.0), n_slopes - 1).astype(np.int64)
    low = np.maximum(np.round((n_slopes + z * sigma) / 2.0) - 1, 0).astype(np.int64)
    return np.where(defined, low, -1), np.where(defined, high, -1)


def _tie_sum(values: FloatArray) -> FloatArray:
    """Sum of k(k-1)(2k+5) over groups of k equal valid values, per row."""
    ordered, _ = sort_rows(values)
    _, size, row = tie_groups(ordered)  # a NaN is a group of one and adds nothing
    total = np.bincount(row, weights=size * (size - 1) * (2 * size + 5), minlength=len(values))
    return np.asarray(total, dtype=np.float64)
