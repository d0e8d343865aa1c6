"""A small simulated shop service for `monitor demo`: real HTTP, simulated time and behaviour.

Each deployed version behaves according to its `VersionProfile`: its error ratio, latencies,
memory (with a garbage collector's saw-tooth and an optional leak), queue depth, database pool
and CPU. Time comes from a `Clock`; with a `SimClock` the service moves only when the clock is
advanced, and the metrics are a deterministic function of the seed, the deploys and the clock
time of each `/metrics` request.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from monitor.clock import Clock

KIB = 1024
MIB = 1024 * KIB

POOL_MAX = 20
GC_PERIOD_S = 180.0  # one garbage-collector cycle: climb, then drop back to the floor
GC_CLIMB_BYTES = 40.0 * MIB
MEMORY_NOISE_BYTES = 256.0 * KIB
GAUGE_NOISE_FRACTION = 0.08  # relative sd of the queue and pool gauges
CPU_NOISE_FRACTION = 0.05
# Latencies summed per step: enough for a stable mean, few enough to keep a scrape cheap.
MAX_LATENCY_SAMPLES = 256
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf,
)


@dataclass(frozen=True)
class VersionProfile:
    """How one version behaves; times in seconds, memory in bytes."""

    error_ratio: float
    latency_median: float
    latency_sigma: float
    memory_base: float
    leak_bytes_per_s: float
    queue_depth: float
    pool_in_use: float
    cpu_cores: float
    healthy_db: bool = True
    main_page_ok: bool = True


_V2_2 = VersionProfile(
    error_ratio=0.005,
    latency_median=0.080,
    latency_sigma=0.45,
    memory_base=250.0 * MIB,
    leak_bytes_per_s=0.0,
    queue_depth=5.0,
    pool_in_use=6.0,
    cpu_cores=0.35,
)

PROFILES: dict[str, VersionProfile] = {
    "v2.1": VersionProfile(
        error_ratio=0.0048,
        latency_median=0.078,
        latency_sigma=0.45,
        memory_base=248.0 * MIB,
        leak_bytes_per_s=0.0,
        queue_depth=4.9,
        pool_in_use=5.9,
        cpu_cores=0.34,
    ),
    "v2.2": _V2_2,
    # A major regression: errors x12 and a leak that reaches 1 GiB in about 8 minutes.
    "v2.3": VersionProfile(
        error_ratio=0.06,
        latency_median=0.085,
        latency_sigma=0.45,
        memory_base=300.0 * MIB,
        leak_bytes_per_s=1.5 * MIB,
        queue_depth=5.5,
        pool_in_use=7.0,
        cpu_cores=0.40,
    ),
    # A minor regression: a deeper queue and a slow leak; errors and latency as v2.2.
    "v2.4": VersionProfile(
        error_ratio=_V2_2.error_ratio,
        latency_median=_V2_2.latency_median,
        latency_sigma=_V2_2.latency_sigma,
        memory_base=_V2_2.memory_base,
        leak_bytes_per_s=20.0 * KIB,
        queue_depth=_V2_2.queue_depth * 1.6,
        pool_in_use=_V2_2.pool_in_use,
        cpu_cores=_V2_2.cpu_cores,
    ),
    # Broken on arrival: the database is unreachable, so the smoke test must fail.
    "v2.5": VersionProfile(
        error_ratio=0.40,
        latency_median=0.020,
        latency_sigma=0.45,
        memory_base=240.0 * MIB,
        leak_bytes_per_s=0.0,
        queue_depth=1.0,
        pool_in_use=0.0,
        cpu_cores=0.15,
        healthy_db=False,
        main_page_ok=False,
    ),
}

_ORDERS = [
    {"id": 1001, "item": "espresso cups", "quantity": 2, "total": 18.50},
    {"id": 1002, "item": "tea towel", "quantity": 1, "total": 6.90},
    {"id": 1003, "item": "french press", "quantity": 1, "total": 32.00},
]

_MAIN_PAGE = (
    "<!doctype html>\n<html><head><title>demo shop</title></head>\n"
    "<body><h1>demo shop</h1><p>Version {version}</p></body></html>\n"
)


def profile_for(version: str) -> VersionProfile:
    """The profile of `version`; ValueError naming the known versions otherwise."""
    try:
        return PROFILES[version]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown version {version!r}; known versions: {known}") from None


@lru_cache(maxsize=32)
def _bucket_probabilities(median: float, sigma: float) -> np.ndarray:
    """Probability of a lognormal latency landing in each (non-cumulative) bucket."""
    edges = np.array(LATENCY_BUCKETS[:-1])
    z = (np.log(edges) - math.log(median)) / (sigma * math.sqrt(2.0))
    cdf = np.append(0.5 * (1.0 + np.array([math.erf(v) for v in z])), 1.0)
    probabilities = np.diff(cdf, prepend=0.0)
    probabilities.flags.writeable = False
    return probabilities


@dataclass(frozen=True)
class _Snapshot:
    """The metric values at one instant."""

    version: str
    requests: int
    errors: int
    bucket_counts: tuple[int, ...]  # cumulative, one per entry of LATENCY_BUCKETS
    latency_sum: float
    cpu_seconds: float
    memory_bytes: float
    pool_in_use: float
    queue_depth: float


class _Process:
    """One running process of the service: its counters restart at every deploy."""

    def __init__(self, version: str, started: float, rng: np.random.Generator) -> None:
        self.version = version
        self.profile = profile_for(version)
        self.started = started
        self.last_update = started
        self._rng = rng
        self._gc_phase = float(rng.uniform(0.0, GC_PERIOD_S))
        self.requests = 0
        self.errors = 0
        self.buckets = np.zeros(len(LATENCY_BUCKETS), dtype=np.int64)
        self.latency_sum = 0.0
        self.cpu_seconds = 0.0

    def advance(self, now: float, requests_per_s: float) -> _Snapshot:
        """Integrate traffic since the last update, then read the gauges at `now`."""
        elapsed = max(0.0, now - self.last_update)
        self.last_update = max(self.last_update, now)
        self._serve(int(self._rng.poisson(requests_per_s * elapsed)))
        noise = 1.0 + CPU_NOISE_FRACTION * self._rng.standard_normal()
        self.cpu_seconds += max(0.0, self.profile.cpu_cores * elapsed * noise)
        return self._snapshot()

    def _serve(self, requests: int) -> None:
        """Count `requests` requests: their errors and their latencies."""
        if requests == 0:
            return
        profile = self.profile
        self.requests += requests
        self.errors += int(self._rng.binomial(requests, profile.error_ratio))
        probabilities = _bucket_probabilities(profile.latency_median, profile.latency_sigma)
        self.buckets += self._rng.multinomial(requests, probabilities)
        sampled = min(requests, MAX_LATENCY_SAMPLES)
        latencies = profile.latency_median * np.exp(
            profile.latency_sigma * self._rng.standard_normal(sampled)
        )
        self.latency_sum += float(latencies.sum()) * requests / sampled

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            version=self.version,
            requests=self.requests,
            errors=self.errors,
            bucket_counts=tuple(int(c) for c in np.cumsum(self.buckets)),
            latency_sum=self.latency_sum,
            cpu_seconds=self.cpu_seconds,
            memory_bytes=self._memory(),
            pool_in_use=self._noisy_gauge(self.profile.pool_in_use, upper=POOL_MAX),
            queue_depth=self._noisy_gauge(self.profile.queue_depth, upper=math.inf),
        )

    def _memory(self) -> float:
        """Resident memory: base + leak over the uptime + the collector's saw-tooth + noise."""
        uptime = self.last_update - self.started
        cycle = ((uptime + self._gc_phase) % GC_PERIOD_S) / GC_PERIOD_S
        noise = MEMORY_NOISE_BYTES * self._rng.standard_normal()
        memory = (
            self.profile.memory_base
            + self.profile.leak_bytes_per_s * uptime
            + GC_CLIMB_BYTES * cycle
            + noise
        )
        return float(round(max(0.0, memory)))

    def _noisy_gauge(self, mean: float, *, upper: float) -> float:
        """A whole-number gauge scattered a little around `mean`, kept within [0, upper]."""
        value = mean * (1.0 + GAUGE_NOISE_FRACTION * self._rng.standard_normal())
        return float(min(upper, max(0.0, round(value))))


