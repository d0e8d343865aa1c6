"""Asking a running monitor for a verdict over its JSON API (for pipelines without the DB)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import requests

from monitor.clock import Clock
from monitor.errors import MonitorError, Refused, UnknownRelease
from monitor.fetch import bounded_request
from monitor.findings import HOTFIX, ROLLBACK
from monitor.redact import printable, redact_url
from monitor.snapshot import RECENT_RELEASES
from monitor.urls import url_problem
from monitor.verdicts import EXIT_CODES, UNKNOWN_GRACE

_LIMIT = 8 * 1024 * 1024
POLL_SECONDS = 5.0
UNREACHABLE_GRACE = UNKNOWN_GRACE


def remote_document(url: str, release: str, service: str | None, *,
                    timeout: float = 10.0) -> dict[str, Any]:
    """GET /api/v1/verdict from the monitor at `url`; errors are one clear line."""
    params = {"release": release, **({"service": service} if service else {})}
    endpoint = f"{_base(url)}/api/v1/verdict"
    # Named without its query: release and service are no secrets, and are said anyway.
    where = f"GET {redact_url(endpoint)}"
    try:
        with requests.Session() as session:
            answer, body = bounded_request(
                session, requests.Request("GET", endpoint, params=params), where=where,
                timeout=timeout, max_bytes=_LIMIT, any_status=True)
    except MonitorError as exc:   # no answer (the URL has its query hidden)
        raise MonitorError(f"{exc} (asking for release {release!r})") from None
    if not 200 <= answer.status_code < 300:
        shown = redact_url(url)
        if answer.status_code == 410:
            # Known, and no wait will bring it back: the API serves only the latest ones.
            raise Refused(f"release {release!r} is older than the latest {RECENT_RELEASES} of "
                          f"its service that the monitor at {shown} serves; ask its database: "
                          "monitor verdict --db")
        if answer.status_code == 404:
            raise UnknownRelease(
                f"no release {release!r} at {shown} (it serves the latest {RECENT_RELEASES} "
                "of each service; older ones: monitor verdict --db)")
        # A 4xx is the request's fault (two services have the release, say): bad input.
        error = Refused if 400 <= answer.status_code < 500 else MonitorError
        detail = _error_detail(body) or answer.reason or ""
        raise error(f"{where}: HTTP {answer.status_code} {detail}".rstrip()
                    + f" (asking for release {release!r})")
    depth = nesting(body)
    if depth > MAX_NESTING:
        # Refused before parsing: the parser would recurse that deep, and a verdict never is.
        raise MonitorError(f"{redact_url(url)}: the answer is not a verdict of release "
                           f"{release!r} (nested {depth} deep)")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, a number of 5,000 digits
        raise MonitorError(f"{redact_url(url)}: the answer is not JSON") from None
    problem = _not_a_verdict(document, release, service)
    if problem:
        # Another service's JSON at a mistyped URL must never read as a pass.
        raise MonitorError(f"{redact_url(url)}: the answer is not a verdict of release "
                           f"{release!r} ({problem})")
    return document


# A verdict document nests a few levels (findings, their figures); anything far deeper is
# not one, and would only make the JSON parser recurse.
MAX_NESTING = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting(body: bytes) -> int:
    """How deep a JSON text's arrays and objects nest, counted without parsing it.

    >>> nesting(b'{"a": [1, {"b": "[[[["}]}')
    3
    """
    codes = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    return int(np.max(np.cumsum(opens.astype(np.int64) - closes), initial=0))


# What a verdict document must have to be taken for one...
_DOCUMENT_KEYS = ("service", "release", "verdict", "state")
# ...and to be shown: its other texts, numbers, and lists with each item's texts.
_SHOWN_TEXTS = ("change_class",)
_SHOWN_NUMBERS = ("started_at", "period_seconds")
_SHOWN_LISTS = {"checks": ("stage", "name", "detail"), "hooks": ("hook", "verdict", "state"),
                "findings": ("signal", "detector", "severity"), "signals": ("signal",)}


def _not_a_verdict(document: Any, release: str, service: str | None) -> str:
    """What makes the API's answer not the verdict document asked for ("" when it is)."""
    if not isinstance(document, dict):
        return "not an object"
    for key in _DOCUMENT_KEYS:
        if not isinstance(document.get(key), str):
            return f"{key}: missing or not a string"
    if document["verdict"] not in EXIT_CODES:
        return f"unknown verdict {document['verdict'][:40]!r}"
    if document["release"] != release or service is not None and document["service"] != service:
        return f"it is about {document['service'][:40]!r} {document['release'][:40]!r}"
    for key in _SHOWN_TEXTS:
        if not isinstance(document.get(key), str):
            return f"{key}: missing or not a string"
    for key in _SHOWN_NUMBERS:
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{key}: missing or not a number"
    for key, texts in _SHOWN_LISTS.items():
        items = document.get(key, [])
        if not isinstance(items, list) or not all(
                isinstance(item, dict) and all(isinstance(item.get(t), str) for t in texts)
                for item in items):
            return f"{key}: not a list of objects with {', '.join(texts)}"
    return ""


