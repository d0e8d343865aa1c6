"""Fuzzed inputs (hypothesis, derandomized): each loader fails only with its own error.

- the policy loader, on arbitrary text, TOML-ish lines and policy-shaped tables written
  as TOML, raises nothing but ConfigError;
- the scrape path (parse, then series ids and a stored scrape in an in-memory store)
  raises nothing but ScrapeError, and what it stores reads back bit for bit, NaN and
  infinities included, under the keys an independent writer expects;
- the recording loader, on arbitrary and on CSV-shaped text, raises nothing but
  RecordingError, and reads back every value of a recording made only of valid rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import struct
import tempfile
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import ConfigError, RecordingError, ScrapeError
from monitor.exposition import parse
from monitor.policy import parse_policy
from monitor.recording import LATEST_TIME, load_recording
from monitor.store import Store

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FUZZ_FEWER = settings(FUZZ, max_examples=60)  # each example writes SQLite or a file

# -- the policy --------------------------------------------------------------------------------

MONITOR_KEYS = ("listen", "database", "retention", "api_token_env")
SERVICE_KEYS = ("version_metric", "version_label", "evaluation_interval", "persistence",
                "baselines", "baseline_window", "leak_horizon", "leak_block")
TARGET_KEYS = ("url", "interval", "timeout", "max_bytes")
SIGNAL_KEYS = ("kind", "metric", "numerator", "denominator", "quantile", "aggregate", "query",
               "numerator_query", "denominator_query", "bad", "ignore_below", "tolerance",
               "absolute", "critical", "min_samples", "min_events", "min_trials",
               "must_have_data", "leak", "limit", "limit_metric")
PROBE_KEYS = ("name", "url", "expect_status", "expect_body", "max_latency")
VERIFY_KEYS = ("name", "argv", "timeout")
HOOK_KEYS = ("name", "on", "url", "command", "timeout", "budget", "dry_run")
PROMETHEUS_KEYS = ("url", "tenant", "bearer_token_env", "bearer_token_file", "basic_user",
                   "basic_password_env", "basic_password_file", "timeout", "step", "retries")
TABLE_HEADERS = ("[monitor]", "[services.shop]", "[[services.shop.targets]]",
                 "[services.shop.signals.latency]", "[services.shop.period]",
                 "[services.shop.prometheus]", "[[services.shop.hooks]]",
                 "[[services.shop.smoke]]", "[[services.shop.verify]]", '[services."a b"]')
ALL_KEYS = tuple(dict.fromkeys(MONITOR_KEYS + SERVICE_KEYS + TARGET_KEYS + SIGNAL_KEYS
                               + PROBE_KEYS + VERIFY_KEYS + HOOK_KEYS + PROMETHEUS_KEYS
                               + ("minor", "major")))
# Values that get past the type checks, so the fuzzing reaches the deeper rules too.
PLAUSIBLE: tuple[Any, ...] = ("15s", "1h30m", "0s", "2.5m", "9" * 40 + "h", "http://127.0.0.1:9/metrics",
             "https://prom:9090", "ftp://x", "gauge", "rate", "ratio", "quantile", "increase",
             "decrease", "both", "sum", "max", "minor", "major", "rollback", "pass",
             'http_requests_total{code="500"}', "up{", "127.0.0.1:9847", "[::1]:80", "[]:80",
             "h:\u00b2", "h:\u0661\u0662", "0.0.0.0:1", "", " ", 0, 1, -1, 2, 0.5, 1e400, 10**30,
             -(10**30), math.nan, math.inf, -math.inf, -0.0, True, False, ["rollback"],
             ["python", "-c", "pass"], [], [1, "x"], {"a": 1})


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    def escape(char: str) -> str:
        if char in '"\\':
            return "\\" + char
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"\\u{ord(char):04x}"
        return char
    return '"' + "".join(escape(c) for c in text) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_dump(table: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """A tiny TOML writer: plain keys first, then sub-tables and arrays of tables."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()
             if not isinstance(v, dict) and not _is_table_list(v)]
    for key, value in table.items():
        inner = (*path, toml_key(key))
        if isinstance(value, dict):
            lines += [f"[{'.'.join(inner)}]", toml_dump(value, inner)]
        elif _is_table_list(value):
            for item in value:
                lines += [f"[[{'.'.join(inner)}]]", toml_dump(item, inner)]
    return "\n".join(lines)


