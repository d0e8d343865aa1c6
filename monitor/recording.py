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
            rows = list(_rows(name, reader))
    except OSError as exc:
        raise RecordingError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{name}: not UTF-8 text") from None
    except csv.Error as exc:
        where = f"line {reader.line_num}: " if reader is not None else ""
        raise RecordingError(f"{name}: {where}not CSV: {exc}") from None
    if not rows:
        raise RecordingError(f"{name}: no samples")
    return _assemble(name, rows)


_Row = tuple[float, str, str, float, str]


def _rows(name: str, reader: Iterable[list[str]]) -> Iterable[_Row]:
    width = len(HEADER)
    seen: dict[tuple[float, str, str, str], int] = {}
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
        try:
            at = parse_timestamp(stamp)
            number_value = parse_number(value)
            split_key(signal.strip())
        except ValueError as exc:
            raise RecordingError(f"{name}: line {number}: {exc}") from None
        except Exception:
            raise RecordingError(f"{name}: line {number}: bad signal {_brief(signal)}") from None
        if not release.strip():
            raise RecordingError(f"{name}: line {number}: empty release")
        sample = (at, release.strip(), signal.strip(), target)
        if sample in seen:
            raise RecordingError(f"{name}: line {number}: a second value of {_brief(signal.strip())} "
                                 f"at {stamp.strip()} (the first is on line {seen[sample]})")
        seen[sample] = number
        yield at, release.strip(), signal.strip(), number_value, target


def _brief(text: str) -> str:
    """A cell quoted in an error: one line, and short (a cell may be 100 KB)."""
    return repr(printable(text, limit=60))


def _assemble(name: str, rows: list[_Row]) -> Recording:
    keys = sorted({signal for _, _, signal, _, _ in rows})
    key_row = {key: index for index, key in enumerate(keys)}
    by_release: dict[str, list[tuple[float, str, float, str]]] = {}
    for at, release, signal, value, target in rows:
        by_release.setdefault(release, []).append((at, signal, value, target))
    series = {}
    for release, samples in by_release.items():
        # One column per scrape: a moment and the target scraped then.
        scrapes = sorted({(at, target) for at, _, _, target in samples})
        cells = len(keys) * len(scrapes)
        if cells > MAX_CELLS and cells > SPARSENESS * len(samples):
            raise RecordingError(
                f"{name}: release {_brief(release)} has {len(samples)} samples of "
                f"{len(keys)} series over {len(scrapes)} scrapes, too sparse to replay "
                f"({cells:,} values to hold): does every row have a series, time or target of its own?")
        column = {scrape: index for index, scrape in enumerate(scrapes)}
        values = np.full((len(keys), len(scrapes)), np.nan)
        for at, signal, value, target in samples:
            values[key_row[signal], column[at, target]] = value
        series[release] = RawSeries(tuple(keys), np.array([at for at, _ in scrapes]),
                                    tuple(target for _, target in scrapes), values)
    order = tuple(sorted(series, key=lambda r: series[r].times[0]))
    return Recording(name, order, series)


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
