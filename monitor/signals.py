"""Raw scraped series -> judged signals: gauges as they are, counters as rates and counts,
histograms as quantiles, each rule aggregated across the series its selector matches."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from baselines.frame import SignalFrame, measured
from baselines.summary import Baseline
from monitor.exposition import split_key
from monitor.policy import LABEL_MATCHER, SignalRule

_MATCHER = re.compile(LABEL_MATCHER)


@dataclass(frozen=True)
class RawSeries:
    """Scraped samples: one row per series key, one column per scrape (times sorted)."""

    keys: tuple[str, ...]
    times: np.ndarray
    targets: tuple[str, ...]
    values: np.ndarray


def parse_selector(selector: str) -> tuple[str, dict[str, str]]:
    """`name{a="b"}` -> ("name", {"a": "b"})."""
    name, _, rest = selector.partition("{")
    return name.strip(), dict(_MATCHER.findall(rest))


class _Index:
    """Finds the rows of a RawSeries that a selector matches."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.parsed = [split_key(key) for key in keys]

    def rows(self, selector: str, suffix: str = "") -> list[tuple[int, dict[str, str]]]:
        name, wanted = parse_selector(selector)
        name += suffix
        return [
            (row, labels)
            for row, (series_name, labels) in enumerate(self.parsed)
            # As in PromQL, label="" matches series without that label.
            if series_name == name and all(labels.get(k, "") == v for k, v in wanted.items())
        ]


def derive(rules: Sequence[SignalRule], raw: RawSeries, *,
           within: Mapping[str, tuple[float, ...]] | None = None) -> SignalFrame:
    """Turn raw series into one row per rule on the scrape grid of the raw data.

    `within` holds each histogram's bounds in the baseline (`baseline_layouts`): a
    candidate that exports all of them and more (buckets added since) has its quantile
    taken over those alone. Its cumulative counts at those bounds are exact, so the
    quantile is estimated as the baseline's was, and the two compare. Bounds dropped
    cannot be put back: such a quantile stays in its own buckets, and apart.
    """
    names = tuple(rule.name for rule in rules)
    if raw.times.size == 0:
        return SignalFrame.empty(names)
    index = _Index(raw.keys)
    per_target = _columns_by_target(raw.targets)
    grid, slot = _grid(raw.times, per_target)
    shape = (len(rules), grid.size)
    values, events, trials = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    layouts: dict[str, tuple[float, ...]] = {}
    for row, rule in enumerate(rules):
        if rule.kind == "quantile":
            values[row], layout = _quantile_row(rule, index, raw, per_target, slot, grid.size,
                                                (within or {}).get(rule.name))
            layouts[rule.name] = tuple(float(b) for b in layout)
            continue
        combine = _Combine(grid.size)
        for cols in per_target.values():
            v, e, t = _signal(rule, index, raw, cols)
            combine.add(slot[cols], v, e, t)
        values[row] = combine.values(rule.aggregate)
        if rule.kind == "ratio":
            events[row], trials[row] = combine.events(), combine.trials()
            with np.errstate(invalid="ignore", divide="ignore"):
                values[row] = np.where(trials[row] > 0, events[row] / trials[row], np.nan)
    return SignalFrame(names, grid, measured(values), measured(events), measured(trials), layouts)


