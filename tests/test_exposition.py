"""The strict 0.0.4 text parser: every rule, agreement with prometheus_client, and properties."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from monitor.errors import ScrapeError
from monitor.exposition import format_key, parse, split_key


def as_dict(text: str) -> dict[str, float]:
    scrape = parse(text)
    assert len(scrape.keys) == len(scrape.values)
    return dict(zip(scrape.keys, scrape.values.tolist(), strict=True))


def parse_error(text: str) -> str:
    with pytest.raises(ScrapeError) as caught:
        parse(text)
    return str(caught.value)


# --- series keys ---------------------------------------------------------------------


def test_keys_sort_labels_by_name_and_omit_braces_without_labels() -> None:
    text = 'http_requests_total{method="get",code="500"} 3\nup 1\nbuild_info{} 1\n'
    assert parse(text).keys == ['http_requests_total{code="500",method="get"}', "up", "build_info"]


def test_a_label_with_an_empty_value_is_no_label_as_in_prometheus() -> None:
    assert parse('a{x=""} 1\nb{x="",y="2"} 2\n').keys == ["a", 'b{y="2"}']
    assert "duplicate series" in parse_error('a{x=""} 1\na 2\n')


def test_whitespace_where_prometheus_allows_it() -> None:
    text = '  up 1\n\t \nm { a = "1" , b="2", } \t2 \t 17 \n\n'
    assert as_dict(text) == {"up": 1.0, 'm{a="1",b="2"}': 2.0}


def test_last_line_needs_no_newline_and_empty_text_has_no_samples() -> None:
    assert as_dict("up 1") == {"up": 1.0}
    empty = parse("")
    assert empty.keys == [] and empty.values.shape == (0,) and empty.types == {}


@pytest.mark.parametrize(
    "line",
    ["1up 1", "up-time 1", "up.time 1", "ü 1", 'm{1a="x"} 1', 'm{a:b="x"} 1', 'm{"a"="x"} 1'],
)
def test_metric_and_label_names_follow_their_regexes(line: str) -> None:
    assert parse_error(line + "\n").startswith("line 1: ")


def test_colons_in_metric_names_are_fine() -> None:
    assert parse("job:request_rate:5m 2\n").keys == ["job:request_rate:5m"]


@pytest.mark.parametrize(
    "line",
    [
        'm{a="x} 1',
        'm{a="x\\"} 1',
        "m{a=x} 1",
        'm{a="x" b="y"} 1',
        "m{,} 1",
        'm{a="x",,} 1',
        "m{a} 1",
        'm{a="x" 1',
        "m} 1",
    ],
)
def test_malformed_label_blocks_are_rejected(line: str) -> None:
    assert parse_error(line + "\n").startswith("line 1: ")


def test_label_value_escapes_are_decoded_and_keys_re_escape_them() -> None:
    scrape = parse('m{path="C:\\\\dir",quote="say \\"hi\\"",text="a\\nb"} 1\n')
    name, labels = split_key(scrape.keys[0])
    assert name == "m"
    assert labels == {"path": "C:\\dir", "quote": 'say "hi"', "text": "a\nb"}
    assert scrape.keys[0] == 'm{path="C:\\\\dir",quote="say \\"hi\\"",text="a\\nb"}'


def test_an_unknown_escape_stays_literal_as_in_prometheus() -> None:
    scrape = parse('m{a="tab\\there"} 1\n')
    assert split_key(scrape.keys[0])[1] == {"a": "tab\\there"}


def test_label_values_may_hold_any_character_but_a_bare_quote() -> None:
    scrape = parse('m{a="} {x=\\"1\\"} 5 # ü\r"} 7\n')
    assert split_key(scrape.keys[0])[1] == {"a": '} {x="1"} 5 # ü\r'}
    assert scrape.values.tolist() == [7.0]


def test_a_label_given_twice_is_rejected() -> None:
    assert parse_error('m{a="1",b="2",a="3"} 1\n') == "line 1: label 'a' appears twice"


# --- values and timestamps -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1.0),
        ("-0.5", -0.5),
        ("+3E+02", 300.0),
        ("1.", 1.0),
        (".25", 0.25),
        ("007", 7.0),
        ("1e-3", 0.001),
        ("1.5e308", 1.5e308),
        ("1e-400", 0.0),  # Go rounds an underflow to zero without error
        ("+Inf", math.inf),
        ("-Inf", -math.inf),
        ("Inf", math.inf),
        ("inf", math.inf),  # Go's ParseFloat ignores case
        ("Infinity", math.inf),
        ("-infinity", -math.inf),
    ],
)
def test_values_prometheus_accepts(text: str, expected: float) -> None:
    assert as_dict(f"m {text}\n") == {"m": expected}


@pytest.mark.parametrize("text", ["NaN", "nan", "NAN"])
def test_nan_is_kept_as_nan(text: str) -> None:
    value = parse(f"m {text}\n").values[0]
    assert np.isnan(value)


@pytest.mark.parametrize(
    "text",
    [
        "1_2",
        "0x1p-3",
        "0x10",
        "1p3",
        "\u0661\u0662",  # Arabic-Indic digits: float() takes them
        "\uff11",  # fullwidth 1
        "+NaN",
        "-nan",
        "Infinit",
        "infinityy",
        "1e",
        ".",
        "e5",
        "--1",
        "1.2.3",
        "1e400",
        "-1e400",
        "one",
        "1,5",
    ],
)
def test_values_prometheus_rejects(text: str) -> None:
    message = parse_error(f"ok 1\nm {text}\n")
    assert message.startswith("line 2: ")
    assert "value" in message


@pytest.mark.parametrize("line", ["m", "m ", 'm{a="1"}', 'm{a="1"}  \t', "m\t"])
def test_an_empty_value_is_rejected(line: str) -> None:
    assert parse_error(line + "\n").startswith("line 1: missing value")


def test_a_value_must_be_separated_from_the_series() -> None:
    assert parse_error('m{a="1"}2\n').startswith("line 1: unexpected")


@pytest.mark.parametrize("timestamp", ["0", "1700000000000", "9223372036854775807"])
def test_integer_millisecond_timestamps_are_accepted_and_not_kept(timestamp: str) -> None:
    assert as_dict(f"m 4 {timestamp}\n") == {"m": 4.0}


@pytest.mark.parametrize(
    "timestamp", ["1.5", "1e3", "-5", "+5", "0x10", "\u0661", "9223372036854775808", "now"]
)
def test_other_timestamps_are_rejected(timestamp: str) -> None:
    message = parse_error(f"m 4 {timestamp}\n")
    assert message.startswith("line 1: ") and "timestamp" in message


def test_nothing_may_follow_the_timestamp() -> None:
    assert parse_error("m 1 2 3\n").startswith("line 1: unexpected '3'")


def test_carriage_returns_are_not_line_ends() -> None:
    assert parse_error("a 1\r\nb 2\r\n").startswith("line 1: ")


# --- HELP, TYPE and other comments ---------------------------------------------------


def test_types_come_from_type_lines_and_undeclared_samples_are_untyped() -> None:
    text = """# HELP rpc_duration_seconds RPC latency.
