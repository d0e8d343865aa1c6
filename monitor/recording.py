"""Recordings: CSV files of raw samples, `timestamp,release,signal,value[,target]`.

A recording replays a past release through the same evaluation core as the daemon, so a
policy can be tried on past incidents before it is trusted with a rollback.

A service read by PromQL has no raw samples in the monitor, only the signals its queries
answer: those are recorded as they were judged, each on its own series
(`promql_signal{name="error_ratio"}`, and a ratio's counts per step on
`promql_events{...}` and `promql_trials{...}`), and read back by name (`recorded_frame`).
"""

from __future__ import annotations

import csv
import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from baselines.frame import SignalFrame, measured
from monitor.errors import RecordingError
from monitor.exposition import format_key, split_key
from monitor.files import written_whole
from monitor.policy import SignalRule
from monitor.redact import printable
from monitor.signals import RawSeries

# A replay holds every series at every scrape of a release (8 bytes each). A file whose
# rows fill few of those cells (each row a series and a time of its own) would need
# gigabytes for a few hundred KB: past MAX_CELLS (400 MB), at most SPARSENESS cells per
# row (series labelled by pod are as sparse as there are pods).
MAX_CELLS = 50_000_000
SPARSENESS = 20

HEADER = ("timestamp", "release", "signal", "value", "target")
# A recording without the target column is one target's (the file stands for it).
SHORT_HEADER = HEADER[:4]
LATEST_TIME = 4102444800.0  # 2100-01-01T00:00:00Z
# Units that exports write times in by mistake; a hint names the first that fits.
_FINER_UNITS = (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))
# As strict as Prometheus: no digit separators, hex floats or non-ASCII digits.
# One way only to match each digit: `\d+\.?\d*` would try every split of a long run of
# digits, for minutes on a cell of 100,000.
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|NaN|[Ii]nf)$")
_SPECIAL = {"NaN": math.nan, "Inf": math.inf, "inf": math.inf}
# The series of a signal read by PromQL (its frame's values, events and trials), and the
# target column of their rows.
_PROMQL_SERIES = ("promql_signal", "promql_events", "promql_trials")
PROMQL_TARGET = "promql"


@dataclass(frozen=True)
class Recording:
    path: str
    releases: tuple[str, ...]            # in order of their first sample
    series: dict[str, RawSeries]         # release -> its raw samples

    def first_sample(self, release: str) -> float:
        return float(self.series[release].times[0])


def parse_number(text: str) -> float:
    """A float as Prometheus's parser accepts it; ValueError otherwise."""
    text = text.strip()
    if not _NUMBER.match(text) or not text.isascii():
        raise ValueError(f"not a number: {_brief(text)}")
    sign = -1.0 if text.startswith("-") else 1.0
    bare = text.lstrip("+-")
    if bare in _SPECIAL:
        return sign * _SPECIAL[bare]
    value = float(text)
    if math.isinf(value):   # 1e400: out of range, as the scrape parser says of it
        raise ValueError(f"value {_brief(text)} is out of range")
    return value


