"""Crash safety: `monitor run` killed with SIGKILL at random instants, restarted, again and again.

Two runs, each against real loopback targets with 50 ms scrapes:

- ingest: after each kill an independent read-only SQLite connection checks the file
  (`PRAGMA quick_check`), decodes every new scrape row, and compares the stored scrapes
  with those a reader saw committed just before the kill: none may be missing.
- rollback: every release fails its smoke test (a probe answering 500) and is rolled back
  at once; a command hook appends its idempotency key to a file. Kills land at random
  instants, right after the verdict is stored, or while the hook runs. Every release must
  end with one rollback verdict, one action, and hook deliveries that all carry the same
  key: one, plus one redelivery per restart that found the action unfinished.

Prints figures; exits 1 when an invariant was broken.

    python -m benchmarks.crash [--kills 100] [--seed 20260101]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import requests

from monitor.clock import WallClock
from monitor.demo_service import SimulatedService
from monitor.hooks import idempotency_key

SERVICE = "shop"
HOOK = "undo"
READY_LIMIT = 5.0       # seconds from process start to a 200 from /healthz
START_LIMIT = 30.0      # a daemon that has printed no banner by then is broken
WIDE_SERIES = 300       # series of the wide target: every scrape row is ~5 KB


# ---------------------------------------------------------------- targets


class LoopbackTarget:
    """A target on 127.0.0.1: `/metrics` with a version label and many series, `/fail` 500."""

    def __init__(self, version: str = "v1", series: int = WIDE_SERIES) -> None:
        self.version = version
        self.series = series
        self.scrapes = 0
        self._server = _TargetServer(("127.0.0.1", 0), _TargetHandler)
        self._server.target = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def metrics(self) -> bytes:
        self.scrapes += 1
        lines = ["# TYPE app_build_info gauge", f'app_build_info{{version="{self.version}"}} 1',
                 "# TYPE wide_gauge gauge"]
        lines += [f'wide_gauge{{i="{i}"}} {self.scrapes + i}' for i in range(self.series)]
        return ("\n".join(lines) + "\n").encode()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _TargetServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A daemon killed mid-scrape hangs up on the target: that is the point here."""


class _TargetHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        target: LoopbackTarget = self.server.target  # type: ignore[attr-defined]
        if self.path == "/metrics":
            self._send(200, target.metrics())
        elif self.path == "/fail":
            self._send(500, b"database unreachable\n")
        else:
            self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


# ---------------------------------------------------------------- the daemon process


class DaemonDied(AssertionError):
    """`monitor run` exited on its own; the message carries the end of its log."""


