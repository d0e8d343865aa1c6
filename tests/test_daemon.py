"""The daemon against real HTTP targets on loopback, on a simulated clock."""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import requests
from processes import StopOnceFileExists
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from baselines.summary import SignalBaseline
from monitor import demo_service
from monitor.api import serve
from monitor.cli.app import app
from monitor.clock import SimClock
from monitor.daemon import Daemon
from monitor.demo import demo_policy
from monitor.demo_service import SimulatedService
from monitor.durations import format_duration
from monitor.errors import AlreadyJudged, UnknownRelease
from monitor.evaluate import JudgeState
from monitor.policy import Hook, MonitorConfig, Probe, ServicePolicy, SignalRule, Target
from monitor.releases import Releases
from monitor.snapshot import Registration, Snapshot, SnapshotBox
from monitor.store import Release, Store


@pytest.fixture()
def service() -> Iterator[tuple[SimulatedService, SimClock]]:
    # Starts at the real time, so a release registered by the CLI (on the wall clock)
    # falls inside the simulated timeline.
    clock = SimClock(start=time.time())
    simulated = SimulatedService(clock, seed=3, version="v2.2")
    simulated.start()
    yield simulated, clock
    simulated.stop()


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_version_change_is_noticed_judged_and_served(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    db = tmp_path / "monitor.db"
    config = MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)})
    store = Store.open(db)
    box = SnapshotBox()
    daemon = Daemon(config, store, clock, box=box)
    daemon.run_until(clock.now() + 2400)        # v2.2: the first release, passes after 30 min
    simulated.deploy("v2.3")                     # the daemon sees the new build_info label
    daemon.run_until(clock.now() + 900)
    server = serve(box, version="test")
    try:
        metrics = _samples(server.url)
    finally:
        server.shutdown()
    state = {verdict: metrics[("release_monitor_verdict", frozenset(
        {("service", "demo"), ("release", "v2.3"), ("verdict", verdict)}))]
        for verdict in ("pass", "hotfix", "rollback", "pending", "inconclusive")}
    assert state == {"pass": 0, "hotfix": 0, "rollback": 1, "pending": 0, "inconclusive": 0}
    up = metrics[("release_monitor_target_up", frozenset(
        {("service", "demo"), ("target", f"{simulated.url}/metrics")}))]
    assert up == 1
    # The demo's rollback hook is a dry run: recorded, never failed, exported at zero from
    # the start so that a first failure is a rise `increase()` can see.
    assert metrics[("release_monitor_hook_failures_total", frozenset(
        {("service", "demo"), ("hook", "rollback")}))] == 0
    result = CliRunner().invoke(app, ["verdict", "--db", str(db), "--release", "v2.3"])
    assert result.exit_code == 3, result.output
    assert "error_ratio" in result.output
    result = CliRunner().invoke(app, ["verdict", "--db", str(db), "--release", "v2.2", "--json"])
    assert result.exit_code == 0, result.output
    store.close()


def test_after_a_first_release_that_rolled_back_the_next_is_a_first_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing healthy ever ran under the monitor: no release could ever be a baseline, so
    # the next one is judged as a first release would be, not inconclusive for ever.
    clock = SimClock(start=1_000_000.0)
    simulated = SimulatedService(clock, seed=3, version="v2.5")   # its smoke test fails
    simulated.start()
    store = Store.open(tmp_path / "monitor.db")
    try:
        daemon = Daemon(MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)}),
                        store, clock)
        with caplog.at_level(logging.INFO, logger="release_monitor"):
            daemon.run_until(clock.now() + 600)
            simulated.deploy("v2.2")
            daemon.run_until(clock.now() + 2400)
        verdicts = {r.version: (r.verdict, r.reason) for r in store.releases("demo")}
    finally:
        store.close()
        simulated.stop()
    assert verdicts["v2.5"][0] == "rollback"
    assert verdicts["v2.2"] == ("pass", "first release: judged on smoke, verification and leaks")
    decided = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo v2.")]
    assert decided[0].startswith("demo v2.5: ROLLBACK: smoke failed: ")
    assert decided[1:] == ["demo v2.2: PASS: first release: judged on smoke, verification and leaks"]


