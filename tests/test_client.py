"""Waiting on a running monitor's verdict over its API, through a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from monitor.api import MonitorServer, serve
from monitor.cli.app import app
from monitor.client import (
    MAX_NESTING,
    UNREACHABLE_GRACE,
    nesting,
    register_remote,
    remote_document,
    wait_remote,
)
from monitor.clock import SimClock
from monitor.errors import MonitorError, Refused, UnknownRelease
from monitor.snapshot import Snapshot, SnapshotBox


def _box(verdict: str, state: str) -> SnapshotBox:
    doc = {"service": "shop", "release": "v2", "verdict": verdict, "state": state,
           "change_class": "minor", "started_at": 0.0, "period_seconds": 900.0}
    return SnapshotBox(Snapshot(verdicts={("shop", "v2"): doc}, services=("shop",)))


class _ScriptedClock(SimClock):
    """Simulated time that runs `at(now)` after every sleep: the world changing meanwhile."""

    def __init__(self, at: Callable[[float], None]) -> None:
        super().__init__(start=0.0)
        self.at = at

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        super().sleep_until(deadline, stop)
        self.at(self.now())
        return True


def test_a_wait_goes_on_through_a_restart_of_the_monitor() -> None:
    servers: list[MonitorServer] = [serve(_box("pending", "watching"), version="t")]
    port = servers[0].port

    def world(now: float) -> None:
        if now == 5.0:                     # the monitor stops for an upgrade...
            servers[-1].shutdown()
        if now == 20.0:                    # ...and is back, on the same port, decided
            servers.append(serve(_box("pass", "done"), port=port, version="t"))

    try:
        document = wait_remote(f"http://127.0.0.1:{port}", "v2", None, _ScriptedClock(world),
                               timeout=3600.0, poll=5.0)
    finally:
        servers[-1].shutdown()
    assert (document["verdict"], document["state"]) == ("pass", "done")


def test_a_wait_gives_up_on_a_monitor_away_longer_than_the_grace() -> None:
    server = serve(_box("pending", "watching"), version="t")
    clock = _ScriptedClock(lambda now: server.shutdown() if now == 5.0 else None)
    with pytest.raises(MonitorError, match=rf"asking for release 'v2'\) \(no answer for "
                       rf"{UNREACHABLE_GRACE:.0f}s\)"):
        wait_remote(f"http://127.0.0.1:{server.port}", "v2", None, clock, timeout=3600.0, poll=5.0)
    assert clock.now() == 5.0 + UNREACHABLE_GRACE


def test_an_unreachable_monitor_is_named_by_its_endpoint() -> None:
    server = serve(_box("pending", "watching"), version="t")
    server.shutdown()
    with pytest.raises(MonitorError) as caught:
        remote_document(f"http://127.0.0.1:{server.port}", "v2", "shop")
    # The release and service are said once, in the clear; nothing is masked as a secret.
    assert str(caught.value).startswith(
        f"GET http://127.0.0.1:{server.port}/api/v1/verdict: cannot connect ("), caught.value
    assert str(caught.value).endswith("(asking for release 'v2')") and "***" not in str(caught.value)


def test_a_registration_with_an_unreachable_monitor_says_why() -> None:
    server = serve(_box("pending", "watching"), version="t")
    server.shutdown()
    with pytest.raises(MonitorError) as caught:
        register_remote(f"http://127.0.0.1:{server.port}", "shop", "v2", None, token="t0k3n")
    assert str(caught.value).startswith(
        f"POST http://127.0.0.1:{server.port}/api/v1/releases: cannot connect ("), caught.value
    assert "t0k3n" not in str(caught.value)


def test_a_refused_request_ends_the_wait_at_once() -> None:
    # The release exists in two services and no service was named: the request's fault.
    doc = {"verdict": "pending", "state": "watching"}
    box = SnapshotBox(Snapshot(verdicts={("shop", "v2"): {**doc, "service": "shop"},
                                         ("cart", "v2"): {**doc, "service": "cart"}},
                               services=("shop", "cart")))
    server = serve(box, version="t")
    clock = SimClock(start=0.0)
    try:
        with pytest.raises(Refused) as caught:
            wait_remote(f"http://127.0.0.1:{server.port}", "v2", None, clock, timeout=3600.0)
        # The API's own words say what to do.
        assert str(caught.value).endswith("/api/v1/verdict: HTTP 400 release 'v2' exists in "
                                          "services cart, shop: add service= (asking for "
                                          "release 'v2')")
    finally:
        server.shutdown()
    assert clock.now() == 0.0


def test_a_release_registered_a_moment_ago_is_waited_for() -> None:
    # `release start --url` is answered 202 and taken up at the daemon's next step; the
    # pipeline's `verdict --url --wait` right after must not call it unknown.
    box = SnapshotBox(Snapshot(services=("shop",)))
    server = serve(box, version="t")

    def world(now: float) -> None:
        if now == 10.0:
            box.publish(_box("pass", "done").get())

    try:
        document = wait_remote(f"http://127.0.0.1:{server.port}", "v2", "shop",
                               _ScriptedClock(world), timeout=3600.0, poll=5.0)
    finally:
        server.shutdown()
    assert document["verdict"] == "pass"


def test_a_release_still_unknown_after_the_grace_is_bad_input_naming_no_password() -> None:
    server = serve(_box("pending", "watching"), version="t")
    clock = SimClock(start=0.0)
    try:
        with pytest.raises(UnknownRelease) as caught:
            wait_remote(f"http://ops:s3cret@127.0.0.1:{server.port}", "v9", None, clock,
                        timeout=3600.0)
    finally:
        server.shutdown()
    assert clock.now() == UNREACHABLE_GRACE
    assert "s3cret" not in str(caught.value)
    assert str(caught.value) == (f"no release 'v9' at http://127.0.0.1:{server.port} (it serves "
                                 "the latest 5 of each service; older ones: monitor verdict --db)")


def test_a_release_older_than_those_served_ends_the_wait_at_once() -> None:
    box = SnapshotBox(Snapshot(verdicts=_box("pass", "done").get().verdicts, services=("shop",),
                               older={"shop": {"v1": "pass"}}))
    server = serve(box, version="t")
    clock = SimClock(start=0.0)
    try:
        with pytest.raises(Refused) as caught:
            wait_remote(f"http://127.0.0.1:{server.port}", "v1", None, clock, timeout=3600.0)
    finally:
        server.shutdown()
    assert clock.now() == 0.0                      # no polling for what cannot come
    assert str(caught.value) == (
        f"release 'v1' is older than the latest 5 of its service that the monitor at "
        f"http://127.0.0.1:{server.port} serves; ask its database: monitor verdict --db")


class _Answers(BaseHTTPRequestHandler):
    """Answers every GET with the server's `body`, 200 and JSON: some other service."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def answers() -> Iterator[Callable[[bytes], str]]:
    """Starts a server that answers `body` to every GET; its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(body: bytes) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
        server.body = body  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"verdict": "pass"}', "service: missing or not a string"),
    (b'{"service": "shop", "release": "v2", "verdict": "maybe", "state": "done"}',
     "unknown verdict 'maybe'"),
    (b'{"service": "shop", "release": "v1", "verdict": "pass", "state": "done"}',
     "it is about 'shop' 'v1'"),
    (b'[{"verdict": "pass"}]', "not an object"),
    (b'{"service": "shop", "release": "v2", "verdict": "pass", "state": "done"}',
     "change_class: missing or not a string"),
    (b'{"service": "shop", "release": "v2", "verdict": "pass", "state": "done", '
     b'"change_class": "minor", "started_at": NaN, "period_seconds": 900}',
     "started_at: missing or not a number"),
    (b'{"service": "shop", "release": "v2", "verdict": "pass", "state": "done", '
     b'"change_class": "minor", "started_at": 0, "period_seconds": 900, "findings": [{}]}',
     "findings: not a list of objects with signal, detector, severity"),
    (b'{"verdict": "' + "pass \xe9".encode("latin-1") + b'"}', "the answer is not JSON"),
    (b'{"started_at": ' + b"9" * 5000 + b"}", "the answer is not JSON"),
])
def test_an_answer_that_is_not_the_verdict_asked_for_is_an_error_never_a_pass(
        answers: Callable[[bytes], str], body: bytes, problem: str) -> None:
    url = answers(body)
    with pytest.raises(MonitorError) as caught:
        remote_document(url, "v2", None)
    assert problem in str(caught.value)
    result = CliRunner().invoke(app, ["verdict", "--url", url, "--release", "v2", "--json"])
    assert result.exit_code == 1 and result.stdout == "", result.output


def test_an_answer_nested_deeper_than_a_verdict_is_refused_before_it_is_parsed(
        answers: Callable[[bytes], str]) -> None:
    # 100,000 levels would make the JSON parser recurse past Python's limit; brackets
    # inside strings do not count.
    deep = answers(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(MonitorError) as caught:
        remote_document(deep, "v2", None)
    assert str(caught.value).endswith(
        "the answer is not a verdict of release 'v2' (nested 100000 deep)")
    assert nesting(b'{"reason": "' + b"[" * 100 + b'", "findings": [{"at": 1}]}') == 3
    shallow = answers(b'{"a": ' * MAX_NESTING + b"1" + b"}" * MAX_NESTING)
    with pytest.raises(MonitorError, match=r"\(service: missing or not a string\)$"):
        remote_document(shallow, "v2", None)