@dataclass
class RunningDaemon:
    process: subprocess.Popen[str]
    log: Path
    started: float                 # time.monotonic() at spawn
    url: str = ""
    ready_seconds: float | None = None

    def pause(self, seconds: float) -> None:
        """Let the daemon work for `seconds`; DaemonDied when it exits meanwhile."""
        try:
            self.process.wait(timeout=max(seconds, 0.0))
        except subprocess.TimeoutExpired:
            return
        raise DaemonDied(f"monitor run exited with {self.process.returncode}:\n{self.log_tail()}")

    def wait_until_ready(self) -> float:
        """Read the banner, then ask /healthz; seconds from spawn to the first 200."""
        banner = self._banner()
        self.url = banner.split("metrics ", 1)[1].split("/metrics", 1)[0]
        while time.monotonic() - self.started < START_LIMIT:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return self.ready_seconds
            except requests.RequestException:
                pass
            self.pause(0.01)
        raise DaemonDied(f"/healthz never answered:\n{self.log_tail()}")

    def _banner(self) -> str:
        assert self.process.stdout is not None
        while time.monotonic() - self.started < START_LIMIT:
            readable, _, _ = select.select([self.process.stdout], [], [], 0.05)
            if readable:
                line = self.process.stdout.readline()
                if line.startswith("release-monitor"):
                    return line
                if not line:
                    self.pause(0)
                    raise DaemonDied(f"monitor run closed its output:\n{self.log_tail()}")
            else:
                self.pause(0)
        raise DaemonDied(f"no banner within {START_LIMIT:g}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, the orderly stop; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return code

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn_daemon(policy: Path, log: Path) -> RunningDaemon:
    """`python -m monitor run --config policy`, its log appended to `log`."""
    with log.open("a") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(policy)],
            stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, text=True,
            cwd=policy.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return RunningDaemon(process, log, time.monotonic())


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """An independent reader: it neither recovers nor checkpoints the daemon's WAL."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        yield conn
    finally:
        conn.close()


def _toml(value: str) -> str:
    return json.dumps(value)  # JSON string escapes are TOML basic-string escapes


# ---------------------------------------------------------------- ingest


@dataclass
class IngestFigures:
    kills: int = 0
    lifetimes_ready: int = 0
    scrapes: int = 0               # scrape rows stored at the end
    samples: int = 0
    lost_scrapes: int = 0          # seen committed before a kill, missing after it
    lost_samples: int = 0
    bad_rows: list[str] = field(default_factory=list)
    quick_checks: list[str] = field(default_factory=list)
    ready_seconds: list[float] = field(default_factory=list)
    scrapes_after_kill: list[int] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = [f"quick_check: {q}" for q in self.quick_checks if q != "ok"]
        found += self.bad_rows[:10]
        if self.lost_scrapes:
            found.append(f"{self.lost_scrapes} committed scrapes ({self.lost_samples} samples) lost")
        counts = self.scrapes_after_kill
        if any(b < a for a, b in zip(counts, counts[1:], strict=False)):
            found.append(f"stored scrapes decreased: {self.scrapes_after_kill}")
        slow = [s for s in self.ready_seconds if s > READY_LIMIT]
        if slow:
            found.append(f"restarts slower than {READY_LIMIT:g}s: {slow}")
        return found


class _StoredScrapes:
    """What an independent reader has seen: batch id -> samples, and every row checked once."""

    def __init__(self, db: Path, wide_target: str) -> None:
        self.db, self.wide_target = db, wide_target
        self.sizes: dict[int, int] = {}
        self.checked_up_to = 0

    def committed(self) -> dict[int, int]:
        """Batch id -> samples of every scrape committed now (the daemon may be running)."""
        with read_only(self.db) as conn:
            rows = conn.execute("SELECT id, length(ids) / 8 FROM batches").fetchall()
        return {int(i): int(n) for i, n in rows}

    def check(self, figures: IngestFigures) -> dict[int, int]:
        """After a kill: quick_check, decode the new rows, return what is stored."""
        with read_only(self.db) as conn:
            figures.quick_checks.append(str(conn.execute("PRAGMA quick_check").fetchone()[0]))
            known = {int(i) for (i,) in conn.execute("SELECT id FROM series")}
            rows = conn.execute(
                "SELECT id, service, target, at, ids, vals FROM batches WHERE id > ? ORDER BY id",
                (self.checked_up_to,),
            ).fetchall()
            stored = {int(i): int(n) for i, n in
                      conn.execute("SELECT id, length(ids) / 8 FROM batches").fetchall()}
        for row in rows:
            problem = self._decode(row, known)
            if problem:
                figures.bad_rows.append(f"batch {row[0]}: {problem}")
            self.checked_up_to = max(self.checked_up_to, int(row[0]))
        return stored

    def _decode(self, row: tuple[object, ...], known: set[int]) -> str:
        _, service, target, at, ids_blob, vals_blob = row
        if not isinstance(ids_blob, bytes) or not isinstance(vals_blob, bytes):
            return "ids or values are not BLOBs"
        if len(ids_blob) != len(vals_blob) or len(ids_blob) % 8 or not ids_blob:
            return f"blob lengths {len(ids_blob)} and {len(vals_blob)}"
        ids = np.frombuffer(ids_blob, dtype="<i8")
        np.frombuffer(vals_blob, dtype="<f8")
        if service != SERVICE or not isinstance(at, float) or not np.isfinite(at):
            return f"service {service!r}, time {at!r}"
        if np.unique(ids).size != ids.size or not set(ids.tolist()) <= known:
            return "series ids repeat or are not in the series table"
        if target == self.wide_target and ids.size != WIDE_SERIES + 1:
            return f"{ids.size} samples from the wide target, expected {WIDE_SERIES + 1}"
        return ""


def ingest_policy(folder: Path, demo_url: str, wide_url: str) -> Path:
    policy = folder / "ingest.toml"
    policy.write_text(
        '[monitor]\ndatabase = "ingest.db"\nlisten = "127.0.0.1:0"\n\n'
        f'[services.{SERVICE}]\nversion_metric = "demo_build_info"\n\n'
        f'[[services.{SERVICE}.targets]]\nurl = "{demo_url}/metrics"\ninterval = "50ms"\n'
        'timeout = "2s"\n\n'
        f'[[services.{SERVICE}.targets]]\nurl = "{wide_url}/metrics"\ninterval = "50ms"\n'
        'timeout = "2s"\n'
    )
    return policy


def run_ingest(folder: Path, *, kills: int, seed: int) -> IngestFigures:
    """Kill `monitor run` `kills` times while it stores 50 ms scrapes of two targets.

    One kill in five lands while the daemon starts (imports, migrations, first writes),
    the others after /healthz answered, at a uniformly random instant within a second.
    """
    rng = np.random.default_rng(seed)
    figures = IngestFigures()
    demo = SimulatedService(WallClock(), seed=seed, version="v2.2")
    demo.start()
    wide = LoopbackTarget()
    policy = ingest_policy(folder, demo.url, wide.url)
    scrapes = _StoredScrapes(folder / "ingest.db", f"{wide.url}/metrics")
    try:
        for _ in range(kills):
            daemon = spawn_daemon(policy, folder / "ingest.log")
            try:
                if rng.random() < 0.2 and figures.kills:
                    daemon.pause(rng.uniform(0.0, 1.5))
                    before: dict[int, int] = {}
                else:
                    figures.ready_seconds.append(daemon.wait_until_ready())
                    figures.lifetimes_ready += 1
                    daemon.pause(rng.uniform(0.05, 1.0))
                    before = scrapes.committed()
            finally:
                daemon.kill()
            figures.kills += 1
            _compare(figures, scrapes, before)
        final = scrapes.committed()
        figures.scrapes, figures.samples = len(final), sum(final.values())
    finally:
        wide.stop()
        demo.stop()
    return figures


def _compare(figures: IngestFigures, scrapes: _StoredScrapes, before: dict[int, int]) -> None:
    """Nothing committed before the kill, nor stored after an earlier one, may be missing."""
    stored = scrapes.check(figures)
    expected = {**scrapes.sizes, **before}
    missing = expected.keys() - stored.keys()
    figures.lost_scrapes += len(missing)
    figures.lost_samples += sum(expected[i] for i in missing)
    scrapes.sizes.update(stored)
    figures.scrapes_after_kill.append(len(stored))


# ---------------------------------------------------------------- rollback

# The hook: append "key verdict version", then wait while the harness holds the gate of
# that version (a FIFO in the gates folder named after it).
HOOK_SCRIPT = (
    "import os, sys\n"
    "env = os.environ\n"
    "line = ' '.join((env['RELEASE_IDEMPOTENCY_KEY'], env['RELEASE_VERDICT'],"
    " env['RELEASE_VERSION']))\n"
    "with open(sys.argv[1], 'a') as out:\n"
    "    out.write(line + '\\n')\n"
    "gate = os.path.join(sys.argv[2], env['RELEASE_VERSION'])\n"
    "if os.path.exists(gate):\n"
    "    try:\n"
    "        with open(gate) as held:\n"
    "            held.read()\n"
    "    except FileNotFoundError:\n"
    "        pass\n"
)
KILL_MODES = ("starting", "random", "after verdict", "mid hook")


@dataclass
class RollbackFigures:
    kills: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    releases: int = 0
    deliveries: int = 0
    redeliveries: int = 0           # a second delivery after a crash mid-hook: allowed
    excess_deliveries: int = 0      # beyond one per restart that found the hook unfinished
    missing_deliveries: int = 0     # a rolled back release whose hook never ran
    duplicate_actions: int = 0      # extra actions or extra rollback verdicts for a release
    wrong_keys: int = 0
    ready_seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = list(self.problems[:10])
        for name in ("excess_deliveries", "missing_deliveries", "duplicate_actions", "wrong_keys"):
            if getattr(self, name):
                found.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        slow = [s for s in self.ready_seconds if s > READY_LIMIT]
        if slow:
            found.append(f"restarts slower than {READY_LIMIT:g}s: {slow}")
        return found


def rollback_policy(folder: Path, target_url: str, hooks_file: Path, gates: Path) -> Path:
    command = ", ".join(_toml(part) for part in
                        (sys.executable, "-c", HOOK_SCRIPT, str(hooks_file), str(gates)))
    policy = folder / "rollback.toml"
    policy.write_text(
        '[monitor]\ndatabase = "rollback.db"\nlisten = "127.0.0.1:0"\n\n'
        # One attempt: the probe always fails, and the kills are timed around the rollback.
        f'[services.{SERVICE}]\nversion_metric = "app_build_info"\nsmoke_attempts = 1\n\n'
        f'[[services.{SERVICE}.targets]]\nurl = "{target_url}/metrics"\ninterval = "50ms"\n\n'
        f'[[services.{SERVICE}.smoke]]\nname = "home page"\nurl = "{target_url}/fail"\n\n'
        f'[[services.{SERVICE}.hooks]]\nname = "{HOOK}"\non = ["rollback"]\n'
        f'command = [{command}]\ntimeout = "20s"\nbudget = "30s"\n'
    )
    return policy


class _RollbackRun:
    """One daemon lifetime after another, each ended by SIGKILL at a chosen moment."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.folder = folder
        self.db = folder / "rollback.db"
        self.hooks_file = folder / "hooks.txt"
        self.hooks_file.touch()
        self.gates = folder / "gates"
        self.gates.mkdir()
        self.target = LoopbackTarget(series=3)
        self.policy = rollback_policy(folder, self.target.url, self.hooks_file, self.gates)
        self.allowance: Counter[str] = Counter()   # key -> restarts that found it unfinished
        self.figures = RollbackFigures()
        self.round = 0

    def lifetime(self, mode: str) -> None:
        self.round += 1
        self.target.version = f"v{self.round}"
        if mode == "mid hook":
            os.mkfifo(self.gates / self.target.version)
        daemon = spawn_daemon(self.policy, self.folder / "rollback.log")
        try:
            if mode == "starting":
                daemon.pause(self.rng.uniform(0.0, 1.5))
            else:
                self.figures.ready_seconds.append(daemon.wait_until_ready())
                if mode == "random":
                    daemon.pause(self.rng.uniform(0.0, 0.4))
                elif mode == "after verdict":
                    self._until(daemon, self._rolled_back)
                else:
                    self._until(daemon, self._hook_started)
        finally:
            daemon.kill()
            self._open_gate()
        self.figures.kills += 1
        self.figures.modes[mode] += 1
        for key in self._unfinished():
            self.allowance[key] += 1

    def settle(self) -> None:
        """A last lifetime: let every release finish its hook, then stop in order."""
        daemon = spawn_daemon(self.policy, self.folder / "rollback.log")
        try:
            self.figures.ready_seconds.append(daemon.wait_until_ready())
            self._until(daemon, lambda: self._all_rolled_back() and not self._unfinished(),
                        limit=20.0, required=False)
            code = daemon.terminate()
            if code != 0:
                self.figures.problems.append(f"monitor run exited {code} on SIGTERM")
        finally:
            daemon.kill()

    def _until(self, daemon: RunningDaemon, done: Callable[[], bool], *, limit: float = 10.0,
               required: bool = True) -> None:
        deadline = time.monotonic() + limit
        while not done():
            if time.monotonic() > deadline:
                if required:
                    raise DaemonDied(f"waited {limit:g}s in vain:\n{daemon.log_tail()}")
                return
            daemon.pause(0.005)

    def _rolled_back(self) -> bool:
        if not self.db.exists():
            return False
        with read_only(self.db) as conn:
            row = conn.execute("SELECT verdict FROM releases WHERE service = ? AND version = ?",
                               (SERVICE, self.target.version)).fetchone()
        return row is not None and row[0] == "rollback"

    def _hook_started(self) -> bool:
        return f" {self.target.version}\n" in self.hooks_file.read_text()

    def _all_rolled_back(self) -> bool:
        with read_only(self.db) as conn:
            return not conn.execute("SELECT 1 FROM releases WHERE verdict != 'rollback' "
                                    "OR state != 'done'").fetchall()

    def _unfinished(self) -> list[str]:
        if not self.db.exists():
            return []
        with read_only(self.db) as conn:
            return [key for (key,) in conn.execute("SELECT key FROM actions WHERE state = 'claimed'")]

    def _open_gate(self) -> None:
        """Let every hook waiting at a gate finish, and hold no later one."""
        for gate in self.gates.iterdir():
            writer = os.open(gate, os.O_RDWR | os.O_NONBLOCK)
            gate.unlink()
            os.close(writer)

    def judge(self) -> RollbackFigures:
        """Compare the store and the hook file with what crash safety allows."""
        figures = self.figures
        with read_only(self.db) as conn:
            releases = conn.execute("SELECT id, version, verdict, state FROM releases").fetchall()
            actions = conn.execute("SELECT release_id, verdict, hook, key, state FROM actions").fetchall()
            verdicts = Counter(conn.execute(
                "SELECT release_id FROM verdicts WHERE verdict = 'rollback'").fetchall())
        lines = [line.split() for line in self.hooks_file.read_text().splitlines()]
        delivered = Counter(version for _, _, version in lines)
        figures.releases = len(releases)
        figures.deliveries = len(lines)
        per_release = Counter(release_id for release_id, *_ in actions)
        for release_id, version, verdict, state in releases:
            key = idempotency_key(SERVICE, version, "rollback", HOOK)
            if (verdict, state) != ("rollback", "done"):
                figures.problems.append(f"{version}: {verdict}, {state}")
            figures.duplicate_actions += max(0, per_release[release_id] - 1)
            figures.duplicate_actions += max(0, verdicts[(release_id,)] - 1)
            count = delivered.pop(version, 0)
            figures.missing_deliveries += count == 0
            figures.redeliveries += max(0, min(count - 1, self.allowance[key]))
            figures.excess_deliveries += max(0, count - 1 - self.allowance[key])
        figures.wrong_keys += sum(
            key != idempotency_key(SERVICE, version, verdict, HOOK) or verdict != "rollback"
            for key, verdict, version in lines)
        versions = {release_id: version for release_id, version, _, _ in releases}
        figures.wrong_keys += sum(key != idempotency_key(SERVICE, versions[release_id], verdict, hook)
                                  for release_id, verdict, hook, key, _ in actions)
        if delivered:
            figures.problems.append(f"deliveries for versions never released: {dict(delivered)}")
        return figures

    def close(self) -> None:
        self._open_gate()
        self.target.stop()