def test_a_version_registered_again_keeps_its_release_and_a_judged_one_is_refused() -> None:
    clock = SimClock(start=1_000_000.0)
    policy = ServicePolicy(name="demo", periods={"minor": 600.0, "major": 7200.0})
    store = Store.memory()
    releases = Releases(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    seen, new = releases.register("demo", "v8", at=clock.now())   # the version label, say
    assert new and (seen.change_class, seen.period) == ("minor", 600.0)
    clock.advance(30.0)
    again, new = releases.register("demo", "v8", change_class="major")   # the pipeline
    assert not new
    assert (again.id, again.started_at) == (seen.id, seen.started_at)
    assert (again.change_class, again.period) == ("major", 7200.0)
    store.update_release(seen.id, state="done", verdict="pass", decided_at=clock.now())
    with pytest.raises(AlreadyJudged, match=r"demo v8 was registered before and judged already \(pass\)"):
        releases.register("demo", "v8", change_class="minor")
    assert store.release("demo", "v8").change_class == "major"


def test_releases_older_than_the_served_ones_are_named_in_the_snapshot() -> None:
    clock = SimClock(start=1_000_000.0)
    policy = ServicePolicy(name="demo", periods={"minor": 600.0, "major": 7200.0})
    config = MonitorConfig(path="<test>", services={"demo": policy})
    store = Store.memory()
    daemon = Daemon(config, store, clock)
    for number in range(1, 8):
        daemon.releases.register("demo", f"v{number}")
        clock.advance(60.0)
    v1 = store.release("demo", "v1")
    store.add_verdict(v1.id, at=clock.now(), verdict="pass", reason="", findings=[],
                      first_alarm_at=None, decided_at=clock.now(), state="done", judge_state="{}")
    daemon.publish()
    snapshot = daemon.box.get()
    assert sorted(version for _, version in snapshot.verdicts) == ["v3", "v4", "v5", "v6", "v7"]
    # With their verdicts once judged: registering v1 again is refused over HTTP at once.
    assert snapshot.older == {"demo": {"v1": "pass", "v2": ""}}
    # An older release judged later is told too, though the recent ones stay the same.
    v2 = store.release("demo", "v2")
    store.add_verdict(v2.id, at=clock.now(), verdict="hotfix", reason="", findings=[],
                      first_alarm_at=None, decided_at=clock.now(), state="done", judge_state="{}")
    daemon.publish()
    assert daemon.box.get().older == {"demo": {"v1": "pass", "v2": "hotfix"}}
    daemon.close()


def test_a_version_with_a_plus_in_it_is_the_next_release_s_baseline() -> None:
    # Semantic versions carry build metadata after "+" (1.4.0+build.7).
    clock = SimClock(start=1_000_000.0)
    policy = ServicePolicy(name="demo", periods={"minor": 600.0, "major": 7200.0})
    store = Store.memory()
    releases = Releases(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    first, _ = releases.register("demo", "1.4.0+build.7")
    store.update_release(first.id, state="done", verdict="pass", decided_at=clock.now())
    clock.advance(60.0)
    second, _ = releases.register("demo", "1.5.0+build.8")
    assert second.baselines == ("1.4.0+build.7",) and second.baseline == "1.4.0+build.7"
    # No samples were stored: no baseline can be built, and looking for one raises nothing.
    assert releases.baseline(second, policy) == (None, [])


def test_a_registration_racing_the_daemon_still_sets_its_change_class(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SimClock(start=1_000_000.0)
    policy = ServicePolicy(name="demo", periods={"minor": 600.0, "major": 7200.0})
    store = Store.memory()
    releases = Releases(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    releases.register("demo", "v8")          # the daemon saw the label: minor, its guess
    real = store.release
    calls = []

    def not_yet(service: str, version: str) -> Release:
        # The pipeline looked before the daemon's insert landed.
        calls.append(version)
        if len(calls) == 1:
            raise UnknownRelease(version)
        return real(service, version)

    monkeypatch.setattr(store, "release", not_yet)
    release, new = releases.register("demo", "v8", change_class="major")
    assert not new
    assert (release.change_class, release.period) == ("major", 7200.0)


def _passed_release(store: Store, service: str, version: str, at: float) -> None:
    release = store.start_release(service, version, at=at, change_class="minor", period=900.0,
                                  baselines=())
    store.add_verdict(release.id, at=at + 900, verdict="pass", reason="", findings=[],
                      first_alarm_at=None, decided_at=at + 900, state="done", judge_state="{}")


def test_the_daemon_takes_the_policy_s_baselines_for_a_release_registered_without_it() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    for age, version in ((20_000, "v1"), (10_000, "v2")):
        _passed_release(store, "demo", version, clock.now() - age)
    # `monitor release start` without --config: the defaults, one baseline.
    registered = Releases(MonitorConfig(path="<cli>", services={"demo": ServicePolicy(
        name="demo")}), store, clock).start("demo", "v3")
    assert registered.baselines == ("v2",)
    daemon = Releases(MonitorConfig(path="<test>", services={"demo": ServicePolicy(
        name="demo", baselines=2)}), store, clock)
    taken = daemon.advance(store.release("demo", "v3"))
    assert store.release("demo", "v3").baselines == ("v2", "v1"), taken
    # Once judged against them, a release keeps its baselines, whatever the policy says.
    judged = store.update_release(taken.id, state="watching")
    assert store.rebase(judged.id, ("v1",)).baselines == ("v2", "v1")


class _Answering(BaseHTTPRequestHandler):
    """A loopback target's handler: answers with a body and logs nothing."""

    def answer(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _StartingUp(_Answering):
    """Answers 503 to its first `server.unready` requests (a pod still starting), then 200."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.seen += 1  # type: ignore[attr-defined]
        status = 503 if self.server.seen <= self.server.unready else 200  # type: ignore[attr-defined]
        self.answer(b"ok", status)


@pytest.mark.parametrize(("unready", "verdict", "waited"), [
    (2, "pending", 10.0),       # ready at the third attempt: on to verification and watching
    (3, "rollback", 10.0),      # never within three: the smoke test fails
    (0, "pending", 0.0),
])
def test_a_smoke_probe_is_tried_again_before_it_fails(unready: int, verdict: str,
                                                      waited: float) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StartingUp)
    server.seen, server.unready = 0, unready  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    policy = ServicePolicy(name="shop", smoke=(Probe(name="home", url=url),))
    releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    try:
        release = releases.advance(releases.start("shop", "v2"))
    finally:
        server.shutdown()
        server.server_close()
    assert (release.verdict, clock.now() - release.started_at) == (verdict, waited)
    [check] = store.checks(release.id)
    assert check.ok == (verdict != "rollback")
    assert check.detail.endswith(f"(attempt {min(unready + 1, 3)})" if unready else " ms")


class _SleepsUntilWoken(SimClock):
    """A clock whose sleeps end only when the sleeper is woken: the daemon steps again only
    because something woke it, never because its planned time came."""

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        if stop is not None:
            assert stop.wait(timeout=30), "never woken"
        return False


class _PublishWatched(SnapshotBox):
    def __init__(self) -> None:
        super().__init__()
        self.published = threading.Event()

    def publish(self, snapshot: Snapshot) -> None:
        super().publish(snapshot)
        self.published.set()


def test_a_registration_over_http_is_taken_up_at_once_not_at_the_next_step(tmp_path: Path) -> None:
    # A service judged by PromQL alone steps every evaluation interval: a gate asked in
    # between must not answer for the release before the one just registered.
    clock = _SleepsUntilWoken(start=1_000_000.0)
    policy = ServicePolicy(name="checkout", evaluation_interval=600.0)
    store = Store.open(tmp_path / "m.db")
    _passed_release(store, "checkout", "v8", clock.now() - 7200)
    box = _PublishWatched()
    daemon = Daemon(MonitorConfig(path="<test>", services={"checkout": policy}), store, clock,
                    box=box)
    server = serve(box, version="test", token="tok", clock=clock)
    loop = threading.Thread(target=daemon.run, daemon=True)
    loop.start()
    try:
        assert box.published.wait(timeout=30)       # the first step is done; now it sleeps
        box.published.clear()
        answer = requests.post(f"{server.url}/api/v1/releases", timeout=5,
                               headers={"Authorization": "Bearer tok"},
                               json={"service": "checkout", "version": "v9"})
        assert answer.status_code == 202
        assert box.published.wait(timeout=30)
        gate = requests.get(f"{server.url}/api/v1/gate", params={"service": "checkout"}, timeout=5)
        assert (gate.status_code, gate.json()["release"]) != (200, "v8")
        assert gate.json()["release"] == "v9"
    finally:
        daemon.stop()
        loop.join(timeout=30)
        server.shutdown()
        store.close()
    assert not loop.is_alive()


def test_a_registration_received_as_the_daemon_stops_is_stored() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    box = SnapshotBox()
    daemon = Daemon(MonitorConfig(path="<test>", services={"checkout": ServicePolicy(
        name="checkout")}), store, clock, box=box)
    daemon.step()
    server = serve(box, version="test", token="tok", clock=clock)
    try:
        assert box.register(Registration("checkout", "v9", "major", clock.now()))  # a 202
        daemon.close()                               # SIGTERM came before the next step
        assert store.release("checkout", "v9").change_class == "major"
        # Until the server stops too, a deploy is refused, not accepted and lost.
        late = requests.post(f"{server.url}/api/v1/releases", timeout=5,
                             headers={"Authorization": "Bearer tok"},
                             json={"service": "checkout", "version": "v10"})
    finally:
        server.shutdown()
    assert late.status_code == 503 and "stopping" in late.json()["error"]
    assert [r.version for r in store.releases("checkout")] == ["v9"]


def test_a_registration_racing_the_final_verdict_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    releases = Releases(MonitorConfig(path="<test>", services={"demo": ServicePolicy(
        name="demo")}), store, clock)
    watched = releases.register("demo", "v8")[0]
    real = store.reclassify

    def judged_first(release_id: int, **fields: object) -> Release:
        # The daemon stored the final verdict between the pipeline's read and its write.
        store.add_verdict(release_id, at=clock.now(), verdict="pass", reason="", findings=[],
                          first_alarm_at=None, decided_at=clock.now(), state="done",
                          judge_state="{}")
        return real(release_id, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "reclassify", judged_first)
    with pytest.raises(AlreadyJudged, match="judged \\(pass\\) as it was registered again"):
        releases.register("demo", "v8", change_class="major")
    assert store.release("demo", "v8").change_class == watched.change_class == "minor"


def test_a_release_its_targets_never_report_says_which_version_they_do(tmp_path: Path) -> None:
    # The pipeline registered a version that is not the version label's value (a commit
    # hash for a label that carries a tag, say): every sample goes to the release before.
    clock = SimClock(start=1_000_000.0)
    simulated = SimulatedService(clock, seed=3, version="v2.2")
    simulated.start()
    store = Store.open(tmp_path / "monitor.db")
    try:
        daemon = Daemon(MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)}),
                        store, clock)
        daemon.run_until(clock.now() + 300)
        daemon.releases.start("demo", "3f2c9e1")
        daemon.run_until(clock.now() + 2400)
        release = store.release("demo", "3f2c9e1")
    finally:
        store.close()
        simulated.stop()
    assert release.verdict == "inconclusive"
    assert release.reason.endswith("; the targets report version 'v2.2', not '3f2c9e1'")


def test_a_release_registered_from_the_cli_is_picked_up(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    db = tmp_path / "monitor.db"
    policy = ServicePolicy(
        name="demo", targets=(Target(url=f"{simulated.url}/metrics"),),
        signals=(SignalRule("queue", metric="work_queue_depth", bad="increase"),),
        periods={"minor": 600.0, "major": 1200.0}, evaluation_interval=60.0,
    )
    store = Store.open(db)
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    daemon.run_until(clock.now() + 60)
    # The pipeline registers the deploy through the CLI, on the same database file.
    result = CliRunner().invoke(app, ["release", "start", "--service", "demo", "--version", "v7",
                                      "--db", str(db)])
    assert result.exit_code == 0, result.output
    daemon.run_until(clock.now() + 1000)       # no --config: the default 15-minute period
    [release] = store.releases("demo")
    assert (release.version, release.state) == ("v7", "done")
    assert release.verdict == "pass"
    store.close()


class _BadTarget(_Answering):
    hang = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.startswith("/hang"):
            self.hang.wait(10)
            return
        self.answer(b"# TYPE up gauge\nup 1\nthis is not a metric line at all\n")


@pytest.fixture()
def bad_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadTarget)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _BadTarget.hang.set()
    server.shutdown()
    server.server_close()


def test_targets_are_stored_and_exported_under_their_names(
    service: tuple[SimulatedService, SimClock]
) -> None:
    # Two targets whose URLs look alike once their query values are hidden keep apart.
    simulated, clock = service
    targets = (Target(url=f"{simulated.url}/metrics", name="shard-a"),
               Target(url=f"{simulated.url}/metrics", name="shard-b"))
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": ServicePolicy(
        name="demo", targets=targets)}), store, clock)
    daemon.run_until(clock.now() + 30)
    assert {h.target for h in daemon.box.get().targets} == {"shard-a", "shard-b"}
    window = store.read_window("demo", 0, clock.now() + 1)
    assert sorted(window.targets) == ["shard-a", "shard-a", "shard-a", "shard-b", "shard-b",
                                      "shard-b"]
    daemon.close()


def test_bad_targets_are_recorded_and_the_daemon_goes_on(
    service: tuple[SimulatedService, SimClock], bad_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    simulated, clock = service
    targets = (Target(url=f"{simulated.url}/metrics"),
               Target(url=f"{bad_target}/garbage", timeout=2.0),
               Target(url=f"{bad_target}/hang", timeout=0.3))
    policy = ServicePolicy(name="demo", targets=targets)
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    with caplog.at_level(logging.INFO, logger="release_monitor"):
        daemon.run_until(clock.now() + 45)
    health = {h.target: h for h in daemon.box.get().targets}
    good = health[f"{simulated.url}/metrics"]
    assert good.up and good.errors_total == 0 and good.scrapes_total == 4
    garbage = health[f"{bad_target}/garbage"]
    assert not garbage.up and garbage.errors_total == 4 and "line 3" in garbage.last_error
    hung = health[f"{bad_target}/hang"]
    assert not hung.up and hung.errors_total == 4
    window = store.read_window("demo", 0, clock.now() + 1)
    assert set(window.targets) == {f"{simulated.url}/metrics"}   # nothing from the bad ones
    # Four failures of each, one warning each: a long outage does not flood the log.
    warned = sorted(r.getMessage() for r in caplog.records if " failed: " in r.getMessage())
    assert len(warned) == 2, warned
    # Each names the target (as the policy calls it) and its service before the error.
    assert warned[0].startswith(f"scrape of {bad_target}/garbage (demo) failed: GET "), warned
    assert warned[1].startswith(f"scrape of {bad_target}/hang (demo) failed: GET "), warned
    daemon.close()


def _ignore_hangups() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # as `nohup` starts a command


def _default_hangups() -> None:
    # Whatever the test run inherited (a suite started under nohup ignores hang-ups).
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize(("stop", "nohup"), [(signal.SIGTERM, False), (signal.SIGHUP, False),
                                             (signal.SIGTERM, True)],
                         ids=["sigterm", "sighup", "nohup"])
def test_monitor_run_serves_refuses_a_second_daemon_and_stops_cleanly(
    service: tuple[SimulatedService, SimClock], tmp_path: Path, stop: signal.Signals, nohup: bool
) -> None:
    simulated, _ = service
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[monitor]\ndatabase = "m.db"\nlisten = "127.0.0.1:0"\n'
        'api_token_env = "RM_TEST_TOKEN"\n\n'
        "[services.demo]\nversion_metric = \"demo_build_info\"\n\n"
        f'[[services.demo.targets]]\nurl = "{simulated.url}/metrics"\ninterval = "1s"\n'
    )
    log = tmp_path / "stderr.log"
    environment = {k: v for k, v in os.environ.items() if k != "RM_TEST_TOKEN"}
    errors = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(policy)],
        stdout=subprocess.PIPE, stderr=errors, text=True,
        env={**environment, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_ignore_hangups if nohup else _default_hangups,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()          # printed once the listener is up
        url = banner.split("metrics ", 1)[1].split("/metrics", 1)[0]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200
        # The token's variable is not set: said at the start, and by the refusal.
        refused = requests.post(f"{url}/api/v1/releases", json={"service": "demo", "version": "v9"},
                                timeout=5)
        assert refused.status_code == 403 and "monitor.api_token_env" in refused.text
        if nohup:  # started to ignore hang-ups: one changes nothing, it still holds the lock
            process.send_signal(signal.SIGHUP)
        # A second daemon on the same database would store every sample twice.
        second = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(policy)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 7, second.stderr
        assert second.stderr == (f"error: database {tmp_path / 'm.db'} is in use by another "
                                 f"`monitor run` (pid {process.pid}); one daemon per database\n")
        process.send_signal(stop)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        errors.close()
    assert process.returncode == 0
    assert "stopped" in out
    assert (tmp_path / "m.db").exists()
    assert (f"note: {policy}: monitor.api_token_env: RM_TEST_TOKEN is not set, so deploys "
            "cannot be registered over HTTP (403)") in log.read_text()


def test_a_deploy_registered_over_the_api_becomes_a_release(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    policy = ServicePolicy(name="demo", targets=(Target(url=f"{simulated.url}/metrics"),))
    store = Store.memory()
    box = SnapshotBox()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock, box=box)
    daemon.step()
    server = serve(box, version="test", token="s3cret", clock=clock)
    try:
        answer = requests.post(f"{server.url}/api/v1/releases", timeout=5,
                               json={"service": "demo", "version": "v8", "change": "major"},
                               headers={"Authorization": "Bearer s3cret"})
    finally:
        server.shutdown()
    assert answer.status_code == 202, answer.text
    daemon.step()
    [release] = store.releases("demo")
    assert (release.version, release.change_class) == ("v8", "major")
    assert release.period == policy.period("major")
    daemon.close()


def test_a_source_down_for_half_an_hour_is_inconclusive_not_a_rollback(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    policy = demo_policy(simulated.url)
    store = Store.open(tmp_path / "m.db")
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    daemon.run_until(clock.now() + 2400)          # v2.2 passes: the baseline
    simulated.deploy("v2.4")
    daemon.run_until(clock.now() + 60)            # v2.4 noticed, smoke and verification pass
    simulated.stop()                              # the target is gone: connections refused
    daemon.run_until(clock.now() + 1800)
    release = store.release("demo", "v2.4")
    assert release.verdict == "inconclusive", release.reason
    # The cause first: the signals' "no samples" after it are its consequence.
    assert release.reason.startswith("data source failing: ") and "refused" in release.reason
    health = daemon.box.get().targets[0]
    assert not health.up and health.errors_total >= 100
    store.close()


def test_a_release_replaced_early_is_judged_on_the_time_it_ran(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    store = Store.open(tmp_path / "m.db")
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)}),
                    store, clock)
    daemon.run_until(clock.now() + 600)           # v2.2 runs for 10 minutes of its 30
    simulated.deploy("v2.1")                      # and is replaced: its samples stop there
    daemon.run_until(clock.now() + 2400)
    replaced = store.release("demo", "v2.2")
    assert (replaced.state, replaced.verdict) == ("done", "pass"), replaced.reason
    # Noticed at the first scrape (15 s) after the version changed.
    assert replaced.reason == ("first release: judged on smoke, verification and leaks; "
                               "replaced after 10m15s: judged on that part of the period")
    store.close()
    # Recorded, it holds the first samples of the release that replaced it, so its replay
    # (with the command `record` prints) is judged on the same part: not "never watched".
    recording = tmp_path / "v2.2.csv"
    recorded = CliRunner().invoke(app, ["record", "--release", "v2.2", "--out", str(recording),
                                        "--db", str(tmp_path / "m.db")])
    assert recorded.exit_code == 0, recorded.output
    assert "of v2.2, v2.1 to" in recorded.stdout
    command = shlex.split(recorded.stdout.splitlines()[-1].split(": ", 1)[1])
    replayed = CliRunner().invoke(app, [*command[1:], "--json"])
    assert json.loads(replayed.stdout)["verdict"] == "pass", replayed.output


def _until_first_sighting(daemon: Daemon, store: Store, clock: SimClock, version: str) -> None:
    """Run the daemon until the release's first finding (not yet persisted)."""
    for _ in range(20):
        daemon.run_until(clock.now() + 15)
        found = [r for r in store.releases("demo") if r.version == version]
        if found and json.loads(found[0].judge_state or "{}").get("streaks"):
            assert found[0].verdict == "pending"
            return
    raise AssertionError(f"{version}: no finding within 5 minutes")


def _after_a_healthy_v2_2(simulated: SimulatedService, clock: SimClock,
                          db: Path) -> tuple[MonitorConfig, Store, Daemon]:
    """The demo's policy, a store at `db` and a daemon that has seen v2.2 pass (the
    baseline of the releases after it)."""
    config = MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)})
    store = Store.open(db)
    daemon = Daemon(config, store, clock)
    daemon.run_until(clock.now() + 2400)
    return config, store, daemon


def test_a_bad_release_replaced_before_its_finding_persists_is_not_rolled_back_by_the_hook(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    _, store, daemon = _after_a_healthy_v2_2(simulated, clock, tmp_path / "m.db")
    simulated.deploy("v2.3")                      # errors jump and memory leaks
    _until_first_sighting(daemon, store, clock, "v2.3")
    simulated.deploy("v2.4")                      # the fix goes out before it persists
    daemon.run_until(clock.now() + 2400)          # past v2.3's own period
    bad = store.release("demo", "v2.3")
    # Its samples stopped with the fix: evaluations of the same samples are not sightings.
    assert (bad.state, bad.verdict) == ("done", "inconclusive"), bad.reason
    assert "before what it showed could persist: error_ratio" in bad.reason
    # And nothing acts for it on the release that runs now (the rollback hook would undo
    # the fix).
    assert store.actions(bad.id) == []
    store.close()


def _rolled_back_with_its_hook(store: Store, version: str) -> Release:
    """The demo release, checked to be rolled back with its rollback hook claimed once; the
    store is closed."""
    bad = store.release("demo", version)
    actions = [(a.verdict, a.hook) for a in store.actions(bad.id)]
    store.close()
    assert bad.verdict == "rollback", bad.reason
    assert actions == [("rollback", "rollback")]
    return bad


def test_a_release_whose_replacement_was_rolled_back_runs_again_and_its_hook_fires(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    _, store, daemon = _after_a_healthy_v2_2(simulated, clock, tmp_path / "m.db")
    simulated.deploy("v2.3")                      # errors jump: a bad release
    daemon.run_until(clock.now() + 30)
    # v2.4 goes out and fails at once: rolled back, which puts v2.3 back in service.
    clock.advance(5)
    fixed = store.start_release("demo", "v2.4", at=clock.now(), change_class="minor",
                                period=900.0, baselines=("v2.2",))
    store.add_verdict(fixed.id, at=clock.now(), verdict="rollback", reason="smoke failed",
                      findings=[], first_alarm_at=clock.now(), decided_at=clock.now(),
                      state="done", judge_state="{}")
    daemon.run_until(clock.now() + 2400)
    _rolled_back_with_its_hook(store, "v2.3")


def test_a_version_registered_but_never_deployed_replaces_nothing(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    _, store, daemon = _after_a_healthy_v2_2(simulated, clock, tmp_path / "m.db")
    simulated.deploy("v2.3")                      # errors jump: a bad release
    daemon.run_until(clock.now() + 20)
    daemon.releases.start("demo", "v2.4")         # registered; its rollout never happens
    daemon.run_until(clock.now() + 2400)
    bad = _rolled_back_with_its_hook(store, "v2.3")
    assert "replaced" not in bad.reason, bad.reason


def test_a_daemon_restarting_in_a_loop_does_not_make_one_sighting_persist(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    simulated, clock = service
    config, store, _ = _after_a_healthy_v2_2(simulated, clock, tmp_path / "m.db")
    simulated.deploy("v2.3")
    _until_first_sighting(Daemon(config, store, clock), store, clock, "v2.3")
    first = store.release("demo", "v2.3")
    # Killed and started again every few seconds: each start scrapes, none judges anew.
    for _ in range(4):
        clock.advance(3)
        Daemon(config, store, clock).run_until(clock.now() + 1)
    again = store.release("demo", "v2.3")
    assert (again.verdict, again.judge_state) == (first.verdict, first.judge_state)
    assert again.verdict == "pending"
    store.close()


def test_a_daemon_restarting_in_a_loop_past_the_period_keeps_the_evaluation_pace(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    # Past the period's end an evaluation counts without new samples (the end's last look
    # must persist too): restarts must not each bring one.
    simulated, clock = service
    config, store, _ = _after_a_healthy_v2_2(simulated, clock, tmp_path / "m.db")
    simulated.deploy("v2.3")
    _until_first_sighting(Daemon(config, store, clock), store, clock, "v2.3")
    simulated.stop()                                   # the target goes away
    first = store.release("demo", "v2.3")
    clock.advance(first.started_at + first.period + 10 - clock.now())
    judged = [JudgeState.from_json(first.judge_state).judged_at]
    for _ in range(4):                                 # a start every 3 s
        Daemon(config, store, clock).run_until(clock.now() + 1)
        judged.append(JudgeState.from_json(store.release("demo", "v2.3").judge_state).judged_at)
        clock.advance(3)
    # Judged once, at the first start (an interval had passed), then not again so soon.
    assert len(set(judged)) == 2 and judged[1:] == [judged[1]] * 4
    assert store.release("demo", "v2.3").verdict == "pending"
    store.close()


def test_verdict_over_the_api_matches_the_database(tmp_path: Path) -> None:
    from monitor.demo import run_demo

    db = tmp_path / "demo.db"
    box = SnapshotBox()
    run_demo(db, echo=lambda _line: None, box=box)
    server = serve(box, version="test")
    try:
        for release, code in (("v2.2", 0), ("v2.3", 3), ("v2.4", 4)):
            local = CliRunner().invoke(app, ["verdict", "--db", str(db), "--release", release,
                                             "--json"])
            remote = CliRunner().invoke(app, ["verdict", "--url", server.url, "--release", release,
                                              "--json", "--wait", "--timeout", "1s"])
            assert (local.exit_code, remote.exit_code) == (code, code), remote.output
            assert local.output == remote.output
        missing = CliRunner().invoke(app, ["verdict", "--url", server.url, "--release", "v9"])
        assert missing.exit_code == 2 and "v9" in missing.output
    finally:
        server.shutdown()
    # The monitor gone: one line that names the release asked for, exit 1.
    gone = CliRunner().invoke(app, ["verdict", "--url", server.url, "--release", "v2.3"])
    assert gone.exit_code == 1
    assert "asking for release 'v2.3'" in gone.output and len(gone.output.strip().splitlines()) == 1


def test_release_start_over_the_api_needs_the_token(
    service: tuple[SimulatedService, SimClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    simulated, clock = service
    policy = ServicePolicy(name="demo", targets=(Target(url=f"{simulated.url}/metrics"),))
    store = Store.memory()
    box = SnapshotBox()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock, box=box)
    daemon.step()
    server = serve(box, version="test", token="s3cret", clock=clock)
    try:
        args = ["release", "start", "--url", server.url, "--service", "demo", "--version", "v5"]
        monkeypatch.delenv("RELEASE_MONITOR_TOKEN", raising=False)
        assert CliRunner().invoke(app, args).exit_code == 2
        monkeypatch.setenv("RELEASE_MONITOR_TOKEN", "wrong")
        refused = CliRunner().invoke(app, args)
        # A refusal is bad input (exit 2), not a crash; the token never shows.
        assert refused.exit_code == 2 and "401" in refused.output and "wrong" not in refused.output
        monkeypatch.setenv("RELEASE_MONITOR_TOKEN", "s3cret")
        accepted = CliRunner().invoke(app, args)
        assert accepted.exit_code == 0, accepted.output
    finally:
        server.shutdown()
    daemon.step()
    assert [r.version for r in store.releases("demo")] == ["v5"]
    daemon.close()


def test_a_long_verification_does_not_stop_the_scrapes(
    service: tuple[SimulatedService, SimClock]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from monitor.policy import VerifyCommand
    from monitor.releases import Releases, StageRunners
    from monitor.stages import CheckResult

    simulated, clock = service
    release_gate = threading.Event()

    def slow_command(command: VerifyCommand, env: dict[str, str],
                     stopping: threading.Event | None = None) -> CheckResult:
        release_gate.wait(10)                     # a test suite that takes its time
        return CheckResult(command.name, True, "exit 0")

    policy = ServicePolicy(name="demo", targets=(Target(url=f"{simulated.url}/metrics"),),
                           version_metric="demo_build_info",
                           verify=(VerifyCommand("suite", ("true",)),))
    config = MonitorConfig(path="<test>", services={"demo": policy})
    store = Store.memory()
    pool = ThreadPoolExecutor(1)
    releases = Releases(config, store, clock, runners=StageRunners(command=slow_command),
                        stage_pool=pool)
    daemon = Daemon(config, store, clock, releases=releases)
    daemon.run_until(clock.now() + 120)
    [release] = store.releases("demo")
    assert release.state == "verification"
    before = store.sample_count("demo")
    daemon.run_until(clock.now() + 120)           # the suite still runs; scraping goes on
    assert store.sample_count("demo") > before
    assert store.releases("demo")[0].state == "verification"
    woken = threading.Event()
    releases.wake = woken.set
    release_gate.set()
    assert woken.wait(10)                         # the finished stage wakes the loop
    daemon.step()
    assert store.releases("demo")[0].state == "watching"
    pool.shutdown()
    daemon.close()


def test_a_verification_cut_short_by_a_stop_is_no_verdict_and_runs_again(
    service: tuple[SimulatedService, SimClock], tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from monitor.hooks import HookRunner
    from monitor.policy import VerifyCommand

    simulated, clock = service
    started = tmp_path / "started"
    suite = VerifyCommand("suite", ("sh", "-c", f"touch {started}; sleep 60"), timeout=600.0)
    policy = ServicePolicy(name="demo", targets=(Target(url=f"{simulated.url}/metrics"),),
                           version_metric="demo_build_info", verify=(suite,))
    config = MonitorConfig(path="<test>", services={"demo": policy})
    store = Store.memory()
    pool = ThreadPoolExecutor(1)
    hooks = HookRunner(store, clock, stopping=StopOnceFileExists(started))
    releases = Releases(config, store, clock, hooks=hooks, stage_pool=pool)
    daemon = Daemon(config, store, clock, releases=releases)
    began = time.monotonic()
    daemon.run_until(clock.now() + 120)
    for running in list(releases._stage_runs.values()):
        running.result(timeout=30)       # the suite was killed at the stop, not run to its end
    assert time.monotonic() - began < 30
    daemon.step()
    [release] = store.releases("demo")
    assert (release.state, release.verdict) == ("verification", "pending")
    assert store.checks(release.id) == []
    pool.shutdown()
    daemon.close()


def test_a_baseline_outlives_its_samples_across_a_rollback_and_a_short_retention(
    service: tuple[SimulatedService, SimClock]
) -> None:
    # v2.1 passes; v2.5 fails its smoke test and rolls back; v2.1 runs on for three hours,
    # past the one-hour retention. v2.2's baseline is v2.1 as it ran before v2.5: its
    # samples are pruned by then, so its summary must have been kept before they went.
    simulated, clock = service
    simulated.deploy("v2.1")
    policy = demo_policy(simulated.url)
    config = MonitorConfig(path="<test>", retention=3600.0, services={policy.name: policy})
    store = Store.memory()
    daemon = Daemon(config, store, clock)
    daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    simulated.deploy("v2.5")
    daemon.run_until(clock.now() + 300)
    simulated.deploy("v2.1")
    daemon.run_until(clock.now() + 3 * 3600)
    simulated.deploy("v2.2")
    daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    verdicts = {r.version: (r.verdict, r.baseline) for r in store.releases(policy.name)}
    assert verdicts == {"v2.1": ("pass", None), "v2.5": ("rollback", "v2.1"),
                        "v2.2": ("pass", "v2.1")}


def test_a_stage_s_results_and_what_they_decide_are_stored_together(
    service: tuple[SimulatedService, SimClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.errors import StoreError

    simulated, clock = service
    policy = demo_policy(simulated.url)
    store = Store.memory()
    releases = Releases(MonitorConfig(path="<test>", services={policy.name: policy}), store, clock)
    release = releases.start(policy.name, "v2.2")
    # A target reports the version: it runs, so its smoke test is due.
    store.write_scrape(policy.name, "t", "v2.2", clock.now(), store.series_ids(policy.name, ["up"]),
                       [1.0])

    def disk_full(*args: object, **kwargs: object) -> None:
        raise StoreError("cannot write to m.db: database or disk is full")

    monkeypatch.setattr(store, "update_release", disk_full)
    with pytest.raises(StoreError):
        releases.advance(release)
    assert store.checks(release.id) == []        # not the results without their outcome
    monkeypatch.undo()
    after = releases.advance(store.release(policy.name, "v2.2"))
    assert after.state == "verification"
    assert len(store.checks(release.id)) == len(policy.smoke)


def test_the_daemon_s_policy_decides_the_period_of_a_release_registered_without_it(
    service: tuple[SimulatedService, SimClock]
) -> None:
    # `monitor release start` without --config registers with the default periods.
    simulated, clock = service
    policy = demo_policy(simulated.url)
    store = Store.memory()
    registered = store.start_release(policy.name, "v2.2", at=clock.now(), change_class="major",
                                     period=7200.0, baselines=())
    assert policy.periods["major"] != 7200.0
    config = MonitorConfig(path="<test>", services={policy.name: policy})
    daemon = Daemon(config, store, clock)
    daemon.step()
    taken = store.release(policy.name, "v2.2")
    assert (taken.change_class, taken.period) == ("major", policy.periods["major"])
    assert taken.id == registered.id


def test_a_release_of_a_service_the_policy_does_not_name_is_inconclusive_at_once(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    policy = demo_policy(simulated.url)
    store = Store.memory()
    store.start_release("shopp", "v9", at=clock.now(), change_class="minor", period=900.0,
                        baselines=())
    daemon = Daemon(MonitorConfig(path="<test>", services={policy.name: policy}), store, clock)
    daemon.step()
    typo = store.release("shopp", "v9")
    assert (typo.state, typo.verdict) == ("done", "inconclusive")
    assert typo.reason == f"service 'shopp' is not in the policy (services: {policy.name})"


def test_the_prune_asks_no_query_api_for_a_service_read_by_promql(tmp_path: Path) -> None:
    # Its samples live in Prometheus, so pruning takes none of them and there is nothing to
    # keep; asking an unreachable query API from the loop once killed the daemon.
    import socket

    from monitor.policy import PromSource

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    policy = ServicePolicy(name="checkout", signals=(SignalRule(name="lat", query="up"),),
                           prometheus=PromSource(url=f"http://127.0.0.1:{closed}", retries=0))
    config = MonitorConfig(path="<test>", retention=3600.0, services={"checkout": policy})
    clock = SimClock()
    store = Store.memory()
    v1 = store.start_release("checkout", "v1", at=clock.now(), change_class="minor",
                             period=900.0, baselines=())
    store.update_release(v1.id, state="done", verdict="pass")
    v2 = store.start_release("checkout", "v2", at=clock.now() + 2000, change_class="minor",
                             period=900.0, baselines=("v1",))
    store.update_release(v2.id, state="done", verdict="rollback")
    clock.sleep_until(clock.now() + 3 * 3600)
    daemon = Daemon(config, store, clock)
    assert daemon.releases.keep_baselines(clock.now() - 3600.0) == 0
    daemon.next_prune = clock.now()
    daemon.step()                       # no ScrapeError out of the loop
    assert daemon.next_prune > clock.now()
    daemon.close()


def test_a_daemon_restarted_more_often_than_it_prunes_still_prunes(
    service: tuple[SimulatedService, SimClock]
) -> None:
    # A sidecar restarted every 50 minutes, with 30 minutes of retention: its first prune
    # came an hour after each start, so it never pruned and the samples grew for ever.
    simulated, clock = service
    config = MonitorConfig(path="<test>", retention=1800.0,
                           services={"demo": demo_policy(simulated.url)})
    store = Store.memory()
    counts = []
    for _ in range(4):
        daemon = Daemon(config, store, clock)
        daemon.run_until(clock.now() + 3000)
        daemon.close()
        counts.append(store.sample_count())
    # Pruned 5 minutes after each start: the retention's 30 minutes, then the 45 minutes
    # to the next restart, and no more however many restarts there are.
    per_second = counts[0] / 3000
    assert max(counts[1:]) < per_second * (1800 + 2700 + 60), counts
    assert counts[-1] <= counts[1] * 1.01, counts


def test_a_step_that_fails_unforeseen_is_logged_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.daemon import STEP_RETRY_SECONDS

    clock = SimClock()
    daemon = Daemon(MonitorConfig(path="<test>", services={}), Store.memory(), clock)
    began, steps = clock.now(), []

    def flaky() -> float:
        steps.append(clock.now())
        if len(steps) == 1:
            raise RuntimeError("a bug in one step")
        daemon.stop()
        return clock.now() + 60.0

    monkeypatch.setattr(daemon, "step", flaky)
    with caplog.at_level(logging.ERROR, logger="release_monitor"):
        daemon.run()
    assert steps == [began, began + STEP_RETRY_SECONDS]
    assert "step failed; trying again in 5 s" in caplog.text


def test_a_baseline_invalidated_while_a_release_is_judged_is_no_longer_its_yardstick(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    simulated.deploy("v2.1")
    policy = demo_policy(simulated.url)
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={policy.name: policy}), store, clock)
    daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    simulated.deploy("v2.2")
    daemon.run_until(clock.now() + 120)
    assert store.release(policy.name, "v2.2").baselines == ("v2.1",)
    store.invalidate(policy.name, "v2.1")              # found bad while v2.2 is judged
    daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    judged = store.release(policy.name, "v2.2")
    assert judged.verdict == "inconclusive"
    # Said as it happened: there was a healthy release before it, until it was found bad.
    assert judged.reason == ("its baseline v2.1 was found bad (invalidated) while it was "
                             "judged, and nothing else was compared with")


def test_a_release_judged_against_two_says_which_one_counted_after_the_other_was_found_bad(
    service: tuple[SimulatedService, SimClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    simulated, clock = service
    monkeypatch.setitem(demo_service.PROFILES, "v2.6", demo_service.PROFILES["v2.2"])
    policy = replace(demo_policy(simulated.url), baselines=2)
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={policy.name: policy}), store, clock)
    for version in ("v2.1", "v2.2"):
        simulated.deploy(version)
        daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    simulated.deploy("v2.6")
    daemon.run_until(clock.now() + 120)
    assert store.release(policy.name, "v2.6").baselines == ("v2.2", "v2.1")
    store.invalidate(policy.name, "v2.1")              # found bad while v2.6 is judged
    daemon.run_until(clock.now() + 2 * policy.periods["minor"])
    judged = store.release(policy.name, "v2.6")
    assert judged.verdict == "pass", judged.reason
    # Its record names both; the verdict says which one it was held to.
    assert judged.reason == ("its baseline v2.1 was found bad (invalidated) while it was "
                             "judged: compared with v2.2 alone")


class _PythonClientTarget(_Answering):
    """A service instrumented with prometheus_client: requests counted from the clock's
    start, and errors in a labelled counter of their own, which exposes only its HELP and
    TYPE lines until the first error."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        app = self.server.app  # type: ignore[attr-defined]
        registry = CollectorRegistry()
        Gauge("app_build_info", "Build", ["version"], registry=registry).labels(app["version"]).set(1)
        served = 50.0 * (app["clock"].now() - app["since"])     # 50 requests a second
        Counter("app_requests_total", "Requests", registry=registry).inc(served)
        Histogram("app_latency_seconds", "Latency", registry=registry).observe(0.1)
        errors = Counter("app_errors_total", "Errors", ["kind"], registry=registry)
        if app["errors_since"] is not None:
            errors.labels("db").inc(0.2 * 50.0 * max(app["clock"].now() - app["errors_since"], 0.0))
        self.answer(generate_latest(registry))


class _PythonApp(NamedTuple):
    """A _PythonClientTarget on loopback: its clock, its URL, and what it runs (`version`,
    and `errors_since`, the clock time its errors begin, or None)."""

    clock: SimClock
    url: str
    state: dict[str, Any]

    def policy(self, **settings: Any) -> ServicePolicy:
        return ServicePolicy(name="shop", targets=(Target(url=self.url, interval=15.0,
                                                          timeout=2.0),), **settings)

    def daemon(self, policy: ServicePolicy, store: Store) -> Daemon:
        return Daemon(MonitorConfig(path="<test>", services={"shop": policy}), store, self.clock)


@pytest.fixture()
def python_app() -> Iterator[_PythonApp]:
    clock = SimClock(start=1_000_000.0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PythonClientTarget)
    server.app = {"clock": clock, "since": clock.now(), "version": "v1",  # type: ignore[attr-defined]
                  "errors_since": None}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield _PythonApp(clock, f"http://127.0.0.1:{server.server_address[1]}/metrics",
                     server.app)  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_a_labelled_error_counter_that_never_counted_is_zero_errors_not_missing(
        python_app: _PythonApp) -> None:
    # Before its first error, `app_errors_total{kind=...}` has no series at all: a release
    # without errors must pass against a baseline without errors, not be inconclusive for
    # want of an error series, and errors that then begin must still roll back.
    clock, state = python_app.clock, python_app.state
    policy = python_app.policy(
        version_metric="app_build_info", periods={"minor": 600.0, "major": 600.0},
        evaluation_interval=60.0, persistence=2,
        signals=(SignalRule("error_ratio", kind="ratio", numerator='app_errors_total{kind="db"}',
                            denominator="app_requests_total", critical=True),))
    store = Store.memory()
    daemon = python_app.daemon(policy, store)
    try:
        daemon.run_until(clock.now() + 900)
        for version, errors in (("v2", False), ("v3", True)):
            state["version"] = version
            if errors:
                state["errors_since"] = clock.now() + 120
            daemon.run_until(clock.now() + 900)
        verdicts = {r.version: (r.verdict, r.reason) for r in store.releases("shop")}
    finally:
        daemon.close()
    assert verdicts["v1"][0] == "pass", verdicts
    assert verdicts["v2"] == ("pass", "")
    assert verdicts["v3"][0] == "rollback", verdicts["v3"]
    assert verdicts["v3"][1].startswith("error_ratio"), verdicts["v3"]


def test_a_version_metric_no_target_reports_leaves_no_pass_and_is_said(
        python_app: _PythonApp, caplog: pytest.LogCaptureFixture) -> None:
    # `app_build_inf` for `app_build_info`: every sample goes to the release registered last,
    # so v5, registered but never deployed, would pass on v1's samples.
    clock = python_app.clock
    policy = python_app.policy(
        version_metric="app_build_inf", periods={"minor": 600.0, "major": 600.0},
        evaluation_interval=60.0, persistence=2,
        signals=(SignalRule("requests", kind="rate", metric="app_requests_total"),))
    store = Store.memory()
    daemon = python_app.daemon(policy, store)
    try:
        with caplog.at_level(logging.WARNING, logger="release_monitor"):
            daemon.releases.start("shop", "v5", at=clock.now())
            daemon.run_until(clock.now() + 900)
        [release] = store.releases("shop")
    finally:
        daemon.close()
    assert (release.verdict, release.reason) == ("inconclusive", (
        "no target reports app_build_inf with a 'version' label (the policy's version_metric): "
        "which version ran cannot be told"))
    warned = [r.getMessage() for r in caplog.records if "app_build_inf" in r.getMessage()]
    assert len(warned) == 1 and warned[0].endswith("its version cannot be told (is version_metric right?)")


def test_a_baseline_summarized_under_a_misspelt_metric_is_summarized_again_once_put_right() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    [series] = store.series_ids("shop", ["app_requests_total"]).tolist()
    _passed_release(store, "shop", "v1", clock.now() - 3600)
    for minute in range(60):
        store.write_scrape("shop", "t", "v1", clock.now() - 3600 + 60 * minute, [series],
                           [100.0 * minute])
    store.start_release("shop", "v2", at=clock.now(), change_class="minor", period=900.0,
                        baselines=("v1",))
    v1 = store.release("shop", "v1")

    def requests_per_second(metric: str) -> float:
        policy = ServicePolicy(name="shop", signals=(
            SignalRule("requests", kind="rate", metric=metric),))
        releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
        baseline = releases.baseline_of(v1, policy)
        assert baseline is not None
        return baseline.signals["requests"].median

    assert math.isnan(requests_per_second("app_request_total"))   # the typo: no samples
    # Put right, the summary stored under the typo no longer stands for the signal.
    assert requests_per_second("app_requests_total") == pytest.approx(100 / 60)
    [(summary, _)] = store.load_baseline(v1.id).values()
    assert json.loads(summary["definition"])["metric"] == "app_requests_total"


def test_metrics_the_policy_reads_that_no_target_has_are_warned_of_at_the_first_scrape(
        python_app: _PythonApp, caplog: pytest.LogCaptureFixture) -> None:
    policy = python_app.policy(version_metric="app_build_info", signals=(
        SignalRule("requests", kind="rate", metric="app_request_total"),        # a typo
        SignalRule("latency", metric="app_latency_seconds"),                    # a histogram
        SignalRule("p95", kind="quantile", quantile=0.95,
                   metric="app_latency_seconds_bucket"),                       # its buckets
        SignalRule("errors", kind="ratio", numerator='app_errors_total{kind="db"}',
                   denominator="app_requests_total"),                          # all there
        SignalRule("memory", leak=True, metric="process_resident_memory_bytes",
                   limit_metric="app_memory_limit_bytes"),                     # neither
    ))
    daemon = python_app.daemon(policy, Store.memory())
    try:
        with caplog.at_level(logging.WARNING, logger="release_monitor"):
            daemon.run_until(python_app.clock.now() + 60)
    finally:
        daemon.close()
    warned = [r.getMessage() for r in caplog.records if "in the scrapes of its targets" in r.getMessage()]
    assert warned == [
        "shop: signals.requests: no series of app_request_total (did you mean app_requests_total?) "
        "in the scrapes of its targets",
        'shop: signals.latency: no series of app_latency_seconds (it is a histogram: kind = '
        '"quantile") in the scrapes of its targets',
        'shop: signals.p95: no series of app_latency_seconds_bucket_bucket (a quantile names the '
        'histogram: metric = "app_latency_seconds") in the scrapes of its targets',
        "shop: signals.memory: no series of process_resident_memory_bytes in the scrapes of its "
        "targets",
        "shop: signals.memory.limit_metric: no series of app_memory_limit_bytes in the scrapes "
        "of its targets",
    ]



def test_a_quantile_stored_before_its_buckets_were_kept_is_summarized_again() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    keys = [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "1", "+Inf")]
    ids = store.series_ids("shop", keys)
    _passed_release(store, "shop", "v1", clock.now() - 3600)
    for minute in range(60):
        store.write_scrape("shop", "t", "v1", clock.now() - 3600 + 60 * minute, ids,
                           [90.0 * minute, 100.0 * minute, 100.0 * minute])
    v1 = store.release("shop", "v1")
    policy = ServicePolicy(name="shop", signals=(
        SignalRule("latency", kind="quantile", metric="lat", quantile=0.5),))
    releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    assert releases.baseline_of(v1, policy) is not None
    # As a build without bucket layouts stored it.
    [(summary, reservoir)] = store.load_baseline(v1.id).values()
    del summary["layout"]
    store.save_baselines(v1.id, {"latency": (summary, reservoir)})
    again = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    baseline = again.baseline_of(v1, policy)
    assert baseline is not None and baseline.signals["latency"].layout == (0.1, 1.0, np.inf)
    assert "layout" in store.load_baseline(v1.id)["latency"][0]


def test_a_ratio_s_daily_profile_stored_from_medians_is_fitted_again_or_left_out() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    ids = store.series_ids("shop", ["errors_total", "requests_total"])
    rule = SignalRule("errors", kind="ratio", numerator="errors_total", denominator="requests_total")
    policy = ServicePolicy(name="shop", signals=(rule,))
    for version, age in (("v1", 7200), ("v2", 3600)):
        _passed_release(store, "shop", version, clock.now() - age)
    for minute in range(60):   # samples of v2 only; v1's were pruned
        store.write_scrape("shop", "t", "v2", clock.now() - 3600 + 60 * minute, ids,
                           [float(minute), 100.0 * minute])
    releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    for version in ("v1", "v2"):
        made = releases.baseline_of(store.release("shop", version), policy)
        assert made is not None or version == "v1"
    # As a build that fitted the profile on per-minute medians stored them.
    old = SignalBaseline.from_summary({"signal": "errors", "count": 60}, np.zeros(0))
    for version in ("v1", "v2"):
        summary = replace(old, hourly=(0.009,) * 24, deseasonalized_events=3.0,
                          events=7.0, trials=700.0).to_summary()
        summary.pop("hourly_pooled", None)
        store.save_baselines(store.release("shop", version).id,
                             {"errors": ({**summary, "definition": rule.definition()}, np.zeros(0))})
    again = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    # v2's samples are there: summarized again, under the mark (less than a week: no profile).
    v2 = again.baseline_of(store.release("shop", "v2"), policy)
    assert v2 is not None and v2.signals["errors"].hourly is None
    assert v2.signals["errors"].events == 59.0        # one error a minute, counted again
    assert store.load_baseline(store.release("shop", "v2").id)["errors"][0]["hourly_pooled"]
    # v1's are gone: judged as counted, without the profile it was stored with.
    v1 = again.baseline_of(store.release("shop", "v1"), policy)
    assert v1 is not None
    assert v1.signals["errors"].hourly is None and np.isnan(v1.signals["errors"].deseasonalized_events)
    assert v1.signals["errors"].events == 7.0


def test_a_release_that_added_histogram_buckets_is_judged_over_its_baseline_s_bounds() -> None:
    clock = SimClock(start=1_000_000.0)
    store = Store.memory()
    old = store.series_ids("shop", [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "1", "+Inf")])
    new = store.series_ids("shop", [f'lat_bucket{{le="{b}"}}' for b in ("0.1", "0.5", "1", "+Inf")])
    _passed_release(store, "shop", "v1", clock.now() - 3600)
    rng = np.random.default_rng(4)
    fast = np.cumsum(rng.poisson(90, 91))    # ~90 of ~100 requests a minute within 0.1 s
    total = fast + np.cumsum(rng.poisson(10, 91))
    for minute in range(60):
        store.write_scrape("shop", "t", "v1", clock.now() - 3600 + 60 * minute, old,
                           [fast[minute], total[minute], total[minute]])
    policy = ServicePolicy(name="shop", periods={"minor": 1800.0, "major": 7200.0}, signals=(
        SignalRule("latency", kind="quantile", metric="lat", quantile=0.5, critical=True),))
    releases = Releases(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    v2 = releases.start("shop", "v2", at=clock.now())
    # The same requests, counted in one more bucket (0.5 s) the new build exports.
    for minute in range(31):
        store.write_scrape("shop", "t", "v2", clock.now() + 60 * minute, new,
                           [fast[60 + minute], (fast[60 + minute] + total[60 + minute]) / 2,
                            total[60 + minute], total[60 + minute]])
    result, _ = releases.evaluate(store.release("shop", v2.version), clock.now() + 1860)
    # Not inconclusive for "its histogram's buckets changed": taken over 0.1, 1 and +Inf.
    assert result.verdict == "pass", result.reason


class _Churning(_Answering):
    """Every answer brings new series: `unread_new` of a metric no rule reads (a user id
    label) and `read_new` of the error counter the policy reads (a request id label)."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        server = self.server
        server.scrapes += 1  # type: ignore[attr-defined]
        n = server.scrapes  # type: ignore[attr-defined]
        lines = ["# TYPE errors_total counter", "errors_total 3"]
        lines += [f'errors_total{{request="{n}-{i}"}} 1'
                  for i in range(server.read_new)]  # type: ignore[attr-defined]
        lines += [f'logins_total{{user="{n}-{i}"}} 1'
                  for i in range(server.unread_new)]  # type: ignore[attr-defined]
        self.answer(("\n".join(lines) + "\n").encode())


def _churning_daemon(read_new: int, unread_new: int, max_series: int, replicas: int = 1
                     ) -> Iterator[tuple[Daemon, Store, SimClock]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Churning)
    server.daemon_threads = True
    server.scrapes, server.read_new, server.unread_new = 0, read_new, unread_new  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clock = SimClock(start=1_000_000.0)
    targets = tuple(Target(url=f"http://127.0.0.1:{server.server_address[1]}/metrics",
                           max_series=max_series, name="churn" + "-2" * index)
                    for index in range(replicas))
    policy = ServicePolicy(name="shop", targets=targets,
                           signals=(SignalRule("errors", metric="errors_total", kind="rate"),))
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={"shop": policy}), store, clock)
    try:
        yield daemon, store, clock
    finally:
        daemon.close()
        store.close()
        server.shutdown()
        server.server_close()


def test_series_of_unread_metrics_stop_being_stored_at_max_series(
    caplog: pytest.LogCaptureFixture
) -> None:
    for daemon, store, clock in _churning_daemon(read_new=0, unread_new=30, max_series=100):
        with caplog.at_level(logging.WARNING, logger="release_monitor"):
            daemon.run_until(clock.now() + 20 * 15)
        # Three scrapes fit (a fourth would make 121); the counter the policy reads goes on.
        assert store.series_count("shop") == 1 + 3 * 30
        [health] = daemon.box.get().targets
        assert health.up and health.errors_total == 0
        window = store.read_window("shop", 0, clock.now() + 1)
        keys = store.series_keys("shop")
        stored = [keys[int(i)] for i in window.series_ids]
        assert window.values[stored.index("errors_total")].size >= 20
        warned = [r.getMessage() for r in caplog.records if "no longer stored" in r.getMessage()]
        assert warned == ["shop: 30 new series would pass its targets' max_series (100 "
                          "together) with the 91 held: new series of metrics the policy does "
                          "not read are no longer stored (a label with unbounded values?)"]


def test_new_series_of_a_read_metric_past_ten_times_max_series_fail_the_scrape() -> None:
    for daemon, store, clock in _churning_daemon(read_new=40, unread_new=0, max_series=50):
        daemon.run_until(clock.now() + 20 * 15)
        # 1 + 12 x 40 = 481 series fit under 10 x 50; the 13th scrape's 40 more would not.
        assert store.series_count("shop") == 481
        [health] = daemon.box.get().targets
        assert not health.up
        assert health.last_error == (
            "churn: 40 new series of the metrics the policy reads, and the service already "
            "holds 481: more than 10 x its targets' max_series (50 together); a label with "
            "unbounded values?")


def test_a_scrape_of_more_series_than_max_series_fails() -> None:
    for daemon, store, clock in _churning_daemon(read_new=0, unread_new=60, max_series=60):
        daemon.run_until(clock.now() + 30)
        [health] = daemon.box.get().targets
        assert not health.up and store.series_count("shop") == 0
        assert health.last_error.endswith("/metrics: 61 series, more than max_series = 60")


def test_replicas_together_may_hold_as_many_series_as_their_max_series_add_up_to() -> None:
    for daemon, store, clock in _churning_daemon(read_new=0, unread_new=30, max_series=50,
                                                 replicas=2):
        daemon.run_until(clock.now() + 20 * 15)
        # Room for 100: three scrapes' worth fit (one target alone would hold 31).
        assert store.series_count("shop") == 1 + 3 * 30
        assert all(health.up for health in daemon.box.get().targets)


def _registered_before_its_deploy(simulated: SimulatedService, clock: SimClock,
                                  version: str) -> tuple[Store, Daemon]:
    """A daemon on the demo's policy that has noticed v2.2 run, and `version` registered
    (as a pipeline may, before it deploys)."""
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": demo_policy(simulated.url)}),
                    store, clock)
    daemon.run_until(clock.now() + 60)
    daemon.releases.start("demo", version)
    return store, daemon


def test_a_version_registered_before_its_deploy_is_smoke_tested_once_it_runs(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    store, daemon = _registered_before_its_deploy(simulated, clock, "v2.5")
    daemon.run_until(clock.now() + 120)
    waiting = store.release("demo", "v2.5")
    # Probing now would test v2.2 in v2.5's name (and pass: v2.5 cannot reach its database).
    assert waiting.state == "smoke" and store.checks(waiting.id) == []
    assert (waiting.verdict, waiting.reason) == (
        "pending", "waiting for a target to report version 'v2.5' before its smoke test")
    simulated.deploy("v2.5")
    daemon.run_until(clock.now() + 120)
    release = store.release("demo", "v2.5")
    assert release.verdict == "rollback" and release.reason.startswith("smoke failed"), release
    daemon.close()
    store.close()


def test_once_its_deploy_is_seen_a_release_no_longer_says_it_waits(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    # Its smoke test passes: a minor regression only.
    store, daemon = _registered_before_its_deploy(simulated, clock, "v2.4")
    daemon.run_until(clock.now() + 60)
    assert store.release("demo", "v2.4").reason.startswith("waiting for a target")
    simulated.deploy("v2.4")
    daemon.run_until(clock.now() + 60)
    release = store.release("demo", "v2.4")
    assert release.state == "watching" and not release.reason.startswith("waiting"), release
    assert all(check.ok for check in store.checks(release.id))
    daemon.close()
    store.close()


def test_a_version_never_deployed_fires_the_hooks_of_an_inconclusive_verdict(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    ask = Hook(name="ask a person", on=("inconclusive",), command=("notify", "--release"),
               dry_run=True)
    policy = replace(demo_policy(simulated.url), hooks=(ask,))
    store = Store.memory()
    daemon = Daemon(MonitorConfig(path="<test>", services={"demo": policy}), store, clock)
    daemon.run_until(clock.now() + 60)
    daemon.releases.start("demo", "v2.5")
    daemon.run_until(clock.now() + policy.periods["minor"] + 120)
    release = store.release("demo", "v2.5")
    assert release.verdict == "inconclusive" and release.reason.startswith("never deployed")
    assert [(a.verdict, a.hook) for a in store.actions(release.id)] == [
        ("inconclusive", "ask a person")]
    daemon.close()
    store.close()


def test_a_version_never_deployed_ends_inconclusive_without_a_probe_in_its_name(
    service: tuple[SimulatedService, SimClock]
) -> None:
    simulated, clock = service
    store, daemon = _registered_before_its_deploy(simulated, clock, "v2.5")
    policy = daemon.config.services["demo"]
    daemon.run_until(clock.now() + policy.periods["minor"] + 120)
    release = store.release("demo", "v2.5")
    assert (release.verdict, release.state) == ("inconclusive", "done")
    assert release.reason == (f"never deployed: no target reported version 'v2.5' within its "
                              f"{format_duration(policy.periods['minor'])} checking period; "
                              "the targets report version 'v2.2', not 'v2.5'")
    assert store.checks(release.id) == []
    daemon.close()
    store.close()
