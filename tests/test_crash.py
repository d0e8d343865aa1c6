"""Crash safety: `monitor run` killed with SIGKILL at random instants loses nothing committed,
never half-writes a scrape, and never rolls a release back twice.

The kill-and-restart loops live in `benchmarks/crash.py`, which runs them 100 times each;
here they run 8 times, and one crash instant too narrow to hit by chance is staged in-process.
"""

from __future__ import annotations

import sys
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from monitor.clock import SimClock
from monitor.hooks import HookRunner, Outcome, idempotency_key
from monitor.policy import Hook, MonitorConfig, Probe, ServicePolicy
from monitor.releases import Releases, StageRunners
from monitor.stages import CheckResult
from monitor.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.crash import KILL_MODES, READY_LIMIT, run_ingest, run_rollback  # noqa: E402

KILLS = 8
SEED = 20260101


def test_killed_during_ingest_nothing_committed_is_lost(tmp_path: Path) -> None:
    figures = run_ingest(tmp_path, kills=KILLS, seed=SEED)
    assert figures.kills == KILLS
    assert figures.quick_checks == ["ok"] * KILLS
    assert figures.bad_rows == []
    assert (figures.lost_scrapes, figures.lost_samples) == (0, 0)
    counts = figures.scrapes_after_kill
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0   # growing, never shrinking
    assert figures.lifetimes_ready >= KILLS // 2
    assert max(figures.ready_seconds) < READY_LIMIT, figures.ready_seconds
    assert figures.violations == []


def test_killed_around_a_rollback_the_hook_runs_once_per_crash_at_most(tmp_path: Path) -> None:
    figures = run_rollback(tmp_path, kills=KILLS, seed=SEED)
    assert figures.kills == KILLS
    assert set(figures.modes) == set(KILL_MODES)
    # Every lifetime but those killed while starting deploys a version that gets rolled back.
    assert figures.releases >= KILLS - figures.modes["starting"]
    assert figures.problems == []
    assert figures.duplicate_actions == 0 and figures.wrong_keys == 0
    assert figures.missing_deliveries == 0 and figures.excess_deliveries == 0
    # Killed mid-hook, the delivery is repeated after the restart, with the same key.
    assert figures.redeliveries >= figures.modes["mid hook"]
    assert figures.deliveries == figures.releases + figures.redeliveries
    assert max(figures.ready_seconds) < READY_LIMIT, figures.ready_seconds


class _DiesFirst(Executor):
    """The hook worker never runs: the process is killed right after the verdict commit."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return Future()


def test_a_kill_between_the_verdict_and_the_hook_still_rolls_back_once(tmp_path: Path) -> None:
    hook = Hook(name="undo", on=("rollback",), command=("true",))
    policy = ServicePolicy(name="shop", smoke=(Probe("home", "http://127.0.0.1:9/"),),
                           hooks=(hook,))
    config = MonitorConfig(path="<test>", services={"shop": policy})
    failing = StageRunners(probe=lambda probe: CheckResult(probe.name, False, "status 500"))
    clock = SimClock()
    before = Store.open(tmp_path / "m.db")
    releases = Releases(config, before, clock, runners=failing,
                        hooks=HookRunner(before, clock, background=_DiesFirst()))
    release = releases.advance(releases.start("shop", "v2.3"))
    assert release.verdict == "rollback"

    sent: list[dict[str, Any]] = []

    def send(hook: Hook, body: dict[str, Any]) -> Outcome:
        sent.append(body)
        return Outcome(True, "ok")

    after = Store.open(tmp_path / "m.db")        # the restarted daemon
    runner = HookRunner(after, clock, send=send)
    restarted = Releases(config, after, clock, runners=failing, hooks=runner)
    assert restarted.resume_hooks() == 1
    restarted.hooks.on_verdict(after.release("shop", "v2.3"), (hook,))   # no second delivery
    assert [body["idempotency_key"] for body in sent] == [
        idempotency_key("shop", "v2.3", "rollback", "undo")]
    [action] = after.actions(release.id)
    assert (action.verdict, action.state) == ("rollback", "done")
    assert [v.verdict for v in after.verdicts(release.id)] == ["rollback"]
    before.close()
    after.close()
