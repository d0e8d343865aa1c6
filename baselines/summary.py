"""A release's samples -> a stored baseline that outlives the raw samples."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from baselines.calibration import drift_aware_spreads, robust_spread, slope_spreads, step_spreads
from baselines.frame import SignalFrame
from detectors import dispersion as count_dispersion
from detectors import trend
from detectors.step import WIDTHS as STEP_WIDTHS

RESERVOIR_SIZE = 512
# The release's last samples, kept for the step test at the next release's start.
TAIL_SIZE = max(STEP_WIDTHS)
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class SignalBaseline:
    """What one signal looked like over a healthy release."""

    signal: str
    count: int
    mean: float
    std: float
    quantiles: Mapping[str, float]
    noise: float
    slope: float
    events: float
    trials: float
    dispersion: float
    span: float
    # The same for the complement (trials - events): what a hit ratio's misses are tested
    # with. Not the ratio's own: quasi-Poisson factors are not symmetric.
    complement_dispersion: float = float("nan")
    # Events less what the hour of day adds (`deseasonalized_events`), when the ratio has an
    # hourly profile: what a candidate's events, less its own hours' share, compare with.
    deseasonalized_events: float = float("nan")
    hourly: tuple[float, ...] | None = None    # offsets by hour of day (UTC), when seasonal
    reservoir: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # A/A calibration (baselines/calibration.py): spread of healthy windows' medians, and
    # of their lower-envelope slopes for leak signals, per window length of the LADDER.
    aa_spread: tuple[float, ...] = ()
    aa_slope_spread: tuple[float, ...] = ()
    # Measured not to drift (calibration.drift_aware_spreads): its spreads hold for a window
    # after the release too, so the period's final look may use a lower bar.
    steady: bool = False
    # The last TAIL_SIZE samples (raw), when they ended and how far
    # apart they were, and the A/A spread of steps between adjacent windows per STEP_WIDTHS.
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tail_end: float = float("nan")
    tail_step: float = float("nan")
    aa_step_spread: tuple[float, ...] = ()
    # A quantile's histogram bounds (SignalFrame.layouts); () when not one, or not known;
    # (NaN,) for releases of different bounds merged.
    layout: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return float(self.quantiles.get("p50", np.nan))

    @property
    def rate(self) -> float:
        return self.events / self.trials if self.trials > 0 else float("nan")

    def to_summary(self) -> dict[str, Any]:
        """A JSON-able dict of everything but the reservoir (stored apart as a blob)."""
        summary = {name: getattr(self, name) for name in _SCALARS}
        summary["quantiles"] = dict(self.quantiles)
        summary["hourly"] = list(self.hourly) if self.hourly is not None else None
        # A ratio's profile is of its pooled counts per hour (see `hourly_offsets`); one
        # stored without this mark is of per-interval medians, and is summarized again.
        summary["hourly_pooled"] = True
        summary["steady"] = self.steady
        summary["aa_spread"] = [_finite_or_none(v) for v in self.aa_spread]
        summary["aa_slope_spread"] = [_finite_or_none(v) for v in self.aa_slope_spread]
        summary["aa_step_spread"] = [_finite_or_none(v) for v in self.aa_step_spread]
        summary["tail"] = [_finite_or_none(v) for v in self.tail]
        # JSON has no infinity: the +Inf bucket is written as null.
        summary["layout"] = [_finite_or_none(v) for v in self.layout]
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in summary.items()}

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], reservoir: np.ndarray) -> SignalBaseline:
        scalars: dict[str, Any] = {
            name: (float("nan") if summary.get(name) is None else summary[name]) for name in _SCALARS
        }
        scalars["signal"] = str(summary["signal"])
        scalars["count"] = int(summary["count"])
        hourly = summary.get("hourly")
        return cls(
            quantiles=dict(summary.get("quantiles", {})),
            hourly=tuple(hourly) if hourly else None,
            # Baselines stored before drift was recorded are not known to be steady.
            steady=bool(summary.get("steady", False)),
            aa_spread=_floats(summary.get("aa_spread", [])),
            aa_slope_spread=_floats(summary.get("aa_slope_spread", [])),
            aa_step_spread=_floats(summary.get("aa_step_spread", [])),
            tail=np.asarray(_floats(summary.get("tail", [])), dtype=float),
            layout=tuple(float("inf") if v is None else float(v)
                         for v in summary.get("layout", [])),
            reservoir=np.asarray(reservoir, dtype=float),
            **scalars,
        )


SEASONAL_AGREEMENT = 0.6
# A daily profile is trusted only once a week of history shows it, so that the weekly
# rhythm (quiet weekends) is part of its calibration rather than a surprise.
SEASONAL_HISTORY = 7 * 86400

_SCALARS = (
    "signal", "count", "mean", "std", "noise", "slope", "events", "trials",
    "dispersion", "span", "tail_end", "tail_step", "complement_dispersion",
    "deseasonalized_events",
)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _floats(values: Sequence[float | None]) -> tuple[float, ...]:
    return tuple(float("nan") if v is None else float(v) for v in values)


@dataclass(frozen=True)
class Baseline:
    """The healthy release(s) a candidate is compared with, one entry per signal."""

    releases: tuple[str, ...]
    signals: Mapping[str, SignalBaseline]

    @property
    def label(self) -> str:
        return "+".join(self.releases)


def summarize(frame: SignalFrame, *, leak_signals: Sequence[str] = (),
              leak_block: float = 300.0) -> dict[str, SignalBaseline]:
    """Summaries of every row of a healthy release's frame.

    A signal with a repeating daily pattern is summarized after its hour-of-day profile is
    taken out, so a candidate is judged against the same hours of healthy history rather
    than against the whole day's swing; its leak slopes and error counts stay raw.
    """
    offsets, crossed = _profiles(frame.times, frame.values, frame.events, frame.trials)
    values = deseasonalize(frame.times, frame.values, offsets)
    count = np.sum(~np.isnan(values), axis=1)
    with _quiet():
        mean = np.nanmean(values, axis=1)
        std = np.nanstd(values, axis=1)
        qs = np.nanquantile(values, list(QUANTILES.values()), axis=1) if values.shape[1] else None
    noise = robust_spread(values)
    events = np.nansum(frame.events, axis=1)
    trials = np.nansum(frame.trials, axis=1)
    # With an hourly profile, counts are judged less the profile's share, so their
    # burstiness is measured on them too: the daily swing is no dispersion.
    profiled = ~np.isnan(offsets).all(axis=1)
    adjusted = np.where(profiled[:, None], deseasonalized_events(
        frame.times, frame.events, frame.trials, offsets), frame.events)
    seasonal_events = np.where(profiled, np.clip(np.nansum(adjusted, axis=1), 0.0, trials), np.nan)
    # Dispersion is of counts, each at least zero.
    adjusted = np.clip(adjusted, 0.0, frame.trials)
    if values.shape[1] > 2:
        phi = count_dispersion(adjusted, frame.trials)
        phi_complement = count_dispersion(frame.trials - adjusted, frame.trials)
    else:
        phi = phi_complement = np.ones(len(count))
    spreads, steady = drift_aware_spreads(frame.values - crossed)
    # A ratio is tested on counts: its windows are calibrated as their errors over their
    # requests, the hours' share taken out as from the counts it is tested on (by a profile
    # fitted on the other days, as for any signal).
    counted = np.flatnonzero(_counted(frame.trials))
    if counted.size:
        held_out = np.where(profiled[counted, None],
                            frame.events[counted] - frame.trials[counted] * crossed[counted],
                            frame.events[counted])
        pooled = drift_aware_spreads(held_out, trials=frame.trials[counted])
        spreads[counted], steady[counted] = pooled.spreads, pooled.steady
    # Raw values: an hourly profile is flat within each hour, so taking it out would leave a
    # step at every hour boundary.
    step_spread = step_spreads(frame.values, STEP_WIDTHS)
    tail_step = float(np.median(np.diff(frame.times[-TAIL_SIZE:]))) if frame.times.size > 1 else np.nan
    slopes = _leak_slopes(frame, leak_signals, leak_block)
    slope_spread = _leak_slope_spreads(frame, leak_signals, leak_block)
    out = {}
    for row, name in enumerate(frame.names):
        out[name] = SignalBaseline(
            signal=name,
            count=int(count[row]),
            mean=float(mean[row]),
            std=float(std[row]),
            quantiles={k: float(qs[i, row]) for i, k in enumerate(QUANTILES)} if qs is not None else {},
            noise=float(noise[row]),
            slope=float(slopes.get(name, np.nan)),
            events=float(events[row]),
            trials=float(trials[row]),
            dispersion=float(np.nan_to_num(phi[row], nan=1.0)),
            complement_dispersion=float(np.nan_to_num(phi_complement[row], nan=1.0)),
            deseasonalized_events=float(seasonal_events[row]),
            span=frame.span,
            hourly=None if np.isnan(offsets[row]).all() else tuple(float(v) for v in offsets[row]),
            reservoir=thin(values[row], RESERVOIR_SIZE),
            aa_spread=tuple(float(v) for v in spreads[row]),
            steady=bool(steady[row]),
            aa_slope_spread=slope_spread.get(name, ()),
            tail=frame.values[row, -TAIL_SIZE:].copy(),
            tail_end=float(frame.times[-1]) if frame.times.size else float("nan"),
            tail_step=tail_step,
            aa_step_spread=tuple(float(v) for v in step_spread[row]),
            layout=tuple(frame.layouts.get(name, ())),
        )
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """All-NaN rows give NaN in their own slot; numpy's warnings about them are noise."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def thin(values: np.ndarray, size: int) -> np.ndarray:
    """At most `size` valid values, one from each of `size` equal stretches of time, at a
    random place within it (order kept).

    Not at the same place in each: evenly spaced picks fall on the same phase of anything
    that repeats at a divisor of their spacing (a job every fourth scrape, at a count of
    4 x 511 + 1, would fill the reservoir with it). The generator is seeded by the count,
    so a release's reservoir is the same every time it is summarized.
    """
    valid = values[~np.isnan(values)]
    if valid.size <= size:
        return valid.copy()
    edges = np.linspace(0, valid.size, size + 1).round().astype(np.int64)
    offsets = np.random.default_rng(valid.size).random(size)
    picks = edges[:-1] + (offsets * (edges[1:] - edges[:-1])).astype(np.int64)
    return valid[picks]


