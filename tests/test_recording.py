"""Tests of recordings (monitor.recording) and of replaying them (monitor.replay)."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from baselines.frame import SignalFrame
from monitor.errors import RecordingError
from monitor.policy import PromSource, ServicePolicy, SignalRule
from monitor.recording import frame_as_samples, load_recording, recorded_frame, write_recording
from monitor.replay import replay
from monitor.signals import RawSeries

HEADER = "timestamp,release,signal,value\n"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LATENCY = "http_request_duration_seconds"
ERRORS = "http_request_errors_total"
REQUESTS = "http_requests_total"


def write_csv(tmp_path: Path, body: str, header: str = HEADER, name: str = "rec.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def recording_error(path: Path) -> str:
    with pytest.raises(RecordingError) as caught:
        load_recording(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_unix_and_iso_timestamps_mean_the_same_instants(tmp_path: Path) -> None:
    path = write_csv(tmp_path, (
        f"{T0:.0f},v1,up,1\n"
        "2026-01-01T00:01:00Z,v1,up,2\n"
        "2026-01-01T01:02:00+01:00,v1,up,3\n"   # 00:02 UTC
        "2026-01-01T00:03:00,v1,up,4\n"         # no zone: UTC
        f"{T0 + 240.5},v1,up,5\n"
    ))
    raw = load_recording(path).series["v1"]
    np.testing.assert_array_equal(raw.times, T0 + np.array([0.0, 60.0, 120.0, 180.0, 240.5]))
    np.testing.assert_array_equal(raw.values, [[1.0, 2.0, 3.0, 4.0, 5.0]])


def test_labels_in_signal_names_make_separate_series(tmp_path: Path) -> None:
    path = write_csv(tmp_path, (
        f'{T0},v1,"{REQUESTS}{{code=""200"",method=""get""}}",90\n'
        f'{T0},v1,"{REQUESTS}{{code=""500"",method=""get""}}",10\n'
        f"{T0 + 60},v1,{REQUESTS},100\n"
    ))
    raw = load_recording(path).series["v1"]
    assert raw.keys == (REQUESTS, f'{REQUESTS}{{code="200",method="get"}}',
                        f'{REQUESTS}{{code="500",method="get"}}')
    np.testing.assert_array_equal(raw.values, [[np.nan, 100.0], [90.0, np.nan], [10.0, np.nan]])


def test_nan_and_infinite_values_are_kept(tmp_path: Path) -> None:
    path = write_csv(tmp_path, (
        f"{T0},v1,up,NaN\n{T0 + 60},v1,up,+Inf\n{T0 + 120},v1,up,-Inf\n{T0 + 180},v1,up,7e-3\n"
    ))
    raw = load_recording(path).series["v1"]
    assert raw.times.size == 4  # a NaN sample still marks a scrape
    values = raw.values[0]
    assert math.isnan(values[0])
    assert values[1:].tolist() == [math.inf, -math.inf, 0.007]


def test_releases_are_ordered_by_their_first_sample(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"{T0 + 600},v2,up,1\n{T0},v1,up,1\n{T0 + 660},v2,up,1\n")
    recording = load_recording(path)
    assert recording.releases == ("v1", "v2")
    assert recording.first_sample("v2") == T0 + 600


@pytest.mark.parametrize(
    ("header", "body", "line", "what"),
    [
        pytest.param("time,release,signal,value\n", f"{T0},v1,up,1\n", 1, "header", id="wrong-header"),
        pytest.param(HEADER, f"{T0},v1,up,1\n{T0 + 60},v1,1\n", 3, "expected 4 fields, got 3",
                     id="three-fields"),
        pytest.param(HEADER, f"{T0},v1,up,1_2\n", 2, "'1_2'", id="digit-separator"),
        pytest.param(HEADER, f"{T0},v1,up,0x1p-3\n", 2, "'0x1p-3'", id="hex-float"),
        pytest.param(HEADER, f"{T0},v1,up,\u0661\u0662\n", 2, "not a number", id="arabic-indic-digits"),
        pytest.param(HEADER, f"{T0},v1,up,Infinity\n", 2, "not a number", id="infinity-spelled-out"),
        pytest.param(HEADER, f"{T0},v1,up,1\nyesterday,v1,up,2\n", 3, "'yesterday'", id="bad-timestamp"),
        pytest.param(HEADER, f"{T0},v1,up,1\nNaN,v1,up,2\n", 3, "not a finite time", id="nan-timestamp"),
        pytest.param(HEADER, f"{T0},v1,up,1\n+Inf,v1,up,2\n", 3, "not a finite time", id="inf-timestamp"),
        pytest.param(HEADER, f"{T0},v1,up,1\n2026-13-01T00:00:00Z,v1,up,2\n", 3, "ISO 8601",
                     id="impossible-date"),
        pytest.param(HEADER, f"{T0},v1,up,1\n-5,v1,up,2\n", 3, "not between 1970 and 2100",
                     id="before-1970"),
        pytest.param(HEADER, f"{T0 * 1000:.0f},v1,up,1\n", 2, "(milliseconds?)", id="milliseconds"),
        pytest.param(HEADER, f"{T0 * 1e6:.0f},v1,up,1\n", 2, "(microseconds?)", id="microseconds"),
        pytest.param(HEADER, f"{T0 * 1e9:.0f},v1,up,1\n", 2, "(nanoseconds?)", id="nanoseconds"),
        pytest.param(HEADER, f"{T0},v1,up,1\n1969-12-31T23:00:00Z,v1,up,2\n", 3,
                     "not between 1970 and 2100", id="iso-before-1970"),
        pytest.param(HEADER, f"{T0},v1,up,1\n{T0 + 60},,up,2\n", 3, "empty release", id="empty-release"),
        pytest.param(HEADER, f"{T0},v1,up{{code=500}},1\n", 2, "not a series key", id="unquoted-label"),
        pytest.param(HEADER, f'{T0},v1,"up{{code=""5"",code=""5""}}",1\n', 2,
                     "label 'code' appears twice", id="label-twice"),
        pytest.param(HEADER, f"{T0},v1,up,1\n{T0 + 60},v1,up,{'1' * 200_000}\n", 3,
                     "not CSV: field larger than field limit", id="oversized-field"),
        pytest.param(HEADER, f"{T0},v1,up,1\n{T0},v1,up,2\n", 3,
                     f"a second value of 'up' at {T0} (the first is on line 2)", id="same-sample-twice"),
        pytest.param(HEADER.replace("value", "value,target"), f"{T0},v1,up,1,a\n{T0},v1,up,1\n", 3,
                     "expected 5 fields, got 4", id="target-column-left-empty"),
        pytest.param(HEADER, f"{T0},v1,up,1e400\n", 2, "value '1e400' is out of range",
                     id="overflowing-value"),
        pytest.param(HEADER, f"{T0},v1,up,{'9' * 100_000}x\n", 2,
                     f"not a number: '{'9' * 57}...'", id="a-huge-cell-quoted-short"),
    ],
)
def test_bad_lines_are_refused_with_file_and_line(
    tmp_path: Path, header: str, body: str, line: int, what: str
) -> None:
    path = write_csv(tmp_path, body, header=header)
    message = recording_error(path)
    assert message.startswith(f"{path}: line {line}: "), message
    assert what in message, message


def test_the_first_line_to_repeat_a_sample_is_named_whichever_release_it_is_of(tmp_path: Path) -> None:
    # v2's repeat (line 5) comes after v1's (line 4); the same instant in ISO 8601 repeats it too.
    path = write_csv(tmp_path, (
        f"{T0},v2,up,1\n{T0},v1,up,1\n{T0 + 60},v1,up,1\n"
        "2026-01-01T00:00:00Z,v1, up ,2\n"
        f"{T0},v2,up,3\n{T0},v1,up,4\n"
    ))
    assert recording_error(path) == (
        f"{path}: line 5: a second value of 'up' at {T0} (the first is on line 3)")


def test_the_benchmark_s_recording_of_two_targets_reads_back_every_value(tmp_path: Path) -> None:
    from benchmarks.speed import write_bench_recording

    path = tmp_path / "bench.csv"
    rows = write_bench_recording(path, series=7, scrapes=40)
    recording = load_recording(path)
    assert recording.releases == ("v1", "v2") and rows == 2 * 7 * 40
    with path.open(newline="", encoding="utf-8") as handle:
        written = list(csv.reader(handle))[1:]
    for release, raw in recording.series.items():
        assert len(raw.keys) == 7 and raw.values.shape == (7, 40)
        assert not np.isnan(raw.values).any()
        assert raw.targets[:2] == ("10.0.0.1:8080", "10.0.0.2:8080")
        assert np.all(np.diff(raw.times) >= 0)
        cell = {(float(t), k, target): float(v) for t, r, k, v, target in written if r == release}
        got = {(float(t), k, target): float(raw.values[row, column])
               for column, (t, target) in enumerate(zip(raw.times, raw.targets, strict=True))
               for row, k in enumerate(raw.keys)}
        assert got == cell


def test_the_target_column_keeps_scrapes_of_the_same_moment_apart(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"{T0},v1,up,1,a\n{T0},v1,up,0,b\n",
                     header=HEADER.replace("value", "value,target"))
    series = load_recording(path).series["v1"]
    assert series.targets == ("a", "b") and series.values.tolist() == [[1.0, 0.0]]


def test_a_recording_too_sparse_to_hold_is_refused_before_allocating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.recording.MAX_CELLS", 100)
    monkeypatch.setattr("monitor.recording.SPARSENESS", 4)
    # Eleven rows, each with a series and a time of its own: 11 x 11 values for 11 samples.
    path = write_csv(tmp_path, "".join(f"{T0 + i},v1,s{i},1\n" for i in range(11)))
    assert recording_error(path) == (
        f"{path}: release 'v1' has 11 samples of 11 series over 11 scrapes, too sparse to "
        "replay (121 values to hold): does every row have a series, time or target of its own?")
    # As many values, all filled: held, however many.
    dense = "".join(f"{T0 + t},v1,s{i},1\n" for t in range(11) for i in range(11))
    assert load_recording(write_csv(tmp_path, dense)).series["v1"].values.shape == (11, 11)


def test_a_recording_without_samples_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "")
    assert recording_error(path) == f"{path}: no samples"


def test_a_missing_recording_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    assert recording_error(path).startswith(f"{path}: cannot read")


def test_write_then_load_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    keys = (LATENCY, f'{REQUESTS}{{code="200"}}', f'{REQUESTS}{{code="500"}}')
    samples = {}
    for index, release in enumerate(("v1", "v2")):
        moments = T0 + index * 7200.0 + np.sort(rng.choice(7200, size=25, replace=False)) * 1.25
        times = np.repeat(moments, 2)    # two targets scraped at the same moments
        values = rng.normal(size=(len(keys), times.size)) * 10.0 ** rng.integers(-9, 9, size=(3, 1))
        values[1, ::7] = np.nan          # missing samples stay missing
        values[2, 3] = np.inf
        samples[release] = RawSeries(keys, times, ("10.0.0.1:9100", "10.0.0.2:9100") * 25, values)
    path = tmp_path / "round.csv"
    rows = write_recording(path, samples)
    assert rows == sum(int(np.count_nonzero(~np.isnan(s.values))) for s in samples.values())
    loaded = load_recording(path)
    assert loaded.releases == ("v1", "v2")
    for release, original in samples.items():
        back = loaded.series[release]
        assert back.keys == original.keys
        np.testing.assert_array_equal(back.times, original.times)
        assert back.targets == original.targets
        np.testing.assert_array_equal(back.values, original.values)  # bit for bit, NaN where missing


def synthetic_release(rng: np.random.Generator, start: float, minutes: int, latency: float,
                      requests: float, error_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """One scrape a minute: latency gauge ~ N(latency, 5%), error and request counters."""
    times = start + 60.0 * np.arange(minutes)
    gauge = rng.normal(latency, latency * 0.05, size=minutes)
    per_minute = rng.poisson(requests, size=minutes)
    errors = rng.binomial(per_minute, error_rate)
    values = np.vstack([gauge, np.cumsum(errors), np.cumsum(per_minute)]).astype(float)
    return times, values


def synthetic_recording(tmp_path: Path, *, seed: int, latency_factor: float) -> Path:
    """Baseline v1 for 2 hours, then candidate v2 for 30 minutes; both scraped once a minute."""
    rng = np.random.default_rng(seed)
    keys = (LATENCY, ERRORS, REQUESTS)
    base_times, base_values = synthetic_release(rng, T0, 120, 0.1, 1000.0, 0.01)
    cand_times, cand_values = synthetic_release(rng, T0 + 7200.0, 30, 0.1 * latency_factor,
                                                1000.0, 0.01)
    path = tmp_path / f"synthetic-{seed}-{latency_factor}.csv"
    write_recording(path, {
        "v1": RawSeries(keys, base_times, ("t",) * base_times.size, base_values),
        "v2": RawSeries(keys, cand_times, ("t",) * cand_times.size, cand_values),
    })
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replay_of_an_unchanged_release_passes(tmp_path: Path, seed: int) -> None:
    recording = load_recording(synthetic_recording(tmp_path, seed=seed, latency_factor=1.0))
    result = replay(recording, release="v2")
    assert result.baseline_release == "v1"
    assert result.evaluation.verdict == "pass", result.to_dict()
    assert result.evaluation.first_alarm_at is None
    assert result.to_dict()["findings"] == []


def test_replay_of_a_first_release_says_it_runs_no_smoke_test(tmp_path: Path) -> None:
    recording = load_recording(synthetic_recording(tmp_path, seed=1, latency_factor=1.0))
    result = replay(recording, release="v1")
    assert (result.baseline_release, result.evaluation.verdict) == (None, "pass")
    assert result.evaluation.reason.startswith(
        "first release in the recording: judged on leaks alone (a replay runs no smoke test or "
        "verification)"), result.evaluation.reason


def test_replay_of_slower_release_alarms_on_latency(tmp_path: Path) -> None:
    recording = load_recording(synthetic_recording(tmp_path, seed=1, latency_factor=1.5))
    result = replay(recording, release="v2")
    doc = result.to_dict()
    assert doc["verdict"] in ("hotfix", "rollback"), doc
    assert LATENCY in {finding["signal"] for finding in doc["findings"]}, doc
    assert doc["recording"] == recording.path
    assert doc["baseline_release"] == "v1"
    first_candidate_sample = recording.first_sample("v2")
    assert doc["started_at"] == first_candidate_sample
    assert first_candidate_sample < doc["first_alarm_at"] <= doc["decided_at"]


def test_replay_of_an_unknown_release_names_the_releases(tmp_path: Path) -> None:
    recording = load_recording(synthetic_recording(tmp_path, seed=1, latency_factor=1.0))
    with pytest.raises(RecordingError, match=r"no release 'v3' \(releases: v1, v2\)"):
        replay(recording, release="v3")


def histogram_recording(tmp_path: Path, *, slower: float, added_bucket: bool = False) -> Path:
    """A histogram that counts on across the release (no restart), as a rolling deploy's
    long-lived counters do, with each release's process start time in `_created`; with
    `added_bucket`, the baseline has no le="0.25" bucket (the candidate added it)."""
    rng = np.random.default_rng(7)
    bounds = ("0.1", "0.2", "0.25", "0.5", "+Inf")
    keys = tuple(f'latency_seconds_bucket{{le="{b}"}}' for b in bounds) + (
        "latency_seconds_count", "latency_seconds_sum", "latency_seconds_created")
    times = T0 + 60.0 * np.arange(150)
    # Per minute, ~1000 requests of ~N(0.12 s, 0.04 s); the candidate's `slower` times so.
    scale = np.where(np.arange(150) >= 120, slower, 1.0)
    observed = [rng.normal(0.12, 0.04, 1000) * factor for factor in scale]
    per_bucket = np.array([[np.sum(o <= float(b)) for o in observed] for b in bounds], float)
    totals = np.vstack([per_bucket, per_bucket[-1:], [[float(np.sum(o)) for o in observed]]])
    created = np.where(np.arange(150) >= 120, T0 + 7200.0, T0 - 3600.0)[None, :]
    values = np.vstack([np.cumsum(totals, axis=1), created])
    if added_bucket:
        values[2, :120] = np.nan
    path = tmp_path / f"histogram-{slower}-{added_bucket}.csv"
    write_recording(path, {
        "v1": RawSeries(keys, times[:120], ("t",) * 120, values[:, :120]),
        "v2": RawSeries(keys, times[120:], ("t",) * 30, values[:, 120:]),
    })
    return path


def test_replay_without_a_policy_judges_a_histogram_by_its_p95_not_its_totals(
        tmp_path: Path) -> None:
    same = replay(load_recording(histogram_recording(tmp_path, slower=1.0)), release="v2")
    assert same.evaluation.verdict == "pass", same.to_dict()
    slower = replay(load_recording(histogram_recording(tmp_path, slower=1.6)), release="v2")
    assert slower.evaluation.verdict == "rollback", slower.to_dict()
    assert {f.signal for f in slower.evaluation.findings} >= {"latency_seconds_p95"}
    judged = {f.signal for f in slower.evaluation.findings}
    assert not judged & {"latency_seconds_sum", "latency_seconds_created"}


def test_a_histogram_that_added_buckets_is_judged_over_its_baseline_s_bounds(
        tmp_path: Path) -> None:
    # Not "buckets changed: not comparable" (inconclusive until pinned): the candidate's
    # counts at the old bounds are exact, so its p95 over them compares.
    same = replay(load_recording(histogram_recording(tmp_path, slower=1.0, added_bucket=True)),
                  release="v2")
    assert same.evaluation.verdict == "pass", same.to_dict()
    slower = replay(load_recording(histogram_recording(tmp_path, slower=1.6, added_bucket=True)),
                    release="v2")
    assert slower.evaluation.verdict == "rollback", slower.to_dict()
    assert "latency_seconds_p95" in {f.signal for f in slower.evaluation.findings}


def test_replay_without_a_policy_leaves_out_the_runtimes_bookkeeping(tmp_path: Path) -> None:
    # A Python service's new release: a new process, more address space reserved, its
    # collector busier. None of it is a regression; resident memory stays the same.
    keys = ("process_start_time_seconds", "process_virtual_memory_bytes",
            'python_gc_objects_collected_total{generation="0"}', "process_resident_memory_bytes")
    times = T0 + 15.0 * np.arange(400)
    rng = np.random.default_rng(3)
    new = times >= times[300]
    values = np.vstack([np.where(new, T0 + 4500, T0 - 3600),
                        np.where(new, 475e6, 333e6) + rng.normal(0, 1e5, 400),
                        np.cumsum(np.where(new, 300.0, 100.0)),
                        80e6 + rng.normal(0, 1e5, 400)])
    path = tmp_path / "python.csv"
    write_recording(path, {
        "v1": RawSeries(keys, times[:300], ("t",) * 300, values[:, :300]),
        "v2": RawSeries(keys, times[300:], ("t",) * 100, values[:, 300:]),
    })
    result = replay(load_recording(path), release="v2")
    assert result.evaluation.verdict == "pass", result.to_dict()


# --- services read by PromQL: their signals recorded as they were judged -----------------


def _queried_frame(seed: int, start: float, points: int, error_share: float) -> SignalFrame:
    """What a service's PromQL queries answered: a latency, a ratio's counts, a signal
    with an odd name, and one that answered nothing."""
    rng = np.random.default_rng(seed)
    trials = rng.poisson(600.0, points).astype(float)
    events = rng.binomial(trials.astype(np.int64), error_share).astype(float)
    events[3] = trials[3] = np.nan                  # a step the counters did not answer
    latency = rng.normal(0.2, 0.01, points)
    odd = rng.normal(5.0, 0.5, points)
    nothing = np.full(points, np.nan)
    nan = np.full(points, np.nan)
    return SignalFrame(
        ("latency", "errors", 'queue "depth" p99', "silent"), start + 15.0 * np.arange(points),
        np.array([latency, events / trials, odd, nothing]),
        np.array([nan, events, nan, nan]), np.array([nan, trials, nan, nan]))


PROMQL_POLICY = ServicePolicy(
    name="shop", prometheus=PromSource(url="http://127.0.0.1:9090", step=15.0),
    signals=(SignalRule("latency", query="q1", bad="increase"),
             SignalRule("errors", kind="ratio", numerator_query="e", denominator_query="t",
                        bad="increase", critical=True),
             SignalRule('queue "depth" p99', query="q2"),
             SignalRule("silent", query="q3")),
    evaluation_interval=15.0)


def test_signals_read_by_promql_round_trip_exactly(tmp_path: Path) -> None:
    frames = {"v1": _queried_frame(1, T0, 200, 0.01), "v2": _queried_frame(2, T0 + 3000, 80, 0.01)}
    path = tmp_path / "promql.csv"
    write_recording(path, {version: frame_as_samples(f) for version, f in frames.items()})
    recording = load_recording(path)
    assert recording.releases == ("v1", "v2")
    rules = list(PROMQL_POLICY.signals)
    for version, frame in frames.items():
        back = recorded_frame(rules, recording.series[version])
        assert back.names == frame.names
        # Only the times some signal answered at are kept: all of them here.
        np.testing.assert_array_equal(back.times, frame.times)
        for block in ("values", "events", "trials"):
            np.testing.assert_array_equal(getattr(back, block), getattr(frame, block))
    assert 'promql_signal{name="queue \\"depth\\" p99"}' in recording.series["v1"].keys
    assert not any("silent" in key for key in recording.series["v1"].keys)


@pytest.mark.parametrize(("error_share", "verdict"), [(0.01, "pass"), (0.08, "rollback")])
def test_replay_judges_a_promql_recording_on_the_recorded_signals(
        tmp_path: Path, error_share: float, verdict: str) -> None:
    frames = {"v1": _queried_frame(3, T0, 400, 0.01),
              "v2": _queried_frame(4, T0 + 400 * 15.0, 80, error_share)}
    path = tmp_path / "promql.csv"
    write_recording(path, {version: frame_as_samples(f) for version, f in frames.items()})
    result = replay(load_recording(path), release="v2", policy=PROMQL_POLICY, period=900.0)
    assert (result.baseline_release, result.evaluation.verdict) == ("v1", verdict)
    if verdict == "rollback":
        assert [f.signal for f in result.evaluation.findings] == ["errors"]
    # The silent signal is not critical: it is named as not judged, not a shortfall.
    else:
        assert "silent: no samples" in result.evaluation.reason


def test_replay_of_a_promql_recording_names_a_renamed_signal(tmp_path: Path) -> None:
    frames = {"v1": _queried_frame(5, T0, 300, 0.01), "v2": _queried_frame(6, T0 + 4500, 80, 0.01)}
    path = tmp_path / "promql.csv"
    write_recording(path, {version: frame_as_samples(f) for version, f in frames.items()})
    renamed = replace(PROMQL_POLICY, signals=(
        replace(PROMQL_POLICY.signals[0], name="latency_p95"), *PROMQL_POLICY.signals[1:]))
    result = replay(load_recording(path), release="v2", policy=renamed)
    assert result.evaluation.reason.endswith(
        "latency_p95: no samples of q1; silent: no samples of q3; the recording also holds "
        "latency, which the policy does not judge"), result.evaluation.reason
    # A policy judging fewer signals than were recorded is no mismatch: it passes.
    fewer = replace(PROMQL_POLICY, signals=PROMQL_POLICY.signals[1:])
    assert replay(load_recording(path), release="v2", policy=fewer).evaluation.verdict == "pass"
    # Nothing in common: another service's recording, most likely.
    other = replace(PROMQL_POLICY, signals=(SignalRule("saturation", query="q9"),))
    with pytest.raises(RecordingError) as caught:
        replay(load_recording(path), release="v2", policy=other)
    assert str(caught.value) == (
        f"{path}: holds signals errors, latency, queue \"depth\" p99, none of which the "
        "policy judges: was it recorded for another service, or renamed?")
