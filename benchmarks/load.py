"""Load: one live daemon scraping 1,000 loopback targets, a tenth of them hanging.

The daemon runs as `monitor run` runs it (wall clock, live scraping pool, a real SQLite
file, the HTTP server on 127.0.0.1) against a farm of targets served on loopback: 10% never
answer until the run ends, 5% answer 500, the rest serve a /metrics body of 50-200 series.
Ten services of a hundred targets each report a version, so a release of each is being
watched (and evaluated every minute) while the load runs; with `--release-every M` every
service releases a new version each M minutes (checking periods of three quarters of it),
so releases start, are judged, become baselines and end, as a sidecar that runs for weeks
sees. Measured:

- the monitor's own `/metrics` answer time, asked every 100 ms by an outside client;
- scrape start lateness against each target's planned time (the daemon plans each scrape
  one interval after the previous plan), and planned scrapes of healthy targets missed;
- resident memory drift (VmRSS sampled on a period, linear fit, per hour);
- scrape health per target kind (hanging ones down with timeouts, failing ones down).

The farm and the `/metrics` client run in a child process, as Prometheus and the targets
would, so their work does not land on the monitor's interpreter lock. Everything binds
127.0.0.1, and the run stops by itself.

    python -m benchmarks.load [--minutes 3] [--targets 1000] [--json]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import select
import socket
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import requests

from monitor.allocator import DAEMON_ARENAS
from monitor.api import serve
from monitor.clock import WallClock
from monitor.daemon import Daemon
from monitor.policy import MonitorConfig, ServicePolicy, SignalRule, Target
from monitor.snapshot import SnapshotBox, TargetHealth
from monitor.store import Store

HEALTHY, HANGING, FAILING = "healthy", "hanging", "failing"
KINDS = (HEALTHY, HANGING, FAILING)
TARGETS_PER_SERVICE = 100
_PATH_PREFIX = "/t/"
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENESS_SLOTS_SPARE = 3  # rounds beyond the planned duration the lateness buffer holds


@dataclass(frozen=True)
class LoadPlan:
    """What to run: how many targets of which kinds, how often, for how long."""

    targets: int = 1000
    interval: float = 15.0
    timeout: float = 5.0
    seconds: float = 180.0
    hanging: float = 0.10
    failing: float = 0.05
    servers: int = 4
    poll_every: float = 0.1
    rss_every: float = 60.0
    rounds: int | None = None     # stop once every target began this many scrapes (else `seconds`)
    evaluation_interval: float = 60.0
    releases: bool = True         # services report a version, so a release of each is watched
    release_every: float | None = None   # a new version of every service this often (seconds)
    tracemalloc: bool = False     # also follow the live Python objects (slows the daemon)
    seed: int = 20240611
    separate_process: bool = True


@dataclass
class KindFigures:
    """Scrape health of the targets of one kind at the end of the run."""

    targets: int = 0
    up: int = 0
    down: int = 0
    scrapes: int = 0
    errors: int = 0
    timeouts: int = 0        # targets whose last error is a timeout
    http_500: int = 0        # targets whose last error is an HTTP 500 answer
    last_errors: dict[str, int] = field(default_factory=dict)  # error (without URL) -> targets


@dataclass
class LoadResult:
    plan: LoadPlan
    seconds: float
    metrics_requests: int
    metrics_failures: int
    metrics_p50_ms: float
    metrics_p99_ms: float
    metrics_max_ms: float
    metrics_longest_gap_ms: float  # between two good answers, asked every `poll_every`
    scrape_starts: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    lateness_p99_of_interval: float
    healthy_missed: int           # planned scrapes of healthy targets that never began
    healthy_short: int            # healthy targets with fewer recorded scrapes than started - 1
    rss_samples_mb: list[float]
    rss_drift_mb_per_hour: float
    kinds: dict[str, KindFigures]
    evaluations: int
    store_errors: int
    pool_full_warnings: int
    releases: dict[str, int] = field(default_factory=dict)   # verdict -> releases with it
    traced_samples_mb: list[float] = field(default_factory=list)  # live Python objects (--tracemalloc)
    traced_growth: list[str] = field(default_factory=list)   # where they grew after the first cycle
    malloc_arenas: str = ""       # how many heap arenas the C library may make

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the targets -------------------------------------------------------------------------------


def target_kinds(count: int, hanging: float, failing: float, seed: int) -> list[str]:
    """The kind of each target, shuffled with a fixed seed so kinds share every server."""
    hanging_count = round(count * hanging)
    failing_count = round(count * failing)
    kinds = ([HANGING] * hanging_count + [FAILING] * failing_count
             + [HEALTHY] * (count - hanging_count - failing_count))
    order = np.random.default_rng(seed).permutation(count)
    return [kinds[i] for i in order]


def metrics_body(index: int, rng: np.random.Generator) -> str:
    """A /metrics body much like a small web service's: 59-195 series.

    Process gauges, a build_info series with the service's version, request counters by
    handler, method and code, a latency histogram per handler and a queue gauge.
    """
    handlers = [f"/api/v1/resource{h}" for h in range(int(rng.integers(3, 12)))]
    lines = [
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {int(rng.integers(50_000_000, 500_000_000))}",
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {rng.uniform(10, 5000):.2f}",
        "# TYPE process_open_fds gauge",
        f"process_open_fds {int(rng.integers(20, 400))}",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {1_767_225_600 + index}",
        "# HELP build_info Build of the running binary.",
        "# TYPE build_info gauge",
        f'build_info{{version="v1.{index // TARGETS_PER_SERVICE}.{_RELEASE}",revision="0f3a9c1"}} 1',
        "# HELP work_queue_depth Jobs waiting.",
        "# TYPE work_queue_depth gauge",
        f"work_queue_depth {int(rng.integers(0, 50))}",
        "# HELP http_requests_total Requests served.",
        "# TYPE http_requests_total counter",
    ]
    for handler in handlers:
        for method in ("GET", "POST"):
            for code in ("200", "500"):
                count = int(rng.integers(1000, 10**7)) if code == "200" else int(rng.integers(0, 50))
                lines.append(f'http_requests_total{{code="{code}",handler="{handler}",'
                             f'method="{method}"}} {count}')
    lines += ["# HELP http_request_duration_seconds Request latency.",
              "# TYPE http_request_duration_seconds histogram"]
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    for handler in handlers:
        total = int(rng.integers(1000, 10**6))
        shares = np.sort(rng.uniform(0, 1, size=len(buckets)))
        for bound, share in zip(buckets, shares, strict=True):
            lines.append(f'http_request_duration_seconds_bucket{{handler="{handler}",le="{bound}"}} '
                         f"{int(total * share)}")
        lines.append(f'http_request_duration_seconds_bucket{{handler="{handler}",le="+Inf"}} {total}')
        lines.append(f'http_request_duration_seconds_sum{{handler="{handler}"}} {total * 0.04:.3f}')
        lines.append(f'http_request_duration_seconds_count{{handler="{handler}"}} {total}')
    return "\n".join(lines) + "\n"


# Stands for the release number in a body: the farm puts the current one in at each scrape.
_RELEASE = "@release@"


class _FarmServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # the default backlog of 5 refuses a burst of connections
    farm: TargetFarm

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper hanging up (a timeout, a connection it let go) is routine here."""


