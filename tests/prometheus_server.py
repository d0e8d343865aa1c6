"""A real Prometheus for integration tests: Debian's `prometheus` binary on 127.0.0.1,
scraping loopback targets every second, stopped (terminate, then kill) in teardown.

Use the `prometheus_factory` fixture (skips when `prometheus` is not on PATH):

    def test_scraped(prometheus_factory):
        server = prometheus_factory(["http://127.0.0.1:8000/metrics"], job="shop")
        server.wait_for_samples('up{job="shop"}', 3)
        assert server.query('up{job="shop"}')[0]["value"][1] == "1"

or `start_prometheus(targets, directory)` and `server.stop()` outside a fixture.
Prometheus scrapes on real time: wait on conditions (`wait_for_samples`), never sleep.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

BINARY = "prometheus"
POLL_INTERVAL = 0.1
READY_ATTEMPTS = 100  # 10 s: Prometheus is ready in well under a second on an idle machine
SAMPLE_ATTEMPTS = 200  # 20 s of polling for scraped samples
STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 3  # a freed port can be taken by someone else before Prometheus binds it


@dataclass
class PrometheusServer:
    """A running Prometheus: its base URL, process and working directory."""

    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result list of an instant query at the current time."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5.0)
        payload = response.json()
        if payload.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {payload}")
        return list(payload["data"]["result"])

    def samples(
        self, selector: str, window: str = "1h"
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """The raw samples of `selector` over the last `window`: labels, scrape times, values."""
        return [
            (
                series["metric"],
                np.array([float(t) for t, _ in series["values"]]),
                np.array([float(v) for _, v in series["values"]]),
            )
            for series in self.query(f"{selector}[{window}]")
        ]

    def wait_for_samples(self, selector: str, count: int, *, attempts: int = SAMPLE_ATTEMPTS) -> None:
        """Poll until some series of `selector` has at least `count` samples stored."""
        wait = threading.Event()
        for _ in range(attempts):
            if self._most_samples(selector) >= count:
                return
            self._check_running()
            wait.wait(POLL_INTERVAL)
        raise AssertionError(
            f"Prometheus has fewer than {count} samples of {selector} after {attempts} polls\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        """Terminate, and kill if it does not exit in time; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "prometheus.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _most_samples(self, selector: str) -> float:
        counts = self.query(f"count_over_time({selector}[1h])")
        return max((float(series["value"][1]) for series in counts), default=0.0)

    def _check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited with {self.process.returncode}\n{self.log_tail()}")


def prometheus_binary() -> str | None:
    return shutil.which(BINARY)


def free_port() -> int:
    """A port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_config(targets: Sequence[str], *, job: str, interval: float) -> dict[str, Any]:
    """A configuration scraping each target URL every `interval` seconds, all labelled `job`."""
    period = f"{round(interval * 1000)}ms"
    groups: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        parts = urlsplit(target)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"test targets must be on the loopback interface, got {target!r}")
        groups.setdefault((parts.scheme or "http", parts.path or "/metrics"), []).append(parts.netloc)
    jobs = [
        {
            "job_name": f"{job}-{index}",
            "scheme": scheme,
            "metrics_path": path,
            "static_configs": [{"targets": hosts, "labels": {"job": job}}],
        }
        for index, ((scheme, path), hosts) in enumerate(groups.items())
    ]
    timing = {"scrape_interval": period, "scrape_timeout": period, "evaluation_interval": period}
    return {"global": timing, "scrape_configs": jobs}


def start_prometheus(
    targets: Sequence[str], directory: Path, *, job: str = "targets", scrape_interval: float = 1.0
) -> PrometheusServer:
    """Start Prometheus scraping `targets` (URLs on 127.0.0.1) and wait until it is ready."""
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError(f"{BINARY} is not on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    # JSON is YAML, so no YAML writer is needed.
    config.write_text(json.dumps(scrape_config(targets, job=job, interval=scrape_interval), indent=2))
    for _ in range(_PORT_ATTEMPTS):
        server = _launch(binary, config, directory)
        if _wait_ready(server):
            return server
        server.stop()
        if "address already in use" not in server.log_tail().lower():
            break
    raise AssertionError(f"Prometheus did not become ready\n{server.log_tail()}")


def _launch(binary: str, config: Path, directory: Path) -> PrometheusServer:
    port = free_port()
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return PrometheusServer(f"http://127.0.0.1:{port}", process, directory)


def _wait_ready(server: PrometheusServer) -> bool:
    """Poll /-/ready a bounded number of times; False when the process exits or never answers."""
    wait = threading.Event()
    for _ in range(READY_ATTEMPTS):
        if server.process.poll() is not None:
            return False
        try:
            if requests.get(f"{server.url}/-/ready", timeout=1.0).status_code == 200:
                return True
        except requests.RequestException:
            pass  # not listening yet
        wait.wait(POLL_INTERVAL)
    return False


@pytest.fixture(scope="module")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Start real Prometheus servers for one test module; all are stopped at its end.

    `prometheus_factory(targets, job="shop", scrape_interval=1.0) -> PrometheusServer`
    """
    if prometheus_binary() is None:
        pytest.skip(f"`{BINARY}` is not on PATH (Debian package: prometheus)")
    started: list[PrometheusServer] = []

    def start(
        targets: Sequence[str], *, job: str = "targets", scrape_interval: float = 1.0
    ) -> PrometheusServer:
        directory = tmp_path_factory.mktemp("prometheus")
        server = start_prometheus(targets, directory, job=job, scrape_interval=scrape_interval)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
