"""The `/metrics` exposition: parsed back with prometheus_client's parser and promtool."""

from __future__ import annotations

import math
import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.exporter import CODE_CLASSES, ENDPOINTS, RequestCounter, build_registry
from monitor.snapshot import Snapshot, SnapshotBox, TargetHealth

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def finding(**overrides: Any) -> dict[str, Any]:
    base = {
        "signal": "latency_p95", "detector": "shift", "severity": "major",
        "baseline": 0.120, "candidate": 0.180, "effect": 0.5, "lower": 0.41, "upper": 0.62,
        "tolerance": 0.2, "n_baseline": 720, "n_candidate": 90, "detail": "slower",
        "exhaustion": None, "at": 1_700_003_000.0,
    }
    return base | overrides


def document(service: str, release: str, verdict: str | None, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "service": service, "release": release, "baseline_release": "v2.2",
        "verdict": verdict, "reason": "", "state": "watching", "change_class": "minor",
        "started_at": 1_700_000_000.0, "period_seconds": 3600.0, "decided_at": None,
        "first_alarm_at": None, "evaluated_at": 1_700_003_000.0, "invalidated": False,
        "checks": [], "findings": [],
    }
    return base | overrides


ROLLBACK_DOC = document(
    "checkout", "v2.3", "rollback", state="done", change_class="major",
    decided_at=1_700_003_000.0, first_alarm_at=1_700_002_400.0,
    checks=[
        {"stage": "smoke", "name": "home page", "ok": True, "detail": "", "at": 1.0},
        {"stage": "verification", "name": "pay", "ok": False, "detail": "500", "at": 2.0},
    ],
    findings=[
        finding(upper=float("nan"), tolerance=None),
        finding(signal="rss_bytes", detector="leak", severity="minor", baseline=500.0,
                candidate=30_500.0, effect=30_000.0, lower=20_000.0, upper=40_000.0,
                tolerance=1_000.0, n_baseline=60, n_candidate=60, exhaustion=5400.0),
    ],
    signals=[
        {"signal": "latency_p95", "baseline": {"p05": 0.08, "p50": 0.11, "p95": 0.14},
         "candidate": 0.18},
        {"signal": "error_ratio", "baseline": {"p05": 0.0, "p50": 0.001, "p95": float("nan")},
         "candidate": 0.0, "pooled": {"baseline": 0.0012, "candidate": 0.004}},
    ],
)
PASS_DOC = document("checkout", "v2.2", "pass", baseline_release=None, state="done",
                    started_at=1_699_990_000.0, decided_at=1_699_993_600.0)
PENDING_DOC = document("search", "v7", None, started_at=1_700_000_500.0)
TARGETS = (
    TargetHealth("checkout", "http://10.0.0.1:9100/metrics", True, 1_700_003_010.0, 0.042,
                 120, 3, 812),
    TargetHealth("checkout", "http://10.0.0.2:9100/metrics", False, 1_700_003_011.0, 2.5,
                 118, 17, 0, last_error="timeout"),
    # Not scraped yet (the daemon has just started).
    TargetHealth("search", "http://10.0.0.3:9100/metrics", False, 0.0, 0.0, 0, 0, 0),
)


def full_snapshot() -> Snapshot:
    docs = (ROLLBACK_DOC, PASS_DOC, PENDING_DOC)
    return Snapshot(
        generated_at=1_700_003_020.0,
        verdicts={(d["service"], d["release"]): d for d in docs},
        targets=TARGETS, evaluation_seconds=0.35, evaluations_total=41,
        last_evaluation=1_700_003_000.0, store_errors_total=2, started_at=1_699_980_000.0,
        hook_failures={("shop", "rollback"): 3},
    )