class _Combine:
    """Adds up or averages the targets of one service into the shared grid."""

    def __init__(self, size: int) -> None:
        self.sum, self.count = np.zeros(size), np.zeros(size)
        self.max = np.full(size, np.nan)
        self.event_sum, self.trial_sum = np.zeros(size), np.zeros(size)
        self.count_seen = np.zeros(size)

    def add(self, slots: np.ndarray, v: np.ndarray, e: np.ndarray, t: np.ndarray) -> None:
        """One target's samples. A late scrape and an early one can share a slot: the
        target's values there are averaged first, so it counts once among the targets
        (its counts are added: both intervals' errors and requests really happened)."""
        good = ~np.isnan(v)
        where, which = np.unique(slots[good], return_inverse=True)
        if where.size:
            mean = (np.bincount(which, weights=v[good], minlength=where.size)
                    / np.bincount(which, minlength=where.size))
            # ...and a slot it skipped for that reason, between two it filled, keeps its
            # last value (as a Prometheus instant query would), so a sum does not dip.
            skipped = np.flatnonzero(np.diff(where) == 2)
            where = np.concatenate([where, where[skipped] + 1])
            mean = np.concatenate([mean, mean[skipped]])
            self.sum[where] += mean
            self.count[where] += 1.0
            self.max[where] = np.fmax(self.max[where], mean)
        counted = ~np.isnan(e) & ~np.isnan(t)
        np.add.at(self.event_sum, slots[counted], e[counted])
        np.add.at(self.trial_sum, slots[counted], t[counted])
        self.count_seen[np.unique(slots[counted])] += 1.0

    def values(self, how: str) -> np.ndarray:
        seen = self.count > 0
        if how == "max":
            return self.max
        if how == "mean":
            return np.where(seen, self.sum / np.maximum(self.count, 1.0), np.nan)
        return np.where(seen, self.sum, np.nan)

    def events(self) -> np.ndarray:
        return np.where(self.count_seen > 0, self.event_sum, np.nan)

    def trials(self) -> np.ndarray:
        return np.where(self.count_seen > 0, self.trial_sum, np.nan)


def _columns_by_target(targets: Sequence[str]) -> dict[str, np.ndarray]:
    found: dict[str, list[int]] = {}
    for column, target in enumerate(targets):
        found.setdefault(target, []).append(column)
    return {target: np.asarray(cols) for target, cols in found.items()}


