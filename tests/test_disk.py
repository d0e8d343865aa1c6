"""Disk trouble: a full or read-only database stops nothing but storing and judging.

The daemon runs in-process on a simulated clock against the simulated shop over loopback
HTTP. The disk fills up when the daemon's connection may not grow the file any more
(`PRAGMA max_page_count` is a setting of one connection, so it is set on the daemon's own),
and turns read-only with `PRAGMA query_only` (as root, chmod would not stop the writes).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import sqlite_utils
from prometheus_client.parser import text_string_to_metric_families

from monitor.api import serve
from monitor.clock import SimClock
from monitor.daemon import STORE_RECOVERY_SECONDS, Daemon
from monitor.demo import demo_policy
from monitor.demo_service import SimulatedService
from monitor.errors import StoreError
from monitor.hooks import HookRunner, Outcome
from monitor.policy import Hook, MonitorConfig, ServicePolicy
from monitor.releases import Releases
from monitor.snapshot import SnapshotBox
from monitor.store import Release, Store

HOOK = Hook(name="page", on=("pass", "hotfix", "rollback", "inconclusive"), command=("true",))
SCRAPE = 15.0        # the demo policy's scrape interval
PERIOD = 1800.0      # and its checking period for a minor change


@dataclass
class Rig:
    clock: SimClock
    shop: SimulatedService
    conn: sqlite3.Connection       # the daemon's own connection
    store: Store
    daemon: Daemon
    box: SnapshotBox
    fired: list[tuple[str, str]]   # (release, verdict) of every hook delivery

    def trouble(self, mode: str) -> None:
        if mode == "full":
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            self.conn.execute(f"PRAGMA max_page_count = {int(pages)}")
        else:
            self.conn.execute("PRAGMA query_only = ON")

    def relief(self, mode: str) -> None:
        if mode == "full":
            self.conn.execute("PRAGMA max_page_count = 1073741823")
        else:
            self.conn.execute("PRAGMA query_only = OFF")

    def run(self, seconds: float) -> None:
        self.daemon.run_until(self.clock.now() + seconds)

    def release(self, version: str) -> Release:
        return self.store.release("demo", version)


@pytest.fixture()
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = SimClock()
    shop = SimulatedService(clock, seed=3, version="v2.2")
    shop.start()
    conn = sqlite3.connect(tmp_path / "m.db", check_same_thread=False)
    store = Store(sqlite_utils.Database(conn))
    config = MonitorConfig(path="<test>", services={
        "demo": replace(demo_policy(shop.url), hooks=(HOOK,))})
    fired: list[tuple[str, str]] = []

    def send(hook: Hook, body: dict[str, Any]) -> Outcome:
        fired.append((body["release"], body["verdict"]))
        return Outcome(True, "ok")

    box = SnapshotBox()
    releases = Releases(config, store, clock, hooks=HookRunner(store, clock, send=send))
    daemon = Daemon(config, store, clock, box=box, releases=releases)
    rig = Rig(clock, shop, conn, store, daemon, box, fired)
    rig.run(2400)                                # v2.2 passes: the baseline
    assert fired == [("v2.2", "pass")]
    shop.deploy("v2.3")                          # errors x12 and a fast leak
    rig.run(60)
    assert (rig.release("v2.3").state, rig.release("v2.3").verdict) == ("watching", "pending")
    yield rig
    daemon.close()
    store.close()
    shop.stop()


def _store_errors(url: str) -> float:
    answer = requests.get(f"{url}/metrics", timeout=5)
    assert answer.status_code == 200
    [value] = [sample.value for family in text_string_to_metric_families(answer.text)
               for sample in family.samples if sample.name == "release_monitor_store_errors_total"]
    return value


@pytest.mark.parametrize("mode", ["full", "read-only"])
def test_the_daemon_rides_out_disk_trouble_and_resumes(rig: Rig, mode: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="release_monitor")
    release = rig.release("v2.3")
    history = rig.store.verdicts(release.id)
    server = serve(rig.box, version="test", clock=rig.clock)
    try:
        rig.trouble(mode)
        rig.run(SCRAPE)                                # the first scrape is refused
        errors_before = _store_errors(server.url)
        assert errors_before >= 1
        began, scrapes = rig.clock.now(), rig.box.get().targets[0].scrapes_total
        samples = rig.store.sample_count("demo")
        rig.run(600)                                   # ten minutes, within the period
        during = _store_errors(server.url)
        assert during == rig.daemon.store_errors_total
        # Every scrape was fetched, and refused unless it fit in the file's free pages
        # (then judging went ahead, and failed to store its pending verdict).
        window = rig.store.read_window("demo", began + 1e-6, rig.clock.now() + 1)
        stored = window.times.size
        attempted = rig.box.get().targets[0].scrapes_total - scrapes
        assert attempted == 600 / SCRAPE
        assert attempted - stored <= during - errors_before <= attempted
        assert stored < attempted / 4 if mode == "full" else stored == 0
        assert rig.store.sample_count("demo") - samples == np.count_nonzero(~np.isnan(window.values))
        # Nothing was decided from what the store happened to hold.
        assert rig.store.verdicts(release.id) == history
        assert rig.release("v2.3").verdict == "pending"
        assert rig.store.actions(release.id) == []
        assert rig.fired == [("v2.2", "pass")]
        assert rig.box.get().verdicts[("demo", "v2.3")]["verdict"] == "pending"
        # The store's failure, said as such: the target answered all along.
        health = requests.get(f"{server.url}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "store failing"
        assert "cannot write" in health.json()["error"]
        assert rig.box.get().targets[0].up

        rig.relief(mode)
        recovered = rig.clock.now()
        rig.run(SCRAPE)
        assert rig.store.sample_count("demo") > samples + 20           # scraping resumed
        assert _store_errors(server.url) == during                     # and nothing fails
        # Healthy again once no write has been refused for a while, not at the first.
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 503
        rig.run(STORE_RECOVERY_SECONDS)
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        # Said when it began and when it ended, not at every refused scrape.
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("store")]
        assert len(said) <= 3 and said[-1] == "store works again", said
        rig.run(PERIOD)
    finally:
        server.shutdown()
    decided = rig.release("v2.3")
    judged = rig.store.verdicts(release.id)[len(history):]
    assert judged and min(v.at for v in judged) > recovered             # judging resumed
    assert (decided.verdict, decided.state) == ("rollback", "done"), decided.reason
    assert "error_ratio" in decided.reason
    assert rig.fired == [("v2.2", "pass"), ("v2.3", "rollback")]


@dataclass(frozen=True)
class Outage:
    release: Release
    recovered_at: float
    first_scrape_after: float


@pytest.fixture()
def outage_past_the_period(rig: Rig) -> Outage:
    """The disk fills a minute into v2.3's period and only frees up after the period ended."""
    rig.trouble("full")
    rig.run(PERIOD + 300)
    assert rig.release("v2.3").verdict == "pending"
    assert rig.fired == [("v2.2", "pass")]
    rig.relief("full")
    recovered_at = rig.clock.now()
    # Findings seen past the end get their `persistence` evaluations (a minute apart) first.
    rig.run(4 * 60.0)
    window = rig.store.read_window("demo", recovered_at, rig.clock.now() + 1)
    return Outage(rig.release("v2.3"), recovered_at, float(window.times.min()))


