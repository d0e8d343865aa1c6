"""Hooks on verdict changes: a webhook (JSON POST) or a command (argument list, no shell).

Each (release, verdict, hook) is recorded in the store before it fires and carries an
idempotency key derived from those three, so a delivery retried after a crash carries the
same key and a receiver can tell it has already acted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from monitor.clock import Clock
from monitor.commands import run_bounded
from monitor.errors import ScrapeError, StoreError
from monitor.fetch import bounded_request
from monitor.policy import Hook
from monitor.redact import command_environment, redact_url
from monitor.store import Release, Store

log = logging.getLogger("release_monitor.hooks")

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


def idempotency_key(service: str, version: str, verdict: str, hook: str) -> str:
    """The same key for every delivery of one hook for one release and verdict."""
    digest = hashlib.sha256("\x00".join((service, version, verdict, hook)).encode("utf-8"))
    return digest.hexdigest()[:32]


def claims(service: str, version: str, verdict: str,
           hooks: Sequence[Hook]) -> list[tuple[str, str]]:
    """(hook, idempotency key) of each hook listening for `verdict`: what to claim with it."""
    return [(hook.name, idempotency_key(service, version, verdict, hook.name))
            for hook in hooks if verdict in hook.on]


def payload(release: Release, hook: Hook, key: str) -> dict[str, Any]:
    return {
        "service": release.service,
        "release": release.version,
        "baseline_release": release.baseline,
        "verdict": release.verdict,
        "reason": release.reason,
        "decided_at": release.decided_at,
        "first_alarm_at": release.first_alarm_at,
        "hook": hook.name,
        "idempotency_key": key,
    }


class HookRunner:
    """Fires the policy's hooks for a release's verdict, at most once per verdict."""

    def __init__(self, store: Store, clock: Clock, *,
                 send: Callable[[Hook, dict[str, Any]], Outcome] | None = None,
                 background: Executor | None = None,
                 stopping: threading.Event | None = None) -> None:
        self.store, self.clock = store, clock
        self.send = send or deliver
        self.background = background
        # Set when the daemon shuts down: retries stop waiting and the delivery stays
        # claimed, so the next start delivers it with the same key.
        self.stopping = stopping or threading.Event()
        # Keys this process has begun to deliver: a claim left unfinished is delivered
        # once per process (again only after a crash), never twice by the same one.
        self._started: set[str] = set()
        self._started_lock = threading.Lock()
        # Deliveries that failed after all their retries, per (service, hook): exported, so
        # that a rollback hook that never reached its target can page someone.
        self._failures: Counter[tuple[str, ...]] = Counter()

    def failures(self) -> dict[tuple[str, ...], int]:
        """Failed deliveries since this process started, per (service, hook)."""
        with self._started_lock:
            return dict(self._failures)

    def dispatch(self, release: Release, hooks: tuple[Hook, ...]) -> None:
        """on_verdict, in the background when the runner has an executor (live daemon):
        each hook on its own, so a webhook retrying against a receiver that is down does
        not hold up the rollback command beside it."""
        if self.background is None:
            self.on_verdict(release, hooks)
            return
        for hook in hooks:
            if release.verdict in hook.on:
                self.background.submit(self._logged, self.on_verdict, release, (hook,))

    def _logged(self, work: Callable[..., object], release: Release, *args: Any) -> None:
        try:
            work(release, *args)
        except Exception:  # noqa: BLE001 - a worker thread must report, not die silently
            log.exception("hooks for %s %s failed", release.service, release.version)

    def on_verdict(self, release: Release, hooks: tuple[Hook, ...]) -> list[tuple[str, Outcome]]:
        """Claim and fire every hook that listens for this release's verdict.

        A hook already claimed, usually by the transaction that stored the verdict, fires
        when its delivery is unfinished and this process has not begun it.
        """
        fired = []
        for hook in hooks:
            if release.verdict not in hook.on:
                continue
            key = idempotency_key(release.service, release.version, release.verdict, hook.name)
            self.store.claim_action(release.id, verdict=release.verdict, hook=hook.name,
                                    key=key, at=self.clock.now())
            if self._unfinished(release, hook.name) and self._begin(key):
                fired.append((hook.name, self._fire(release, hook, key)))
        return fired

    def resume(self, release: Release, hook: Hook, key: str) -> None:
        """Deliver a hook claimed before a crash again, with its original key.

        In the background when the runner has an executor: a slow hook retrying for its
        whole budget must not hold up the restarted daemon's scraping and judging.
        """
        if not self._begin(key):
            return
        if self.background is None:
            self._fire(release, hook, key)
        else:
            self.background.submit(self._logged, self._fire, release, hook, key)

    def _unfinished(self, release: Release, hook: str) -> bool:
        return any(action.verdict == release.verdict and action.hook == hook
                   and action.state == "claimed" for action in self.store.actions(release.id))

    def _begin(self, key: str) -> bool:
        """True the first time this process delivers `key`."""
        with self._started_lock:
            if key in self._started:
                return False
            self._started.add(key)
            return True

    def _fire(self, release: Release, hook: Hook, key: str) -> Outcome:
        body = payload(release, hook, key)
        # A delivery that a stop cut short counts on from the attempts it had made.
        earlier = sum(a.attempts for a in self.store.actions(release.id)
                      if a.verdict == release.verdict and a.hook == hook.name)
        outcome: Outcome | None
        if hook.dry_run:
            outcome, attempts = Outcome(True, "dry run: not sent"), 0
        else:
            def retrying(tried: int, failed: Outcome, wait: float) -> None:
                # Said and stored as it happens: a receiver that is down should not look
                # like a delivery under way for the whole budget.
                log.warning("hook %s for %s %s %s: attempt %d failed, again in %gs: %s",
                            hook.name, release.service, release.version, release.verdict,
                            earlier + tried, wait, failed.detail)
                try:
                    self.store.finish_action(
                        release.id, verdict=release.verdict, hook=hook.name, state="claimed",
                        attempts=earlier + tried, outcome=f"retrying: {failed.detail}",
                        at=self.clock.now())
                except StoreError as exc:   # only the progress shown: the retries go on
                    log.warning("hook %s: its attempts so far not stored: %s", hook.name, exc)

            outcome, attempts = self._with_retries(hook, body, retrying)
        attempts += earlier
        if outcome is None:
            log.warning("hook %s for %s %s %s: left for the next start (shutting down after "
                        "%d attempts)", hook.name, release.service, release.version,
                        release.verdict, attempts)
            left = Outcome(False, "left for the next start: shutting down")
            # Still claimed, so the next start delivers it; its attempts so far are kept.
            self.store.finish_action(release.id, verdict=release.verdict, hook=hook.name,
                                     state="claimed", attempts=attempts, outcome=left.detail,
                                     at=self.clock.now())
            return left
        log.log(logging.INFO if outcome.ok else logging.WARNING, "hook %s for %s %s %s: %s",
                hook.name, release.service, release.version, release.verdict, outcome.detail)
        if not outcome.ok:
            with self._started_lock:
                self._failures[(release.service, hook.name)] += 1
        self.store.finish_action(
            release.id, verdict=release.verdict, hook=hook.name,
            state="done" if outcome.ok else "failed", attempts=attempts,
            outcome=outcome.detail, at=self.clock.now(),
        )
        return outcome

    def _with_retries(self, hook: Hook, body: dict[str, Any],
                      retrying: Callable[[int, Outcome, float], None]
                      ) -> tuple[Outcome | None, int]:
        """Retry with exponential backoff until it succeeds or the time budget is spent,
        telling `retrying` (attempts so far, the last outcome, the wait) before each wait.

        None when shutdown came first: no attempt is begun once it has, and a wait for the
        next attempt ends at once (the attempt under way runs to its own time limit).
        """
        deadline = self.clock.now() + hook.budget
        backoff = FIRST_BACKOFF
        attempts = 0
        while not self.stopping.is_set():
            attempts += 1
            outcome = self.send(hook, body)
            if outcome.ok or self.clock.now() + backoff > deadline:
                return outcome, attempts
            retrying(attempts, outcome, backoff)
            if not self.clock.sleep_until(self.clock.now() + backoff, self.stopping):
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
        return None, attempts


def deliver(hook: Hook, body: dict[str, Any]) -> Outcome:
    """One delivery attempt of a webhook or a command."""
    return _post(hook, body) if hook.url else _run(hook, body)


def _post(hook: Hook, body: dict[str, Any]) -> Outcome:
    if _scheme(hook.url) not in ("http", "https"):
        # Without a scheme the URL's parts are not where a parser looks for credentials,
        # so even its redacted form may show them.
        return Outcome(False, "the URL does not start with http:// or https://")
    # Logged, stored and served with the verdict: a webhook's path is often its secret.
    where = redact_url(hook.url, path=False)
    headers = {"Idempotency-Key": body["idempotency_key"], "Content-Type": "application/json"}
    request = requests.Request("POST", hook.url, data=json.dumps(body).encode("utf-8"),
                               headers=headers)
    # One deadline for the whole exchange: a receiver trickling its answer must not hold
    # one of the few hook threads (and a stopping daemon) for ever.
    with requests.Session() as session:
        try:
            answer, _ = bounded_request(session, request, where=where, timeout=hook.timeout,
                                        max_bytes=1, any_status=True, read_body=False)
        except ScrapeError as exc:
            return Outcome(False, str(exc))
    status = answer.status_code
    if 200 <= status < 300:
        return Outcome(True, f"{where}: {status}")
    return Outcome(False, f"{where}: status {status}")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


class _HideQueries(logging.Filter):
    """urllib3 logs each request's path with its query string at DEBUG level, and a
    webhook's (or a target's) query string may carry a token: log it as `?***`. A POST's
    path is hidden whole: a webhook's path (Slack's, say) is its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            args = [_without_query(arg) for arg in record.args]
            for index, arg in enumerate(args[:-1]):
                if arg == "POST" and isinstance(args[index + 1], str):
                    args[index + 1] = "/***"
            record.args = tuple(args)
        return True


