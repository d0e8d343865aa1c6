"""The simulated shop service, exercised over real HTTP on 127.0.0.1 with a simulated clock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from monitor.clock import SimClock
from monitor.demo_service import (
    GC_CLIMB_BYTES,
    GC_PERIOD_S,
    KIB,
    LATENCY_BUCKETS,
    MIB,
    POOL_MAX,
    PROFILES,
    SimulatedService,
)

RATE = 40.0
COUNTERS = (
    "http_requests_total",
    "http_request_errors_total",
    "http_request_duration_seconds_count",
    "process_cpu_seconds_total",
)


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def service(clock: SimClock) -> Iterator[SimulatedService]:
    svc = SimulatedService(clock, seed=7, requests_per_s=RATE)
    svc.start()
    yield svc
    svc.stop()


def parse(body: str) -> dict[str, float]:
    """Samples keyed by name, with labels appended as `{k="v",...}` when there are any."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape(service: SimulatedService) -> dict[str, float]:
    answer = requests.get(f"{service.url}/metrics", timeout=5)
    assert answer.status_code == 200
    return parse(answer.text)


def scrape_every(
    service: SimulatedService, clock: SimClock, step: float, count: int
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Advance `step` seconds then scrape, `count` times; return the times and the samples."""
    times, scrapes = [], []
    for _ in range(count):
        times.append(clock.advance(step))
        scrapes.append(scrape(service))
    return np.array(times), scrapes


def floor_slope(times: np.ndarray, memory: np.ndarray, started: float) -> float:
    """Slope of the lower envelope: the minimum of each collector cycle, fitted by a line."""
    cycle = ((times - started) // GC_PERIOD_S).astype(int)
    cycles, sizes = np.unique(cycle, return_counts=True)
    whole = cycles[sizes == sizes.max()]  # a partial cycle may miss its drop
    lows = [np.flatnonzero(cycle == c)[np.argmin(memory[cycle == c])] for c in whole]
    slope, _ = np.polyfit(times[lows], memory[lows], 1)
    return float(slope)


def bucket_key(le: float) -> str:
    label = "+Inf" if math.isinf(le) else repr(le)
    return f'http_request_duration_seconds_bucket{{le="{label}"}}'


def test_metrics_are_prometheus_text_with_help_and_type(service: SimulatedService) -> None:
    answer = requests.get(f"{service.url}/metrics", timeout=5)
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    expected_types = {
        "http_requests": "counter",
        "http_request_errors": "counter",
        "http_request_duration_seconds": "histogram",
        "process_resident_memory_bytes": "gauge",
        "process_cpu_seconds": "counter",
        "db_pool_connections_in_use": "gauge",
        "db_pool_connections_max": "gauge",
        "work_queue_depth": "gauge",
        "demo_build_info": "gauge",
    }
    assert {name: families[name].type for name in expected_types} == expected_types
    assert all(families[name].documentation for name in expected_types)
    samples = parse(answer.text)
    assert samples['demo_build_info{version="v2.2"}'] == 1.0
    assert samples["db_pool_connections_max"] == POOL_MAX
    assert [bucket_key(le) in samples for le in LATENCY_BUCKETS] == [True] * 12


def test_counters_are_monotonic_and_requests_follow_the_rate(
    service: SimulatedService, clock: SimClock
) -> None:
    _, scrapes = scrape_every(service, clock, 15.0, 40)  # ten minutes
    for name in (*COUNTERS, *(bucket_key(le) for le in LATENCY_BUCKETS)):
        series = np.array([s[name] for s in scrapes])
        assert np.all(np.diff(series) >= 0), name
    expected = RATE * 600.0
    assert abs(scrapes[-1]["http_requests_total"] - expected) < 5 * math.sqrt(expected)
    cpu_expected = PROFILES["v2.2"].cpu_cores * 600.0
    assert scrapes[-1]["process_cpu_seconds_total"] == pytest.approx(cpu_expected, rel=0.05)


@pytest.mark.parametrize("version", ["v2.2", "v2.3", "v2.4", "v2.5"])
def test_error_count_is_binomial_with_the_profile_ratio(
    service: SimulatedService, clock: SimClock, version: str
) -> None:
    service.deploy(version)
    _, scrapes = scrape_every(service, clock, 30.0, 40)  # twenty minutes, ~48,000 requests
    requests_total = scrapes[-1]["http_requests_total"]
    errors = scrapes[-1]["http_request_errors_total"]
    ratio = PROFILES[version].error_ratio
    binomial_sd = math.sqrt(requests_total * ratio * (1 - ratio))
    assert abs(errors - requests_total * ratio) < 5 * binomial_sd


def test_v23_errors_are_far_above_v22(clock: SimClock) -> None:
    with SimulatedService(clock, seed=3, version="v2.3") as service:
        _, scrapes = scrape_every(service, clock, 60.0, 5)
    last = scrapes[-1]
    assert last["http_request_errors_total"] / last["http_requests_total"] > 0.04


def test_latency_histogram_follows_the_lognormal_profile(
    service: SimulatedService, clock: SimClock
) -> None:
    _, scrapes = scrape_every(service, clock, 15.0, 40)
    last = scrapes[-1]
    count = last["http_request_duration_seconds_count"]
    assert count == last["http_requests_total"]
    assert last[bucket_key(math.inf)] == count
    profile = PROFILES["v2.2"]
    reference = stats.lognorm(s=profile.latency_sigma, scale=profile.latency_median)
    for le in LATENCY_BUCKETS[:-1]:
        p = float(reference.cdf(le))
        tolerance = 5 * math.sqrt(p * (1 - p) / count) + 1e-9
        assert abs(last[bucket_key(le)] / count - p) <= tolerance, le
    mean = last["http_request_duration_seconds_sum"] / count
    assert mean == pytest.approx(float(reference.mean()), rel=0.03)


def test_v23_memory_floor_rises_at_the_leak_rate(clock: SimClock) -> None:
    with SimulatedService(clock, seed=5, version="v2.3") as service:
        started = clock.now()
        times, scrapes = scrape_every(service, clock, 10.0, 72)  # twelve minutes
    memory = np.array([s["process_resident_memory_bytes"] for s in scrapes])
    leak = PROFILES["v2.3"].leak_bytes_per_s
    assert floor_slope(times, memory, started) == pytest.approx(leak, rel=0.01)
    assert memory[-1] > 1024 * MIB  # a 1 GiB limit is crossed within the quarter hour


def test_v24_leaks_slowly_and_v22_not_at_all(clock: SimClock) -> None:
    slopes, swings = {}, {}
    for version in ("v2.2", "v2.4"):
        with SimulatedService(clock, seed=9, version=version) as service:
            started = clock.now()
            times, scrapes = scrape_every(service, clock, 20.0, 180)  # one hour
        memory = np.array([s["process_resident_memory_bytes"] for s in scrapes])
        slopes[version] = floor_slope(times, memory, started)
        swings[version] = float(np.ptp(memory[:9]))  # the first collector cycle
    assert abs(slopes["v2.2"]) < 1 * KIB
    assert slopes["v2.4"] == pytest.approx(PROFILES["v2.4"].leak_bytes_per_s, rel=0.05)
    # The collector's saw-tooth is visible and larger than the leak of a whole cycle.
    assert 0.75 * GC_CLIMB_BYTES < swings["v2.2"] < 1.1 * GC_CLIMB_BYTES


def test_v24_queue_is_deeper_while_the_pool_stays_within_its_max(clock: SimClock) -> None:
    means = {}
    for version in ("v2.2", "v2.4"):
        with SimulatedService(clock, seed=13, version=version) as service:
            _, scrapes = scrape_every(service, clock, 15.0, 60)
        means[version] = np.mean([s["work_queue_depth"] for s in scrapes])
        pool = np.array([s["db_pool_connections_in_use"] for s in scrapes])
        assert np.all((pool >= 0) & (pool <= POOL_MAX))
    assert means["v2.2"] == pytest.approx(PROFILES["v2.2"].queue_depth, rel=0.05)
    assert means["v2.4"] / means["v2.2"] == pytest.approx(1.6, rel=0.08)


def test_deploy_restarts_the_process(service: SimulatedService, clock: SimClock) -> None:
    scrape_every(service, clock, 30.0, 10)
    service.deploy("v2.3")
    fresh = scrape(service)
    assert [fresh[name] for name in COUNTERS] == [0.0, 0.0, 0.0, 0.0]
    assert 'demo_build_info{version="v2.3"}' in fresh
    assert 'demo_build_info{version="v2.2"}' not in fresh
    base = PROFILES["v2.3"].memory_base
    assert base - MIB < fresh["process_resident_memory_bytes"] < base + GC_CLIMB_BYTES + MIB
    clock.advance(60.0)
    after = scrape(service)
    assert abs(after["http_requests_total"] - RATE * 60) < 5 * math.sqrt(RATE * 60)


def test_deploy_of_an_unknown_version_is_refused(service: SimulatedService) -> None:
    with pytest.raises(ValueError, match="v2.9.*known versions: v2.1"):
        service.deploy("v2.9")
    assert service.version == "v2.2"


def test_healthy_version_answers_every_endpoint(service: SimulatedService) -> None:
    page = requests.get(f"{service.url}/", timeout=5)
    assert page.status_code == 200
    assert "demo shop" in page.text
    health = requests.get(f"{service.url}/health", timeout=5)
    assert (health.status_code, health.json()) == (200, {"status": "ok", "database": "connected"})
    orders = requests.get(f"{service.url}/api/orders", timeout=5)
    assert orders.status_code == 200
    assert isinstance(orders.json(), list) and orders.json()
    assert requests.get(f"{service.url}/nowhere", timeout=5).status_code == 404


def test_v25_fails_its_smoke_endpoints(service: SimulatedService) -> None:
    service.deploy("v2.5")
    assert requests.get(f"{service.url}/", timeout=5).status_code == 500
    health = requests.get(f"{service.url}/health", timeout=5)
    assert health.status_code == 503
    assert health.json()["database"] == "disconnected"
    assert requests.get(f"{service.url}/api/orders", timeout=5).status_code == 503


def run_script(seed: int) -> list[bytes]:
    """The bodies seen by a fixed sequence of scrapes and deploys."""
    clock = SimClock(start=1_800_000_000.0)
    bodies = []
    with SimulatedService(clock, seed=seed) as service:
        for step in (5.0, 15.0, 15.0, 0.0, 30.0, 600.0):
            clock.advance(step)
            bodies.append(requests.get(f"{service.url}/metrics", timeout=5).content)
        service.deploy("v2.3")
        for step in (0.0, 45.0, 3600.0):
            clock.advance(step)
            bodies.append(requests.get(f"{service.url}/metrics", timeout=5).content)
    return bodies


def test_same_seed_and_times_give_identical_bodies() -> None:
    first, second, other_seed = run_script(11), run_script(11), run_script(12)
    assert first == second
    assert first != other_seed


def test_concurrent_scrapes_all_succeed(service: SimulatedService, clock: SimClock) -> None:
    clock.advance(60.0)
    before = scrape(service)["http_requests_total"]
    statuses: list[int] = []

    def fetch() -> None:
        statuses.append(requests.get(f"{service.url}/metrics", timeout=5).status_code)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    # The clock did not move, so the concurrent scrapes added no requests.
    assert scrape(service)["http_requests_total"] == before


def test_stop_releases_the_port(clock: SimClock) -> None:
    service = SimulatedService(clock)
    service.start()
    url = service.url
    port = int(url.rsplit(":", 1)[1])
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    service.stop()
    service.stop()
    with pytest.raises(RuntimeError):
        _ = service.url
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
    successor = SimulatedService(clock)
    successor.start(port=port)
    try:
        assert successor.url == url
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
    finally:
        successor.stop()


def test_a_scrape_costs_well_under_two_milliseconds_of_cpu(
    service: SimulatedService, clock: SimClock
) -> None:
    started = time.thread_time()
    for _ in range(200):
        clock.advance(15.0)
        service.render_metrics()
    assert (time.thread_time() - started) / 200 < 2e-3