def _proportional(parts: Sequence[SignalBaseline], size: int) -> np.ndarray:
    """The parts' reservoirs as one sample of all their samples: each part gives a share
    of `size` in proportion to its count (a 40-minute release beside a day-long one gives
    3%, not half), all of its reservoir where the whole fits."""
    counts = np.array([p.count for p in parts], dtype=float)
    total = counts.sum()
    if total <= size or total <= 0:
        return np.concatenate([p.reservoir for p in parts])
    shares = np.floor(counts / total * size).astype(np.int64)
    # The values left by rounding down go to the largest remainders.
    left = size - int(shares.sum())
    shares[np.argsort(-(counts / total * size - shares), kind="stable")[:left]] += 1
    return np.concatenate([thin(p.reservoir, int(min(k, p.reservoir.size)))
                           for p, k in zip(parts, shares, strict=True)])


def _leak_slopes(frame: SignalFrame, leak_signals: Sequence[str], block: float) -> dict[str, float]:
    rows = [frame.row(name) for name in leak_signals if name in frame.rows]
    if not rows or frame.span <= 0:
        return {}
    blocks = leak_blocks(frame.span, block)
    if blocks < 4:
        return {}
    result = trend(frame.times, frame.values[rows], blocks=blocks)
    slopes = np.atleast_1d(result.slope)
    return {frame.names[row]: float(slopes[i]) for i, row in enumerate(rows)}