def same(a: Any, b: Any) -> bool:
    """Equality that takes NaN as equal to NaN and tells 1 from 1.0 and True."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def parses_or_config_error(text: str) -> None:
    try:
        parse_policy(text, "fuzz.toml")
    except ConfigError as error:
        assert "\n" not in str(error).strip() or "invalid TOML" in str(error)


names = st.text(max_size=8)
scalars = st.one_of(st.booleans(), st.integers(), st.integers(-(2**80), 2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(PLAUSIBLE))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(names, inner, max_size=3), max_leaves=6)


def table_of(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly the keys that belong here, with plausible or random values; now and then not."""
    key = st.sampled_from(keys) | names
    return st.dictionaries(key, st.sampled_from(PLAUSIBLE) | values, max_size=6)


service_tables = st.fixed_dictionaries({}, optional={
    "targets": st.lists(table_of(TARGET_KEYS), max_size=2) | values,
    "signals": st.dictionaries(names, table_of(SIGNAL_KEYS) | values, max_size=2),
    "period": table_of(("minor", "major")),
    "smoke": st.lists(table_of(PROBE_KEYS), max_size=2),
    "verify": st.lists(table_of(VERIFY_KEYS), max_size=2),
    "hooks": st.lists(table_of(HOOK_KEYS), max_size=2),
    "prometheus": table_of(PROMETHEUS_KEYS) | values,
}).flatmap(lambda fixed: table_of(SERVICE_KEYS).map(lambda extra: {**extra, **fixed}))
policies = st.fixed_dictionaries({}, optional={
    "monitor": table_of(MONITOR_KEYS),
    "services": st.dictionaries(st.sampled_from(["shop", "a.b", "9x", "s p"]) | names,
                                service_tables | values, max_size=2),
    "extra": values,
})


@FUZZ
@given(st.text())
def test_policy_on_arbitrary_text(text: str) -> None:
    parses_or_config_error(text)


toml_lines = st.one_of(
    st.sampled_from(TABLE_HEADERS),
    st.builds(lambda k, v: f"{toml_key(k)} = {toml_value(v)}", st.sampled_from(ALL_KEYS) | names,
              st.sampled_from(PLAUSIBLE) | values),
    st.text(max_size=20),
)


@FUZZ
@given(st.lists(toml_lines, max_size=14))
def test_policy_on_toml_ish_lines(lines: list[str]) -> None:
    parses_or_config_error("\n".join(lines))


@FUZZ
@given(policies)
def test_policy_on_policy_shaped_tables(policy: dict[str, Any]) -> None:
    text = toml_dump(policy)
    # The writer must be right, or the fuzzing would stop at the TOML parser.
    assert same(tomllib.loads(text), policy), text
    parses_or_config_error(text)


def test_the_policy_fuzzing_reaches_a_valid_policy() -> None:
    text = toml_dump({"monitor": {"listen": "127.0.0.1:9900"}, "services": {"shop": {
        "targets": [{"url": "http://127.0.0.1:9/metrics", "interval": "15s"}],
        "signals": {"latency": {"metric": "http_request_duration_seconds", "tolerance": 0.5}},
    }}})
    config = parse_policy(text)
    assert config.services["shop"].signals[0].tolerance == 0.5


def test_numbers_a_float_cannot_hold_are_config_errors() -> None:
    for text in ('[monitor]\nretention = 1' + "0" * 400, '[monitor]\nretention = nan',
                 '[monitor]\nretention = "' + "9" * 400 + 'h"', '[monitor]\nlisten = "h:\u00b2"',
                 "[services.a.signals.s]\nmetric = 'm'\nmin_samples = inf",
                 "a = " + "[" * 5000 + "]" * 5000):
        try:
            parse_policy(text)
        except ConfigError as error:
            # The number itself is named, not the services that the text lacks.
            assert "nothing to monitor" not in str(error), text[:60]
            continue
        raise AssertionError(f"accepted: {text[:60]!r}")


# -- the scrape path ---------------------------------------------------------------------------

metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_values = st.text(max_size=10) | st.sampled_from(['"', "\\", "\n", "a\\nb", "", "é"])
sample_values = st.floats(allow_nan=True, allow_infinity=True, width=64)


def escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def reference_key(name: str, labels: dict[str, str]) -> str:
    """The canonical key, written without the module under test: sorted, escaped, no empties."""
    kept = sorted((k, v) for k, v in labels.items() if v)
    if not kept:
        return name
    return name + "{" + ",".join(f'{k}="{escape(v)}"' for k, v in kept) + "}"


def spell(value: float, style: int) -> str:
    """One of the spellings the text format allows for `value`."""
    if math.isnan(value):
        return ("NaN", "nan", "NAN")[style % 3]
    if math.isinf(value):
        sign = "-" if value < 0 else ("+", "")[style % 2]
        return sign + ("Inf", "inf", "Infinity")[style % 3]
    if style % 3 == 1 and value == int(value) and abs(value) < 1e15:
        return ("-" if math.copysign(1, value) < 0 else "") + str(abs(int(value)))
    return (repr(value), f"{value:.17e}", f"{value:.17g}")[style % 3]


samples = st.tuples(metric_names, st.dictionaries(label_names, label_values, max_size=3),
                    sample_values, st.integers(0, 5), st.booleans())


def exposition(chosen: list[tuple[str, dict[str, str], float, int, bool]]) -> str:
    """Render samples as the text format, with optional TYPE lines, blanks and timestamps."""
    lines: list[str] = []
    typed: set[str] = set()
    for name, labels, value, style, timestamp in chosen:
        if style == 0 and name not in typed:
            typed.add(name)
            lines.append(f"# TYPE {name} untyped")
        pairs = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
        series = f"{name}{{{pairs}}}" if labels or style == 4 else name
        stamp = " 1767225600000" if timestamp else ""
        lines.append(f"{series}{' ' * (1 + style % 2)}{spell(value, style)}{stamp}")
    return "\n".join(lines) + ("\n" if chosen else "")


def stored_round_trip(store: Store, at: float, text: str) -> tuple[list[str], np.ndarray,
                                                                    np.ndarray, dict[int, str]]:
    """Parse and store one scrape; return its keys, parsed values, stored values and keys."""
    parsed = parse(text)
    ids = store.series_ids("fuzz", parsed.keys)
    store.write_scrape("fuzz", "127.0.0.1:9100", "v1", at, ids, parsed.values)
    window = store.read_window("fuzz", at, at + 0.5)
    rows = np.searchsorted(window.series_ids, ids)
    stored = window.values[rows, 0] if len(ids) else np.empty(0)
    keys = store.series_keys("fuzz")
    return parsed.keys, np.asarray(parsed.values), stored, {int(i): keys[int(i)] for i in ids}


def bits(values: np.ndarray) -> list[int]:
    return [struct.unpack("<q", struct.pack("<d", v))[0] for v in values.tolist()]


def test_scrape_path_on_arbitrary_text() -> None:
    store = Store.memory()
    instants = itertools.count()

    @FUZZ
    @given(st.text() | st.lists(st.sampled_from(["# TYPE a gauge", "a 1", 'a{b="c"} NaN', "a",
                                                   "a{", "# HELP", "a 1 2 3", "\t", "a +Inf"]))
           .map("\n".join))
    def check(text: str) -> None:
        try:
            _, parsed, stored, _ = stored_round_trip(store, float(next(instants)), text)
        except ScrapeError:
            return
        assert bits(stored) == bits(parsed)

    check()


def test_scrape_path_stores_what_was_served_exactly() -> None:
    store = Store.memory()
    instants = itertools.count()

    @FUZZ_FEWER
    @given(st.lists(samples, max_size=12,
                    unique_by=lambda s: reference_key(s[0], s[1])))
    def check(chosen: list[tuple[str, dict[str, str], float, int, bool]]) -> None:
        keys, parsed, stored, stored_keys = stored_round_trip(
            store, float(next(instants)), exposition(chosen))
        assert keys == [reference_key(name, labels) for name, labels, *_ in chosen]
        assert sorted(stored_keys.values()) == sorted(keys)
        assert bits(stored) == bits(parsed)  # NaN, infinities and -0.0 kept bit for bit
        for (_, _, value, _, _), got in zip(chosen, parsed.tolist(), strict=True):
            assert (math.isnan(value) and math.isnan(got)) or bits(np.array([value])) == bits(
                np.array([got]))

    check()


