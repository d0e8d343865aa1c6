"""Samples/s of monitor's exposition parser vs prometheus_client's, on a 10,000-series payload.

Two figures, each the median of 5 runs on the same fixed-seed payload:
- parse: text -> samples, in process;
- scrape: GET from a local HTTP server, then parse (what the daemon does per target).

Run from the repository root: python -m benchmarks.parse_speed
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from monitor.exposition import parse
from monitor.fetch import scrape

SERIES = 10_000
RUNS = 5
MAX_BYTES = 64 * 1024 * 1024
BUCKET_BOUNDS = ("0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf")


def make_payload(series: int = SERIES, seed: int = 20260101) -> str:
    """Counters, gauges and histograms with 2-4 labels each, as a service would expose."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    written = 0
    family = 0
    while written < series:
        kind = ("counter", "gauge", "histogram")[family % 3]
        name = f"app_{kind}_{family}" + ("_total" if kind == "counter" else "")
        lines += [f"# HELP {name} A {kind} of the service.", f"# TYPE {name} {kind}"]
        for line in _family_lines(name, kind, rng):
            lines.append(line)
            written += 1
            if written == series:
                break
        family += 1
    return "\n".join(lines) + "\n"


def _family_lines(name: str, kind: str, rng: np.random.Generator) -> Iterator[str]:
    """Sample lines of one family: 60 label sets."""
    for index in range(60):
        labels = (
            f'handler="/api/v1/items/{index}",method="{("get", "post")[index % 2]}",'
            f'code="{200 + 100 * (index % 4)}"'
        )
        if kind != "histogram":
            yield f"{name}{{{labels}}} {rng.uniform(0, 1e6)!r}"
            continue
        counts = np.cumsum(rng.integers(0, 500, size=len(BUCKET_BOUNDS)))
        for bound, count in zip(BUCKET_BOUNDS, counts, strict=True):
            yield f'{name}_bucket{{{labels},le="{bound}"}} {count}'
        yield f"{name}_sum{{{labels}}} {rng.uniform(0, 1e4)!r}"
        yield f"{name}_count{{{labels}}} {counts[-1]}"


def ours(text: str) -> int:
    return len(parse(text).keys)


def prometheus_clients(text: str) -> int:
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


def median_seconds(run: Callable[[], int], expected: int) -> float:
    """Median wall time of RUNS calls; each must see every sample."""
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        count = run()
        times.append(time.perf_counter() - started)
        assert count == expected, (count, expected)
    return statistics.median(times)


class _PayloadHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def payload_server(text: str) -> Iterator[str]:
    """Serve `text` as /metrics on a loopback port; yields the URL, stops on exit."""
    handler = type("Payload", (_PayloadHandler,), {"body": text.encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    text = make_payload()
    samples = ours(text)
    assert samples == prometheus_clients(text) == SERIES
    with payload_server(text) as url, requests.Session() as session:
        _compare(text, samples, url, session)


def _compare(text: str, samples: int, url: str, session: requests.Session) -> None:
    def our_scrape() -> int:
        return len(scrape(url, timeout=10.0, max_bytes=MAX_BYTES, session=session).keys)

    def their_scrape() -> int:
        return prometheus_clients(session.get(url, timeout=10.0).text)

    print(f"payload: {samples} samples, {len(text) / 1e6:.2f} MB; median of {RUNS} runs")
    for label, mine, theirs in (
        ("parse", lambda: ours(text), lambda: prometheus_clients(text)),
        ("scrape", our_scrape, their_scrape),
    ):
        our_rate = samples / median_seconds(mine, samples)
        their_rate = samples / median_seconds(theirs, samples)
        print(
            f"{label:7s} monitor.exposition {our_rate:>11,.0f} samples/s   "
            f"prometheus_client {their_rate:>11,.0f} samples/s   "
            f"ratio {our_rate / their_rate:.2f}"
        )


if __name__ == "__main__":
    main()
