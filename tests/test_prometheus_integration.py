"""Against a real Prometheus (Debian's `prometheus`): a release judged by PromQL, and every
dashboard query answered with data after Prometheus has scraped the demo's monitor."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.api import serve
from monitor.clock import WallClock
from monitor.demo import run_demo
from monitor.demo_service import SimulatedService
from monitor.policy import MonitorConfig, PromSource, ServicePolicy, SignalRule
from monitor.releases import Releases
from monitor.snapshot import SnapshotBox
from monitor.store import Store

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))


@pytest.fixture()
def live_service() -> Iterator[SimulatedService]:
    service = SimulatedService(WallClock(), seed=5, version="v2.2", requests_per_s=200.0)
    service.start()
    yield service
    service.stop()


def test_a_release_is_judged_from_promql(
    live_service: SimulatedService, prometheus_factory: Callable[..., Any], tmp_path: Path
) -> None:
    prometheus = prometheus_factory([f"{live_service.url}/metrics"], job="shop")
    prometheus.wait_for_samples('http_requests_total{job="shop"}', 6)
    policy = ServicePolicy(
        name="shop",
        prometheus=PromSource(url=prometheus.url, step=1.0),
        signals=(
            SignalRule("memory", query='max(process_resident_memory_bytes{job="shop"})',
                       bad="increase"),
            SignalRule("errors", kind="ratio", bad="increase", critical=True,
                       numerator_query='sum(increase(http_request_errors_total{job="shop"}[2s]))',
                       denominator_query='sum(increase(http_requests_total{job="shop"}[2s]))'),
        ),
        periods={"minor": 3600.0, "major": 7200.0},
    )
    clock = WallClock()
    store = Store.open(tmp_path / "m.db")
    releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    release = releases.start("shop", "v2.2", at=clock.now() - 10)
    frame = releases.frame(policy, "shop", release.started_at, clock.now(), version="v2.2")
    memory = frame.values[frame.row("memory")]
    assert (memory[~(memory != memory)] > 200e6).sum() >= 3          # real, scraped values
    trials = frame.trials[frame.row("errors")]
    assert trials[trials == trials].sum() > 0
    store.close()


def _dashboard_queries() -> list[tuple[str, str, str, frozenset[str]]]:
    """Every query of every dashboard: board, title, expression, and the board's variables
    that take several values (Grafana regex-escapes those)."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        multi = frozenset(v["name"] for v in board.get("templating", {}).get("list", [])
                          if v.get("multi") or v.get("includeAll"))
        panels = list(board.get("panels", []))
        for panel in list(panels):
            panels.extend(panel.get("panels", []))
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((path.name, panel.get("title", "?"), target["expr"], multi))
        for annotation in board.get("annotations", {}).get("list", []):
            if annotation.get("expr"):
                found.append((path.name, annotation.get("name", "?"), annotation["expr"], multi))
    return found


# Every finding of the demo's releases is of a signal worse in one direction only, whose
# interval has no upper end, so nothing has this figure; a leak's bounds, which have one,
# are slopes and are exported apart (release_monitor_leak_slope_per_second).
ONE_SIDED_ONLY = "release_monitor_finding_upper_ratio"


def _grafana_escape(value: str) -> str:
    """What Grafana's Prometheus data source puts in a query for a variable that takes
    several values: regex specials escaped, the backslash doubled for the PromQL string."""
    return re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\\\1", value)


def _substitute(expr: str, values: dict[str, list[str]], multi: frozenset[str]) -> str:
    """The query as Grafana sends it with these values chosen for each variable."""
    replacements = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                    "${__rate_interval}": "1m"}
    for key, value in replacements.items():
        expr = expr.replace(key, value)
    for name, chosen in values.items():
        escaped = [_grafana_escape(value) for value in chosen]
        shown = (escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})") if name in multi \
            else chosen[0]
        expr = re.sub(r"\$\{?" + name + r"(:\w+)?\}?(?!\w)", shown.replace("\\", "\\\\"), expr)
    assert "$" not in expr, f"a variable left: {expr}"
    return expr


def test_every_dashboard_query_returns_data(
    prometheus_factory: Callable[..., Any], tmp_path: Path
) -> None:
    box = SnapshotBox()
    run_demo(tmp_path / "demo.db", echo=lambda _line: None, box=box)
    server = serve(box, version="test")
    try:
        prometheus = prometheus_factory([f"{server.url}/metrics"], job="release-monitor")
        prometheus.wait_for_samples('release_monitor_verdict{job="release-monitor"}', 3)
        [up] = prometheus.query('up{job="release-monitor"}')
        # Releases with leaks, findings and signal views, one chosen alone and two together;
        # a signal they have them for. Every query must answer for each choice.
        instance = [up["metric"]["instance"]]
        choices = [{"service": ["demo"], "release": release, "signal": ["memory"],
                    "job": ["release-monitor"], "instance": instance}
                   for release in (["v2.3"], ["v2.3", "v2.4"])]
        empty, failed = [], []
        for (board, title, expr, multi), values in itertools.product(_dashboard_queries(), choices):
            try:
                answer = prometheus.query(_substitute(expr, values, multi))
            except AssertionError as exc:
                failed.append(f"{board}: {title}: {exc}")
                continue
            if not answer and ONE_SIDED_ONLY not in expr:
                empty.append(f"{board}: {title} with release {values['release']}: {expr}")
        assert not failed, "\n".join(failed)
        assert not empty, "queries with no data:\n" + "\n".join(empty)
    finally:
        server.shutdown()


def test_dashboards_have_queries() -> None:
    assert len(_dashboard_queries()) >= 10