def test_scrape_round_trip_keeps_the_special_values() -> None:
    store = Store.memory()
    _, parsed, stored, _ = stored_round_trip(store, 5.0, "a NaN\nb +Inf\nc -Inf\nd -0.0\n")
    assert math.isnan(stored[0]) and stored[1] == math.inf and stored[2] == -math.inf
    assert math.copysign(1.0, stored[3]) == -1.0
    assert bits(stored) == bits(parsed)


# -- recordings --------------------------------------------------------------------------------

HEADER = ("timestamp", "release", "signal", "value")
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                  timezone(timedelta(hours=-8))]))
finite = st.floats(allow_nan=False, allow_infinity=False)
signal_keys = st.builds(reference_key, metric_names,
                        st.dictionaries(label_names, st.text(max_size=6), max_size=2))
releases = st.text(min_size=1, max_size=6).filter(lambda r: r.strip() == r and r.strip() != ""
                                                  and "\n" not in r and "\r" not in r)


def _stamp(choice: float | datetime) -> tuple[str, float]:
    if isinstance(choice, datetime):
        return choice.isoformat(), choice.timestamp()
    return repr(choice), choice


def _number(value: float, style: int) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return ("Inf", "+Inf", "inf")[style % 3] if value > 0 else "-Inf"
    return repr(value)


unix_times = st.floats(min_value=0.0, max_value=LATEST_TIME, exclude_max=True)
valid_rows = st.tuples(unix_times | moments, releases, signal_keys,
                       st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2))
junk_cells = st.text(max_size=8) | st.sampled_from(["1_0", "0x10", "\u0661", "nan", "Infinity",
                                                     "1e999", "2026-13-01", "", "up{", "-"])
junk_rows = st.lists(junk_cells | finite.map(repr), min_size=0, max_size=6)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def loads_or_recording_error(folder: Path, content: str | bytes) -> None:
    path = folder / "fuzz.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    try:
        load_recording(path)
    except RecordingError as error:
        assert "\n" not in str(error)


def test_recording_on_arbitrary_text_and_bytes() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        @FUZZ
        @given(st.text() | st.binary() | st.text().map(lambda t: "timestamp,release,signal,value\n"
                                                               + t))
        def check(content: str | bytes) -> None:
            loads_or_recording_error(Path(scratch), content)

        check()


def test_recording_on_csv_shaped_rows() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        header = st.sampled_from([list(HEADER), [" Timestamp", "RELEASE ", "signal", "value"],
                                  ["timestamp", "release", "signal"], ["a", "b", "c", "d"]])
        rows = st.lists(valid_rows.map(lambda r: [_stamp(r[0])[0], r[1], r[2], _number(r[3], r[4])])
                        | junk_rows, max_size=8)

        @FUZZ_FEWER
        @given(header, rows)
        def check(head: list[str], body: list[list[str]]) -> None:
            loads_or_recording_error(Path(scratch), _csv([head, *body]))

        check()


def test_recording_of_valid_rows_reads_back_every_value() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        @FUZZ_FEWER
        # A second value of one sample is refused (a test of its own): one row per sample.
        @given(st.lists(valid_rows, min_size=1, max_size=10,
                        unique_by=lambda row: (row[1], row[2], _stamp(row[0])[1])))
        def check(chosen: list[tuple[float | datetime, str, str, float, int]]) -> None:
            expected: dict[tuple[str, str, float], float] = {}
            for stamp, release, key, value, _ in chosen:
                expected[(release, key, _stamp(stamp)[1])] = value
            content = _csv([list(HEADER)] + [[_stamp(s)[0], r, k, _number(v, style)]
                                             for s, r, k, v, style in chosen])

            path = Path(scratch) / "valid.csv"
            path.write_text(content, encoding="utf-8", newline="")
            recording = load_recording(path)  # valid rows only: it must load
            got = {}
            for release, raw in recording.series.items():
                for row, key in enumerate(raw.keys):
                    for column, at in enumerate(raw.times.tolist()):
                        value = float(raw.values[row, column])
                        if (release, key, at) in expected or not math.isnan(value):
                            got[(release, key, at)] = value
            assert got.keys() == expected.keys()
            for where, value in expected.items():
                assert same(got[where], float(value)), where

        check()
