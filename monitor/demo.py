"""`monitor demo`: the whole pipeline on an embedded simulated service, in seconds.

A simulated clock drives a real HTTP service through five releases; the real daemon
scrapes it over HTTP, stores samples in SQLite, builds baselines, runs the detectors and
the judge, and serves its verdicts. Nothing is faked but the passage of time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.clock import SimClock
from monitor.daemon import Daemon
from monitor.demo_service import SimulatedService
from monitor.durations import format_duration
from monitor.figures import finding_figures, finding_unit, signal_units
from monitor.policy import (
    Hook,
    MonitorConfig,
    Probe,
    ServicePolicy,
    SignalRule,
    Target,
    VerifyCommand,
)
from monitor.render import after
from monitor.snapshot import SnapshotBox
from monitor.store import Store
from monitor.verdicts import document

SERVICE = "demo"
PERIOD = 1800.0
MEMORY_LIMIT = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Step:
    version: str
    story: str


HISTORY = (
    Step("v2.1", "first release: nothing earlier to compare with"),
    Step("v2.2", "healthy: must pass against v2.1"),
    Step("v2.3", "error-rate jump and a fast memory leak"),
    Step("v2.4", "a minor regression: deeper work queue, slow leak"),
    Step("v2.5", "database unreachable: the smoke test fails"),
)

_VERIFY_ORDERS = (
    "import json, sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1] + '/api/orders', timeout=5) as answer:\n"
    "    orders = json.load(answer)\n"
    "assert isinstance(orders, list), 'orders API did not answer a list'\n"
    "print(f'orders API answered {len(orders)} orders')\n"
)


def demo_policy(url: str) -> ServicePolicy:
    """The demo service's release policy (the README shows the same as a TOML file)."""
    return ServicePolicy(
        name=SERVICE,
        targets=(Target(url=f"{url}/metrics", interval=15.0, timeout=2.0),),
        version_metric="demo_build_info",
        periods={"minor": PERIOD, "major": 2 * PERIOD},
        evaluation_interval=60.0,
        persistence=3,
        leak_horizon=7200.0,
        leak_block=240.0,
        smoke=(
            Probe("main page", f"{url}/", expect_body="demo shop", max_latency=1.0),
            Probe("orders API", f"{url}/api/orders", max_latency=1.0),
            Probe("database connected", f"{url}/health", expect_body='"connected"',
                  max_latency=1.0),
        ),
        verify=(VerifyCommand("orders contract", (sys.executable, "-c", _VERIFY_ORDERS, url),
                              timeout=30.0),),
        signals=(
            SignalRule("error_ratio", kind="ratio", numerator="http_request_errors_total",
                       denominator="http_requests_total", bad="increase", tolerance=0.5,
                       absolute=0.002, critical=True),
            SignalRule("latency_p95", kind="quantile", metric="http_request_duration_seconds",
                       quantile=0.95, bad="increase", tolerance=0.25, critical=True),
            SignalRule("request_rate", kind="rate", metric="http_requests_total", bad="both",
                       tolerance=0.5),
            SignalRule("memory", kind="gauge", metric="process_resident_memory_bytes",
                       bad="increase", leak=True, limit=MEMORY_LIMIT),
            SignalRule("cpu", kind="rate", metric="process_cpu_seconds_total", bad="increase"),
            SignalRule("pool_in_use", kind="gauge", metric="db_pool_connections_in_use",
                       bad="increase"),
            SignalRule("queue_depth", kind="gauge", metric="work_queue_depth", bad="increase"),
        ),
        # Recorded with its idempotency key, never run: the demo has no deployment to undo.
        hooks=(Hook(name="rollback", on=("rollback",),
                    command=("kubectl", "rollout", "undo", "deployment/demo"), dry_run=True),),
    )


def run_demo(db_path: Path, *, echo: Callable[[str], None] = print,
             box: SnapshotBox | None = None) -> list[dict[str, Any]]:
    """Play the release history; return the verdict document of each release."""
    clock = SimClock()
    service = SimulatedService(clock, seed=7, version=HISTORY[0].version)
    service.start()
    store = Store.open(db_path)
    try:
        policy = demo_policy(service.url)
        config = MonitorConfig(path="<demo>", database=str(db_path), services={SERVICE: policy})
        daemon = Daemon(config, store, clock, box=box)
        docs = []
        for step in HISTORY:
            service.deploy(step.version)
            doc = _watch_release(daemon, store, clock, step.version)
            docs.append(doc)
            echo(_summary(step, doc))
            if doc["verdict"] == "rollback":
                service.deploy(_last_good(docs))
                daemon.run_until(clock.now() + 300.0)  # the rolled-back version runs a while
        daemon.publish()
        daemon.close()
        return docs
    finally:
        store.close()
        service.stop()


def _watch_release(daemon: Daemon, store: Store, clock: SimClock, version: str) -> dict[str, Any]:
    """Run the daemon until this version's release is noticed and decided for good."""
    deadline = clock.now() + 3 * PERIOD
    while clock.now() < deadline:
        daemon.run_until(clock.now() + 15.0)
        known = [r for r in store.releases(SERVICE) if r.version == version]
        if known and known[0].state == "done":
            return document(store, known[0])
    raise RuntimeError(f"demo: {version} was not decided within {format_duration(3 * PERIOD)}")


def _last_good(docs: list[dict[str, Any]]) -> str:
    return next(d["release"] for d in reversed(docs) if d["verdict"] == "pass")


def _summary(step: Step, doc: dict[str, Any]) -> str:
    decided = after(doc, "decided_at")
    lines = [f"{doc['release']}  {doc['verdict'].upper():<12} at {decided:<9} "
             f"baseline {doc.get('baseline_release') or '-':<5}  ({step.story})"]
    if doc.get("reason"):
        lines.append(f"      reason: {doc['reason']}")
    findings = doc.get("findings", [])
    width = max((len(f["signal"]) for f in findings), default=0)
    units = signal_units(doc)
    for f in findings:
        if f["detector"] in ("smoke", "verification"):
            lines.append(f"      {f['severity']:<5} {f['signal']:<{width}}  {f['detector']}: "
                         f"{f.get('detail', '')}")
            continue
        base, cand, _, _ = finding_figures(f, finding_unit(units, f["signal"]))
        lines.append(f"      {f['severity']:<5} {f['signal']:<{width}}  {f['detector']:<11} "
                     f"baseline {base:>12}  candidate {cand:>12}  {f.get('detail', '')}")
    return "\n".join(lines)