def scrape(box: SnapshotBox, requests: RequestCounter | None = None) -> str:
    return generate_latest(build_registry(box, version="1.2.3", requests=requests)).decode()


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def select(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return {key: value for (n, key), value in samples.items() if n == name and wanted <= key}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture()
def samples() -> Samples:
    return parse(scrape(SnapshotBox(full_snapshot())))


def test_build_info(samples: Samples) -> None:
    assert value(samples, "release_monitor_build_info", version="1.2.3") == 1.0


@pytest.mark.parametrize(
    ("service", "release", "state"),
    [("checkout", "v2.3", "rollback"), ("checkout", "v2.2", "pass"), ("search", "v7", "pending")],
)
def test_verdict_state_set_has_one_active_state(
    samples: Samples, service: str, release: str, state: str
) -> None:
    series = select(samples, "release_monitor_verdict", service=service, release=release)
    states = {dict(labels)["verdict"]: v for labels, v in series.items()}
    assert states == {s: float(s == state)
                      for s in ("pass", "hotfix", "rollback", "pending", "inconclusive")}


def test_release_timestamps_only_when_set(samples: Samples) -> None:
    start = "release_monitor_release_start_timestamp_seconds"
    decided = "release_monitor_release_decided_timestamp_seconds"
    alarm = "release_monitor_release_first_alarm_timestamp_seconds"
    assert value(samples, start, service="checkout", release="v2.3") == 1_700_000_000.0
    assert value(samples, decided, service="checkout", release="v2.3") == 1_700_003_000.0
    assert value(samples, alarm, service="checkout", release="v2.3") == 1_700_002_400.0
    assert value(samples, decided, service="checkout", release="v2.2") == 1_699_993_600.0
    assert len(select(samples, decided)) == 2
    assert len(select(samples, alarm)) == 1
    assert len(select(samples, start)) == 3


def test_release_info(samples: Samples) -> None:
    info = select(samples, "release_monitor_release_info")
    assert set(info.values()) == {1.0}
    labels = {dict(k)["release"]: dict(k) for k in info}
    assert labels["v2.3"] == {"service": "checkout", "release": "v2.3", "baseline": "v2.2",
                              "change_class": "major", "state": "done"}
    assert labels["v2.2"]["baseline"] == ""


def test_finding_figures_and_skipped_missing_values(samples: Samples) -> None:
    shift = {"service": "checkout", "release": "v2.3", "signal": "latency_p95",
             "detector": "shift", "severity": "major"}
    assert value(samples, "release_monitor_finding_effect_ratio", **shift) == 0.5
    assert value(samples, "release_monitor_finding_lower_ratio", **shift) == 0.41
    assert value(samples, "release_monitor_finding_baseline_samples", **shift) == 720
    assert value(samples, "release_monitor_finding_candidate_samples", **shift) == 90
    # NaN upper bound and missing tolerance leave no series behind.
    assert select(samples, "release_monitor_finding_upper_ratio", signal="latency_p95") == {}
    assert select(samples, "release_monitor_finding_tolerance_ratio", signal="latency_p95") == {}
    # A leak's figures are slopes (bytes per second here), never in a *_ratio metric.
    leak = shift | {"signal": "rss_bytes", "detector": "leak", "severity": "minor"}
    for name in ("effect", "lower", "upper", "tolerance"):
        assert select(samples, f"release_monitor_finding_{name}_ratio", signal="rss_bytes") == {}
    slopes = {dict(k)["figure"]: v for k, v in
              select(samples, "release_monitor_leak_slope_per_second", **leak).items()}
    assert slopes == {"candidate": 30_500.0, "baseline": 500.0, "lower": 20_000.0,
                      "upper": 40_000.0, "tolerated": 1_000.0}
    assert value(samples, "release_monitor_finding_candidate_samples", **leak) == 60
    exhaustion = select(samples, "release_monitor_leak_exhaustion_seconds")
    assert exhaustion == {frozenset({"service": "checkout", "release": "v2.3",
                                     "signal": "rss_bytes"}.items()): 5400.0}


def test_checks_passed(samples: Samples) -> None:
    checks = select(samples, "release_monitor_check_passed", release="v2.3")
    assert {(dict(k)["stage"], dict(k)["check"]): v for k, v in checks.items()} == {
        ("smoke", "home page"): 1.0, ("verification", "pay"): 0.0,
    }


def test_signal_quantiles_and_candidate(samples: Samples) -> None:
    baseline = select(samples, "release_monitor_signal_baseline", signal="latency_p95")
    assert {dict(k)["quantile"]: v for k, v in baseline.items()} == {
        "0.05": 0.08, "0.5": 0.11, "0.95": 0.14,
    }
    errors = select(samples, "release_monitor_signal_baseline", signal="error_ratio")
    assert {dict(k)["quantile"]: v for k, v in errors.items()} == {"0.05": 0.0, "0.5": 0.001}
    candidate = select(samples, "release_monitor_signal_candidate")
    # The error ratio over all its requests, not its median step (0: most have no error).
    assert {dict(k)["signal"]: v for k, v in candidate.items()} == {
        "latency_p95": 0.18, "error_ratio": 0.004}
    # The baseline's value to set against it: the median, or the ratio over all requests.
    level = select(samples, "release_monitor_signal_baseline_level")
    assert {dict(k)["signal"]: v for k, v in level.items()} == {
        "latency_p95": 0.11, "error_ratio": 0.0012}


def test_target_health(samples: Samples) -> None:
    good = {"service": "checkout", "target": "http://10.0.0.1:9100/metrics"}
    bad = {"service": "checkout", "target": "http://10.0.0.2:9100/metrics"}
    assert value(samples, "release_monitor_target_up", **good) == 1.0
    assert value(samples, "release_monitor_target_up", **bad) == 0.0
    assert value(samples, "release_monitor_scrape_duration_seconds", **bad) == 2.5
    assert value(samples, "release_monitor_scrapes_total", **good) == 120
    assert value(samples, "release_monitor_scrape_errors_total", **bad) == 17
    assert value(samples, "release_monitor_scrape_samples", **good) == 812
    # Down only once a scrape failed: before the first, no series (an alert would fire).
    assert select(samples, "release_monitor_target_up", service="search") == {}
    assert value(samples, "release_monitor_scrapes_total", service="search",
                 target="http://10.0.0.3:9100/metrics") == 0


def test_evaluation_and_self_metrics(samples: Samples) -> None:
    assert value(samples, "release_monitor_evaluation_duration_seconds") == 0.35
    assert value(samples, "release_monitor_evaluations_total") == 41
    assert value(samples, "release_monitor_last_evaluation_timestamp_seconds") == 1_700_003_000.0
    assert value(samples, "release_monitor_store_errors_total") == 2
    assert value(samples, "release_monitor_start_time_seconds") == 1_699_980_000.0
    assert value(samples, "release_monitor_hook_failures_total", service="shop", hook="rollback") == 3


def test_request_counter_series_exist_at_zero_and_count_by_class() -> None:
    requests = RequestCounter()
    empty = select(parse(scrape(SnapshotBox(), requests)), "release_monitor_http_requests_total")
    assert len(empty) == len(ENDPOINTS) * len(CODE_CLASSES) == 21
    assert set(empty.values()) == {0.0}
    for endpoint, status in [("gate", 412), ("gate", 200), ("gate", 404), ("/etc/passwd", 500),
                             ("metrics", 301)]:
        requests.count(endpoint, status)
    counted = parse(scrape(SnapshotBox(), requests))
    name = "release_monitor_http_requests_total"
    assert value(counted, name, endpoint="gate", code="4xx") == 2
    assert value(counted, name, endpoint="gate", code="2xx") == 1
    assert value(counted, name, endpoint="other", code="5xx") == 1
    assert sum(select(counted, name).values()) == 4  # the 301 has no class of its own
    assert len(select(counted, name)) == 21


def test_last_evaluation_absent_until_set() -> None:
    samples = parse(scrape(SnapshotBox()))
    assert select(samples, "release_monitor_last_evaluation_timestamp_seconds") == {}
    assert select(samples, "release_monitor_verdict") == {}


def test_unknown_verdict_counts_as_pending() -> None:
    odd = document("api", "v1", "exploded")
    samples = parse(scrape(SnapshotBox(Snapshot(verdicts={("api", "v1"): odd}))))
    active = {dict(k)["verdict"] for k, v in select(samples, "release_monitor_verdict").items()
              if v == 1.0}
    assert active == {"pending"}


def test_label_values_are_escaped() -> None:
    service = 'we"ird\\ser\nvice'
    doc = document(service, "v1", "pass")
    samples = parse(scrape(SnapshotBox(Snapshot(verdicts={(service, "v1"): doc}))))
    assert value(samples, "release_monitor_verdict", service=service, release="v1",
                 verdict="pass") == 1.0


def test_collector_reads_the_latest_snapshot() -> None:
    box = SnapshotBox()
    registry = build_registry(box, version="1.2.3")
    assert select(parse(generate_latest(registry).decode()), "release_monitor_verdict") == {}
    box.publish(full_snapshot())
    assert len(select(parse(generate_latest(registry).decode()), "release_monitor_verdict")) == 15


def test_registry_is_fresh_not_global() -> None:
    first = build_registry(SnapshotBox(), version="1")
    second = build_registry(SnapshotBox(), version="2")
    assert first is not second and first is not REGISTRY
    assert REGISTRY.get_sample_value("release_monitor_build_info", {"version": "1"}) is None
    assert second.get_sample_value("release_monitor_build_info", {"version": "2"}) == 1.0


def test_no_nan_or_infinite_values_are_exported() -> None:
    doc = document("api", "v1", "hotfix", started_at=float("inf"),
                   findings=[finding(effect=float("-inf"), lower="0.3", exhaustion=float("nan"))])
    samples = parse(scrape(SnapshotBox(Snapshot(verdicts={("api", "v1"): doc}))))
    assert all(math.isfinite(v) for v in samples.values())
    assert select(samples, "release_monitor_release_start_timestamp_seconds") == {}
    assert select(samples, "release_monitor_leak_exhaustion_seconds") == {}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not on PATH (Debian/Ubuntu: apt-get install prometheus)")
@pytest.mark.parametrize("snapshot", [Snapshot(), full_snapshot()], ids=["empty", "full"])
def test_promtool_check_metrics_is_clean(snapshot: Snapshot) -> None:
    body = scrape(SnapshotBox(snapshot), RequestCounter()).encode()
    result = subprocess.run(["promtool", "check", "metrics"], input=body,
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout + result.stderr == b""