def run_rollback(folder: Path, *, kills: int, seed: int) -> RollbackFigures:
    """Kill `monitor run` `kills` times around rollbacks and their hook, then settle and judge.

    Every lifetime deploys a new version whose smoke test fails. The kills are spread evenly
    over KILL_MODES, in a seeded order.
    """
    run = _RollbackRun(folder, seed)
    try:
        modes = [KILL_MODES[i % len(KILL_MODES)] for i in range(kills)]
        run.rng.shuffle(modes)
        for mode in modes:
            run.lifetime(mode)
        run.settle()
        return run.judge()
    finally:
        run.close()


# ---------------------------------------------------------------- figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100, help="kills in each of the two runs")
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        began = time.monotonic()
        ingest = run_ingest(Path(folder), kills=args.kills, seed=args.seed)
        ingest_seconds = time.monotonic() - began
        began = time.monotonic()
        rollback = run_rollback(Path(folder), kills=args.kills, seed=args.seed)
        rollback_seconds = time.monotonic() - began
    ready = ingest.ready_seconds + rollback.ready_seconds
    print(f"ingest:   {ingest.kills} kills in {ingest_seconds:.0f}s, {ingest.scrapes} scrapes "
          f"({ingest.samples:,} samples) stored, lost scrapes {ingest.lost_scrapes}, "
          f"lost samples {ingest.lost_samples}, bad rows {len(ingest.bad_rows)}, "
          f"quick_check not ok {sum(q != 'ok' for q in ingest.quick_checks)}")
    print(f"rollback: {rollback.kills} kills in {rollback_seconds:.0f}s "
          f"({', '.join(f'{m} {n}' for m, n in sorted(rollback.modes.items()))}), "
          f"{rollback.releases} releases rolled back, {rollback.deliveries} hook deliveries "
          f"({rollback.redeliveries} redeliveries after a crash mid-hook), duplicate actions "
          f"{rollback.duplicate_actions}, excess deliveries {rollback.excess_deliveries}, "
          f"missing deliveries {rollback.missing_deliveries}, wrong keys {rollback.wrong_keys}")
    print(f"restart to serving /healthz: {len(ready)} restarts, median "
          f"{float(np.median(ready)):.2f}s, max {max(ready):.2f}s (limit {READY_LIMIT:g}s)")
    violations = ingest.violations + rollback.violations
    for violation in violations:
        print(f"VIOLATION: {violation}")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
