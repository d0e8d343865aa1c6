"""The verdict document: one object shared by `monitor verdict --json` and the JSON API."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from monitor.clock import Clock
from monitor.errors import UnknownRelease
from monitor.findings import HOTFIX, INCONCLUSIVE, PASS, PENDING, ROLLBACK, Finding
from monitor.store import Release, Store

EXIT_PASS = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_ROLLBACK = 3
EXIT_HOTFIX = 4
EXIT_PENDING = 5
EXIT_INCONCLUSIVE = 6
EXIT_STORE = 7
EXIT_CODES = {
    PASS: EXIT_PASS, ROLLBACK: EXIT_ROLLBACK, HOTFIX: EXIT_HOTFIX, PENDING: EXIT_PENDING,
    INCONCLUSIVE: EXIT_INCONCLUSIVE,
}


DECIDED = (ROLLBACK, HOTFIX)
POLL_SECONDS = 2.0
# How long a wait polls for a release not yet known: a daemon takes up a release registered
# over its API, or a new version its targets report, at its next step.
UNKNOWN_GRACE = 60.0


def wait_for_release(store: Store, version: str, service: str | None, clock: Clock, *,
                     timeout: float, poll: float = POLL_SECONDS) -> Release:
    """The release, polled for up to UNKNOWN_GRACE (or `timeout`, if shorter) while unknown;
    UnknownRelease after that, for a name that is most likely wrong."""
    deadline = clock.now() + min(timeout, UNKNOWN_GRACE)
    while True:
        try:
            return store.find_release(version, service)
        except UnknownRelease:
            if clock.now() >= deadline:
                raise
        clock.sleep_until(min(clock.now() + poll, deadline))


def wait_for_decision(store: Store, release: Release, clock: Clock, *, timeout: float,
                      poll: float = POLL_SECONDS,
                      judged: Callable[[], bool] | None = None) -> Release:
    """Poll the store until the release is done or has a rollback or hotfix verdict, or
    until `judged` (whether a daemon uses the store) has said no for UNKNOWN_GRACE: no
    verdict will come then, and a pipeline should not wait out its whole timeout."""
    deadline = clock.now() + timeout
    unjudged_since: float | None = None
    while release.state != "done" and release.verdict not in DECIDED:
        now = clock.now()
        if judged is not None:
            unjudged_since = None if judged() else (now if unjudged_since is None else unjudged_since)
        if now >= deadline or (unjudged_since is not None and now - unjudged_since >= UNKNOWN_GRACE):
            break
        clock.sleep_until(min(now + poll, deadline))
        release = store.release(release.service, release.version)
    return release


def document(store: Store, release: Release) -> dict[str, Any]:
    """Everything a pipeline or a person needs to act on a release's verdict."""
    latest = store.latest_verdict(release.id)
    return {
        "service": release.service,
        "release": release.version,
        "baseline_release": release.baseline,
        "verdict": release.verdict,
        "reason": release.reason,
        "state": release.state,
        "change_class": release.change_class,
        "started_at": release.started_at,
        "period_seconds": release.period,
        "decided_at": release.decided_at,
        "first_alarm_at": release.first_alarm_at,
        "evaluated_at": latest.at if latest else None,
        "invalidated": release.invalidated,
        "checks": [
            {"stage": c.stage, "name": c.name, "ok": c.ok, "detail": c.detail, "at": c.at}
            for c in store.checks(release.id)
        ],
        "findings": [_clean(f) for f in (latest.findings if latest else [])],
        # What the hooks did with the verdicts: a rollback automation's own record of it.
        "hooks": [
            {"hook": a.hook, "verdict": a.verdict, "state": a.state, "attempts": a.attempts,
             "outcome": a.outcome, "at": a.at, "idempotency_key": a.key}
            for a in store.actions(release.id)
        ],
        "signals": latest.signals if latest else [],
    }


# Every key a finding has; a failed smoke or verification check has no figures (null).
_FINDING_KEYS = tuple(f.name for f in fields(Finding))


def _clean(finding: dict[str, Any]) -> dict[str, Any]:
    full = dict.fromkeys(_FINDING_KEYS) | finding
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in full.items()}