def parse_timestamp(text: str) -> float:
    """Unix seconds, or ISO 8601 (a time without a zone is taken as UTC), from 1970 to 2100."""
    text = text.strip()
    try:
        seconds = parse_number(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"not a finite time: {_brief(text)}")
        return _in_range(seconds, text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a unix time or ISO 8601 time: {_brief(text)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _in_range(moment.timestamp(), text)


def _in_range(seconds: float, text: str) -> float:
    # A time outside these years is a unit mistake (milliseconds, say), not a sample.
    if not 0.0 <= seconds < LATEST_TIME:
        units = [unit for unit, per_second in _FINER_UNITS if 0.0 < seconds / per_second < LATEST_TIME]
        hint = f" ({units[0]}?)" if units else ""
        raise ValueError(f"time {_brief(text)} is not between 1970 and 2100 in unix seconds{hint}")
    return seconds


def load_recording(path: str | Path) -> Recording:
    """Read a recording; any bad line is one RecordingError naming the file and line."""
    name = str(path)
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = _read(name, reader)
    except OSError as exc:
        raise RecordingError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{name}: not UTF-8 text") from None
    except csv.Error as exc:
        where = f"line {reader.line_num}: " if reader is not None else ""
        raise RecordingError(f"{name}: {where}not CSV: {exc}") from None
    if not rows.line:
        raise RecordingError(f"{name}: no samples")
    return _assemble(name, rows)


# Times already parsed, by their text: the rows of one scrape share it. Bounded, for a
# file whose every row has a time of its own.
_STAMPS_KEPT = 65_536


class _Rows:
    """A recording's rows as columns: numbers in arrays, each name once (a list of row
    tuples would hold several times the file's size)."""

    def __init__(self) -> None:
        self.times, self.values = array("d"), array("d")
        # Ids in 32 bits: a recording with more names than that would not fit in memory.
        self.release, self.signal, self.target = array("i"), array("i"), array("i")
        self.line = array("q")
        self.releases: dict[str, int] = {}
        self.signals: dict[str, int] = {}
        self.targets: dict[str, int] = {}

    def add(self, at: float, release: str, signal: str, value: float, target: str,
            line: int) -> None:
        self.times.append(at)
        self.values.append(value)
        self.release.append(self.releases.setdefault(release, len(self.releases)))
        self.signal.append(self.signals[signal])
        self.target.append(self.targets.setdefault(target, len(self.targets)))
        self.line.append(line)


def _read(name: str, reader: Iterable[list[str]]) -> _Rows:
    rows = _Rows()
    width = len(HEADER)
    stamps: dict[str, float] = {}
    for number, row in enumerate(reader, start=1):
        if number == 1:
            header = tuple(cell.strip().lower() for cell in row)
            if header not in (HEADER, SHORT_HEADER):
                raise RecordingError(f"{name}: line 1: header must be {','.join(HEADER)} "
                                     "(target may be left out)")
            width = len(header)
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise RecordingError(f"{name}: line {number}: expected {width} fields, got {len(row)}")
        stamp, release, signal, value = row[:4]
        target = row[4].strip() if width == len(HEADER) else name
        signal = signal.strip()
        try:
            at = stamps.get(stamp)
            if at is None:
                at = parse_timestamp(stamp)
                if len(stamps) >= _STAMPS_KEPT:
                    stamps.clear()
                stamps[stamp] = at
            number_value = parse_number(value)
            if signal not in rows.signals:
                split_key(signal)
                rows.signals[signal] = len(rows.signals)
        except ValueError as exc:
            raise RecordingError(f"{name}: line {number}: {exc}") from None
        except Exception:
            raise RecordingError(f"{name}: line {number}: bad signal {_brief(signal)}") from None
        release = release.strip()
        if not release:
            raise RecordingError(f"{name}: line {number}: empty release")
        rows.add(at, release, signal, number_value, target, number)
    return rows


def _brief(text: str) -> str:
    """A cell quoted in an error: one line, and short (a cell may be 100 KB)."""
    return repr(printable(text, limit=60))


def _ranks(names: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """The names in sorted order, and each id's place in it."""
    ordered = sorted(names)
    place = np.empty(len(names), dtype=np.int64)
    place[[names[n] for n in ordered]] = np.arange(len(ordered))
    return ordered, place


def _assemble(name: str, rows: _Rows) -> Recording:
    keys, key_row = _ranks(rows.signals)
    targets, target_rank = _ranks(rows.targets)
    release_names = list(rows.releases)
    times = np.frombuffer(rows.times, dtype=np.float64)
    values = np.frombuffer(rows.values, dtype=np.float64)
    lines = np.frombuffer(rows.line, dtype=np.int64)
    signal_ids = np.frombuffer(rows.signal, dtype=np.int32)
    target_ids = np.frombuffer(rows.target, dtype=np.int32)
    release = np.frombuffer(rows.release, dtype=np.int32)
    by_release = np.argsort(release, kind="stable")
    bounds = np.searchsorted(release[by_release], np.arange(len(release_names) + 1))
    series: dict[str, RawSeries] = {}
    repeats: list[tuple[int, int, int]] = []   # (a line repeating a sample, its first, row)
    for index, label in enumerate(release_names):
        picked = by_release[bounds[index]:bounds[index + 1]]
        at, target = times[picked], target_rank[target_ids[picked]]
        # One column per scrape: a moment and the target scraped then.
        order = np.lexsort((target, at))
        new = np.ones(order.size, dtype=bool)
        new[1:] = (np.diff(at[order]) != 0) | (np.diff(target[order]) != 0)
        column = np.empty(order.size, dtype=np.int64)
        column[order] = np.cumsum(new) - 1
        scrapes = int(new.sum())
        cells = len(keys) * scrapes
        if cells > MAX_CELLS and cells > SPARSENESS * picked.size:
            raise RecordingError(
                f"{name}: release {_brief(label)} has {picked.size} samples of "
                f"{len(keys)} series over {scrapes} scrapes, too sparse to replay "
                f"({cells:,} values to hold): does every row have a series, time or target of its own?")
        cell = key_row[signal_ids[picked]] * scrapes + column
        repeat = _first_repeat(cell, lines[picked])
        if repeat is not None:
            repeats.append((*repeat[:2], int(picked[repeat[2]])))
            continue
        held = np.full((len(keys), scrapes), np.nan)
        held.reshape(-1)[cell] = values[picked]
        series[label] = RawSeries(tuple(keys), at[order][new],
                                  tuple(targets[t] for t in target[order][new]), held)
    if repeats:
        line, first, row = min(repeats)
        raise RecordingError(
            f"{name}: line {line}: a second value of {_brief(keys[key_row[signal_ids[row]]])} at "
            f"{float(times[row])!r} (the first is on line {first})")
    order_of = tuple(sorted(series, key=lambda r: series[r].times[0]))
    return Recording(name, order_of, series)


def _first_repeat(cell: np.ndarray, line: np.ndarray) -> tuple[int, int, int] | None:
    """The first line (in the file's order) that gives a cell a second value, the line of
    that cell's first value, and the repeating row's place in `cell`; None when every
    cell has one value."""
    order = np.argsort(cell, kind="stable")   # equal cells stay in the file's order
    ordered = cell[order]
    again = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if again.size == 0:
        return None
    at = again[np.argmin(line[order][again])]
    start = np.searchsorted(ordered, ordered[at])
    return int(line[order][at]), int(line[order][start]), int(order[at])


def write_recording(path: str | Path, samples: dict[str, RawSeries]) -> int:
    """Write raw samples of one or more releases; returns the number of rows written."""
    count = 0
    try:
        with written_whole(path) as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for release, raw in samples.items():
                for column, (at, target) in enumerate(zip(raw.times, raw.targets, strict=True)):
                    for row, key in enumerate(raw.keys):
                        value = raw.values[row, column]
                        if not np.isnan(value):
                            writer.writerow((repr(float(at)), release, key, repr(float(value)),
                                             target))
                            count += 1
    except OSError as exc:
        raise RecordingError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return count


def frame_as_samples(frame: SignalFrame) -> RawSeries:
    """A frame of signals read by PromQL as the raw samples a recording holds: each
    signal's values, and a ratio's events and trials, on series named after it."""
    keys, rows = [], []
    for row, name in enumerate(frame.names):
        for metric, block in zip(_PROMQL_SERIES, (frame.values, frame.events, frame.trials),
                                 strict=True):
            if np.any(~np.isnan(block[row])):
                keys.append(format_key(metric, {"name": name}))
                rows.append(block[row])
    values = np.array(rows) if rows else np.full((0, frame.times.size), np.nan)
    return RawSeries(tuple(keys), frame.times, (PROMQL_TARGET,) * frame.times.size, values)


def queried(raw: RawSeries) -> bool:
    """Whether samples are signals recorded from PromQL queries (`frame_as_samples`)."""
    return bool(raw.keys) and all(
        split_key(key)[0] in _PROMQL_SERIES for key in raw.keys)


def recorded_signals(raw: RawSeries) -> set[str]:
    """The names of the signals `frame_as_samples` recorded."""
    return {split_key(key)[1].get("name", "") for key in raw.keys}


def recorded_frame(rules: Sequence[SignalRule], raw: RawSeries) -> SignalFrame:
    """The frame that `frame_as_samples` recorded, one row per rule (NaN where the
    recording has nothing of it): what a service read by PromQL was judged on."""
    row_of = {key: index for index, key in enumerate(raw.keys)}
    shape = (len(rules), raw.times.size)
    values, events, trials = blocks = [np.full(shape, np.nan) for _ in _PROMQL_SERIES]
    for index, rule in enumerate(rules):
        for metric, block in zip(_PROMQL_SERIES, blocks, strict=True):
            found = row_of.get(format_key(metric, {"name": rule.name}))
            if found is not None:
                block[index] = raw.values[found]
    return SignalFrame(tuple(rule.name for rule in rules), raw.times, measured(values),
                       measured(events), measured(trials))