def _metric_families(snapshot: _Snapshot) -> Iterator[Metric]:
    """The Prometheus families of one snapshot."""
    yield CounterMetricFamily(
        "http_requests_total", "HTTP requests served.", value=snapshot.requests
    )
    yield CounterMetricFamily(
        "http_request_errors_total", "HTTP requests that failed.", value=snapshot.errors
    )
    buckets = [
        ("+Inf" if math.isinf(le) else repr(le), float(count))
        for le, count in zip(LATENCY_BUCKETS, snapshot.bucket_counts, strict=True)
    ]
    yield HistogramMetricFamily(
        "http_request_duration_seconds",
        "HTTP request latency.",
        buckets=buckets,
        sum_value=snapshot.latency_sum,
    )
    yield GaugeMetricFamily(
        "process_resident_memory_bytes", "Resident memory size.", value=snapshot.memory_bytes
    )
    yield CounterMetricFamily(
        "process_cpu_seconds_total", "CPU time spent.", value=snapshot.cpu_seconds
    )
    yield GaugeMetricFamily(
        "db_pool_connections_in_use", "Database connections in use.", value=snapshot.pool_in_use
    )
    yield GaugeMetricFamily(
        "db_pool_connections_max", "Size of the database pool.", value=POOL_MAX
    )
    yield GaugeMetricFamily(
        "work_queue_depth", "Jobs waiting in the work queue.", value=snapshot.queue_depth
    )
    build_info = GaugeMetricFamily("demo_build_info", "Running build.", labels=["version"])
    build_info.add_metric([snapshot.version], 1.0)
    yield build_info


