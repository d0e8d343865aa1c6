"""PromQL sources: a real Prometheus scraping the demo service, and small local servers that
play what a real Prometheus does not (Thanos partial answers, Mimir tenants, proxies, 503s)."""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import prometheus_server
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.clock import SimClock, WallClock
from monitor.deadlines import Interrupter
from monitor.demo_service import SimulatedService
from monitor.errors import ConfigError, ScrapeError
from monitor.policy import MonitorConfig, PromSource, ServicePolicy, SignalRule, load_policy
from monitor.promql import (
    MAX_POINTS_PER_REQUEST,
    MAX_REQUESTS_PER_QUERY,
    PromClient,
    RangeSeries,
    plan_range,
    promql_frame,
    substitute,
)
from monitor.recording import load_recording, recorded_frame
from monitor.releases import Releases
from monitor.scrape_check import queried_metrics, unqueried
from monitor.store import Store

prometheus_factory = prometheus_server.prometheus_factory

T0 = 1_767_225_600.0
SERVICE = "shop"
VERSION = "v2.3"
VARIABLES = {"service": SERVICE, "version": VERSION}
RATE_WINDOW = 5.0
SCRAPES = 7  # three grid points with a full 5 s rate window; Prometheus first scrapes after ~5 s


# --- a real Prometheus scraping the demo service ---------------------------------------------


class RecordingService(SimulatedService):
    """The demo service, keeping every sample it served with the time it was computed."""

    def __init__(self) -> None:
        super().__init__(WallClock(), seed=11, requests_per_s=500.0, version=VERSION)
        self.served: list[tuple[float, dict[str, float]]] = []

    def render_metrics(self) -> bytes:
        served_at = time.time()
        body = super().render_metrics()
        samples = {
            _key(sample.name, sample.labels): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }
        self.served.append((served_at, samples))
        return body

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Times and values served for one sample key."""
        times = np.array([at for at, samples in self.served if key in samples])
        values = np.array([samples[key] for _, samples in self.served if key in samples])
        return times, values


def _key(name: str, labels: dict[str, str]) -> str:
    inside = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inside}}}" if inside else name


@dataclass
class Live:
    service: RecordingService
    client: PromClient
    grid: np.ndarray  # midway between scrapes, so scrape timing cannot blur any answer
    url: str


@pytest.fixture(scope="module")
def live(prometheus_factory: Callable[..., prometheus_server.PrometheusServer]) -> Iterator[Live]:
    service = RecordingService()
    service.start()
    try:
        prometheus = prometheus_factory([f"{service.url}/metrics"], job=SERVICE)
        selector = f'http_requests_total{{job="{SERVICE}"}}'
        prometheus.wait_for_samples(selector, SCRAPES)
        [(_, scraped, _)] = prometheus.samples(selector)
        grid = scraped + 0.5
        with PromClient(PromSource(url=prometheus.url, timeout=10.0), sleep=_no_sleep) as client:
            yield Live(service, client, grid, prometheus.url)
    finally:
        service.stop()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"a healthy local Prometheus needed a retry ({seconds} s)")


def last_served(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """What an instant selector answers at each time: the latest sample at or before it."""
    index = np.searchsorted(times, at, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], np.nan)


def prometheus_increase(times: np.ndarray, values: np.ndarray, at: float, window: float) -> float:
    """Prometheus's extrapolated increase of a counter over (at - window, at], from its source."""
    inside = (times > at - window) & (times <= at)
    ts, vs = times[inside], values[inside]
    if ts.size < 2:
        return math.nan
    steps = np.diff(vs)
    increase = float(np.sum(np.where(steps < 0, vs[1:], steps)))
    sampled = ts[-1] - ts[0]
    average = sampled / (ts.size - 1)
    to_start, to_end = ts[0] - (at - window), at - ts[-1]
    if increase > 0 and vs[0] >= 0:
        to_start = min(to_start, sampled * vs[0] / increase)  # a counter does not extrapolate below 0
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return increase * interval / sampled


def reference_increase(service: RecordingService, key: str, grid: np.ndarray) -> np.ndarray:
    times, values = service.series(key)
    return np.array([prometheus_increase(times, values, at, RATE_WINDOW) for at in grid])


def frame_on_grid(live: Live, rules: list[SignalRule], variables: dict[str, str] = VARIABLES) -> Any:
    return promql_frame(
        live.client, rules, start=float(live.grid[0]), end=float(live.grid[-1]), step=1.0,
        variables=variables,
    )


def test_query_range_returns_the_counter_as_served(live: Live) -> None:
    [series] = live.client.query_range(
        f'http_requests_total{{job="{SERVICE}"}}', float(live.grid[0]), float(live.grid[-1]), 1.0
    )
    assert series.labels["__name__"] == "http_requests_total"
    assert series.labels["job"] == SERVICE
    assert series.labels["instance"] == urlsplit(live.service.url).netloc
    np.testing.assert_allclose(series.times, live.grid, atol=1e-3)
    times, values = live.service.series("http_requests_total")
    np.testing.assert_array_equal(series.values, last_served(times, values, series.times))
    assert series.values[-1] > series.values[0] > 0


