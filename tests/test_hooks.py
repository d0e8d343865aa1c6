"""Hooks: once per release and verdict, recorded first, same key on every delivery, no shell."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from processes import exits_within

from monitor.clock import SimClock
from monitor.errors import StoreError, UnknownRelease
from monitor.hooks import HookRunner, Outcome, deliver, idempotency_key
from monitor.policy import Hook
from monitor.render import verdict_text
from monitor.store import Store
from monitor.verdicts import document

NASTY = "v2.3; rm -rf / $(touch pwned) `id` \"'\n" + "x" * 10_000


def _release(store: Store, version: str = "v2.3", verdict: str = "rollback") -> Any:
    release = store.start_release("shop", version, at=0.0, change_class="minor", period=60.0,
                                  baselines=("v2.2",))
    return store.add_verdict(release.id, at=5.0, verdict=verdict, reason="error_ratio: up",
                             findings=[], first_alarm_at=5.0, decided_at=5.0, state="done",
                             judge_state="{}")


def test_a_hook_fires_once_per_release_and_verdict() -> None:
    store, clock, sent = Store.memory(), SimClock(), []
    runner = HookRunner(store, clock, send=lambda hook, body: sent.append(body) or Outcome(True, "ok"))
    release = _release(store)
    hook = Hook(name="undo", on=("rollback",), command=("true",))
    runner.on_verdict(release, (hook,))
    runner.on_verdict(release, (hook,))
    assert len(sent) == 1
    assert sent[0]["idempotency_key"] == idempotency_key("shop", "v2.3", "rollback", "undo")
    [action] = store.actions(release.id)
    assert (action.state, action.attempts, action.outcome) == ("done", 1, "ok")


def test_hooks_not_listening_for_the_verdict_stay_quiet() -> None:
    store, sent = Store.memory(), []
    runner = HookRunner(store, SimClock(), send=lambda h, b: sent.append(b) or Outcome(True, ""))
    runner.on_verdict(_release(store, verdict="hotfix"), (Hook(name="undo", on=("rollback",),
                                                                command=("true",)),))
    assert sent == []


def test_retries_back_off_within_the_budget_on_the_simulated_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    store, clock, times, seen = Store.memory(), SimClock(), [], []

    def failing(hook: Hook, body: dict[str, Any]) -> Outcome:
        times.append(clock.now())
        # What `monitor verdict` shows of the delivery while it is under way.
        seen.append([(a.state, a.attempts, a.outcome) for a in store.actions(1)])
        return Outcome(False, "status 503")

    runner = HookRunner(store, clock, send=failing)
    start = clock.now()
    with caplog.at_level(logging.WARNING, logger="release_monitor.hooks"):
        runner.on_verdict(_release(store), (Hook(name="w", on=("rollback",),
                                                 url="http://127.0.0.1:9/x", budget=30.0),))
    gaps = [round(b - a) for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [1, 2, 4, 8]          # the next wait (16 s) would pass the 30 s budget
    assert times[-1] - start <= 30.0
    [action] = store.actions(1)
    assert action.state == "failed" and action.attempts == 5
    # Each failed attempt is stored and said as it happens, not only once the budget is spent.
    assert seen == [[("claimed", 0, "")]] + [[("claimed", n, "retrying: status 503")]
                                             for n in range(1, 5)]
    retries = [r.getMessage() for r in caplog.records if "failed, again in" in r.getMessage()]
    assert retries[0] == "hook w for shop v2.3 rollback: attempt 1 failed, again in 1s: status 503"
    assert len(retries) == 4


def test_a_store_that_cannot_keep_the_progress_does_not_end_the_retries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock, sent = Store.memory(), SimClock(), []
    release = _release(store)
    finish = store.finish_action

    def locked_while_retrying(release_id: int, **fields: Any) -> None:
        if fields["outcome"].startswith("retrying"):
            raise StoreError("database is locked")
        finish(release_id, **fields)

    monkeypatch.setattr(store, "finish_action", locked_while_retrying)
    runner = HookRunner(store, clock, send=lambda h, b: sent.append(b) or Outcome(
        len(sent) == 2, "ok" if len(sent) == 2 else "status 503"))
    runner.on_verdict(release, (Hook(name="w", on=("rollback",), url="http://127.0.0.1:9/x"),))
    assert len(sent) == 2
    assert [(a.state, a.attempts, a.outcome) for a in store.actions(release.id)] == [
        ("done", 2, "ok")]


def test_shutdown_stops_the_retries_and_leaves_the_delivery_for_the_next_start(
        caplog: pytest.LogCaptureFixture) -> None:
    store, clock, keys = Store.memory(), SimClock(), []
    stopping = threading.Event()

    def failing(hook: Hook, body: dict[str, Any]) -> Outcome:
        keys.append(body["idempotency_key"])
        if len(keys) == 2:
            stopping.set()  # SIGTERM arrives while the second attempt is under way
        return Outcome(False, "status 503")

    hook = Hook(name="w", on=("rollback",), url="http://127.0.0.1:9/x", budget=300.0)
    runner = HookRunner(store, clock, send=failing, stopping=stopping)
    release, began = _release(store), clock.now()
    with caplog.at_level(logging.WARNING, logger="release_monitor.hooks"):
        [(_, outcome)] = runner.on_verdict(release, (hook,))
    # One backoff (1 s) after the first attempt, none after the second.
    assert len(keys) == 2 and clock.now() - began == 1.0
    assert outcome == Outcome(False, "left for the next start: shutting down")
    assert [(a.state, a.attempts, a.outcome) for a in store.actions(release.id)] == [
        ("claimed", 2, "left for the next start: shutting down")]
    assert "shutting down after 2 attempts" in caplog.text
    # The next start delivers it, with the same key, counting on from the two attempts.
    again = HookRunner(store, SimClock(), send=lambda h, b: keys.append(b["idempotency_key"])
                       or Outcome(True, "ok"))
    [(_, action)] = store.unfinished_actions()
    again.resume(release, hook, action.key)
    assert len(set(keys)) == 1 and len(keys) == 3
    assert store.unfinished_actions() == []
    assert [(a.state, a.attempts) for a in store.actions(release.id)] == [("done", 3)]


def test_a_failed_delivery_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = Store.memory()
    runner = HookRunner(store, SimClock(), send=lambda h, b: Outcome(False, "exit 1: no context"))
    release = _release(store)
    assert runner.failures() == {}
    with caplog.at_level(logging.INFO, logger="release_monitor.hooks"):
        runner.on_verdict(release, (Hook(name="undo", on=("rollback",), command=("false",),
                                         budget=0.5),))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "exit 1: no context" in record.getMessage()
    assert runner.failures() == {(release.service, "undo"): 1}  # exported, for alerting


def test_the_verdict_document_says_what_each_hook_did() -> None:
    store, clock = Store.memory(), SimClock()
    outcomes = {"undo": Outcome(True, "exit 0 in 0.2s"), "page": Outcome(False, "exit 2: no route")}
    runner = HookRunner(store, clock, send=lambda hook, body: outcomes[hook.name])
    release = _release(store)
    hooks = (Hook(name="undo", on=("rollback",), command=("true",)),
             Hook(name="page", on=("rollback",), command=("false",), budget=0.5),
             Hook(name="later", on=("rollback",), command=("true",)))
    runner.on_verdict(release, hooks[:2])
    # The third is claimed (with the verdict, say) and not yet delivered.
    store.claim_action(release.id, verdict="rollback", hook="later", key="k3", at=clock.now())
    doc = document(store, store.release("shop", "v2.3"))
    assert [(h["hook"], h["verdict"], h["state"], h["attempts"], h["outcome"]) for h in doc["hooks"]] == [
        ("undo", "rollback", "done", 1, "exit 0 in 0.2s"),
        ("page", "rollback", "failed", 1, "exit 2: no route"),
        ("later", "rollback", "claimed", 0, ""),
    ]
    assert doc["hooks"][0]["idempotency_key"] == idempotency_key("shop", "v2.3", "rollback", "undo")
    text = verdict_text(doc)
    assert "hook undo on rollback: delivered after 1 attempt (exit 0 in 0.2s)" in text
    assert "hook page on rollback: FAILED after 1 attempt (exit 2: no route)" in text
    assert "hook later on rollback: under way" in text


def test_dry_run_records_without_sending() -> None:
    store, sent = Store.memory(), []
    runner = HookRunner(store, SimClock(), send=lambda h, b: sent.append(b) or Outcome(True, ""))
    release = _release(store)
    runner.on_verdict(release, (Hook(name="w", on=("rollback",), command=("true",), dry_run=True),))
    assert sent == []
    assert store.actions(release.id)[0].outcome == "dry run: not sent"


def test_a_crash_after_the_claim_redelivers_with_the_same_key() -> None:
    store, sent = Store.memory(), []
    release = _release(store)
    key = idempotency_key("shop", "v2.3", "rollback", "undo")
    assert store.claim_action(release.id, verdict="rollback", hook="undo", key=key, at=5.0)
    # The process died here. A new runner resumes the unfinished delivery with the same key,
    # and a fresh on_verdict does not fire a second one.
    runner = HookRunner(store, SimClock(), send=lambda h, b: sent.append(b) or Outcome(True, "ok"))
    hook = Hook(name="undo", on=("rollback",), command=("true",))
    [(release_id, action)] = store.unfinished_actions()
    runner.resume(release, hook, action.key)
    runner.on_verdict(release, (hook,))
    assert [b["idempotency_key"] for b in sent] == [key]
    assert store.unfinished_actions() == []


def test_command_hooks_get_hostile_values_literally(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    script = ("import json, os, sys\n"
              "data = json.load(sys.stdin)\n"
              "json.dump({'argv': sys.argv[1:], 'env': os.environ['RELEASE_VERSION'],"
              " 'stdin': data['release']}, open(sys.argv[1], 'w'))\n")
    hook = Hook(name="c", on=("rollback",), command=(sys.executable, "-c", script, str(out), NASTY))
    body = {"service": "shop", "release": NASTY, "verdict": "rollback", "baseline_release": None,
            "reason": "r", "idempotency_key": "k"}
    assert deliver(hook, body).ok
    seen = json.loads(out.read_text())
    assert seen == {"argv": [str(out), NASTY], "env": NASTY, "stdin": NASTY}
    assert not (Path.cwd() / "pwned").exists()


def test_a_command_past_its_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # Both processes wait for a signal that only the process-group kill sends.
    script = ("import signal, subprocess, sys\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "signal.pause()\n")
    hook = Hook(name="slow", on=("rollback",), command=(sys.executable, "-c", script), timeout=1.0)
    outcome = deliver(hook, {"service": "s", "release": "r", "verdict": "rollback",
                             "baseline_release": None, "reason": "", "idempotency_key": "k"})
    assert not outcome.ok and "killed" in outcome.detail
    # The grandchild held the output pipe, so the delivery returned only once it had closed
    # its files on the way out; the kernel marks it exited a moment later.
    assert exits_within(int(pid_file.read_text()), seconds=5.0)


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append((self.headers.get("Idempotency-Key", ""), self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[ThreadingHTTPServer]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhooks_post_json_with_the_idempotency_key(receiver: ThreadingHTTPServer) -> None:
    url = f"http://user:secret-marker@127.0.0.1:{receiver.server_address[1]}/hook?token=secret-marker"
    store = Store.memory()
    runner = HookRunner(store, SimClock())
    release = _release(store)
    [(name, outcome)] = runner.on_verdict(release, (Hook(name="w", on=("rollback",), url=url),))
    assert outcome.ok
    [(key, body)] = _Receiver.received
    assert key == idempotency_key("shop", "v2.3", "rollback", "w")
    assert json.loads(body)["verdict"] == "rollback"
    assert "secret-marker" not in store.actions(release.id)[0].outcome


def test_wait_for_decision_polls_on_the_clock_until_decided() -> None:
    from monitor.verdicts import wait_for_decision

    store, clock = Store.memory(), SimClock()
    release = store.start_release("shop", "v9", at=clock.now(), change_class="minor",
                                  period=600.0, baselines=())
    waited = wait_for_decision(store, release, clock, timeout=60.0, poll=10.0)
    assert waited.verdict == "pending" and clock.now() == release.started_at + 60.0
    store.add_verdict(release.id, at=clock.now(), verdict="rollback", reason="r", findings=[],
                      first_alarm_at=clock.now(), decided_at=clock.now(), state="done",
                      judge_state="{}")
    assert wait_for_decision(store, release, clock, timeout=60.0).verdict == "rollback"


class _ReleasedLater(SimClock):
    """A clock at which the daemon takes up release v9 of shop `after` seconds from now."""

    def __init__(self, store: Store, after: float) -> None:
        super().__init__()
        self.store, self.taken_up_at = store, self.now() + after

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        done = super().sleep_until(deadline, stop)
        if self.now() >= self.taken_up_at and not self.store.releases("shop"):
            self.store.start_release("shop", "v9", at=self.now(), change_class="minor",
                                     period=600.0, baselines=())
        return done


def test_a_wait_polls_for_a_release_the_daemon_has_not_yet_taken_up() -> None:
    from monitor.verdicts import UNKNOWN_GRACE, wait_for_release

    store = Store.memory()
    clock = _ReleasedLater(store, after=9.0)
    began = clock.now()
    found = wait_for_release(store, "v9", None, clock, timeout=3600.0, poll=2.0)
    assert (found.version, clock.now() - began) == ("v9", 10.0)
    # A name still unknown after the grace is most likely wrong: bad input, not a slow daemon.
    never = _ReleasedLater(Store.memory(), after=float("inf"))
    began = never.now()
    with pytest.raises(UnknownRelease, match="no release 'v9'"):
        wait_for_release(never.store, "v9", None, never, timeout=3600.0, poll=2.0)
    assert never.now() - began == UNKNOWN_GRACE
    # A shorter --timeout ends the wait sooner.
    began = never.now()
    with pytest.raises(UnknownRelease):
        wait_for_release(never.store, "v9", "shop", never, timeout=15.0, poll=2.0)
    assert never.now() - began == 15.0


class _SlowReceiver(BaseHTTPRequestHandler):
    """/dribble: a status line, then a header a byte at a time; /stall: a 200, then no body."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/dribble":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
            while not self.release.wait(0.05):
                self.wfile.write(b"x")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.release.wait()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def slow_receiver() -> Iterator[str]:
    _SlowReceiver.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _SlowReceiver.release.set()
    server.shutdown()
    server.server_close()