def test_after_an_outage_judging_waits_for_fresh_samples(outage_past_the_period: Outage) -> None:
    release = outage_past_the_period.release
    assert release.state == "done" and release.decided_at is not None
    assert release.decided_at >= outage_past_the_period.first_scrape_after
    # The monitor's own disk is not blamed on the service's data sources.
    assert "cannot write" not in release.reason


def test_a_release_judged_first_after_its_period_is_not_passed_despite_major_findings(
    outage_past_the_period: Outage,
) -> None:
    assert outage_past_the_period.release.verdict != "pass"



def test_a_read_that_fails_once_leaves_the_monitor_healthy(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A service read by PromQL: no scrapes, so no stored scrape would ever say "works".
    clock = SimClock(start=1_000_000.0)
    store = Store.open(tmp_path / "m.db")
    box = SnapshotBox()
    daemon = Daemon(MonitorConfig(path="<test>", services={"checkout": ServicePolicy(
        name="checkout")}), store, clock, box=box)
    real, calls = store.active_releases, []

    def locked_once() -> list[Release]:
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("cannot read m.db: database is locked")   # a backup held it
        return real()

    monkeypatch.setattr(store, "active_releases", locked_once)
    daemon.step()
    assert daemon.store_errors_total == 1 and box.get().store_error == ""
    clock.advance(60)
    daemon.step()
    assert box.get().store_error == ""
    daemon.close()
    store.close()


@pytest.mark.parametrize("failing", ["active_releases", "services"])   # judging, publishing
def test_reads_that_go_on_failing_fail_the_monitors_health_until_they_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.open(tmp_path / "m.db")
    box = SnapshotBox()
    daemon = Daemon(MonitorConfig(path="<test>", services={"checkout": ServicePolicy(
        name="checkout")}), store, clock, box=box)
    real, damaged = getattr(store, failing), [True]

    def reading() -> Any:
        if damaged[0]:
            raise StoreError("cannot read m.db: database disk image is malformed")
        return real()

    monkeypatch.setattr(store, failing, reading)
    health = []
    for _ in range(5):   # at +0s, +30s, +60s, +90s, +120s
        daemon.step()
        health.append(box.get().store_error)
        clock.advance(30)
    malformed = "cannot read m.db: database disk image is malformed"
    # Failing at every step for 60s; what publishing read fails is seen at the next step.
    seen = 0 if failing == "active_releases" else 1
    assert health == ["", ""] + [""] * seen + [malformed] * (3 - seen)
    damaged[0] = False
    for _ in range(3):   # 60s after the last failure, it works again
        daemon.step()
        health.append(box.get().store_error)
        clock.advance(30)
    assert health[5:] == [malformed] * (1 + seen) + [""] * (2 - seen)
    daemon.close()
    store.close()