class _SimulationCollector:
    """Advances the service to the clock's time on every collection."""

    def __init__(self, service: SimulatedService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        yield from _metric_families(self._service._advance_to_now())


class SimulatedService:
    """A shop service on 127.0.0.1 whose behaviour is that of the version deployed.

    Example:
        >>> from monitor.clock import SimClock
        >>> clock = SimClock()
        >>> service = SimulatedService(clock, seed=7)
        >>> service.start()
        >>> service.deploy("v2.3")
        >>> _ = clock.advance(60.0)
        >>> b"http_request_errors_total" in service.render_metrics()
        True
        >>> service.stop()

    `GET /metrics` serves the same text as `render_metrics()`; `GET /`, `GET /health` and
    `GET /api/orders` answer as the deployed version would.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 7,
        requests_per_s: float = 40.0,
        version: str = "v2.2",
    ) -> None:
        if requests_per_s < 0:
            raise ValueError(f"requests_per_s must be >= 0, got {requests_per_s}")
        self._clock = clock
        self._requests_per_s = requests_per_s
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._process = _Process(version, clock.now(), self._rng)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_SimulationCollector(self))
        self._server: _DemoHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> str:
        """The version running now."""
        with self._lock:
            return self._process.version

    @property
    def profile(self) -> VersionProfile:
        """The behaviour of the version running now."""
        with self._lock:
            return self._process.profile

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:43121"; only once started."""
        if self._server is None:
            raise RuntimeError("the service is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host:port` (0 picks a free port) and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the service is already started")
        server = _DemoHTTPServer((host, port), _Handler)
        server.service = self
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"demo-service:{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def deploy(self, version: str) -> None:
        """Restart as `version`: memory falls back to its base and counters start from 0."""
        profile_for(version)
        with self._lock:
            self._process = _Process(version, self._clock.now(), self._rng)

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def render_metrics(self) -> bytes:
        """Advance the simulation to the clock's time and return the `/metrics` body."""
        return generate_latest(self._registry)

    def _advance_to_now(self) -> _Snapshot:
        with self._lock:
            return self._process.advance(self._clock.now(), self._requests_per_s)

    def __enter__(self) -> SimulatedService:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    service: SimulatedService

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone mid-answer (the demo stopped by a signal) is no traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # otherwise small answers wait ~40 ms for a delayed ACK
    server_version = "demo-shop"

    def do_GET(self) -> None:
        service = cast(_DemoHTTPServer, self.server).service
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_PLAIN_0_0_4, service.render_metrics())
        elif path == "/":
            self._main_page(service)
        elif path == "/health":
            self._health(service.profile)
        elif path == "/api/orders":
            self._orders(service.profile)
        else:
            self._send_json(404, {"error": "not found"})

    def _main_page(self, service: SimulatedService) -> None:
        if service.profile.main_page_ok:
            body = _MAIN_PAGE.format(version=service.version).encode()
            self._send(200, "text/html; charset=utf-8", body)
        else:
            self._send(500, "text/html; charset=utf-8", b"<h1>500 internal server error</h1>\n")

    def _health(self, profile: VersionProfile) -> None:
        if profile.healthy_db:
            self._send_json(200, {"status": "ok", "database": "connected"})
        else:
            self._send_json(503, {"status": "error", "database": "disconnected"})

    def _orders(self, profile: VersionProfile) -> None:
        # Orders live in the database: without it the critical API cannot answer either.
        if profile.healthy_db:
            self._send_json(200, _ORDERS)
        else:
            self._send_json(503, {"error": "database disconnected"})

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the demo prints its own story."""
