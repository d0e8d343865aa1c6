"""Real labelled health signals turned into release-verification cases.

Three public data sets (see `../shared/data/README.md`) are read from a folder given by
the caller and never copied: NAB (AWS CloudWatch and known-cause series with labelled
anomaly windows), Microsoft's cloud-monitoring set (a `Label` column per point) and TCPD
(five annotators' change points per series).

The release-cut protocol makes cases out of them. A cut at sample `T` calls the healthy
stretch before it the baseline release and the stretch after it the candidate:

- bad: the candidate overlaps a labelled anomaly that starts at or after T;
- null: no labelled anomaly in either stretch;
- injected: a null cut with a known regression added to its candidate;
- A/A: a baseline and the window right after it, inside one healthy stretch.

Everything is seeded: the same seed gives the same cases, in the same order.

    >>> shape = case_shape("nab", 300.0)
    >>> shape.baseline, shape.period
    (288, 72)
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats

from baselines.calibration import spread_at, window_spreads

DATASETS = ("nab", "msft", "tcpd")
# The kinds of signal a rule is written for (see `benchmarks.accuracy.rule_for`).
KINDS = ("errors", "latency", "resource", "traffic", "level", "memory")
# Injected sizes are fractions of the baseline's scale, max(|median|, robust sd): the
# judge's own yardstick. A regression that averages at least this much after it starts
# counts as major and should be caught within the checking period.
MAJOR_EFFECT = 0.5
# Kinds judged worse either way (request rates, series of unknown meaning).
EITHER_WAY_KINDS = ("traffic", "level")
LEVEL_SIZES = (0.1, 0.25, 0.5, 1.0)
RAMP_SIZES = (0.5, 1.0)
ERROR_SIZES = (0.25, 0.5, 1.0, 2.0)
LEAK_SIZES = (0.25, 0.5, 2.0)
# A memory limit this many scales above the baseline median: memory normally at about a
# fifth of its limit, as a container sized with headroom is.
LEAK_LIMIT_SCALES = 4.0
LEAK_HORIZON = 86400.0
TCPD_STEP = 3600.0
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Series:
    """One labelled real series: sample times (unix seconds) and its anomaly windows."""

    dataset: str
    name: str
    kind: str
    times: np.ndarray
    values: np.ndarray
    anomalies: tuple[tuple[float, float], ...]

    @property
    def step(self) -> float:
        return float(np.median(np.diff(self.times))) if self.times.size > 1 else 1.0


@dataclass(frozen=True)
class Shape:
    """Sizes of a case in samples: the longest baseline, the shortest, the checking period."""

    baseline: int
    min_baseline: int
    period: int


@dataclass(frozen=True)
class Case:
    """One release to judge: a baseline stretch, then the candidate from `cut` on.

    `label` is "bad" or "null"; for a bad case `anomaly_start` is when the regression
    began (detection delay is measured from it). `kind` chooses the signal's rule;
    `limit` is the memory limit of a leak case. `contrast` is an injected change's size in
    the baseline's own A/A spreads (see `contrast`).
    """

    case_id: str
    group: str
    series: str
    kind: str
    label: str
    times: np.ndarray
    values: np.ndarray
    cut: int
    period: float
    step: float
    anomaly_start: float | None = None
    major: bool = False
    injection: str = ""
    limit: float | None = None
    contrast: float = float("nan")

    @property
    def released(self) -> float:
        return float(self.times[self.cut])

    @property
    def baseline(self) -> np.ndarray:
        return self.values[: self.cut]

    @property
    def candidate(self) -> np.ndarray:
        return self.values[self.cut :]


# --- loaders ---------------------------------------------------------------------------

_NAB_KINDS = (
    ("TravelTime", "latency"),
    ("cpu_utilization", "resource"),
    ("machine_temperature", "resource"),
    ("grok_asg_anomaly", "resource"),
    ("disk_write_bytes", "traffic"),
    ("network_in", "traffic"),
    ("nyc_taxi", "traffic"),
)
_MSFT_KINDS = {
    "application-crash-rate-1": "errors",
    "consumer-purchase-rate": "traffic",
    "data-ingress-rate": "traffic",
    "mongodb-application-rps": "traffic",
}


def load_nab(root: Path) -> list[Series]:
    """Every NAB series that `combined_windows.json` labels, with its windows."""
    folder = Path(root) / "nab"
    windows = json.loads((folder / "combined_windows.json").read_text(encoding="utf-8"))
    out = []
    for name in sorted(windows):
        kind = next((k for key, k in _NAB_KINDS if key in name), "level")
        times, values = _read_csv(folder / "data" / name, "timestamp", "value")
        spans = tuple((_stamp(a), _stamp(b)) for a, b in windows[name])
        out.append(Series("nab", name, kind, times, values, spans))
    return out


def load_msft(root: Path) -> list[Series]:
    """Every Microsoft cloud-monitoring series; runs of Label 1 are its anomaly windows."""
    folder = Path(root) / "msft_cloud_monitoring" / "data"
    out = []
    for path in sorted(folder.glob("*/*.csv")):
        times, values, labels = _read_csv(path, "TimeStamp", "Value", "Label")
        kind = _MSFT_KINDS.get(path.parent.name, "level")
        name = f"{path.parent.name}/{path.name}"
        out.append(Series("msft", name, kind, times, values, label_runs(times, labels)))
    return out


def load_tcpd(root: Path, *, min_annotators: int = 2, margin: int = 5) -> list[Series]:
    """Every TCPD series on an hourly clock; agreed change points are zero-length windows."""
    folder = Path(root) / "tcpd"
    annotations = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
    out = []
    for path in sorted(folder.glob("*/*.json")):
        name = path.stem
        raw = json.loads(path.read_text(encoding="utf-8"))["series"][0]["raw"]
        values = np.array([np.nan if v is None else float(v) for v in raw])
        times = np.arange(values.size) * TCPD_STEP
        points = consensus_change_points(annotations.get(name, {}), min_annotators, margin)
        spans = tuple((float(times[p]), float(times[p])) for p in points if p < values.size)
        out.append(Series("tcpd", name, "level", times, values, spans))
    return out


def load(root: Path | str, datasets: Sequence[str] = DATASETS) -> list[Series]:
    """The series of the named data sets, in a fixed order."""
    loaders = {"nab": load_nab, "msft": load_msft, "tcpd": load_tcpd}
    return [s for name in datasets for s in loaders[name](Path(root))]


def _stamp(text: str) -> float:
    """A timestamp as the data sets write it (naive means UTC)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _read_csv(path: Path, *columns: str) -> tuple[np.ndarray, ...]:
    """The named columns of a CSV, the first as timestamps and the rest as floats."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    times = np.array([_stamp(row[columns[0]]) for row in rows])
    # An empty cell is a missing sample.
    rest = [np.array([float(row[c]) if row[c].strip() else np.nan for row in rows]) for c in columns[1:]]
    order = np.argsort(times, kind="stable")
    return _deduplicated(times[order], *(r[order] for r in rest))


def _deduplicated(times: np.ndarray, values: np.ndarray, *labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """One sample per time (some files repeat an hour when clocks change): the mean of the
    repeated values, and a label set if any repeat was labelled.

    >>> _deduplicated(np.array([0.0, 1.0, 1.0]), np.array([5.0, 2.0, 4.0]), np.array([0.0, 0.0, 1.0]))
    (array([0., 1.]), array([5., 3.]), array([0., 1.]))
    """
    unique, first = np.unique(times, return_index=True)
    if unique.size == times.size:
        return (times, values, *labels)
    present = ~np.isnan(values)
    total = np.add.reduceat(np.where(present, values, 0.0), first)
    count = np.add.reduceat(present.astype(float), first)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
    return (unique, mean, *(np.maximum.reduceat(label, first) for label in labels))


def label_runs(times: np.ndarray, labels: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Consecutive labelled points as (first, last) time windows.

    >>> label_runs(np.arange(6.0), np.array([0, 1, 1, 0, 1, 0]))
    ((1.0, 2.0), (4.0, 4.0))
    """
    flagged = np.asarray(labels) > 0
    edges = np.diff(np.concatenate([[0], flagged.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return tuple((float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True))


def consensus_change_points(
    annotations: Mapping[str, Sequence[int]], min_annotators: int = 2, margin: int = 5
) -> list[int]:
    """Change points that at least `min_annotators` annotators marked within `margin` indices.

    Points are grouped greedily from the left (a group spans at most `margin` indices); a
    group counts when enough distinct annotators are in it, and stands for its median.

    >>> consensus_change_points({"1": [10, 50], "2": [12], "3": [80]})
    [11]
    """
    marks = sorted((int(p), who) for who, points in annotations.items() for p in points)
    out: list[int] = []
    i = 0
    while i < len(marks):
        j = i
        while j + 1 < len(marks) and marks[j + 1][0] - marks[i][0] <= margin:
            j += 1
        group = marks[i : j + 1]
        if len({who for _, who in group}) >= min_annotators:
            out.append(int(np.median([p for p, _ in group])))
            i = j + 1
        else:
            i += 1
    return out


# --- cases -----------------------------------------------------------------------------


def case_shape(dataset: str, step: float) -> Shape:
    """Baseline of about a day (a week for hourly data) and a checking period of about 6 h.

    Both are counted in samples and clipped so that every data rate gets a usable case:
    at most 1,440 baseline samples, 24 to 72 candidate samples. TCPD's short yearly or
    monthly series get 60 baseline samples (at least 24) and a 24-sample period.
    """
    if dataset == "tcpd":
        return Shape(baseline=60, min_baseline=24, period=24)
    baseline = int(np.clip(round(86400.0 / step), 168, 1440))
    period = int(np.clip(round(6 * 3600.0 / step), 24, 72))
    return Shape(baseline=baseline, min_baseline=baseline // 2, period=period)


def series_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator per (seed, series, purpose), stable across runs and Python versions."""
    return np.random.default_rng([seed, *(zlib.crc32(p.encode()) for p in parts)])


def anomalous(series: Series) -> np.ndarray:
    """Per sample: inside a labelled anomaly window (ends included)."""
    flagged = np.zeros(series.times.size, dtype=bool)
    for start, end in series.anomalies:
        flagged |= (series.times >= start) & (series.times <= end)
    return flagged


def _healthy_run_before(flagged: np.ndarray, cut: int, longest: int) -> int:
    """How many samples right before `cut` are free of anomalies (at most `longest`)."""
    window = flagged[max(0, cut - longest) : cut][::-1]
    hits = np.flatnonzero(window)
    return int(hits[0]) if hits.size else int(window.size)


def _candidate_end(series: Series, cut: int, period: float) -> int:
    """One past the last sample before the end of the checking period."""
    return int(np.searchsorted(series.times, series.times[cut] + period - 1e-6, side="left"))


def _case(series: Series, group: str, label: str, cut: int, baseline: int, shape: Shape,
          anomaly_start: float | None = None) -> Case:
    """A case over `baseline` samples before `cut` and the checking period after it."""
    step = series.step
    period = shape.period * step
    end = _candidate_end(series, cut, period)
    part = slice(cut - baseline, end)
    return Case(
        case_id=f"{group}:{series.name}@{cut}", group=group, series=series.name,
        kind=series.kind, label=label, times=series.times[part].copy(),
        values=series.values[part].copy(), cut=baseline, period=period, step=step,
        anomaly_start=anomaly_start,
    )


def release_cuts(series: Series, *, seed: int, max_null: int) -> list[Case]:
    """Bad cuts (every labelled start, at T and a third into the period) and null cuts.

    Null cuts sit on a grid one period apart (seeded phase); at most `max_null` of them,
    a seeded choice. A cut needs at least `min_baseline` healthy samples before it.
    """
    shape = case_shape(series.dataset, series.step)
    flagged = anomalous(series)
    return (_bad_cuts(series, shape, flagged)
            + _null_cuts(series, shape, flagged, series_rng(seed, series.name, "null"), max_null))


def _bad_cuts(series: Series, shape: Shape, flagged: np.ndarray) -> list[Case]:
    out: list[Case] = []
    seen: set[int] = set()
    for start, _ in series.anomalies:
        begin = int(np.searchsorted(series.times, start, side="left"))
        for offset in (0, shape.period // 3):
            cut = begin - offset
            if cut in seen or cut < shape.min_baseline:
                continue
            end = _candidate_end(series, cut, shape.period * series.step)
            baseline = _healthy_run_before(flagged, cut, shape.baseline)
            # An anomaly already under way at T belongs to neither release: skip the cut.
            if end - cut < shape.period or baseline < shape.min_baseline or flagged[cut:begin].any():
                continue
            seen.add(cut)
            out.append(_case(series, series.dataset, "bad", cut, baseline, shape,
                             float(series.times[begin])))
    return out


def _null_cuts(series: Series, shape: Shape, flagged: np.ndarray, rng: np.random.Generator,
               max_null: int) -> list[Case]:
    phase = int(rng.integers(shape.period))
    grid = np.arange(shape.baseline + phase, series.times.size - shape.period, shape.period)
    usable = []
    for cut in grid:
        end = _candidate_end(series, int(cut), shape.period * series.step)
        baseline = _healthy_run_before(flagged, int(cut), shape.baseline)
        if end - cut >= shape.period and baseline >= shape.min_baseline and not flagged[cut:end].any():
            usable.append((int(cut), baseline))
    if len(usable) > max_null:
        keep = np.sort(rng.choice(len(usable), size=max_null, replace=False))
        usable = [usable[k] for k in keep]
    return [_case(series, series.dataset, "null", cut, base, shape) for cut, base in usable]


def aa_cases(series: Series, *, seed: int, count: int) -> list[Case]:
    """A/A releases: a healthy baseline and the adjacent window, a period clear of labels
    on either side; resource series are judged a second time as memory (with a leak rule)."""
    shape = case_shape(series.dataset, series.step)
    flagged = anomalous(series)
    margin = shape.period
    rng = series_rng(seed, series.name, "aa")
    near = np.convolve(flagged.astype(float), np.ones(2 * margin + 1), mode="same") > 0
    # Flagged samples before each index, so "any flag in [a, b)" is one subtraction.
    before = np.concatenate([[0], np.cumsum(near)])
    first = np.arange(shape.baseline, series.times.size - shape.period - margin)
    clear = before[first + shape.period] - before[first - shape.baseline] == 0
    cuts = [int(c) for c in first[clear]]
    if len(cuts) > count:
        cuts = sorted(int(c) for c in rng.choice(cuts, size=count, replace=False))
    out = [_case(series, "aa", "null", cut, shape.baseline, shape) for cut in cuts]
    if series.kind == "resource":
        out += [replace(case, case_id=case.case_id + "/memory", kind="memory",
                        limit=leak_limit(case.baseline)) for case in out]
    return out


# --- injected regressions --------------------------------------------------------------


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, max(|median|, MAD-based sd)) of the valid values: the size unit of injections."""
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return 0.0, 1.0
    median = float(np.median(valid))
    sd = float(np.median(np.abs(valid - median)) * _MAD_TO_SD)
    scale = max(abs(median), sd)
    return median, scale if scale > 0 else max(float(np.std(valid)), 1.0)


def leak_limit(baseline: np.ndarray) -> float:
    """The memory limit of a leak case: LEAK_LIMIT_SCALES scales above the baseline median."""
    median, scale = robust_scale(baseline)
    return median + LEAK_LIMIT_SCALES * scale


@dataclass(frozen=True)
class Recipe:
    """One injected regression: what is added, how large, and which way."""

    name: str
    size: float

    def label(self, sign: float) -> str:
        arrow = "-" if sign < 0 else "+"
        return f"{self.name}{arrow}{self.size * 100:g}%"


def recipes_for(kind: str) -> list[Recipe]:
    """Regressions that make sense for a kind of signal (leaks only for memory-like hosts)."""
    out = [Recipe("level", s) for s in LEVEL_SIZES] + [Recipe("ramp", s) for s in RAMP_SIZES]
    if kind == "errors":
        out += [Recipe("errors", s) for s in ERROR_SIZES]
    if kind == "resource":
        out += [Recipe("leak", s) for s in LEAK_SIZES]
    return out


def inject(case: Case, recipe: Recipe, *, start: int, sign: float, rng: np.random.Generator) -> Case:
    """The null case with `recipe` added to its candidate from candidate sample `start` on.

    level: + size x scale from the start; ramp: rising linearly to size x scale at the
    period's end; errors: extra Poisson events at size x the baseline mean per sample
    (multiplied by 1 + size when the series is not counts); leak: a linear rise of size x
    scale per checking period, judged as memory against `leak_limit`. Non-negative series
    stay non-negative.
    """
    median, scale = robust_scale(case.baseline)
    values = case.values.copy()
    at = case.cut + start
    elapsed = case.times[at:] - case.times[at]
    # Ramps reach their full size at the last candidate sample.
    remaining = max(float(case.times[-1] - case.times[at]), case.step)
    effect, kind, limit = _added(case, recipe, elapsed, remaining, scale, sign, rng, values[at:])
    values[at:] += effect
    if np.nanmin(case.values) >= 0:
        values = np.maximum(values, 0.0)
    # What was really added (a drop stops at zero) decides whether it is major.
    effect = np.nan_to_num(values[at:] - case.values[at:])
    major, limit = _is_major(recipe, effect, scale, limit, median, case.period)
    return replace(
        case, case_id=f"{case.case_id}/{recipe.label(sign)}@{start}", group="injected",
        label="bad", kind=kind, values=values, anomaly_start=float(case.times[at]),
        major=major, injection=recipe.label(sign), limit=limit,
        contrast=contrast(case.baseline, effect),
    )


def contrast(baseline: np.ndarray, effect: np.ndarray) -> float:
    """How far an injected change stands out of the series' own wandering: its mean over
    the samples after its start, in RMS distances of the baseline's healthy windows of as
    many samples from the baseline's median (raw values, no daily profile taken out).

    Under about 2, healthy windows of that series often stray as far as the change, so a
    judge that keeps false alarms rare catches few such changes (see `reference_power`).
    """
    valid = effect[~np.isnan(effect)]
    if valid.size == 0:
        return float("nan")
    spread = float(spread_at(window_spreads(baseline[None, :]), np.array([valid.size]))[0])
    size = abs(float(np.mean(valid)))
    return size / spread if spread > 0 else (float("inf") if size > 0 else 0.0)


def one_look_z(case: Case) -> float:
    """A plain test's statistic at the period's end: the candidate's median less the
    baseline's, in the A/A spreads that `contrast` uses (at the candidate's count of valid
    samples), upwards, or either way (its size) for a kind judged both ways. Null and bad
    cases alike; NaN where the candidate has no samples or the baseline no spread."""
    candidate = case.candidate[~np.isnan(case.candidate)]
    baseline = case.baseline[~np.isnan(case.baseline)]
    if candidate.size == 0 or baseline.size == 0:
        return float("nan")
    spread = float(spread_at(window_spreads(case.baseline[None, :]), np.array([candidate.size]))[0])
    change = float(np.median(candidate) - np.median(baseline))
    if case.kind in EITHER_WAY_KINDS:
        change = abs(change)
    return change / spread if spread > 0 else float("nan")


def reference_power(kind: str, contrast: float, false_alarms: float = 0.05) -> float:
    """How often a reference test catches a change of this contrast: one look at the end,
    Gaussian noise whose sd is the contrast's spread, held to `false_alarms` (both tails
    for a signal judged either way). A yardstick of how visible a change is, not a bound:
    the spread is one of window medians, wider than a mean's, and a test that knows when a
    change began can do better.

    >>> round(reference_power("latency", 1.645), 3), round(reference_power("traffic", 1.96), 3)
    (0.5, 0.5)
    """
    if np.isnan(contrast):
        return float("nan")
    tails = 2 if kind in EITHER_WAY_KINDS else 1
    return float(stats.norm.cdf(contrast - stats.norm.isf(false_alarms / tails)))


def _added(case: Case, recipe: Recipe, elapsed: np.ndarray, remaining: float, scale: float,
           sign: float, rng: np.random.Generator, tail: np.ndarray
           ) -> tuple[np.ndarray, str, float | None]:
    """The values added to the candidate's tail, the kind to judge it as, and any limit."""
    if recipe.name == "level":
        return np.full(elapsed.size, sign * recipe.size * scale), case.kind, None
    if recipe.name == "ramp":
        return sign * recipe.size * scale * np.minimum(elapsed / remaining, 1.0), case.kind, None
    if recipe.name == "errors":
        base = case.baseline[~np.isnan(case.baseline)]
        if base.size and np.all(base == np.round(base)):
            extra = rng.poisson(recipe.size * max(float(np.mean(base)), 1.0), size=elapsed.size)
            return extra.astype(float), case.kind, None
        return recipe.size * np.nan_to_num(tail), case.kind, None
    rise = recipe.size * scale / case.period
    return rise * elapsed, "memory", leak_limit(case.baseline)


def _is_major(recipe: Recipe, effect: np.ndarray, scale: float, limit: float | None,
              median: float, period: float) -> tuple[bool, float | None]:
    """Major: averages MAJOR_EFFECT scales after the start, or a leak that reaches its
    limit within LEAK_HORIZON of its start."""
    if recipe.name == "leak" and limit is not None:
        slope = recipe.size * scale / period
        return (limit - median) / slope <= LEAK_HORIZON, limit
    mean_effect = float(np.mean(np.abs(effect))) / scale if effect.size else 0.0
    return mean_effect >= MAJOR_EFFECT - 1e-9, None


def _can_fall(case: Case, recipe: Recipe) -> bool:
    """Worse-either-way signals may drop, when their level stands well above zero."""
    if case.kind not in EITHER_WAY_KINDS or recipe.name not in ("level", "ramp"):
        return False
    median, scale = robust_scale(case.baseline)
    return median > 0 and median >= scale


def injected_cases(nulls: Sequence[Case], series: Series, *, seed: int, cuts: int) -> list[Case]:
    """Every recipe for the series' kind on up to `cuts` of its null cuts (seeded choice),
    starting at T or a third into the period, upwards for 'increase' rules and either way
    (seeded) for 'both'."""
    rng = series_rng(seed, series.name, "inject")
    pool = [c for c in nulls if c.series == series.name]
    if len(pool) > cuts:
        pool = [pool[k] for k in np.sort(rng.choice(len(pool), size=cuts, replace=False))]
    out = []
    for case in pool:
        shape = case_shape(series.dataset, series.step)
        for recipe in recipes_for(series.kind):
            start = int(rng.choice([0, shape.period // 3]))
            sign = float(rng.choice([-1.0, 1.0])) if _can_fall(case, recipe) else 1.0
            out.append(inject(case, recipe, start=start, sign=sign, rng=rng))
    return out


def build_cases(series: Iterable[Series], *, seed: int = 0, max_null: int = 10,
                inject_cuts: int = 3, aa_per_series: int = 5) -> dict[str, list[Case]]:
    """All cases, grouped as the report's rows: each data set, then injected and aa."""
    groups: dict[str, list[Case]] = {}
    for s in series:
        real = release_cuts(s, seed=seed, max_null=max_null)
        groups.setdefault(s.dataset, []).extend(real)
        nulls = [c for c in real if c.label == "null"]
        groups.setdefault("injected", []).extend(
            injected_cases(nulls, s, seed=seed, cuts=inject_cuts))
        groups.setdefault("aa", []).extend(aa_cases(s, seed=seed, count=aa_per_series))
    order = [*DATASETS, "injected", "aa"]
    return {name: groups[name] for name in order if name in groups}