def test_frame_gauges_select_by_version_and_combine_series(live: Live) -> None:
    buckets = 'http_request_duration_seconds_bucket{job="$service",le=~"0.05|0.1"}'
    rules = [
        SignalRule(
            name="memory", aggregate="mean",
            query='process_resident_memory_bytes{job="$service"} and on(instance) '
                  'demo_build_info{version="$version"}',
        ),
        SignalRule(name="fast_requests", aggregate="sum", query=buckets),
        SignalRule(name="slowest_bucket", aggregate="max", query=buckets),
    ]
    frame = frame_on_grid(live, rules)
    np.testing.assert_allclose(frame.times, live.grid, atol=1e-3)
    memory = last_served(*live.service.series("process_resident_memory_bytes"), frame.times)
    np.testing.assert_array_equal(frame.values[frame.row("memory")], memory)
    fast = last_served(*live.service.series('http_request_duration_seconds_bucket{le="0.05"}'), frame.times)
    slow = last_served(*live.service.series('http_request_duration_seconds_bucket{le="0.1"}'), frame.times)
    np.testing.assert_array_equal(frame.values[frame.row("fast_requests")], fast + slow)
    np.testing.assert_array_equal(frame.values[frame.row("slowest_bucket")], slow)
    assert np.all(np.isnan(frame.events)) and np.all(np.isnan(frame.trials))

    other = frame_on_grid(live, rules[:1], {"service": SERVICE, "version": "v9.9"})
    assert np.all(np.isnan(other.values))


def test_frame_rate_matches_prometheus_arithmetic_on_served_counters(live: Live) -> None:
    rule = SignalRule(
        name="throughput", kind="rate", query='sum(rate(http_requests_total{job="$service"}[5s]))'
    )
    frame = frame_on_grid(live, [rule])
    expected = reference_increase(live.service, "http_requests_total", frame.times) / RATE_WINDOW
    got = frame.values[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    full_windows = np.count_nonzero(~np.isnan(got))
    assert full_windows >= SCRAPES - 4
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=0.01)
    # Windows holding five scrapes see 500 requests per second, Poisson: within a few percent.
    assert np.all(np.abs(got[4:] - 500.0) < 60.0)


def test_frame_ratio_counts_events_and_trials(live: Live) -> None:
    rule = SignalRule(
        name="error_ratio", kind="ratio",
        numerator_query='sum(increase(http_request_errors_total{job="$service"}[5s]))',
        denominator_query='sum(increase(http_requests_total{job="$service"}[5s]))',
    )
    frame = frame_on_grid(live, [rule])
    events = reference_increase(live.service, "http_request_errors_total", frame.times)
    trials = reference_increase(live.service, "http_requests_total", frame.times)
    counted = ~np.isnan(trials)
    assert np.count_nonzero(counted) >= SCRAPES - 4
    np.testing.assert_array_equal(np.isnan(frame.trials[0]), ~counted)
    np.testing.assert_allclose(frame.events[0][counted], events[counted], rtol=0.01)
    np.testing.assert_allclose(frame.trials[0][counted], trials[counted], rtol=0.01)
    np.testing.assert_allclose(frame.values[0][counted], events[counted] / trials[counted], rtol=0.02)
    assert np.all(np.abs(frame.values[0][4:] - 0.06) < 0.03)  # v2.3 fails 6% of requests


def test_bad_query_carries_prometheus_error_text(live: Live) -> None:
    with pytest.raises(ScrapeError) as caught:
        live.client.query_range("rate(http_requests_total)", float(live.grid[0]), float(live.grid[-1]), 1.0)
    message = str(caught.value)
    assert "bad_data" in message
    assert "expected type range vector" in message
    assert live.url in message and "\n" not in message


def test_substituted_values_survive_prometheus_parser(live: Live) -> None:
    awkward = 'v2"3\\beta\nnext\tline é'
    query = substitute('label_replace(vector(1), "v", "$version", "", "")', {"version": awkward})
    [series] = live.client.query_range(query, float(live.grid[0]), float(live.grid[0]) + 2.0, 1.0)
    assert series.labels["v"] == awkward
    np.testing.assert_array_equal(series.values, [1.0, 1.0, 1.0])


# --- small local servers standing in for Thanos, Mimir, VictoriaMetrics and proxies -----------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str]


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakeState:
    seen: list[Seen] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)  # answered first, in order
    overlap: bool = False  # also answer one step before `start`, as aligning servers do
    warnings: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)  # a /slow/ request waits


class FakeProm(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.state = FakeState()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: FakeProm

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._answer(self.rfile.read(length).decode())

    def _answer(self, form: str) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query)) | dict(parse_qsl(form))
        state.seen.append(Seen(self.command, parts.path, dict(self.headers.items()), params))
        if parts.path.startswith("/slow/"):
            state.held.set()
            state.release.wait(5.0)
        status, headers, body = state.script.pop(0) if state.script else matrix_answer(params, state)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers and headers.get("Connection") != "close":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its limit, as it should
        if headers.get("Connection") == "close":
            self.close_connection = True


def fake_value(milliseconds: int) -> str:
    return repr(milliseconds / 1000.0 * 2.0)