class _FarmHandler(BaseHTTPRequestHandler):
    server: _FarmServer
    protocol_version = "HTTP/1.1"   # keep-alive, as real exporters allow
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        farm = self.server.farm
        index = farm.index_of(self.path)
        if index is None:
            self._answer(404, b"no such target\n")
        elif farm.kinds[index] == HANGING:
            self._hang(farm.released)
        elif farm.kinds[index] == FAILING:
            self._answer(500, b"internal server error\n")
        else:
            self._answer(200, farm.body(index))

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", _METRICS_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hang(self, released: threading.Event) -> None:
        """Answer nothing until the run ends; return early once the client has given up."""
        self.close_connection = True
        while not released.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.25)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                return  # the client closed its end: nobody is waiting any more

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a thousand targets would flood the terminal."""


class TargetFarm:
    """Serves `len(kinds)` target URLs, `/t/<index>/metrics`, from a few loopback servers."""

    def __init__(self, kinds: Sequence[str], *, servers: int = 4, seed: int = 1,
                 release_every: float | None = None) -> None:
        self.kinds = list(kinds)
        self.release_every = release_every
        self._began = time.monotonic()
        rng = np.random.default_rng(seed)
        self._bodies = [metrics_body(i, rng) if k == HEALTHY else "" for i, k in enumerate(kinds)]
        self._scrapes = [0] * len(self.kinds)
        self._lock = threading.Lock()
        self._servers = [_FarmServer(("127.0.0.1", 0), _FarmHandler) for _ in range(servers)]
        self._threads: list[threading.Thread] = []
        self.released = threading.Event()

    def urls(self) -> list[str]:
        """Target i is served by server i mod the number of servers."""
        ports = [int(s.server_address[1]) for s in self._servers]
        return [f"http://127.0.0.1:{ports[i % len(ports)]}{_PATH_PREFIX}{i}/metrics"
                for i in range(len(self.kinds))]

    def start(self) -> list[str]:
        for server in self._servers:
            server.farm = self
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name="target-farm", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.urls()

    def stop(self) -> None:
        """Let the hanging requests go, stop serving and close every socket."""
        self.released.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()

    def index_of(self, path: str) -> int | None:
        head, _, tail = path.partition(_PATH_PREFIX)
        number, _, rest = tail.partition("/")
        if head or rest != "metrics" or not number.isdigit() or int(number) >= len(self.kinds):
            return None
        return int(number)

    def body(self, index: int) -> bytes:
        """The target's body plus a counter that moves with every scrape."""
        with self._lock:
            self._scrapes[index] += 1
            count = self._scrapes[index]
        release = int((time.monotonic() - self._began) // self.release_every) if self.release_every else 0
        body = self._bodies[index].replace(_RELEASE, str(release), 1)
        # Counters that move: fifty requests and half an error between two scrapes, so an
        # error ratio of 1% is there to judge (the body's own counters stand still).
        return (body + f"# TYPE farm_scrapes_total counter\nfarm_scrapes_total {count}\n"
                f"# TYPE app_requests_total counter\napp_requests_total {50 * count}\n"
                f"# TYPE app_errors_total counter\napp_errors_total {count // 2}\n").encode()


class MetricsPoller(threading.Thread):
    """Asks the monitor's `/metrics` every `every` seconds; keeps each answer's latency."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(name="metrics-poller", daemon=True)
        self.url, self.every = url, every
        self.latencies: list[float] = []
        self.failures = 0
        self.longest_gap = 0.0    # seconds between two good answers (or the start and one)
        self.halt = threading.Event()

    def run(self) -> None:
        last_answer = time.perf_counter()
        with requests.Session() as session:
            while not self.halt.wait(self.every):
                began = time.perf_counter()
                try:
                    answer = session.get(self.url, timeout=5)
                    answer.raise_for_status()
                except requests.RequestException:
                    self.failures += 1
                    continue
                answered = time.perf_counter()
                self.latencies.append(answered - began)
                self.longest_gap = max(self.longest_gap, answered - last_answer)
                last_answer = answered

    def stop(self) -> Polled:
        self.halt.set()
        self.join()
        return self.latencies, self.failures, self.longest_gap


Polled = tuple[list[float], int, float]  # latencies, failed requests, longest gap


def _outside_world(kinds: list[str], servers: int, seed: int, poll_every: float,
                   release_every: float | None, pipe: Connection) -> None:
    """Child process: serve the farm, poll the monitor when told, report when told to stop."""
    farm = TargetFarm(kinds, servers=servers, seed=seed, release_every=release_every)
    pipe.send(farm.start())
    poller = MetricsPoller(pipe.recv(), poll_every)
    poller.start()
    pipe.recv()  # the stop message
    pipe.send(poller.stop())
    farm.stop()


class _Outside:
    """The farm and the poller, in a child process or in threads of this one."""

    def __init__(self, plan: LoadPlan, kinds: list[str]) -> None:
        self.plan, self.kinds = plan, kinds
        self._pipe: Connection | None = None
        self._process: Any = None
        self._farm: TargetFarm | None = None
        self._poller: MetricsPoller | None = None

    def start(self) -> list[str]:
        if self.plan.separate_process:
            context = multiprocessing.get_context("spawn")
            self._pipe, child = context.Pipe()
            self._process = context.Process(
                target=_outside_world, name="load-targets", daemon=True,
                args=(self.kinds, self.plan.servers, self.plan.seed, self.plan.poll_every,
                      self.plan.release_every, child))
            self._process.start()
            urls: list[str] = self._pipe.recv()
            return urls
        self._farm = TargetFarm(self.kinds, servers=self.plan.servers, seed=self.plan.seed,
                                release_every=self.plan.release_every)
        return self._farm.start()

    def poll(self, url: str) -> None:
        if self._pipe is not None:
            self._pipe.send(url)
            return
        self._poller = MetricsPoller(url, self.plan.poll_every)
        self._poller.start()

    def stop(self) -> Polled:
        if self._pipe is not None:
            self._pipe.send("stop")
            polled: Polled = self._pipe.recv()
            self._process.join(timeout=30)
            return polled
        assert self._farm is not None and self._poller is not None
        result = self._poller.stop()
        self._farm.stop()
        return result


# -- what the daemon reports -------------------------------------------------------------------


class StartLog:
    """Scrape starts reported by the daemon, kept in memory allocated up front.

    Lateness values go to a preallocated array (touched once, so they add nothing to the
    resident memory being measured); per target only the last planned time is kept, which
    is enough to count planned scrapes that never began.
    """

    def __init__(self, targets: Sequence[str], interval: float, capacity: int,
                 rounds: int | None = None) -> None:
        self.interval = interval
        self.lateness = np.full(capacity, np.nan)
        self.count = 0
        self.dropped = 0
        self.starts = dict.fromkeys(targets, 0)
        self.missed = dict.fromkeys(targets, 0)
        self._last_planned: dict[str, float] = {}
        self._rounds = rounds
        self._complete = 0
        self.complete = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, target: str, planned: float, started: float) -> None:
        with self._lock:
            if self.count < self.lateness.size:
                self.lateness[self.count] = started - planned
                self.count += 1
            else:
                self.dropped += 1
            previous = self._last_planned.get(target)
            if previous is not None:
                self.missed[target] += _slots_skipped(previous, planned, self.interval)
            self._last_planned[target] = planned
            self.starts[target] = self.starts.get(target, 0) + 1
            if self._rounds is not None and self.starts[target] == self._rounds:
                self._complete += 1
                if self._complete == len(self.starts):
                    self.complete.set()


def _slots_skipped(previous: float, planned: float, interval: float) -> int:
    """Planned slots between two consecutive plans; a plan off the grid counts as one."""
    steps = (planned - previous) / interval
    whole = round(steps)
    if abs(steps - whole) > 1e-6 or whole < 1:
        return 1
    return whole - 1


class RssSampler(threading.Thread):
    """VmRSS of this process every `every` seconds, from /proc (Linux); with `traced`, the
    live Python objects too (tracemalloc), and where they grew between the sample at
    `settle` seconds and the last."""

    def __init__(self, every: float, *, traced: bool = False, settle: float = 0.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.traced: list[float] = []
        self.growth: list[str] = []
        self.halt = threading.Event()
        self._began = time.monotonic()
        self._settle = settle
        self._first: tracemalloc.Snapshot | None = None
        if traced:
            tracemalloc.start()

    def start(self) -> None:
        self._sample()          # the first sample is taken before start() returns
        super().start()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self._sample()

    def stop(self) -> list[tuple[float, float]]:
        """Stop sampling, with one last sample; (seconds since the start, MB) each."""
        self.halt.set()
        self.join()
        self._sample()
        if tracemalloc.is_tracing():
            if self._first is not None:
                last = tracemalloc.take_snapshot()
                self.growth = [f"{stat.size_diff / 1e3:+.0f} kB {stat.traceback[0]}"
                               for stat in last.compare_to(self._first, "lineno")[:5]]
            tracemalloc.stop()
        return self.samples

    def _sample(self) -> None:
        elapsed = time.monotonic() - self._began
        self.samples.append((elapsed, resident_megabytes()))
        if tracemalloc.is_tracing():
            self.traced.append(round(tracemalloc.get_traced_memory()[0] / 1e6, 1))
            if self._first is None and elapsed >= self._settle:
                self._first = tracemalloc.take_snapshot()


def resident_megabytes() -> float:
    """Resident set size of this process in MB (NaN where /proc is absent)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return math.nan
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return math.nan


def _settled(plan: LoadPlan, rss: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples the drift is fitted on: after the first, or after the first release cycle
    (the first release has no baseline to build, so it is lighter than the rest)."""
    if plan.release_every and rss:
        later = [s for s in rss if s[0] - rss[0][0] >= plan.release_every]
        if len(later) > 2:
            return later
    return rss[1:] if len(rss) > 2 else rss


def drift_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour (NaN under two samples)."""
    points = np.array([s for s in samples if math.isfinite(s[1])], dtype=float).reshape(-1, 2)
    if len(points) < 2 or np.ptp(points[:, 0]) == 0:
        return math.nan
    slope = np.polyfit(points[:, 0], points[:, 1], 1)[0]
    return float(slope * 3600.0)


class _PoolFullCounter(logging.Handler):
    """Counts urllib3's 'Connection pool is full' warnings (connections thrown away)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            self.count += 1


# -- the run -----------------------------------------------------------------------------------


def load_config(urls: Sequence[str], plan: LoadPlan, database: str) -> MonitorConfig:
    """Services of a hundred targets, each watching a release through three signals."""
    signals = (
        SignalRule("error_ratio", kind="ratio", numerator="app_errors_total",
                   denominator="app_requests_total", bad="increase", critical=True),
        SignalRule("queue", metric="work_queue_depth", bad="increase"),
        SignalRule("memory", metric="process_resident_memory_bytes", bad="increase", leak=True),
    )
    services: dict[str, ServicePolicy] = {}
    for first in range(0, len(urls), TARGETS_PER_SERVICE):
        name = f"svc{first // TARGETS_PER_SERVICE:02d}"
        targets = tuple(Target(url=url, interval=plan.interval, timeout=plan.timeout)
                        for url in urls[first:first + TARGETS_PER_SERVICE])
        services[name] = ServicePolicy(
            name=name, targets=targets, version_metric="build_info" if plan.releases else "",
            signals=signals,
            evaluation_interval=plan.evaluation_interval, periods=_periods(plan),
        )
    return MonitorConfig(path="<load>", database=database, services=services)


def _periods(plan: LoadPlan) -> dict[str, float]:
    """Checking periods that end before the next release, when releases come in a cycle."""
    if plan.release_every:
        return {"minor": 0.75 * plan.release_every, "major": 0.75 * plan.release_every}
    return {"minor": 3600.0, "major": 7200.0}


def kind_figures(kinds: Sequence[str], urls: Sequence[str],
                 health: Sequence[TargetHealth]) -> dict[str, KindFigures]:
    """Up, down, scrapes and errors per target kind, from the last published snapshot."""
    kind_of = dict(zip(urls, kinds, strict=True))
    figures = {kind: KindFigures() for kind in KINDS}
    for target in health:
        figure = figures[kind_of[target.target]]
        figure.targets += 1
        figure.up += target.up
        figure.down += not target.up
        figure.scrapes += target.scrapes_total
        figure.errors += target.errors_total
        figure.timeouts += "timed out" in target.last_error
        figure.http_500 += "HTTP 500" in target.last_error
        if target.last_error:
            error = target.last_error.split(": ", 1)[-1]
            figure.last_errors[error] = figure.last_errors.get(error, 0) + 1
    return figures


def _quantile_ms(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q) * 1e3) if values.size else math.nan


@dataclass
class _Running:
    daemon: Daemon
    thread: threading.Thread
    starts: StartLog
    rss: RssSampler


def run_load(plan: LoadPlan, folder: Path | None = None) -> LoadResult:
    """Run the daemon against the farm as `plan` says and measure it.

    Stops after `plan.seconds`, or earlier once every target began `plan.rounds` scrapes.

    Example:
        >>> result = run_load(LoadPlan(targets=60, interval=1.0, timeout=0.5, seconds=6.0,
        ...                            separate_process=False))  # doctest: +SKIP
        >>> result.kinds["hanging"].up
        0
    """
    kinds = target_kinds(plan.targets, plan.hanging, plan.failing, plan.seed)
    with _scratch(folder) as where, _counting_pool_full() as pool_full:
        outside = _Outside(plan, kinds)
        urls = outside.start()
        store = Store.open(where / "monitor.db")
        box = SnapshotBox()
        server = None
        try:
            running = _start_daemon(plan, urls, store, box)
            server = serve(box, host="127.0.0.1", port=0, version="load")
            outside.poll(f"{server.url}/metrics")
            began = time.monotonic()
            finished = running.starts.complete if plan.rounds is not None else threading.Event()
            finished.wait(plan.seconds)
            seconds = time.monotonic() - began
            running.daemon.stop()
            running.thread.join()
            rss = running.rss.stop()
            verdicts = dict(Counter(r.verdict or "none" for r in store.releases()))
            traced, growth = running.rss.traced, running.rss.growth
        finally:
            polled = outside.stop()
            if server is not None:
                server.shutdown()
            store.close()
    result = _result(plan, seconds, kinds, urls, box, running, rss, polled, pool_full.count)
    return replace(result, releases=verdicts, traced_samples_mb=traced, traced_growth=growth)


@contextmanager
def _counting_pool_full() -> Iterator[_PoolFullCounter]:
    """Count urllib3's warnings about connections thrown away, without printing them."""
    counter = _PoolFullCounter()
    log = logging.getLogger("urllib3.connectionpool")
    level, propagate = log.level, log.propagate
    log.setLevel(logging.WARNING)
    log.addHandler(counter)
    log.propagate = False
    try:
        yield counter
    finally:
        log.removeHandler(counter)
        log.setLevel(level)
        log.propagate = propagate


def _start_daemon(plan: LoadPlan, urls: Sequence[str], store: Store,
                  box: SnapshotBox) -> _Running:
    config = load_config(urls, plan, str(store.path))
    daemon = Daemon(config, store, WallClock(), box=box, live=True)
    rounds_left = math.ceil(plan.seconds / plan.interval) + _LATENESS_SLOTS_SPARE
    starts = StartLog(urls, plan.interval, capacity=len(urls) * rounds_left, rounds=plan.rounds)
    daemon.on_scrape_start = starts
    rss = RssSampler(plan.rss_every, traced=plan.tracemalloc, settle=plan.release_every or plan.rss_every)
    rss.start()
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    return _Running(daemon, thread, starts, rss)


@contextmanager
def _scratch(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="release-monitor-load-") as scratch:
        yield Path(scratch)


def _result(plan: LoadPlan, seconds: float, kinds: list[str], urls: list[str], box: SnapshotBox,
            running: _Running, rss: list[tuple[float, float]], polled: Polled,
            pool_full: int) -> LoadResult:
    snapshot = box.get()
    starts = running.starts
    lateness = starts.lateness[: starts.count]
    latencies, failures, longest_gap = polled
    served = np.asarray(latencies, dtype=float)
    kind_of = dict(zip(urls, kinds, strict=True))
    recorded = {t.target: t.scrapes_total for t in snapshot.targets}
    healthy = [url for url in urls if kind_of[url] == HEALTHY]
    return LoadResult(
        plan=plan,
        seconds=seconds,
        metrics_requests=int(served.size),
        metrics_failures=failures,
        metrics_p50_ms=_quantile_ms(served, 0.5),
        metrics_p99_ms=_quantile_ms(served, 0.99),
        metrics_max_ms=_quantile_ms(served, 1.0),
        metrics_longest_gap_ms=longest_gap * 1e3,
        scrape_starts=starts.count + starts.dropped,
        lateness_p50_ms=_quantile_ms(lateness, 0.5),
        lateness_p99_ms=_quantile_ms(lateness, 0.99),
        lateness_max_ms=_quantile_ms(lateness, 1.0),
        lateness_p99_of_interval=_quantile_ms(lateness, 0.99) / 1e3 / plan.interval,
        healthy_missed=sum(starts.missed[url] for url in healthy),
        healthy_short=sum(recorded.get(url, 0) < starts.starts[url] - 1 for url in healthy),
        rss_samples_mb=[round(mb, 1) for _, mb in rss],
        rss_drift_mb_per_hour=drift_per_hour(_settled(plan, rss)),
        kinds=kind_figures(kinds, urls, snapshot.targets),
        evaluations=snapshot.evaluations_total,
        store_errors=snapshot.store_errors_total,
        pool_full_warnings=pool_full,
        malloc_arenas=malloc_arenas(running.daemon.arenas_capped),
    )


def malloc_arenas(capped: bool) -> str:
    """How many malloc arenas the run allowed: resident memory's drift depends on it."""
    if capped:
        return f"at most {DAEMON_ARENAS} (the daemon's cap)"
    told = os.environ.get("MALLOC_ARENA_MAX")
    return f"at most {told} (MALLOC_ARENA_MAX)" if told else "the C library's default"


def report(result: LoadResult) -> str:
    """The figures as a few lines of text."""
    plan = result.plan
    lines = [
        f"{plan.targets} targets every {plan.interval:g} s (timeout {plan.timeout:g} s) for "
        f"{result.seconds:.0f} s: {result.scrape_starts} scrapes begun, "
        f"{result.evaluations} evaluations, {result.store_errors} store errors; releases by verdict "
        f"{result.releases or 'none'}",
        f"/metrics answer: p50 {result.metrics_p50_ms:.1f} ms, p99 {result.metrics_p99_ms:.1f} ms, "
        f"max {result.metrics_max_ms:.1f} ms over {result.metrics_requests} requests "
        f"({result.metrics_failures} failed; target p99 < 100 ms); longest wait between "
        f"answers {result.metrics_longest_gap_ms:.0f} ms",
        f"scrape start lateness: p50 {result.lateness_p50_ms:.1f} ms, p99 "
        f"{result.lateness_p99_ms:.1f} ms ({result.lateness_p99_of_interval:.1%} of the interval; "
        f"target < 10%), max {result.lateness_max_ms:.1f} ms",
        f"healthy scrapes missed: {result.healthy_missed}; healthy targets with scrapes "
        f"unrecorded: {result.healthy_short}",
        f"resident memory (MB, every {plan.rss_every:g} s): {result.rss_samples_mb}; drift "
        f"{result.rss_drift_mb_per_hour:+.1f} MB/hour (fit after the "
        f"{'first release cycle' if plan.release_every else 'first sample'}); malloc arenas "
        f"{result.malloc_arenas}",
        f"urllib3 'pool is full' warnings: {result.pool_full_warnings}",
    ]
    if result.traced_samples_mb:
        lines.append(f"live Python objects (MB, tracemalloc): {result.traced_samples_mb}; grew most "
                     f"after the first cycle at: " + "; ".join(result.traced_growth))
    for kind, figures in result.kinds.items():
        lines.append(f"{kind:>8}: {figures.targets} targets, up {figures.up}, down {figures.down}, "
                     f"{figures.scrapes} scrapes, {figures.errors} errors, last error a timeout "
                     f"on {figures.timeouts}, HTTP 500 on {figures.http_500}")
        for error, count in sorted(figures.last_errors.items(), key=lambda item: -item[1])[:3]:
            lines.append(f"{'':>10}{count} x {error}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the run")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="scrape timeout, seconds")
    parser.add_argument("--servers", type=int, default=4, help="loopback servers for the targets")
    parser.add_argument("--rss-every", type=float, default=60.0, help="VmRSS sampling period, s")
    parser.add_argument("--no-releases", action="store_true",
                        help="scrape only: no version label read, no release watched")
    parser.add_argument("--release-every", type=float, default=None, metavar="MINUTES",
                        help="every service releases a new version this often (checking "
                             "periods of three quarters of it), as a long-lived sidecar sees")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also follow the daemon's live Python objects (slows it down)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    plan = LoadPlan(targets=args.targets, interval=args.interval, timeout=args.timeout,
                    seconds=args.minutes * 60.0, servers=args.servers, rss_every=args.rss_every,
                    releases=not args.no_releases,
                    release_every=args.release_every * 60.0 if args.release_every else None,
                    tracemalloc=args.tracemalloc)
    result = run_load(plan)
    print(json.dumps(result.as_json(), indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