def register_remote(url: str, service: str, version: str, change_class: str | None, *,
                    token: str, timeout: float = 10.0) -> None:
    """POST /api/v1/releases: register a deploy with a running monitor."""
    where = f"{_base(url)}/api/v1/releases"
    fields = {"service": service, "version": version,
              **({"change": change_class} if change_class else {})}
    request = requests.Request("POST", where, json=fields,
                               headers={"Authorization": f"Bearer {token}"})
    with requests.Session() as session:
        answer, body = bounded_request(session, request, where=f"POST {redact_url(where)}",
                                       timeout=timeout, max_bytes=_LIMIT, any_status=True)
    if answer.status_code != 202:
        refused = Refused if 400 <= answer.status_code < 500 else MonitorError
        raise refused(f"{redact_url(where)}: HTTP {answer.status_code} "
                      f"{_error_detail(body)}".rstrip())


def _error_detail(body: bytes) -> str:
    """What the monitor's API says went wrong (its JSON `error`), on one short line."""
    try:
        detail = json.loads(body).get("error", "")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return printable(str(detail), limit=200)


def _base(url: str) -> str:
    """The monitor's base URL; ValueError (bad input) unless it is http(s) with a host."""
    if url_problem(url):
        # Credentials or a query may hold secrets: those are hidden, the rest shown as given.
        shown = redact_url(url) if "@" in url or "?" in url else url[:80]
        raise ValueError(f"--url: {shown!r} is not an http(s) URL with a host and a valid "
                         "port (e.g. http://127.0.0.1:9847)")
    return url.rstrip("/")


def wait_remote(url: str, release: str, service: str | None, clock: Clock, *,
                timeout: float, poll: float = POLL_SECONDS) -> dict[str, Any]:
    """Poll the API until the release is done or has a rollback or hotfix verdict.

    A monitor that restarts (an upgrade, a reschedule) is away for seconds, and a deploy
    registered over the API a moment ago is known once the daemon has taken it up, so
    polling goes on through failed requests and an unknown release for up to
    UNREACHABLE_GRACE. An answer that refuses the request (two services have the release,
    say) ends the wait at once, as does a failure when the wait is over.
    """
    deadline = clock.now() + timeout
    document: dict[str, Any] | None = None
    away_since: float | None = None
    while True:
        try:
            document = remote_document(url, release, service)
            away_since = None
            if document.get("state") == "done" or document["verdict"] in (ROLLBACK, HOTFIX):
                return document
        except Refused:
            raise
        except MonitorError as exc:
            away_since = clock.now() if away_since is None else away_since
            away = clock.now() - away_since
            if away >= UNREACHABLE_GRACE or clock.now() >= deadline:
                if isinstance(exc, UnknownRelease):
                    raise  # still unknown: a wrong name (bad input), not a slow daemon
                raise MonitorError(f"{exc} (no answer for {away:.0f}s)") from None
        if clock.now() >= deadline and away_since is None and document is not None:
            return document
        clock.sleep_until(min(clock.now() + poll, deadline))