def test_a_receiver_trickling_its_answer_is_cut_at_the_hook_s_timeout(slow_receiver: str) -> None:
    hook = Hook(name="w", on=("rollback",), url=f"{slow_receiver}/dribble", timeout=0.5)
    body = {"idempotency_key": "k", "verdict": "rollback"}
    outcome = deliver(hook, body)
    assert outcome == Outcome(False, f"{slow_receiver}/***: timed out after 0.5 s")


def test_a_receiver_s_status_is_its_answer_whatever_its_body_does(slow_receiver: str) -> None:
    hook = Hook(name="w", on=("rollback",), url=f"{slow_receiver}/stall", timeout=5.0)
    outcome = deliver(hook, {"idempotency_key": "k", "verdict": "rollback"})
    assert outcome == Outcome(True, f"{slow_receiver}/***: 200")


class _Recorded(ThreadPoolExecutor):
    """A pool that keeps the futures of what it was given."""

    def __init__(self) -> None:
        super().__init__(2, "hooks")
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def test_a_slow_webhook_does_not_hold_up_the_rollback_command_beside_it(tmp_path: Path) -> None:
    held = threading.Event()

    def slow_receiver(hook: Hook, body: dict[str, Any]) -> Outcome:
        if hook.url:
            held.wait(30)                  # a receiver that has not answered yet
            return Outcome(True, "200")
        return deliver(hook, body)

    marker = tmp_path / "rolled-back"
    hooks = (Hook(name="chat", on=("rollback",), url="http://127.0.0.1:9/chat"),
             Hook(name="undo", on=("rollback",), command=("touch", str(marker))))
    store = Store.open(tmp_path / "m.db")    # a file: the hooks' threads write to it
    pool = _Recorded()
    runner = HookRunner(store, SimClock(), send=slow_receiver, background=pool)
    release = _release(store)
    try:
        runner.dispatch(release, hooks)
        chat, undo = pool.futures
        undo.result(timeout=30)
        assert marker.exists() and not chat.done()
    finally:
        held.set()
        pool.shutdown()
    assert sorted((a.hook, a.state) for a in store.actions(release.id)) == [
        ("chat", "done"), ("undo", "done")]
    store.close()
