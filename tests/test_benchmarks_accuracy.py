"""The accuracy benchmark: loaders, the case generator's invariants, each peer on a known case."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmarks import accuracy, datasets, peers
from benchmarks.datasets import Case, Recipe, Series

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the labelled data sets are not at {DATA} (see ../shared/data/README.md)")
    return DATA


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- loaders -----------------------------------------------------------------------------


def test_nab_series_and_windows(data: Path) -> None:
    series = {s.name: s for s in datasets.load_nab(data)}
    cpu = series["realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"]
    assert (cpu.kind, cpu.times.size, cpu.step) == ("resource", 4032, 300.0)
    assert cpu.times[0] == utc("2014-02-14 14:30:00") and cpu.values[0] == pytest.approx(0.132)
    assert cpu.anomalies[0] == (utc("2014-02-26 13:45:00"), utc("2014-02-27 06:25:00"))
    assert series["realKnownCause/nyc_taxi.csv"].kind == "traffic"
    assert series["realTraffic/TravelTime_387.csv"].kind == "latency"


def test_msft_labels_become_windows_and_blanks_missing(data: Path) -> None:
    series = {s.name: s for s in datasets.load_msft(data)}
    crash = series["application-crash-rate-1/app1-04.csv"]
    assert crash.kind == "errors" and int(np.isnan(crash.values).sum()) == 5
    path = data / "msft_cloud_monitoring/data/application-crash-rate-1/app1-04.csv"
    rows = path.read_text().splitlines()[1:]
    labelled = [r.split(",")[0] for r in rows if r.rstrip().endswith(",1")]
    flagged = crash.times[datasets.anomalous(crash)]
    assert flagged.tolist() == sorted({utc(t) for t in labelled})  # a repeated hour is one sample
    assert np.all(np.diff(crash.times) > 0)
    assert series["consumer-purchase-rate/purchase-01.csv"].anomalies == ()


def test_tcpd_consensus_change_points(data: Path) -> None:
    series = {s.name: s for s in datasets.load_tcpd(data)}
    nile = series["nile"]
    assert nile.values.size == 100 and nile.values[0] == 1120
    assert nile.anomalies == ((28 * datasets.TCPD_STEP,) * 2,)  # three annotators marked 28
    assert series["quality_control_5"].anomalies == ()  # nobody marked anything


def test_consensus_needs_two_annotators_within_the_margin() -> None:
    marks = {"a": [10, 50, 90], "b": [13, 70], "c": [16, 95], "d": [90]}
    # 10 and 13 agree (16 is 6 from 10, too far); 90, 90 and 95 agree; 50 and 70 stand alone.
    assert datasets.consensus_change_points(marks, min_annotators=2, margin=5) == [11, 90]
    assert datasets.consensus_change_points(marks, min_annotators=3, margin=6) == [13, 90]
    assert datasets.consensus_change_points(marks, min_annotators=4, margin=6) == []
    assert datasets.consensus_change_points({}, 2, 5) == []


def test_label_runs() -> None:
    times = np.arange(8) * 60.0
    runs = datasets.label_runs(times, np.array([1, 1, 0, 0, 1, 0, 1, 1]))
    assert runs == ((0.0, 60.0), (240.0, 240.0), (360.0, 420.0))


# --- case generation ---------------------------------------------------------------------


def synthetic(kind: str = "resource", n: int = 2000, windows: tuple[tuple[int, int], ...] = ((900, 960),),
              seed: int = 1) -> Series:
    rng = np.random.default_rng(seed)
    times = 1.5e9 + 300.0 * np.arange(n)
    values = 50.0 + rng.normal(0, 2, n)
    spans = tuple((float(times[a]), float(times[b])) for a, b in windows)
    return Series("nab", f"synthetic-{kind}", kind, times, values, spans)


def test_cuts_respect_the_protocol() -> None:
    series = synthetic(windows=((900, 960), (1500, 1510)))
    shape = datasets.case_shape("nab", 300.0)
    flagged = datasets.anomalous(series)
    cases = datasets.release_cuts(series, seed=3, max_null=6)
    bad = [c for c in cases if c.label == "bad"]
    null = [c for c in cases if c.label == "null"]
    assert len(null) == 6 and len(bad) == 4  # each window at T and a third of a period before
    for case in cases:
        start = int(np.searchsorted(series.times, case.times[0]))
        case_flags = flagged[start : start + case.times.size]
        assert shape.min_baseline <= case.cut <= shape.baseline
        assert case.candidate.size == shape.period and case.period == shape.period * 300.0
        assert not case_flags[: case.cut].any()  # baseline always healthy
        if case.label == "null":
            assert not case_flags.any()
        else:
            assert case.anomaly_start is not None
            assert case.released <= case.anomaly_start < case.released + case.period
            assert not case_flags[case.cut : int(np.searchsorted(case.times, case.anomaly_start))].any()
    starts = sorted(c.released for c in null)
    assert all(b - a >= shape.period * 300.0 for a, b in zip(starts, starts[1:], strict=False))


def test_cases_are_deterministic_per_seed() -> None:
    series = [synthetic(), synthetic("traffic", seed=2)]
    first = datasets.build_cases(series, seed=7, max_null=4)
    again = datasets.build_cases(series, seed=7, max_null=4)
    other = datasets.build_cases(series, seed=8, max_null=4)
    ids = {g: [c.case_id for c in cases] for g, cases in first.items()}
    assert ids == {g: [c.case_id for c in cases] for g, cases in again.items()}
    assert ids != {g: [c.case_id for c in cases] for g, cases in other.items()}
    for a, b in zip(first["injected"], again["injected"], strict=True):
        np.testing.assert_array_equal(a.values, b.values)


def null_case() -> Case:
    series = synthetic(windows=())
    return next(c for c in datasets.release_cuts(series, seed=0, max_null=1) if c.label == "null")


def test_level_shift_and_ramp_injections() -> None:
    case = null_case()
    median, scale = datasets.robust_scale(case.baseline)
    assert median == pytest.approx(50.0, abs=0.3) and scale == median
    rng = np.random.default_rng(0)
    level = datasets.inject(case, Recipe("level", 0.25), start=10, sign=1.0, rng=rng)
    np.testing.assert_array_equal(level.values[: case.cut + 10], case.values[: case.cut + 10])
    np.testing.assert_allclose(level.values[case.cut + 10 :] - case.values[case.cut + 10 :], 0.25 * scale)
    assert level.anomaly_start == case.times[case.cut + 10] and not level.major and level.label == "bad"
    ramp = datasets.inject(case, Recipe("ramp", 1.0), start=0, sign=1.0, rng=rng)
    added = ramp.values[case.cut :] - case.values[case.cut :]
    assert added[0] == 0.0 and added[-1] == pytest.approx(scale)
    np.testing.assert_allclose(np.diff(added), scale / (added.size - 1))
    assert ramp.major  # averages half a scale after it starts
    drop = datasets.inject(case, Recipe("ramp", 1.0), start=0, sign=-1.0, rng=rng)
    assert drop.values.min() == 0.0  # a drop stops at zero
    np.testing.assert_allclose(drop.values[case.cut :], np.maximum(case.candidate - added, 0.0))
    assert datasets.inject(case, Recipe("level", 0.5), start=0, sign=1.0, rng=rng).major


def test_leak_injection_is_judged_as_memory_with_a_limit() -> None:
    case = null_case()
    median, scale = datasets.robust_scale(case.baseline)
    rng = np.random.default_rng(0)
    slow = datasets.inject(case, Recipe("leak", 0.25), start=0, sign=1.0, rng=rng)
    fast = datasets.inject(case, Recipe("leak", 2.0), start=0, sign=1.0, rng=rng)
    assert slow.kind == fast.kind == "memory"
    assert fast.limit == pytest.approx(median + datasets.LEAK_LIMIT_SCALES * scale)
    slope = np.polyfit(case.times[case.cut :], fast.values[case.cut :] - case.values[case.cut :], 1)[0]
    assert slope == pytest.approx(2.0 * scale / case.period)
    # 4 scales to the limit: 2 per 6-hour period takes 12 h (major), 0.25 per period 96 h.
    assert fast.major and not slow.major


def test_error_steps_add_poisson_events_to_counts() -> None:
    rng = np.random.default_rng(5)
    counts = rng.poisson(20, 600).astype(float)
    series = Series("msft", "counts", "errors", 1.5e9 + 3600.0 * np.arange(600), counts, ())
    case = next(c for c in datasets.release_cuts(series, seed=0, max_null=1) if c.label == "null")
    step = datasets.inject(case, Recipe("errors", 1.0), start=0, sign=1.0, rng=rng)
    extra = step.values[case.cut :] - case.values[case.cut :]
    assert np.all(extra == np.round(extra)) and np.all(extra >= 0)
    assert extra.mean() == pytest.approx(np.mean(case.baseline), rel=0.25) and step.major


def test_drops_only_where_there_is_room() -> None:
    zeros = Series("msft", "bursty", "traffic", 1.5e9 + 60.0 * np.arange(3000),
                   np.where(np.arange(3000) % 50 == 0, 100.0, 0.0), ())
    cases = datasets.build_cases([zeros], seed=0, max_null=3)["injected"]
    assert cases and all("-" not in c.injection for c in cases)


def test_aa_cases_stay_clear_of_labels() -> None:
    series = synthetic(windows=((900, 960),))
    flagged = datasets.anomalous(series)
    shape = datasets.case_shape("nab", 300.0)
    cases = datasets.aa_cases(series, seed=0, count=5)
    assert len(cases) == 10 and {c.kind for c in cases} == {"resource", "memory"}
    for case in cases:
        start = int(np.searchsorted(series.times, case.times[0]))
        low, high = max(0, start - shape.period), start + case.times.size + shape.period
        assert not flagged[low:high].any() and case.label == "null"


# --- peers -------------------------------------------------------------------------------


def release(candidate: np.ndarray, *, baseline: np.ndarray | None = None, bad: str = "increase",
            limit: float | None = None) -> peers.PeerInput:
    base = np.random.default_rng(0).normal(0.0, 1.0, 288) if baseline is None else baseline
    times = 60.0 * np.arange(candidate.size)
    return peers.PeerInput(base, times, candidate, times, bad, limit)


def test_static_threshold_needs_k_points_beyond_p99() -> None:
    values = np.zeros(30)
    values[[4, 10, 11]] = 10.0  # a lone spike, then two: no run of three
    assert peers.static_threshold(release(values)).verdict == "pass"
    values[12] = 10.0
    assert peers.static_threshold(release(values)) == peers.PeerOutcome("rollback", 12 * 60.0)
    assert peers.static_threshold(release(-values)).verdict == "pass"  # drops are harmless here
    assert peers.static_threshold(release(-values, bad="both")).first_alarm_at == 12 * 60.0


def test_kayenta_matches_scipy_and_its_tolerance() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(100.0, 5.0, 200)
    shifted = rng.normal(108.0, 5.0, 40)  # significant, but the means differ by only 8%
    assert peers.kayenta(release(shifted, baseline=base)).verdict == "pass"
    high = rng.normal(120.0, 5.0, 40)
    outcome = peers.kayenta(release(high, baseline=base))
    # The first evaluation with min_samples values already fails: p << 0.02 and +20% > 10%.
    assert stats.mannwhitneyu(high[:10], base).pvalue < 0.02
    assert outcome == peers.PeerOutcome("rollback", 9 * 60.0)
    assert peers.kayenta(release(rng.normal(100.0, 5.0, 40), baseline=base)).verdict == "pass"


def test_predict_linear_crosses_the_limit_when_the_line_says() -> None:
    # v = t / 60 (one unit a minute); period 59 min: window ~14.75 min, horizon 59 min.
    times = 60.0 * np.arange(60)
    values = times / 60.0
    # Projection at now + 59 min is now/60 + 59; above 80 once now > 21 min, for 3 evaluations.
    outcome = peers.predict_linear_alert(release(values, limit=80.0))
    assert outcome == peers.PeerOutcome("rollback", 24 * 60.0)
    assert peers.predict_linear_alert(release(values, limit=1000.0)).verdict == "pass"


def test_pelt_alarms_on_a_shift_after_the_release_only() -> None:
    rng = np.random.default_rng(4)
    quiet = rng.normal(0.0, 1.0, 48)
    assert peers.pelt(release(quiet)).verdict == "pass"
    shifted = quiet.copy()
    shifted[20:] += 6.0
    outcome = peers.pelt(release(shifted))
    assert outcome.verdict == "rollback" and outcome.first_alarm_at is not None
    assert 20 * 60.0 <= outcome.first_alarm_at <= 26 * 60.0
    assert peers.pelt(release(quiet - np.where(np.arange(48) >= 20, 6.0, 0.0))).verdict == "pass"


# --- the product's side and the score ----------------------------------------------------


def test_product_is_judged_through_replay() -> None:
    rng = np.random.default_rng(9)
    counts = rng.poisson(20, 400).astype(float)
    series = Series("msft", "crashes", "errors", 1.5e9 + 3600.0 * np.arange(400), counts, ())
    case = next(c for c in datasets.release_cuts(series, seed=0, max_null=1) if c.label == "null")
    assert accuracy.judge_product(case).verdict == "pass"
    broken = datasets.inject(case, Recipe("errors", 3.0), start=0, sign=1.0, rng=rng)
    outcome = accuracy.judge_product(broken)
    assert outcome.verdict == "rollback" and outcome.first_alarm_at is not None
    times = accuracy.evaluation_times(case)
    assert times.size == 24 and times[-1] == case.released + case.period
    assert outcome.first_alarm_at in set(times.tolist())


def result(label: str, verdict: str, alarm: float | None, start: float | None = 100.0,
           major: bool = False) -> accuracy.CaseResult:
    outcomes = {m: accuracy.Outcome(verdict, alarm) for m in accuracy.METHODS}
    return accuracy.CaseResult("id", "g", "s", "traffic", label, major, "", 10.0, start, outcomes)


def test_score_counts_early_alarms_as_misses() -> None:
    rows = [
        result("null", "pass", None), result("null", "hotfix", 50.0), result("null", "rollback", 60.0),
        result("null", "inconclusive", None),
        result("bad", "rollback", 130.0, major=True), result("bad", "hotfix", 90.0, major=True),
        result("bad", "pass", None), result("bad", "hotfix", 150.0),
    ]
    summary = accuracy.score(rows)["g"][accuracy.PRODUCT]
    assert summary["false_alarm_rate"] == 0.5 and summary["false_rollback_rate"] == 0.25
    assert summary["detection_rate"] == 0.5 and summary["major_detection_rate"] == 0.5
    assert summary["median_delay_samples"] == 4.0 and summary["inconclusive"] == 1


def test_contrast_is_a_change_in_the_baselines_window_spreads() -> None:
    # Windows of 16 over 0,0,0,0,4,4,4,4,... all have median 2: no wandering, so the spread
    # is the floor, the MAD-based sd (2 x 1.4826) over sqrt(16).
    baseline = np.tile([0.0, 0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 4.0], 8)
    effect = np.full(16, 6.0)
    assert datasets.contrast(baseline, effect) == pytest.approx(6.0 / (2 * 1.4826 / 4.0))
    assert datasets.contrast(baseline, np.zeros(16)) == 0.0
    assert np.isnan(datasets.contrast(baseline, np.full(16, np.nan)))


def test_one_look_is_the_candidates_median_change_in_window_spreads() -> None:
    # The baseline of the contrast test above: median 2, spread at 16 samples 2 x 1.4826 / 4.
    baseline = np.tile([0.0, 0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 4.0], 8)
    spread = 2 * 1.4826 / 4.0

    def case(kind: str, candidate: np.ndarray) -> datasets.Case:
        values = np.concatenate([baseline, candidate])
        return datasets.Case("c", "g", "s", kind, "null", np.arange(values.size, dtype=float),
                             values, baseline.size, 16.0, 1.0)

    up, down = np.full(16, 8.0), np.full(16, -4.0)
    assert datasets.one_look_z(case("latency", up)) == pytest.approx(6.0 / spread)
    assert datasets.one_look_z(case("latency", down)) == pytest.approx(-6.0 / spread)
    assert datasets.one_look_z(case("traffic", down)) == pytest.approx(6.0 / spread)  # either way
    # Gaps do not count as samples: 16 valid of 20 are judged at the spread of 16.
    gappy = np.concatenate([up, np.full(4, np.nan)])
    assert datasets.one_look_z(case("latency", gappy)) == pytest.approx(6.0 / spread)
    assert np.isnan(datasets.one_look_z(case("latency", np.full(16, np.nan))))


def test_hindsight_bars_pass_five_percent_of_each_kinds_nulls() -> None:
    def row(kind: str, label: str, one_look: float, major: bool = False) -> accuracy.CaseResult:
        group = "injected" if label == "bad" else "g"
        outcomes = {m: accuracy.Outcome("pass", None) for m in accuracy.METHODS}
        return accuracy.CaseResult("id", group, "s", kind, label, major, "level+50%", 1.0,
                                   0.0 if label == "bad" else None, outcomes, 1.0, one_look)

    nulls = [row("latency", "null", float(k)) for k in range(40)]
    nulls += [row("traffic", "null", 100.0 + k) for k in range(10)]  # too few: the pooled bar
    nulls.append(row("latency", "null", float("nan")))  # no statistic: passes no bar
    bars = accuracy.hindsight_bars(nulls)
    assert bars == {"latency": 37.0, "traffic": 107.0}  # 2 of 41 and 2 of 51 pass
    passed = [r for r in nulls if r.kind == "latency" and r.one_look > bars["latency"]]
    assert len(passed) / 41 <= accuracy.HINDSIGHT_FALSE_ALARMS
    majors = [row("latency", "bad", 37.5, True), row("latency", "bad", 37.0, True),
              row("traffic", "bad", 108.0, True), row("traffic", "bad", float("nan"), True)]
    band = accuracy._band(majors, bars)
    assert band["hindsight"] == 0.5 and band[accuracy.PRODUCT] == 0.0


def test_majors_are_banded_by_contrast() -> None:
    rows = []
    for value, verdict in ((0.5, "pass"), (1.9, "hotfix"), (3.0, "rollback"), (20.0, "rollback"),
                           (float("inf"), "rollback"), (float("nan"), "rollback")):
        row = result("bad", verdict, 130.0 if verdict != "pass" else None, major=True)
        rows.append(accuracy.CaseResult(row.case_id, "injected", row.series, row.kind, "bad", True,
                                        "level+50%", 10.0, 100.0, row.outcomes, value))
    bands = accuracy.by_contrast(rows)
    assert {band: row["cases"] for band, row in bands.items()} == {"0-2": 2, "2-4": 1, ">= 8": 2, "all": 6}
    assert bands["0-2"][accuracy.PRODUCT] == 0.5 and bands[">= 8"][accuracy.PRODUCT] == 1.0
    assert bands["all"][accuracy.PRODUCT] == pytest.approx(5 / 6)  # NaN counts in "all" only
    # Traffic is judged either way: the reference test at 5% needs 1.96 spreads for even odds.
    assert bands["2-4"]["reference"] == pytest.approx(stats.norm.cdf(3.0 - 1.959964))
    assert bands[">= 8"]["reference"] == pytest.approx(1.0)


def test_the_reference_tests_power_matches_simulation() -> None:
    rng = np.random.default_rng(11)
    for kind, contrast in (("latency", 1.0), ("latency", 2.5), ("traffic", 3.0)):
        z = contrast + rng.standard_normal(200_000)
        sides = 2 if kind in datasets.EITHER_WAY_KINDS else 1
        cut = stats.norm.isf(0.05 / sides)
        simulated = np.mean(z > cut) + (np.mean(z < -cut) if sides == 2 else 0.0)
        assert datasets.reference_power(kind, contrast) == pytest.approx(simulated, abs=0.004)


def test_quick_run_end_to_end(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert accuracy.main(["--data", str(data), "--quick", "--jobs", "1", "--datasets", "tcpd", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"].startswith("python -m benchmarks.accuracy --data")
    assert set(report["groups"]) == {"tcpd", "injected", "aa"}
    assert set(report["groups"]["tcpd"]) == set(accuracy.METHODS)
    assert all(r["group"] in report["groups"] for r in report["results"])
    bands = report["injected_majors_by_contrast"]
    majors = report["groups"]["injected"][accuracy.PRODUCT]["major_cases"]
    assert sum(b["cases"] for name, b in bands.items() if name != "all") == majors == bands["all"]["cases"]


def test_missing_data_folder_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert accuracy.main(["--data", str(tmp_path / "absent")]) == 2
    assert "no data folder" in capsys.readouterr().err


def test_the_modules_examples_hold() -> None:
    import doctest

    result = doctest.testmod(datasets)
    assert result.failed == 0 and result.attempted >= 4
    result = doctest.testmod(accuracy)
    assert result.failed == 0 and result.attempted >= 1