def matrix_answer(params: dict[str, str], state: FakeState) -> Answer:
    """Prometheus's query_range over a series whose value is twice the time, with its limit."""
    start, end, step = (round(float(params[name]) * 1000) for name in ("start", "end", "step"))
    if (end - start) / step > 11_000:
        return error_answer(400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries")
    first = start - step if state.overlap else start
    stamps = range(first, end + 1, step)
    series = {"metric": {"__name__": "fake"}, "values": [[t / 1000.0, fake_value(t)] for t in stamps]}
    payload: dict[str, Any] = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
    if state.warnings:
        payload["warnings"] = state.warnings
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def error_answer(status: int, error_type: str, error: str, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps({"status": "error", "errorType": error_type, "error": error}).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, body


def points_asked(seen: Seen) -> int:
    start, end, step = (round(float(seen.params[name]) * 1000) for name in ("start", "end", "step"))
    return (end - start) // step + 1


@pytest.fixture
def fake() -> Iterator[FakeProm]:
    server = FakeProm()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.state.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


class Sleeps(list[float]):
    """An injected sleep that records the backoff instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(url: str, sleeps: Sleeps | None = None, **source: Any) -> PromClient:
    return PromClient(PromSource(url=url, **source), sleep=sleeps if sleeps is not None else Sleeps())


def ask(client: PromClient, points: int = 3, step: float = 15.0) -> list[RangeSeries]:
    return client.query_range("sum(rate(x[1m]))", T0, T0 + (points - 1) * step, step)


@pytest.mark.parametrize("prefix", ["", "/prometheus", "/select/0/prometheus"])
def test_path_prefix_and_tenant_header(fake: FakeProm, prefix: str) -> None:
    [series] = ask(client_for(f"{fake.base}{prefix}/", tenant="team-a"))
    [seen] = fake.state.seen
    assert seen.path == f"{prefix}/api/v1/query_range"
    assert seen.headers["X-Scope-OrgID"] == "team-a"
    assert seen.method == "GET"
    np.testing.assert_array_equal(series.times, [T0, T0 + 15, T0 + 30])


def test_no_tenant_no_header_and_url_parameters_kept(fake: FakeProm) -> None:
    ask(client_for(f"{fake.base}/select/0/prometheus?extra_label=team%3Da"))
    [seen] = fake.state.seen
    assert "X-Scope-OrgID" not in seen.headers
    assert seen.params["extra_label"] == "team=a"


SECRET = "s3cr3t-value-%&"


@pytest.mark.parametrize("kind", ["bearer_env", "bearer_file", "basic_env", "basic_file"])
def test_credentials_sent_and_never_shown(
    fake: FakeProm, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROM_SECRET", SECRET)
    (tmp_path / "secret").write_text(SECRET + "\n")
    source: dict[str, Any] = {
        "bearer_env": {"bearer_token_env": "PROM_SECRET"},
        "bearer_file": {"bearer_token_file": str(tmp_path / "secret")},
        "basic_env": {"basic_user": "alice", "basic_password_env": "PROM_SECRET"},
        "basic_file": {"basic_user": "alice", "basic_password_file": str(tmp_path / "secret")},
    }[kind]
    fake.state.script = [error_answer(401, "unauthorized", "bad credentials")]
    with pytest.raises(ScrapeError) as caught:
        ask(client_for(fake.base, **source))
    [seen] = fake.state.seen
    if kind.startswith("bearer"):
        assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    else:
        encoded = seen.headers["Authorization"].removeprefix("Basic ")
        user, password = base64.b64decode(encoded).decode().split(":")
        assert (user, password) == ("alice", SECRET)
    assert "HTTP 401 unauthorized: bad credentials" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_credentials_in_url_and_query_parameters_are_redacted(fake: FakeProm) -> None:
    url = f"http://bob:hunter2@127.0.0.1:{fake.server_address[1]}/prometheus?token=abc123"
    fake.state.script = [error_answer(422, "execution", "many-to-many matching not allowed")]
    with pytest.raises(ScrapeError) as caught:
        ask(client_for(url))
    message = str(caught.value)
    assert "hunter2" not in message and "bob" not in message and "abc123" not in message
    assert "sum(rate" not in message
    assert f"127.0.0.1:{fake.server_address[1]}/prometheus" in message
    assert "many-to-many matching not allowed" in message


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"bearer_token_env": "PROM_TOKEN_NOT_SET"}, "PROM_TOKEN_NOT_SET"),
        ({"bearer_token_file": "/nonexistent/token"}, "/nonexistent/token"),
        ({"basic_user": "alice", "basic_password_env": "PROM_PASSWORD_NOT_SET"}, "PROM_PASSWORD_NOT_SET"),
        ({"basic_user": "alice", "basic_password_file": "/nonexistent/password"}, "/nonexistent/password"),
    ],
)
def test_missing_credential_names_its_source(
    fake: FakeProm, source: dict[str, Any], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROM_TOKEN_NOT_SET", raising=False)
    monkeypatch.delenv("PROM_PASSWORD_NOT_SET", raising=False)
    with pytest.raises(ScrapeError, match=named):
        ask(client_for(fake.base, **source))
    assert fake.state.seen == []


def test_empty_token_file_is_an_error(fake: FakeProm, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ScrapeError, match="empty"):
        ask(client_for(fake.base, bearer_token_file=str(tmp_path / "token")))


@pytest.mark.parametrize("overlap", [False, True])
def test_long_range_is_split_and_stitched_exactly(fake: FakeProm, overlap: bool) -> None:
    fake.state.overlap = overlap
    [series] = ask(client_for(fake.base), points=20_000, step=1.0)
    seen = fake.state.seen
    assert len(seen) == 2
    assert all(points_asked(one) <= MAX_POINTS_PER_REQUEST for one in seen)
    assert sum(points_asked(one) for one in seen) == 20_000
    assert float(seen[1].params["start"]) == float(seen[0].params["end"]) + 1.0
    expected_ms = round(T0 * 1000) + 1000 * np.arange(20_000)
    np.testing.assert_array_equal(series.times, expected_ms / 1000.0)
    np.testing.assert_array_equal(series.values, expected_ms / 1000.0 * 2.0)


def test_step_is_whole_milliseconds_and_grows_past_the_request_budget() -> None:
    assert plan_range(T0, T0 + 1.0, 0.0004).step_ms == 1
    assert plan_range(T0, T0 + 60.0, 15.0001).step_ms == 15_001
    week = plan_range(T0, T0 + 7 * 86400.0, 1.0)
    assert week.points <= MAX_POINTS_PER_REQUEST * MAX_REQUESTS_PER_QUERY
    assert week.step_ms == math.ceil(7 * 86400_000 / (MAX_POINTS_PER_REQUEST * MAX_REQUESTS_PER_QUERY - 1))
    assert len(week.chunks()) == MAX_REQUESTS_PER_QUERY
    assert week.times()[-1] <= T0 + 7 * 86400.0
    with pytest.raises(ValueError, match="before start"):
        plan_range(T0, T0 - 1.0, 1.0)


def test_503_then_200_is_retried_with_backoff(fake: FakeProm) -> None:
    fake.state.script = [error_answer(503, "unavailable", "store gateway restarting")]
    sleeps = Sleeps()
    [series] = ask(client_for(fake.base, sleeps))
    assert sleeps == [0.5]
    assert len(fake.state.seen) == 2
    np.testing.assert_array_equal(series.values, 2.0 * np.array([T0, T0 + 15, T0 + 30]))


def test_a_stopping_monitor_makes_no_further_attempt(fake: FakeProm) -> None:
    fake.state.script = [(502, {"Content-Type": "text/html"}, b"<h1>Bad Gateway</h1>")] * 4
    stopping = threading.Event()
    clock = SimClock(start=1_000_000.0)
    client = PromClient(PromSource(url=fake.base, retries=3), clock=clock, stopping=stopping)

    class StopOnRequest(list[Seen]):
        """SIGTERM arrives while the first attempt is under way."""

        def append(self, seen: Seen) -> None:
            stopping.set()
            super().append(seen)

    fake.state.seen = StopOnRequest()
    with pytest.raises(ScrapeError, match=r": not asked: the monitor is stopping$"):
        ask(client)
    assert len(fake.state.seen) == 1 and clock.now() == 1_000_000.0   # no backoff waited out


def test_retries_back_off_exponentially_then_give_up(fake: FakeProm) -> None:
    fake.state.script = [(502, {"Content-Type": "text/html"}, b"<h1>Bad Gateway</h1>")] * 4
    sleeps = Sleeps()
    with pytest.raises(ScrapeError) as caught:
        ask(client_for(fake.base, sleeps, retries=3))
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(fake.state.seen) == 4
    assert "HTTP 502 Bad Gateway" in str(caught.value)
    assert "gave up after 4 attempts" in str(caught.value)


def test_a_stopping_monitor_cuts_a_query_under_way_short(fake: FakeProm) -> None:
    # Held 5 s by the server, the query would succeed then; interrupted, it fails at once
    # rather than holding a stopping monitor until its 30 s timeout.
    interrupter = Interrupter()
    client = PromClient(PromSource(url=f"{fake.base}/slow", timeout=30.0, retries=0),
                        sleep=Sleeps(), interrupter=interrupter)
    failed: list[str] = []

    def query() -> None:
        try:
            ask(client)
        except ScrapeError as exc:
            failed.append(str(exc))

    began = time.monotonic()
    thread = threading.Thread(target=query)
    thread.start()
    assert fake.state.held.wait(10)
    interrupter.interrupt()
    thread.join(10)
    assert not thread.is_alive() and len(failed) == 1, failed
    assert time.monotonic() - began < 4.0
    with pytest.raises(ScrapeError):      # and nothing begun after the stop gets far
        ask(client)


def test_429_waits_as_long_as_retry_after_says(fake: FakeProm) -> None:
    fake.state.script = [error_answer(429, "too_many_requests", "slow down", {"Retry-After": "7"})]
    sleeps = Sleeps()
    ask(client_for(fake.base, sleeps))
    assert sleeps == [7.0]


def test_a_retry_after_in_superscript_digits_is_ignored(fake: FakeProm) -> None:
    fake.state.script = [error_answer(503, "unavailable", "busy", {"Retry-After": "\u00b3"})]
    sleeps = Sleeps()
    ask(client_for(fake.base, sleeps))
    assert sleeps == [0.5]          # the default backoff, as for no Retry-After at all


def test_default_backoff_goes_through_the_clock(fake: FakeProm) -> None:
    fake.state.script = [error_answer(503, "unavailable", "busy")]
    clock = SimClock()
    ask(PromClient(PromSource(url=fake.base), clock=clock))
    assert clock.now() == pytest.approx(1_767_225_600.5)


@pytest.mark.parametrize(
    ("status", "error_type"), [(400, "bad_data"), (422, "execution"), (503, "bad_data"), (404, "")]
)
def test_client_errors_and_bad_data_are_not_retried(fake: FakeProm, status: int, error_type: str) -> None:
    fake.state.script = [error_answer(status, error_type, "1:6: parse error: unexpected <EOF>")]
    sleeps = Sleeps()
    with pytest.raises(ScrapeError, match="parse error: unexpected <EOF>"):
        ask(client_for(fake.base, sleeps))
    assert sleeps == []
    assert len(fake.state.seen) == 1


def test_connection_refused_is_retried_then_named() -> None:
    closed = FakeProm()
    url = closed.base
    closed.server_close()
    sleeps = Sleeps()
    with pytest.raises(ScrapeError, match=r"cannot connect .*gave up after 3 attempts"):
        ask(client_for(url, sleeps, retries=2))
    assert sleeps == [0.5, 1.0]


def test_partial_response_false_is_sent_with_get_and_post(fake: FakeProm) -> None:
    client = client_for(fake.base)
    ask(client)
    long_query = "sum(" + " + ".join(f'x{{pod="pod-{n}"}}' for n in range(200)) + ")"
    client.query_range(long_query, T0, T0 + 30, 15)
    get, post = fake.state.seen
    assert (get.method, post.method) == ("GET", "POST")
    assert get.params["partial_response"] == post.params["partial_response"] == "false"
    assert post.params["query"] == long_query
    assert post.params["start"] == f"{T0:.0f}"


def test_partial_data_warning_is_an_error(fake: FakeProm) -> None:
    fake.state.warnings = ["No StoreAPIs matched for this query"]
    with pytest.raises(ScrapeError, match="partial data: No StoreAPIs matched"):
        ask(client_for(fake.base))


def test_promql_annotations_are_not_partial_data(fake: FakeProm) -> None:
    fake.state.warnings = ['PromQL info: metric might not be a counter, name does not end in _total: "x"']
    [series] = ask(client_for(fake.base))
    assert series.values.size == 3


def test_victoriametrics_partial_flag_is_an_error(fake: FakeProm) -> None:
    payload = {"status": "success", "isPartial": True, "data": {"resultType": "matrix", "result": []}}
    fake.state.script = [(200, {}, json.dumps(payload).encode())]
    with pytest.raises(ScrapeError, match="partial data"):
        ask(client_for(fake.base))


@pytest.mark.parametrize("declared", [True, False])
def test_oversize_body_is_cut(fake: FakeProm, declared: bool) -> None:
    huge = b'{"status":"success","data":{"resultType":"matrix","result":[' + b" " * (1 << 20) + b"]}}"
    headers = {"Content-Length": str(len(huge))} if declared else {"Connection": "close"}
    fake.state.script = [(200, headers, huge)]
    sleeps = Sleeps()
    client = PromClient(PromSource(url=fake.base), sleep=sleeps, max_bytes=64 * 1024)
    with pytest.raises(ScrapeError, match="over the 65536-byte limit"):
        ask(client)
    assert sleeps == [] and len(fake.state.seen) == 1


def test_each_request_has_a_total_deadline(fake: FakeProm) -> None:
    client = client_for(f"{fake.base}/slow", timeout=0.3, retries=0)
    began = time.monotonic()
    with pytest.raises(ScrapeError, match=r"timed out after 0\.3 s"):
        ask(client)
    assert time.monotonic() - began < 2.0


@pytest.mark.parametrize("bad", ["1_2", "Infinity", "\uff11", " 1", "0x1p3", "nan", "", "1\n2"])
def test_values_are_parsed_strictly(fake: FakeProm, bad: str) -> None:
    series = {"metric": {}, "values": [[T0, "1"], [T0 + 15, bad]]}
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
    fake.state.script = [(200, {}, json.dumps(payload).encode())]
    with pytest.raises(ScrapeError, match="is not a number"):
        ask(client_for(fake.base))


def test_special_values_are_kept(fake: FakeProm) -> None:
    texts = ["NaN", "+Inf", "-Inf", "1e+06", "-0.25", "7"]
    series = {"metric": {"a": "b"}, "values": [[T0 + 15 * n, text] for n, text in enumerate(texts)]}
    payload = {"status": "success", "data": {"resultType": "matrix", "result": [series]}}
    fake.state.script = [(200, {}, json.dumps(payload).encode())]
    [got] = ask(client_for(fake.base), points=6)
    np.testing.assert_array_equal(got.values, [np.nan, np.inf, -np.inf, 1e6, -0.25, 7.0])
    assert got.labels == {"a": "b"}


def test_a_vector_answer_is_rejected(fake: FakeProm) -> None:
    payload = {"status": "success", "data": {"resultType": "vector", "result": []}}
    fake.state.script = [(200, {}, json.dumps(payload).encode())]
    with pytest.raises(ScrapeError, match="expected a matrix result, got 'vector'"):
        ask(client_for(fake.base))


def test_record_writes_what_the_queries_answer_and_replay_reads_it_back(
        live: Live, tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(
        f'[services.{SERVICE}]\n[services.{SERVICE}.prometheus]\nurl = "{live.url}"\nstep = "1s"\n'
        f'[services.{SERVICE}.signals.memory]\nbad = "increase"\n'
        f'query = \'max(process_resident_memory_bytes{{job="$service"}})\'\n'
        f'[services.{SERVICE}.signals.errors]\nkind = "ratio"\nbad = "increase"\n'
        f'numerator_query = \'sum(increase(http_request_errors_total{{job="$service"}}[5s]))\'\n'
        f'denominator_query = \'sum(increase(http_requests_total{{job="$service"}}[5s]))\'\n',
        encoding="utf-8")
    db, out = tmp_path / "m.db", tmp_path / "rec.csv"
    baseline_at, release_at, replaced_at = (float(live.grid[i]) for i in (0, 2, 4))
    with Store.open(db) as store:
        store.start_release(SERVICE, "v2.2", at=baseline_at, change_class="minor", period=600.0,
                            baselines=())
        store.start_release(SERVICE, VERSION, at=release_at, change_class="minor", period=600.0,
                            baselines=("v2.2",))
        # Replaced within its period, before any verdict: recorded too, as the daemon saw it.
        store.start_release(SERVICE, "v2.4", at=replaced_at, change_class="minor", period=600.0,
                            baselines=(VERSION,))
    cli = CliRunner(env={"RELEASE_MONITOR_DB": None, "RELEASE_MONITOR_CONFIG": None})
    # Prometheus had every scrape before this in when the recording was made.
    settled = time.time() - 1.0
    recorded = cli.invoke(app, ["record", "--config", str(policy_path), "--db", str(db),
                                "--release", VERSION, "--out", str(out)])
    assert recorded.exit_code == 0, recorded.output
    assert f"samples of v2.2, {VERSION}, v2.4 to {out}" in recorded.stdout
    recording = load_recording(out)
    assert recording.releases == ("v2.2", VERSION, "v2.4")
    rules = list(load_policy(policy_path).services[SERVICE].signals)
    # What the queries answer over the same times, asked again: the same numbers.
    # (v2.4 began a few scrapes before the recording: it may have only one point settled.)
    for version, start, least in (("v2.2", baseline_at, 2), (VERSION, release_at, 2),
                                  ("v2.4", replaced_at, 1)):
        back = recorded_frame(rules, recording.series[version])
        kept = back.times <= settled
        assert back.times[0] == start and kept.sum() >= least
        asked = promql_frame(live.client, rules, start=start, end=float(back.times[kept][-1]),
                             step=1.0, variables={"service": SERVICE, "version": version})
        np.testing.assert_array_equal(back.times[kept], asked.times)
        assert np.all(asked.values[0] > 1e6)              # real resident memory
        for block in ("values", "events", "trials"):
            np.testing.assert_array_equal(getattr(back, block)[:, kept], getattr(asked, block))
    replayed = cli.invoke(app, ["replay", str(out), "--policy", str(policy_path),
                                "--release", VERSION, "--json"])
    assert replayed.exit_code in (0, 5, 6), replayed.output
    document = json.loads(replayed.stdout)
    assert document["baseline_release"] == "v2.2"
    assert document["reason"].startswith("replaced after 2s"), document["reason"]


def test_record_from_a_query_api_that_does_not_answer_names_it_and_writes_nothing(
        tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(
        '[services.shop.prometheus]\nurl = "http://127.0.0.1:9"\nretries = 0\n'
        '[services.shop.signals.memory]\nquery = "process_resident_memory_bytes"\n',
        encoding="utf-8")
    db, out = tmp_path / "m.db", tmp_path / "rec.csv"
    with Store.open(db) as store:
        store.start_release(SERVICE, VERSION, at=T0, change_class="minor", period=600.0,
                            baselines=())
    result = CliRunner().invoke(app, ["record", "--config", str(policy_path), "--db", str(db),
                                      "--release", VERSION, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "error: signal memory: Prometheus http://127.0.0.1:9: ") and "cannot connect" in result.stderr
    assert not out.exists()


# --- promql_frame on a known answer -----------------------------------------------------------


class CannedClient:
    """Answers each query with fixed series and records the queries asked."""

    def __init__(self, answers: dict[str, list[RangeSeries]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.asked.append(expr)
        return self.answers[expr]


def canned(offsets: list[float], values: list[float], labels: dict[str, str] | None = None) -> RangeSeries:
    return RangeSeries(labels or {}, T0 + np.array(offsets), np.array(values))


def test_frame_places_series_on_the_grid_and_combines_them() -> None:
    a = canned([0, 10, 30], [1.0, 2.0, 4.0], {"pod": "a"})
    b = canned([10, 20, 30.0004], [10.0, 20.0, 40.0], {"pod": "b"})  # 0.4 ms late: same slot
    outside = canned([-10, 50], [99.0, 99.0], {"pod": "c"})
    client = CannedClient({"q": [a, b, outside], "e": [a], "t": [b], "none": []})
    rules = [
        SignalRule(name="summed", query="q", aggregate="sum"),
        SignalRule(name="averaged", query="q", aggregate="mean"),
        SignalRule(name="highest", query="q", aggregate="max"),
        SignalRule(name="ratio", kind="ratio", numerator_query="e", denominator_query="t"),
        SignalRule(name="empty", query="none"),
    ]
    frame = promql_frame(client, rules, start=T0, end=T0 + 45, step=10.0, variables=VARIABLES)
    nan = np.nan
    np.testing.assert_array_equal(frame.times, T0 + np.array([0.0, 10, 20, 30, 40]))
    np.testing.assert_array_equal(frame.values[0], [1, 12, 20, 44, nan])
    np.testing.assert_array_equal(frame.values[1], [1, 6, 20, 22, nan])
    np.testing.assert_array_equal(frame.values[2], [1, 10, 20, 40, nan])
    np.testing.assert_array_equal(frame.events[3], [1, 2, nan, 4, nan])
    np.testing.assert_array_equal(frame.trials[3], [nan, 10, 20, 40, nan])
    np.testing.assert_array_equal(frame.values[3], [nan, 0.2, nan, 0.1, nan])
    assert np.all(np.isnan(frame.values[4]))
    assert np.all(np.isnan(frame.events[:3])) and np.all(np.isnan(frame.trials[:3]))
    assert frame.names == ("summed", "averaged", "highest", "ratio", "empty")


def test_an_infinite_answer_is_a_missing_point() -> None:
    # `rate(a[1m]) / rate(b[1m])` with b idle answers +Inf: no measurement of the ratio.
    client = CannedClient({"q": [canned([0, 10, 20], [0.5, np.inf, -np.inf])]})
    frame = promql_frame(client, [SignalRule(name="r", query="q")], start=T0, end=T0 + 25,
                         step=10.0, variables=VARIABLES)
    np.testing.assert_array_equal(frame.values[0], [0.5, np.nan, np.nan])


def test_step_is_the_grid_s_own_step_so_counts_are_counted_once() -> None:
    rule = SignalRule(name="errors", kind="ratio", numerator_query="sum(increase(e[$step]))",
                      denominator_query="sum(increase(r[$step]))")
    client = CannedClient({"sum(increase(e[15000ms]))": [], "sum(increase(r[15000ms]))": []})
    promql_frame(client, [rule], start=T0, end=T0 + 60, step=15.0, variables=VARIABLES)
    assert client.asked == ["sum(increase(e[15000ms]))", "sum(increase(r[15000ms]))"]
    # A range too long for 11,000 points per series has its step enlarged: so has $step.
    days = 2 * 15.0 * MAX_POINTS_PER_REQUEST * MAX_REQUESTS_PER_QUERY
    wide = plan_range(T0, T0 + days, 15.0).step_ms
    client = CannedClient({f"sum(increase(e[{wide}ms]))": [], f"sum(increase(r[{wide}ms]))": []})
    promql_frame(client, [rule], start=T0, end=T0 + days, step=15.0, variables=VARIABLES)
    assert wide > 15_000 and client.asked[0] == f"sum(increase(e[{wide}ms]))"


def test_frame_substitutes_escaped_variables_and_names_failing_signal() -> None:
    client = CannedClient({'up{job="shop",version="v\\"1\\\\"}': []})
    rule = SignalRule(name="up", query='up{job="$service",version="$version"}')
    variables = {"service": "shop", "version": 'v"1\\'}
    promql_frame(client, [rule], start=T0, end=T0, step=1.0, variables=variables)
    assert client.asked == ['up{job="shop",version="v\\"1\\\\"}']

    class Failing:
        def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
            raise ScrapeError("Prometheus http://127.0.0.1:9: HTTP 400 bad_data: oops")

    with pytest.raises(ScrapeError, match="^signal up: Prometheus .*oops$"):
        promql_frame(Failing(), [rule], start=T0, end=T0, step=1.0, variables=VARIABLES)
    with pytest.raises(ConfigError, match="signal bare: no PromQL query"):
        promql_frame(client, [SignalRule(name="bare", metric="up")], start=T0, end=T0, step=1.0,
                     variables=VARIABLES)


def test_substitute_only_known_placeholders() -> None:
    assert substitute('x{v="$version"} $versions $other', {"version": "2"}) == 'x{v="2"} $versions $other'
    assert substitute('x{s="$service"}', {"service": "a\nb"}) == 'x{s="a\\nb"}'
    with pytest.raises(ValueError, match=r"\$service"):
        substitute('x{s="$service"}', {"version": "2"})



# --- a service read by PromQL, in the release state machine -----------------------------


def _promql_releases(url: str, clock: SimClock, pool: ThreadPoolExecutor | None,
                     store: Store) -> Releases:
    policy = ServicePolicy(
        name="checkout", prometheus=PromSource(url=url, timeout=10.0, retries=0),
        signals=(SignalRule("latency", query="fake", bad="increase"),),
        periods={"minor": 600.0, "major": 3600.0}, evaluation_interval=60.0)
    return Releases(MonitorConfig(path="<test>", services={"checkout": policy}), store, clock,
                    stage_pool=pool)


def test_a_slow_query_api_holds_a_pool_thread_not_the_loop(fake: FakeProm, tmp_path: Path) -> None:
    clock = SimClock(start=1_000_000.0)
    # A file, as the daemon has: the pool's thread reads it too.
    with ThreadPoolExecutor(1) as pool, Store.open(tmp_path / "m.db") as store:
        releases = _promql_releases(f"{fake.base}/slow", clock, pool, store)
        release = releases.start("checkout", "c1")
        release = releases.store.update_release(release.id, state="watching")
        clock.advance(60.0)
        asked = releases.advance(release)      # the query waits for `release` below
        assert asked.verdict == "pending" and "checkout" not in releases.query_apis
        fake.state.release.set()
        pool.shutdown(wait=True)
        # The pool has finished the evaluation; the next step takes its result up.
        judged = releases.advance(asked)
        assert releases.query_apis["checkout"].up
        assert releases.query_apis["checkout"].scrapes_total == 1
        assert releases.last_evaluation[judged.id] == 1_000_060.0
        assert store.latest_verdict(judged.id) is not None
    # One query (and one look at the server's metric names, once per service).
    assert [seen.path for seen in fake.state.seen] == ["/slow/api/v1/query_range",
                                                       "/slow/api/v1/label/__name__/values"]


def test_a_failing_query_api_is_said_at_once_not_when_the_period_ends(
    caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimClock(start=1_000_000.0)
    # Nothing listens there.
    releases = _promql_releases("http://127.0.0.1:9", clock, None, Store.memory())
    release = releases.store.update_release(releases.start("checkout", "c1").id,
                                            state="watching")
    with caplog.at_level(logging.INFO, logger="release_monitor"):
        for _ in range(3):
            clock.advance(60.0)
            release = releases.advance(release)
    assert release.verdict == "pending"
    assert release.reason.startswith("data source failing: ") and "cannot connect" in release.reason
    health = releases.query_apis["checkout"]
    assert (health.up, health.scrapes_total, health.errors_total, health.target) == (
        False, 3, 3, "http://127.0.0.1:9")
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1, failed
    assert failed[0].startswith("query of http://127.0.0.1:9 (checkout) failed: "), failed


def test_an_evaluation_of_a_release_reclassified_meanwhile_is_not_taken_up(
    fake: FakeProm, tmp_path: Path
) -> None:
    clock = SimClock(start=1_000_000.0)
    with ThreadPoolExecutor(1) as pool, Store.open(tmp_path / "m.db") as store:
        releases = _promql_releases(f"{fake.base}/slow", clock, pool, store)
        release = store.update_release(releases.start("checkout", "c1").id, state="watching")
        clock.advance(600.0)                   # the minor period's end: a first release passes
        release = releases.advance(release)
        releases.register("checkout", "c1", change_class="major")    # the pipeline, meanwhile
        fake.state.release.set()
        _, _, under_way = releases._evaluations[release.id]
        under_way.result(timeout=30.0)
        again = releases.advance(store.release("checkout", "c1"))
        fake.state.release.set()
    # Judged on the major period, not passed on the minor one: asked again at once.
    assert (again.change_class, again.state, again.verdict) == ("major", "watching", "pending")
    queries = [seen for seen in fake.state.seen if seen.path.endswith("/query_range")]
    assert releases.last_evaluation[again.id] == 1_000_600.0 and len(queries) == 2


def test_a_finished_evaluation_wakes_the_loop_and_the_next_due_starts_with_its_take_up(
    fake: FakeProm, tmp_path: Path
) -> None:
    clock = SimClock(start=1_000_000.0)
    with ThreadPoolExecutor(1) as pool, Store.open(tmp_path / "m.db") as store:
        releases = _promql_releases(fake.base, clock, pool, store)
        woken = threading.Event()
        releases.wake = woken.set
        release = store.update_release(releases.start("checkout", "c1").id, state="watching")
        clock.advance(60.0)
        release = releases.advance(release)
        assert woken.wait(30.0)                 # the pool's evaluation is done: loop again
        clock.advance(60.0)                     # and the next one is due by now
        release = releases.advance(release)
        assert store.latest_verdict(release.id).at == 1_000_060.0     # taken up
        assert releases.last_evaluation[release.id] == 1_000_120.0   # and the next asked
        assert release.id in releases._evaluations


def test_a_query_selecting_a_metric_the_server_never_held_is_warned_of_once(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    # `or vector(0)` reads a misspelt errors counter as no errors at all: only the server's
    # own list of metric names can tell.
    assert {"http_requests_total", "http_request_errors_total"} <= live.client.metric_names(
        float(live.grid[0]), float(live.grid[-1]))
    policy = ServicePolicy(
        name=SERVICE, prometheus=PromSource(url=live.url, timeout=10.0, retries=0),
        signals=(SignalRule(
            "errors", kind="ratio", bad="increase",
            numerator_query='sum(increase(http_request_error_total{job="$service"}[5s])) or vector(0)',
            denominator_query='sum(increase(http_requests_total{job="$service"}[5s]))'),),
        evaluation_interval=60.0)
    releases = Releases(MonitorConfig(path="<test>", services={SERVICE: policy}), Store.memory(),
                        SimClock(start=float(live.grid[-1])))
    with caplog.at_level(logging.WARNING, logger="release_monitor"):
        for _ in range(2):
            releases.frame(policy, SERVICE, float(live.grid[0]), float(live.grid[-1]),
                           version=VERSION)
    warned = [r.getMessage() for r in caplog.records if "no series of" in r.getMessage()]
    assert warned == [
        f"{SERVICE}: signals.errors.numerator_query: no series of http_request_error_total (did "
        f"you mean http_request_errors_total?) at Prometheus {live.url}"]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum(increase(errors_total{job="$service"}[$step])) or vector(0)', ["errors_total"]),
    ("histogram_quantile(0.95, sum by (le) (rate(lat_bucket{v=\"$version\"}[5m])))",
     ["lat_bucket"]),
    ('rate(up[1m]) / on(job) group_left count without (le) (x:recorded{a="b{c}["})',
     ["up", "x:recorded"]),
    ('max(mem{a="1"}) + max(mem{a="2"})', ["mem"]),
    ('{__name__="by_label_alone"} or vector(1)', []),
    ("sum(app_errors_total) or vector(0)", ["app_errors_total"]),
    ("max(mem) > bool 1e9 unless on(job) up offset 5m", ["mem", "up"]),
    ('label_replace(up, "dst", "$1", "src", "(.*)") and ignoring(le) x # y{z}', ["up", "x"]),
])
def test_the_metrics_a_query_selects_by_name(expr: str, names: list[str]) -> None:
    assert queried_metrics(expr) == names


def test_a_server_that_cannot_list_its_metric_names_is_asked_three_times_at_most() -> None:
    class NoNames:
        where, asked = "Prometheus http://127.0.0.1:9", 0

        def metric_names(self, start: float, end: float) -> set[str]:
            self.asked += 1
            raise ScrapeError("HTTP 404 Not Found")

    releases = _promql_releases("http://127.0.0.1:9", SimClock(start=1_000_000.0), None,
                                Store.memory())
    policy, client = releases.config.services["checkout"], NoNames()
    for _ in range(5):
        if releases._names_due("checkout"):
            releases._check_queries(client, policy, "checkout", 1_000_000.0)  # type: ignore[arg-type]
    assert client.asked == 3
    assert not releases._names_due("checkout")


def test_an_errors_counter_not_yet_exported_is_told_apart_from_a_typo() -> None:
    rule = SignalRule("errors", kind="ratio",
                      numerator_query="sum(increase(db_failures_total[$step])) or vector(0)",
                      denominator_query="sum(increase(app_requests_totl[$step]))")
    assert unqueried([rule], {"app_requests_total", "process_cpu_seconds_total"}) == [
        "signals.errors.numerator_query: no series of db_failures_total yet (fine if it "
        "appears with the first error; else check the name)",
        "signals.errors.denominator_query: no series of app_requests_totl (did you mean "
        "app_requests_total?)",
    ]