def _grid(times: np.ndarray, per_target: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A shared time grid: each target's scrapes fall into slots one scrape interval wide."""
    if len(per_target) == 1:
        return times, np.arange(times.size)
    steps = [np.median(np.diff(times[c])) for c in per_target.values() if c.size > 1]
    # The typical target's interval (one slow target must not stretch every slot), and
    # slots centred on the grid times, so a target scraping in phase sits mid-slot.
    step = float(np.median(steps)) if steps else 1.0
    step = step if step > 0 else 1.0
    bucket = np.floor((times - times[0]) / step + 0.5).astype(np.int64)
    unique, slot = np.unique(bucket, return_inverse=True)
    return times[0] + unique * step, slot


def _signal(
    rule: SignalRule, index: _Index, raw: RawSeries, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One rule's values (and counts) over one target's scrape columns."""
    nothing = np.full(cols.size, np.nan)
    times = raw.times[cols]
    if rule.kind == "gauge":
        return _aggregate(raw.values[_rows(index, rule.metric)][:, cols], rule.aggregate), nothing, nothing
    if rule.kind == "rate":
        increase = _increase(raw.values[_rows(index, rule.metric)][:, cols])
        return _per_second(increase, times), nothing, nothing
    if rule.kind == "ratio":
        events = _increase(raw.values[_rows(index, rule.numerator)][:, cols])
        trials = _increase(raw.values[_rows(index, rule.denominator)][:, cols])
        if _family_present(index, raw, rule.numerator, cols):
            # A labelled counter (`code="500"`) exists only from its first error: where the
            # target counted requests and its errors' metric is there, none is zero errors.
            events = np.where(np.isnan(events) & ~np.isnan(trials), 0.0, events)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(trials > 0, events / trials, np.nan)
        return ratio, events, trials
    raise ValueError(f"signal {rule.name}: kind {rule.kind!r} is read by _quantile_row")


def _rows(index: _Index, selector: str) -> list[int]:
    return [row for row, _ in index.rows(selector)]


def _family_present(index: _Index, raw: RawSeries, selector: str, cols: np.ndarray) -> bool:
    """Whether any series of the selector's metric name, whatever its labels, has a sample
    in these columns: then the metric's name is right, and a child missing has counted
    nothing yet (rather than a misspelt name, which must stay without samples)."""
    rows = _rows(index, parse_selector(selector)[0])
    return bool(rows) and bool(np.any(~np.isnan(raw.values[rows][:, cols])))


def _aggregate(block: np.ndarray, how: str) -> np.ndarray:
    if block.shape[0] == 0:
        return np.full(block.shape[1], np.nan)
    all_missing = np.all(np.isnan(block), axis=0)
    # Columns missing in every row are NaN by design (set below), not a warning.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if how == "max":
            combined = np.nanmax(np.where(np.isnan(block), -np.inf, block), axis=0)
        elif how == "mean":
            combined = np.nanmean(block, axis=0) if block.shape[0] > 1 else block[0].copy()
        else:
            combined = np.nansum(block, axis=0)
    combined[all_missing] = np.nan
    return combined


def _increase(counters: np.ndarray) -> np.ndarray:
    """Summed counter increase per scrape interval (of one target's scrapes); a drop means
    the process restarted.

    A series that first appears after a scrape without it was created since: a labelled
    child at its first increment (`code="500"` at the first error), whose value is all
    increase, as if it had been zero before (as Prometheus's created-timestamp zero
    injection counts it). Left out, every error of a fresh release's first minutes that
    made a new child would go uncounted, while the baseline's long-lived children lose none.
    """
    if counters.shape[0] == 0 or counters.shape[1] == 0:
        return np.full(counters.shape[1], np.nan)
    step = np.diff(counters, axis=1)
    reset = step < 0
    step[reset] = counters[:, 1:][reset]
    seen = ~np.isnan(counters)
    first = np.argmax(seen, axis=1)
    born = np.flatnonzero(seen.any(axis=1) & (first > 0))
    step[born, first[born] - 1] = counters[born, first[born]]
    total = _aggregate(step, "sum")
    return np.concatenate([[np.nan], total])


def _per_second(increase: np.ndarray, times: np.ndarray) -> np.ndarray:
    elapsed = np.concatenate([[np.nan], np.diff(times)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(elapsed > 0, increase / elapsed, np.nan)


def _buckets(rule: SignalRule, index: _Index) -> tuple[np.ndarray, dict[float, list[int]]]:
    """A histogram's sorted upper bounds (empty unless at least two, ending in +Inf) and
    the rows of each."""
    by_bound: dict[float, list[int]] = {}
    for row, labels in index.rows(rule.metric, "_bucket"):
        try:
            bound = float(labels["le"])
        except (KeyError, ValueError):
            continue
        by_bound.setdefault(bound, []).append(row)
    bounds = np.array(sorted(by_bound))
    if bounds.size < 2 or not np.isinf(bounds[-1]):
        return np.array([]), by_bound
    return bounds, by_bound


def _bucket_increases(bounds: np.ndarray, by_bound: Mapping[float, list[int]], raw: RawSeries,
                      cols: np.ndarray) -> np.ndarray:
    """(buckets, columns): each cumulative bucket's increase per scrape interval."""
    return np.vstack([_increase(raw.values[by_bound[b]][:, cols]) for b in bounds])


def _quantile_row(rule: SignalRule, index: _Index, raw: RawSeries,
                  per_target: Mapping[str, np.ndarray], slot: np.ndarray,
                  size: int, within: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A histogram's quantile on the grid, and the bounds it was taken over.

    Pooled, as `histogram_quantile(q, sum by (le) (increase(...)))`: the targets' bucket
    increases added up in each slot, then one quantile, so a quiet target weighs what it
    served (a mean of the targets' quantiles let ten slow requests on one pod set the whole
    p95), over the bounds every target with data exports (the service's series list holds
    every bucket any release exported). With `aggregate = "max"`, each target's own
    quantile over its own bounds, and the worst. A target that exports the bounds `within`
    and more is read over those alone (see `derive`)."""
    bounds, by_bound = _buckets(rule, index)
    nothing = np.full(size, np.nan)
    if bounds.size == 0:
        return nothing, bounds
    increases = {target: _bucket_increases(bounds, by_bound, raw, cols)
                 for target, cols in per_target.items()}
    exported = {target: _coarsened(_exported(bounds, part), bounds, within)
                for target, part in increases.items()}
    answering = [own for own in exported.values() if own.any()]
    if not answering:
        return nothing, np.array([])
    if rule.aggregate == "max":
        # Each target's own quantile in its own buckets: one layout if they all share it.
        own_layouts = {tuple(bounds[own]) for own in answering}
        layout = np.array(own_layouts.pop()) if len(own_layouts) == 1 else np.array([np.nan])
        combine = _Combine(size)
        for target, cols in per_target.items():
            own = exported[target]
            if own.any():
                blank = np.full(cols.size, np.nan)
                combine.add(slot[cols], bucket_quantile(rule.quantile, bounds[own],
                                                        increases[target][own]), blank, blank)
        return combine.values("max"), layout
    kept = np.logical_and.reduce(answering)
    if not _a_histogram(bounds[kept]):
        return nothing, np.array([])
    layout = bounds[kept]
    pooled = np.zeros((layout.size, size))
    seen = np.zeros(size, dtype=bool)
    for target, cols in per_target.items():
        part = increases[target][kept]
        whole = ~np.any(np.isnan(part), axis=0)   # a target's histogram, every bucket
        np.add.at(pooled.T, slot[cols][whole], part[:, whole].T)
        seen[slot[cols][whole]] = True
    result = bucket_quantile(rule.quantile, layout, pooled)
    result[~seen] = np.nan
    return result, layout


def baseline_layouts(baseline: Baseline | None) -> dict[str, tuple[float, ...]]:
    """Each signal's histogram bounds in a stored baseline (none without one)."""
    return {} if baseline is None else {name: part.layout for name, part in baseline.signals.items()}


def _coarsened(own: np.ndarray, bounds: np.ndarray,
               within: tuple[float, ...] | None) -> np.ndarray:
    """A target's exported bounds narrowed to `within` when it exports every one of them
    and more; as they are otherwise (the same bounds, some dropped, or none given)."""
    if not within or not set(within) < set(bounds[own].tolist()):
        return own
    return own & np.isin(bounds, within)


def _exported(bounds: np.ndarray, increases: np.ndarray) -> np.ndarray:
    """The bounds a target's window has any value of (the service's series list holds every
    bucket any release exported: a release that added or dropped one has none of the other
    layout's), all False unless they still make a histogram. A coarser histogram of the
    same requests is still one, as `histogram_quantile` takes whatever buckets it is given."""
    exported = np.any(~np.isnan(increases), axis=1)
    return exported if _a_histogram(bounds[exported]) else np.zeros_like(exported)


def _a_histogram(bounds: np.ndarray) -> bool:
    return bounds.size >= 2 and bool(np.isinf(bounds[-1]))


def bucket_quantile(q: float, bounds: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in.

    `bounds` are sorted upper bounds ending in +Inf; `cumulative` is (buckets, columns).
    """
    total = cumulative[-1]
    rank = q * total
    reached = cumulative >= rank[np.newaxis, :]
    bucket = np.argmax(reached, axis=0)
    columns = np.arange(cumulative.shape[1])
    upper = bounds[bucket]
    lower = np.where(bucket > 0, bounds[np.maximum(bucket - 1, 0)], 0.0)
    below = np.where(bucket > 0, cumulative[np.maximum(bucket - 1, 0), columns], 0.0)
    inside = cumulative[bucket, columns] - below
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(inside > 0, (rank - below) / inside, 0.0)
        result = lower + (upper - lower) * fraction
    # The rank in the +Inf bucket answers with the highest finite bound, as Prometheus does.
    result = np.where(np.isinf(upper), bounds[-2], result)
    result[~(total > 0)] = np.nan
    return result