def _without_query(value: object) -> object:
    if not isinstance(value, str):
        return value
    if "://" in value:
        return redact_url(value)
    return value.split("?", 1)[0] + "?***" if "?" in value else value


logging.getLogger("urllib3.connectionpool").addFilter(_HideQueries())


def _run(hook: Hook, body: dict[str, Any]) -> Outcome:
    """Run the command with the release in its environment and as JSON on stdin."""
    env = command_environment(hook_environment(body))
    try:
        finished = run_bounded(hook.command, env=env, timeout=hook.timeout,
                               stdin=json.dumps(body).encode("utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument or value
        return Outcome(False, f"cannot start {hook.command[0]!r}: {getattr(exc, 'strerror', None) or exc}")
    if finished.returncode is None:
        return Outcome(False, f"killed after {hook.timeout:g}s")
    if finished.returncode == 0:
        return Outcome(True, f"exit 0 in {finished.seconds:.1f}s")
    return Outcome(False, f"exit {finished.returncode}: {finished.last_line}".rstrip(": "))


def hook_environment(body: Mapping[str, Any]) -> dict[str, str]:
    return {
        "RELEASE_SERVICE": str(body["service"]),
        "RELEASE_VERSION": str(body["release"]),
        "RELEASE_VERDICT": str(body["verdict"]),
        "RELEASE_BASELINE": str(body["baseline_release"] or ""),
        "RELEASE_REASON": str(body["reason"]),
        "RELEASE_IDEMPOTENCY_KEY": str(body["idempotency_key"]),
    }