def _leak_slope_spreads(frame: SignalFrame, leak_signals: Sequence[str],
                        block: float) -> dict[str, tuple[float, ...]]:
    rows = [frame.row(name) for name in leak_signals if name in frame.rows]
    if not rows or frame.times.size < 32:
        return {}
    spreads = slope_spreads(frame.times, frame.values[rows], block)
    return {frame.names[row]: tuple(float(v) for v in spreads[i]) for i, row in enumerate(rows)}


def leak_blocks(span: float, block: float) -> int:
    """How many lower-envelope blocks a span holds: one per garbage-collection cycle or more."""
    return int(min(48, span // block))


def hourly_offsets(times: np.ndarray, values: np.ndarray, events: np.ndarray | None = None,
                   trials: np.ndarray | None = None) -> np.ndarray:
    """(series, 24): how far each hour of the day sits from the release's level, for the
    series whose daily pattern repeats; NaN rows for the others.

    The level of a gauge is its median; a ratio's (a row with `trials`) is its errors over
    its requests, pooled over the release and over each hour: the median of per-interval
    ratios is 0 or one error's share wherever an interval holds an error or less.

    A pattern counts only when the baseline covers a week or more and the hour-of-day
    profiles of its even and odd days agree (correlation at least SEASONAL_AGREEMENT):
    subtracting a profile that does not repeat would only add noise and make healthy
    history look calmer than it is.
    """
    return _profiles(times, values, events, trials)[0]


def _profiles(times: np.ndarray, values: np.ndarray, events: np.ndarray | None = None,
              trials: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The hour-of-day offsets (NaN rows where no pattern repeats), and each sample's
    offset fitted on the other days only (even days' profile on odd days and back; 0 where
    no pattern repeats).

    The second is what A/A calibration must take out: a candidate's hours are corrected by
    a profile fitted on other days, with that profile's own error.
    """
    rows = values.shape[0]
    out = np.full((rows, 24), np.nan)
    crossed = np.zeros_like(values)
    # Each sample stands for one step of time: a week of hourly samples covers a week.
    if times.size < 2 or times[-1] - times[0] + float(np.median(np.diff(times))) < SEASONAL_HISTORY:
        return out, crossed
    hours = ((times // 3600) % 24).astype(np.int64)
    days = ((times - times[0]) // 86400).astype(np.int64)
    counted = _counted(trials) if trials is not None else np.zeros(rows, dtype=bool)

    def levels(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's level over the kept samples, and its level in each hour of the day."""
        with _quiet():
            centre = np.nanmedian(np.where(keep, values, np.nan), axis=1)
            by_hour = _by_hour(np.where(keep, values, np.nan), hours)
        if counted.any() and events is not None and trials is not None:
            pooled = _pooled_by_hour(events[counted], trials[counted], hours, keep)
            centre[counted], by_hour[counted] = pooled
        return centre, by_hour

    # Every profile is measured from the whole release's level, as the candidate's is.
    centre, whole = levels(np.ones(times.size, dtype=bool))
    whole, even, odd = (hourly - centre[:, None] for hourly in
                        (whole, levels(days % 2 == 0)[1], levels(days % 2 == 1)[1]))
    agree = _row_correlation(even, odd) >= SEASONAL_AGREEMENT
    out[agree] = np.nan_to_num(whole[agree])
    other_days = np.where(days % 2 == 0, np.nan_to_num(odd)[:, hours], np.nan_to_num(even)[:, hours])
    crossed[agree] = other_days[agree]
    return out, crossed


def _counted(trials: np.ndarray) -> np.ndarray:
    """Rows that are ratios: they carry the requests their errors are counted in."""
    return np.any(np.isfinite(trials), axis=1)


def _by_hour(values: np.ndarray, hours: np.ndarray) -> np.ndarray:
    columns = [np.nanmedian(values[:, hours == hour], axis=1) if np.any(hours == hour)
               else np.full(values.shape[0], np.nan) for hour in range(24)]
    return np.vstack(columns).T


def _pooled_by_hour(events: np.ndarray, trials: np.ndarray, hours: np.ndarray,
                    keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratios' errors over requests over the kept samples, and within each hour of the day
    (NaN where an hour holds no request)."""
    known = keep & np.isfinite(events) & np.isfinite(trials)
    counts, totals = np.where(known, events, 0.0), np.where(known, trials, 0.0)
    by_hour = np.full((events.shape[0], 24), np.nan)
    with _quiet():
        for hour in range(24):
            at = hours == hour
            if np.any(at):
                by_hour[:, hour] = counts[:, at].sum(axis=1) / totals[:, at].sum(axis=1)
        overall = counts.sum(axis=1) / totals.sum(axis=1)
    return overall, by_hour


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = ~np.isnan(a) & ~np.isnan(b)
    with _quiet():
        a = np.where(both, a - np.nanmean(np.where(both, a, np.nan), axis=1, keepdims=True), 0.0)
        b = np.where(both, b - np.nanmean(np.where(both, b, np.nan), axis=1, keepdims=True), 0.0)
        r = np.sum(a * b, axis=1) / np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    return np.where(both.sum(axis=1) >= 20, np.nan_to_num(r), 0.0)


def deseasonalize(times: np.ndarray, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Values less their hour of day's offset (rows without a profile are left alone)."""
    hours = ((times // 3600) % 24).astype(np.int64)
    return values - np.nan_to_num(offsets)[:, hours]


def deseasonalized_events(times: np.ndarray, events: np.ndarray, trials: np.ndarray,
                          offsets: np.ndarray) -> np.ndarray:
    """Events less what the hour of day adds: each interval's trials times its hour's
    offset of the ratio (a ratio's profile is one of events / trials). Rows without a
    profile are left alone.

    Not clipped at zero: the offset is what the hour adds on average, so a busy hour's
    interval without an error goes below zero, and only the sum over many intervals means
    anything (clipping each would raise it: by a tenth for a ratio of one error per
    interval or fewer).

    >>> deseasonalized_events(np.array([0.0, 3600.0]), np.array([[5.0, 10.0]]),
    ...                       np.array([[100.0, 1000.0]]),
    ...                       np.array([[-0.01, 0.02] + [0.0] * 22])).tolist()
    [[6.0, -10.0]]
    """
    hours = ((times // 3600) % 24).astype(np.int64)
    return events - trials * np.nan_to_num(offsets)[:, hours]


def _widest(spreads: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
    """Element-wise widest spread of several releases (lengths not calibrated in one: NaN)."""
    width = max((len(s) for s in spreads), default=0)
    table = np.full((len(spreads), width), np.nan)
    for row, spread in enumerate(spreads):
        table[row, : len(spread)] = spread
    with _quiet():
        return tuple(float(v) for v in np.nanmax(table, axis=0)) if width else ()


def _mean_profile(profiles: Sequence[tuple[float, ...] | None]) -> tuple[float, ...] | None:
    """The hour-of-day profile of several releases: the mean of those that have one.

    Each part's reservoir had its own profile taken out; a candidate left raw because the
    first part happened to have none would meet its daily swing against flattened values.
    """
    known = [profile for profile in profiles if profile is not None]
    if not known:
        return None
    return tuple(float(v) for v in np.mean(np.array(known, dtype=float), axis=0))


def _merged_layout(layouts: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
    """The parts' one histogram layout (unknown ones aside); releases of different buckets
    pooled are like no candidate's: (NaN,) matches none."""
    known = {layout for layout in layouts if layout}
    if len(known) > 1:
        return (float("nan"),)
    return next(iter(known), ())


def merge(baselines: Sequence[Baseline]) -> Baseline:
    """Several healthy releases judged as one: pooled counts, and reservoirs drawn from
    each in proportion to its count."""
    if len(baselines) == 1:
        return baselines[0]
    releases = tuple(r for b in baselines for r in b.releases)
    names = {name for b in baselines for name in b.signals}
    merged: dict[str, SignalBaseline] = {}
    for name in sorted(names):
        parts = [b.signals[name] for b in baselines if name in b.signals]
        pooled = _proportional(parts, RESERVOIR_SIZE)
        counts = np.array([p.count for p in parts], dtype=float)
        weights = counts / counts.sum() if counts.sum() > 0 else np.full(len(parts), 1 / len(parts))
        merged[name] = replace(
            parts[0],
            count=int(counts.sum()),
            mean=float(np.nansum([p.mean * w for p, w in zip(parts, weights, strict=True)])),
            std=float(max(p.std for p in parts)),
            quantiles={k: float(np.quantile(pooled, q)) for k, q in QUANTILES.items()}
            if pooled.size else dict(parts[0].quantiles),
            noise=float(max(p.noise for p in parts)),
            slope=float(np.nanmedian([p.slope for p in parts])) if any(
                not np.isnan(p.slope) for p in parts) else float("nan"),
            events=float(sum(p.events for p in parts)),
            trials=float(sum(p.trials for p in parts)),
            dispersion=float(max(p.dispersion for p in parts)),
            # Unknown (NaN) in a part stored before it was kept: the others' still counts.
            complement_dispersion=float(np.fmax.reduce([p.complement_dispersion for p in parts])),
            # Adjusted only if every part was: the candidate is adjusted by the mean profile.
            deseasonalized_events=float(sum(p.deseasonalized_events for p in parts)),
            hourly=_mean_profile([p.hourly for p in parts]),
            aa_spread=_widest([p.aa_spread for p in parts]),
            # Each part's steadiness is its own: how far the releases' levels lie apart
            # was never measured, so the merge is not known to be steady.
            steady=False,
            aa_slope_spread=_widest([p.aa_slope_spread for p in parts]),
            span=float(sum(p.span for p in parts)),
            reservoir=pooled,
            # Several releases have no one moment that the candidate follows on from.
            tail=np.zeros(0), aa_step_spread=(),
            layout=_merged_layout([p.layout for p in parts]),
        )
    return Baseline(releases, merged)