# TYPE rpc_duration_seconds histogram
rpc_duration_seconds_bucket{le="0.1"} 3
rpc_duration_seconds_bucket{le="+Inf"} 5
rpc_duration_seconds_sum 0.4
rpc_duration_seconds_count 5
# TYPE gc_seconds summary
gc_seconds{quantile="0.5"} 0.01
gc_seconds_sum 1
gc_seconds_count 9
# TYPE requests_total counter
requests_total 10
# TYPE temperature gauge
temperature 21.5
# TYPE other untyped
other 1
stray_count 2
"""
    scrape = parse(text)
    assert scrape.types == {
        "rpc_duration_seconds": "histogram",
        "gc_seconds": "summary",
        "requests_total": "counter",
        "temperature": "gauge",
        "other": "untyped",
        "stray_count": "untyped",
    }
    assert len(scrape.keys) == 11


def test_comments_that_are_not_help_or_type_are_ignored() -> None:
    text = "# just a comment\n#HELP not meta\n#\n# HELP\n# TYPEWRITER x\n  # indented\nup 1\n"
    assert as_dict(text) == {"up": 1.0}


def test_help_text_is_free_and_may_be_empty() -> None:
    text = '# HELP up Whether the target is "up" \\n or not.\n# HELP down\nup 1\n'
    assert as_dict(text) == {"up": 1.0}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("# TYPE up gauges", "line 1: invalid metric type 'gauges'"),
        ("# TYPE up Gauge", "line 1: invalid metric type 'Gauge'"),
        ("# TYPE up gauge ", "line 1: invalid metric type 'gauge '"),
        ("# TYPE up", "line 1: TYPE needs a valid metric name and a type"),
        ("# TYPE 1up gauge", "line 1: TYPE needs a valid metric name and a type"),
        ("# HELP 1up text", "line 1: HELP needs a valid metric name"),
        ("# HELP up-time text", "line 1: HELP needs a valid metric name"),
    ],
)
def test_malformed_help_and_type_lines_are_rejected(line: str, message: str) -> None:
    assert parse_error(line + "\nup 1\n") == message


def test_a_second_type_line_for_a_family_is_rejected() -> None:
    text = "# TYPE up gauge\nup 1\n# TYPE up counter\n"
    assert parse_error(text) == "line 3: second TYPE line for 'up'"


# --- whole-scrape rules --------------------------------------------------------------


def test_duplicate_series_fail_naming_both_lines() -> None:
    text = 'a 1\nm{x="1",y="2"} 1\nb 2\nm{y="2",x="1"} 3\n'
    assert parse_error(text) == """line 4: duplicate series 'm{x="1",y="2"}' (first on line 2)"""


def test_one_bad_line_among_a_thousand_fails_the_whole_scrape() -> None:
    lines = [f'good_total{{i="{i}"}} {i}' for i in range(1000)]
    assert len(parse("\n".join(lines) + "\n")) == 1000
    lines[612] = 'good_total{i="612"} 6l2'
    assert parse_error("\n".join(lines) + "\n") == "line 613: invalid value '6l2'"


def test_values_are_read_only_float64() -> None:
    values = parse("a 1\nb 2\n").values
    assert values.dtype == np.float64
    with pytest.raises(ValueError):
        values[0] = 5.0


def test_agrees_with_prometheus_client_on_a_realistic_payload() -> None:
    rng = np.random.default_rng(7)
    lines = ["# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram"]
    for route in ("/a", '/b/\\"c"', "/d\ne"):
        escaped = route.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for bound in ("0.1", "1", "+Inf"):
            count = int(rng.integers(0, 1000))
            lines.append(f'lat_seconds_bucket{{route="{escaped}",le="{bound}"}} {count}')
        lines.append(f'lat_seconds_sum{{route="{escaped}"}} {rng.normal():.17g}')
    lines += ["# TYPE temp gauge", 'temp{zone="b",rack="1"} -Inf', 'temp{zone="a"} NaN']
    text = "\n".join(lines) + "\n"

    reference: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            reference[format_key(sample.name, sample.labels)] = sample.value
    ours = as_dict(text)
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert ours[key] == value or (math.isnan(ours[key]) and math.isnan(value)), key


# --- format_key and split_key --------------------------------------------------------


def test_format_key_validates_names() -> None:
    with pytest.raises(ValueError, match="metric name"):
        format_key("1up", {})
    with pytest.raises(ValueError, match="label name"):
        format_key("up", {"a-b": "x"})


@pytest.mark.parametrize("key", ["", "up{}", 'up{a="1",}', "up{a=1}", 'up{a="x\\t"}', 'up{a="1"} '])
def test_split_key_rejects_what_format_key_never_writes(key: str) -> None:
    with pytest.raises(ValueError, match="not a series key"):
        split_key(key)


metric_names = st.from_regex(re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"), fullmatch=True)
label_names = st.from_regex(re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}"), fullmatch=True)
label_sets = st.dictionaries(label_names, st.text(max_size=12), max_size=4)


@given(name=metric_names, labels=label_sets)
def test_split_key_inverts_format_key(name: str, labels: dict[str, str]) -> None:
    assert split_key(format_key(name, labels)) == (name, labels)


@given(name=metric_names, labels=label_sets, value=st.floats(allow_nan=False))
def test_parse_reads_back_what_format_key_writes(
    name: str, labels: dict[str, str], value: float
) -> None:
    value_text = repr(value) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")
    text = f"{format_key(name, labels)} {value_text}\n"
    non_empty = {label: label_value for label, label_value in labels.items() if label_value}
    scrape = parse(text)
    assert scrape.keys == [format_key(name, non_empty)]
    assert scrape.values.tolist() == [value]


# Fragments near the grammar reach deeper than uniformly random text does.
fragments = st.sampled_from(
    ["m", "_:", "{", "}", "=", ",", '"', "\\", "\\n", "\\\"", " ", "\t", "\n", "#", " HELP ",
     " TYPE ", "gauge", "1", "-", ".", "e", "Inf", "NaN", "_", "0x", "\u0661", "\r", "\x00",
     "le", "a"]  # fmt: skip
)


@settings(max_examples=400)
@given(st.one_of(st.text(), st.lists(fragments, max_size=40).map("".join)))
def test_parse_raises_nothing_but_scrape_error(text: str) -> None:
    try:
        scrape = parse(text)
    except ScrapeError as exc:
        assert re.fullmatch(r"line \d+: .+", str(exc))
        assert "\n" not in str(exc)
    else:
        assert len(scrape.keys) == len(set(scrape.keys)) == len(scrape.values)


# --- counters declared without a sample ---------------------------------------------


def test_a_counter_declared_without_a_sample_is_stored_as_one_zero_under_a_reserved_label() -> None:
    text = ("# TYPE errors_total counter\n"           # labelled, never incremented
            "# TYPE requests_total counter\nrequests_total 7\n"
            "# TYPE queue_depth gauge\n"              # a gauge without a sample: unknown
            "# TYPE latency_seconds histogram\n")     # no observation: no quantile either
    scrape = parse(text)
    assert scrape.keys == ["requests_total"]
    assert scrape.empty_counters == ("errors_total",)
    keys, values = scrape.with_declared_counters()
    assert keys == ["requests_total", 'errors_total{__declared__="counter"}']
    assert values.tolist() == [7.0, 0.0]
    assert split_key(keys[1]) == ("errors_total", {"__declared__": "counter"})
    # Once it has counted, the family is stored as it is, with no marker.
    counted = parse(text + 'errors_total{kind="db"} 1\n')
    assert counted.with_declared_counters()[0] == counted.keys
    # A family named as OpenMetrics names it, without the `_total` of its samples, has them.
    assert parse("# TYPE jobs counter\njobs_total 3\n").empty_counters == ()
    # ...and one without any is stored under both names its samples may have (OpenMetrics'
    # and the 0.0.4 format of older clients).
    assert parse("# TYPE jobs counter\n").with_declared_counters()[0] == [
        'jobs{__declared__="counter"}', 'jobs_total{__declared__="counter"}']


@pytest.mark.parametrize("body", [
    '# TYPE up ' + "z" * 100_000 + "\nup 1\n",
    'big{id="' + "x" * 100_000 + '"} 1\nbig{id="' + "x" * 100_000 + '"} 2\n',
    "up 1" + "0" * 400 + "\n",
    "up 1 9" + "9" * 100_000 + "\n",
], ids=["type", "duplicate", "value", "timestamp"])
def test_an_error_quotes_at_most_a_short_excerpt_of_a_huge_line(body: str) -> None:
    message = parse_error(body)
    assert len(message) < 200, message[:300]
