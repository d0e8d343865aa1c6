"""The HTTP server on 127.0.0.1, port 0: routes, status codes, limits, the token, registrations."""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.api import MAX_BODY_BYTES, MonitorServer, serve
from monitor.clock import SimClock
from monitor.errors import MonitorError
from monitor.snapshot import MAX_PENDING_REGISTRATIONS, Registration, Snapshot, SnapshotBox

TOKEN = "s3cret-t0ken-value"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
CLOCK_START = 1_767_225_600.0


def document(service: str, release: str, verdict: str, started_at: float) -> dict[str, Any]:
    return {
        "service": service, "release": release, "baseline_release": None, "verdict": verdict,
        "reason": "", "state": "done", "change_class": "minor", "started_at": started_at,
        "period_seconds": 600.0, "decided_at": started_at + 600, "first_alarm_at": None,
        "evaluated_at": started_at + 600, "invalidated": False, "checks": [],
        "findings": [{"signal": "latency", "detector": "shift", "severity": "major",
                      "effect": 0.4, "lower": float("nan"), "upper": 0.5}],
    }


DOCS = [
    document("checkout", "v2.2", "pass", 1_000.0),
    document("checkout", "v2.3", "rollback", 3_000.0),
    document("search", "v2.3", "hotfix", 2_000.0),
    document("search", "v8", "pending", 4_000.0),
]


def make_box() -> SnapshotBox:
    verdicts = {(d["service"], d["release"]): d for d in DOCS}
    return SnapshotBox(Snapshot(verdicts=verdicts, last_evaluation=4_500.0, evaluations_total=9,
                                services=("checkout", "search", "billing"),
                                older={"checkout": {"v2.1": "pass", "v2.0": ""},
                                       "billing": {"v8": "rollback"}}))


@pytest.fixture(scope="module")
def server() -> Iterator[MonitorServer]:
    running = serve(make_box(), version="9.9.9")
    yield running
    running.shutdown()


@pytest.fixture(scope="module")
def token_box() -> SnapshotBox:
    return make_box()


@pytest.fixture(scope="module")
def token_server(token_box: SnapshotBox) -> Iterator[MonitorServer]:
    running = serve(token_box, version="9.9.9", token=TOKEN, clock=SimClock(CLOCK_START))
    yield running
    running.shutdown()


@pytest.fixture()
def box(token_box: SnapshotBox) -> Iterator[SnapshotBox]:
    """The token server's box, with no registration left over from an earlier test."""
    token_box.take_registrations()
    yield token_box
    token_box.take_registrations()


def call(server: MonitorServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def call_json(server: MonitorServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    status, headers, body = call(server, method, path, **kwargs)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def series(server: MonitorServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, headers, body = call(server, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def raw_exchange(server: MonitorServer, head: bytes) -> bytes:
    """Send only a request head and read the whole answer; fails if the server waits."""
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_url_and_metrics(server: MonitorServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    samples = series(server)
    active = {dict(k)["release"] + "@" + dict(k)["service"]: dict(k)["verdict"]
              for (name, k), v in samples.items() if name == "release_monitor_verdict" and v}
    assert active == {"v2.2@checkout": "pass", "v2.3@checkout": "rollback",
                      "v2.3@search": "hotfix", "v8@search": "pending"}
    assert samples[("release_monitor_build_info", frozenset({("version", "9.9.9")}))] == 1.0
    assert samples[("release_monitor_evaluations_total", frozenset())] == 9


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        ("service=checkout&release=v2.3", 200, ("checkout", "v2.3")),
        ("release=v2.2", 200, ("checkout", "v2.2")),
        # billing's v8 is older than those served, and no less billing's: name the service.
        ("release=v8", 400, "billing, search"),
        ("service=search&release=v8", 200, ("search", "v8")),
        ("release=v2.3", 400, "checkout, search"),
        ("service=checkout", 200, ("checkout", "v2.3")),   # the service's latest release
        ("service=search", 200, ("search", "v8")),
        ("service=nope", 404, "nope"),
        ("", 400, "release"),
        ("release=", 400, "release"),
        ("release=v2.2&release=v2.3", 400, "once"),
        ("release=v9", 404, "v9"),
        ("service=search&release=v2.2", 404, "search"),
        ("service=nope&release=v2.3", 404, "nope"),
        # Known to the store, older than the releases served: gone from here, not unknown.
        ("service=checkout&release=v2.1", 410, "older than the latest 5 this API serves"),
        ("release=v2.1", 410, "older than the latest 5"),
        ("service=search&release=v2.1", 404, "v2.1"),
    ],
)
def test_verdict_lookup(server: MonitorServer, query: str, status: int, expected: Any) -> None:
    got_status, answer = call_json(server, "GET", "/api/v1/verdict?" + query)
    assert got_status == status
    if status == 200:
        assert (answer["service"], answer["release"]) == expected
        assert answer["verdict"] == next(d["verdict"] for d in DOCS
                                         if (d["service"], d["release"]) == expected)
        assert answer["findings"][0]["lower"] is None  # NaN is not JSON
    else:
        assert set(answer) == {"error"} and expected in answer["error"]


def test_releases_newest_first(server: MonitorServer) -> None:
    status, answer = call_json(server, "GET", "/api/v1/releases")
    assert status == 200
    order = [(d["service"], d["release"]) for d in answer["releases"]]
    assert order == [("search", "v8"), ("checkout", "v2.3"), ("search", "v2.3"),
                     ("checkout", "v2.2")]


@pytest.mark.parametrize(
    ("service", "release", "gate", "rollback"),
    [("checkout", "v2.2", 200, 412), ("checkout", "v2.3", 412, 200),
     ("search", "v2.3", 412, 412), ("search", "v8", 412, 412)],
)
def test_gate_and_rollback_codes(server: MonitorServer, service: str, release: str,
                                 gate: int, rollback: int) -> None:
    query = f"?service={service}&release={release}"
    for path, expected in (("/api/v1/gate", gate), ("/api/v1/rollback", rollback)):
        status, answer = call_json(server, "GET", path + query)
        assert status == expected, path
        assert (answer["service"], answer["release"]) == (service, release)


def test_the_gate_stops_a_pass_invalidated_since() -> None:
    found_bad = {**document("checkout", "v2.2", "pass", 1_000.0), "invalidated": True}
    box = SnapshotBox(Snapshot(verdicts={("checkout", "v2.2"): found_bad}, last_evaluation=None,
                               evaluations_total=0, services=("checkout",)))
    running = serve(box, version="9.9.9")
    try:
        status, answer = call_json(running, "GET", "/api/v1/gate?service=checkout&release=v2.2")
    finally:
        running.shutdown()
    assert (status, answer["verdict"], answer["invalidated"]) == (412, "pass", True)


def test_gate_unknown_release_is_404(server: MonitorServer) -> None:
    assert call_json(server, "GET", "/api/v1/gate?release=v0")[0] == 404
    assert call_json(server, "GET", "/api/v1/rollback?release=v2.3")[0] == 400


def test_gate_without_release_or_service_names_both(server: MonitorServer) -> None:
    assert call_json(server, "GET", "/api/v1/gate") == (400, {"error": "give release=, service= or both"})


def test_health(server: MonitorServer) -> None:
    assert call_json(server, "GET", "/healthz") == (
        200, {"status": "ok", "last_evaluation": 4_500.0, "version": "9.9.9"})


def test_unknown_path_and_method(server: MonitorServer) -> None:
    assert call_json(server, "GET", "/api/v1/verdicts")[0] == 404
    assert call_json(server, "GET", "/metrics/")[0] == 404
    status, headers, body = call(server, "DELETE", "/metrics")
    assert (status, headers["Allow"], headers["Content-Type"]) == (405, "GET", "application/json")
    assert call_json(server, "BREW", "/api/v1/rollback")[0] == 405
    assert call_json(server, "PUT", "/api/v1/releases")[0] == 405


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/v1/verdict?release=v2.2"])
def test_head_is_get_without_the_body(server: MonitorServer, path: str) -> None:
    status, headers, body = call(server, "HEAD", path)
    got_status, got_headers, got_body = call(server, "GET", path)
    assert (status, body) == (got_status, b"") and status == 200
    assert headers["Content-Type"] == got_headers["Content-Type"]
    # /metrics is made afresh for each request: its length may differ by a figure.
    assert path == "/metrics" or int(headers["Content-Length"]) == len(got_body)


@pytest.mark.parametrize(
    ("release", "gate", "rollback"), [("v2.2", 200, 412), ("v2.3", 412, 200)],
)
def test_webhook_posts_need_no_token(server: MonitorServer, release: str, gate: int,
                                     rollback: int) -> None:
    # Flagger's webhooks: a POST with a JSON payload and no Authorization header.
    payload = json.dumps({"name": "checkout", "namespace": "prod", "phase": "Progressing"})
    query = f"?service=checkout&release={release}"
    for path, expected in (("/api/v1/gate", gate), ("/api/v1/rollback", rollback)):
        status, answer = call_json(server, "POST", path + query, body=payload.encode(),
                                   headers={"Content-Type": "application/json"})
        assert (status, answer["release"]) == (expected, release), path


def test_webhook_posts_ignore_a_token(token_server: MonitorServer) -> None:
    path = "/api/v1/rollback?service=checkout&release="
    for headers in ({}, AUTHORIZED, {"Authorization": "Bearer wrong"}):
        assert call(token_server, "POST", path + "v2.3", body=b"", headers=headers)[0] == 200
        assert call(token_server, "POST", path + "v2.2", body=b"", headers=headers)[0] == 412


def register(server: MonitorServer, payload: Any, headers: dict[str, str] | None = None,
             ) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call_json(server, "POST", "/api/v1/releases", body=body,
                     headers=AUTHORIZED if headers is None else headers)


def test_registration_is_refused_without_a_configured_token(server: MonitorServer) -> None:
    status, answer = register(server, {"service": "checkout", "version": "v3"})
    assert status == 403 and "token" in answer["error"]
    assert call_json(server, "GET", "/api/v1/releases")[0] == 200


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong", 401), (f"Basic {TOKEN}", 401), (f"Bearer {TOKEN}x", 401),
     (f"Bearer {TOKEN[:-1]}", 401), ("Bearer", 401), (f"Bearer {TOKEN}", 202),
     (f"bearer {TOKEN}", 202)],
)
def test_registration_needs_the_token(token_server: MonitorServer, box: SnapshotBox,
                                      authorization: str | None, status: int) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    payload = json.dumps({"service": "checkout", "version": "v3"}).encode()
    got, reply_headers, body = call(token_server, "POST", "/api/v1/releases", body=payload,
                                     headers=headers)
    assert got == status
    if status == 401:
        assert reply_headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in body.decode() + str(reply_headers)
    assert len(box.take_registrations()) == (1 if status == 202 else 0)


def test_registration_is_queued_for_the_daemon(token_server: MonitorServer, box: SnapshotBox,
                                               caplog: pytest.LogCaptureFixture) -> None:
    # Without "change": minor for a new release, its own class for one registered before.
    with caplog.at_level(logging.INFO, logger="monitor.api"):
        assert register(token_server, {"service": "checkout", "version": "v3"}) == (
            202, {"accepted": True, "service": "checkout", "version": "v3", "change": None})
        assert register(token_server, {"service": "search", "version": "9.0 (rc 1)",
                                       "change": "major"})[0] == 202
    assert [r.getMessage() for r in caplog.records if "over HTTP" in r.getMessage()] == [
        "deploy of checkout v3 (no class given) received over HTTP",
        "deploy of search 9.0 (rc 1) (major change) received over HTTP"]
    assert box.take_registrations() == [
        Registration("checkout", "v3", None, CLOCK_START),
        Registration("search", "9.0 (rc 1)", "major", CLOCK_START),
    ]
    assert box.take_registrations() == []
    # Queued, not applied: the published verdicts are unchanged until the daemon acts.
    status, answer = call_json(token_server, "GET", "/api/v1/releases")
    assert status == 200 and len(answer["releases"]) == len(DOCS)


def test_registration_of_a_judged_release_is_refused(token_server: MonitorServer,
                                                     box: SnapshotBox) -> None:
    status, answer = register(token_server, {"service": "checkout", "version": "v2.3"})
    assert status == 409
    assert answer == {"error": "checkout v2.3 was judged already (rollback); a new deploy "
                               "needs a new version"}
    assert box.take_registrations() == []
    # Older than the releases served, and judged: refused alike (a pipeline's step must not
    # go green on a registration the daemon will refuse).
    assert register(token_server, {"service": "checkout", "version": "v2.1"}) == (
        409, {"error": "checkout v2.1 was judged already (pass); a new deploy needs a new version"})
    assert box.take_registrations() == []
    # Not judged yet (unknown here, or older and still being judged): accepted.
    assert register(token_server, {"service": "checkout", "version": "v2.4"})[0] == 202
    assert register(token_server, {"service": "checkout", "version": "v2.0"})[0] == 202
    assert [r.version for r in box.take_registrations()] == ["v2.4", "v2.0"]


def test_registration_longest_names_are_accepted(token_server: MonitorServer,
                                                 box: SnapshotBox) -> None:
    version = "v" * 200
    assert register(token_server, {"service": "billing", "version": version})[0] == 202
    assert box.take_registrations()[0].version == version


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "JSON"),
        (b"{", "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[1, " * 100_000, "JSON"),  # nested past the parser's recursion limit
        (b'"checkout"', "object"),
        (b"[]", "object"),
        (b"null", "object"),
        (b'{"service": "checkout", "service": "search", "version": "v3"}', "twice"),
        (b'{"service": "checkout", "version": "v3", "chnage": "major"}', "only"),
        (b'{"version": "v3"}', "service is required"),
        (b'{"service": "checkout"}', "version is required"),
        (b'{"service": "checkout", "version": 3}', "version must be a string"),
        (b'{"service": ["checkout"], "version": "v3"}', "service must be a string"),
        (b'{"service": "checkout", "version": ""}', "1 to 200"),
        (('{"service": "checkout", "version": "' + "v" * 201 + '"}').encode(), "1 to 200"),
        (b'{"service": "checkout", "version": "v3\\n"}', "printable"),
        (b'{"service": "checkout", "version": "v3\\u0000"}', "printable"),
        (b'{"service": "checkout", "version": "\\ud800"}', "printable"),
        (b'{"service": "checkout", "version": " v3"}', "printable"),
        (b'{"service": "checkout", "version": "v3", "change": "huge"}', "minor, major"),
        (b'{"service": "checkout", "version": "v3", "change": null}', "minor, major"),
        (b'{"service": "payments", "version": "v3"}', "not configured"),
    ],
)
def test_registration_bad_body_is_400(token_server: MonitorServer, box: SnapshotBox,
                                      body: bytes, reason: str) -> None:
    status, headers, raw = call(token_server, "POST", "/api/v1/releases", body=body,
                                headers=AUTHORIZED)
    answer = json.loads(raw)
    assert (status, set(answer)) == (400, {"error"})
    assert reason in answer["error"]
    assert b"\n" not in raw and len(raw) < 300  # one short line, whatever was sent
    assert box.take_registrations() == []


def test_registration_queue_full_is_503(token_server: MonitorServer, box: SnapshotBox) -> None:
    for number in range(MAX_PENDING_REGISTRATIONS):
        assert box.register(Registration("search", f"v{number}", "minor", 0.0))
    assert not box.register(Registration("search", "one-too-many", "minor", 0.0))
    status, headers, body = call(token_server, "POST", "/api/v1/releases", headers=AUTHORIZED,
                                 body=b'{"service": "checkout", "version": "v4"}')
    assert (status, headers["Retry-After"]) == (503, "5")
    assert "error" in json.loads(body)
    taken = box.take_registrations()
    assert [r.version for r in taken] == [f"v{n}" for n in range(MAX_PENDING_REGISTRATIONS)]
    assert register(token_server, {"service": "checkout", "version": "v4"})[0] == 202


def test_registration_body_at_the_limit(token_server: MonitorServer, box: SnapshotBox) -> None:
    payload = b'{"service": "checkout", "version": "v5"}'
    padded = payload + b" " * (MAX_BODY_BYTES - len(payload))
    assert register(token_server, padded)[0] == 202
    assert box.take_registrations()[0].version == "v5"


def test_registration_body_shorter_than_announced_is_400(token_server: MonitorServer,
                                                         box: SnapshotBox) -> None:
    head = (f"POST /api/v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: 100\r\n\r\n").encode()
    with socket.create_connection((token_server.host, token_server.port), timeout=2) as sock:
        sock.sendall(head + b'{"service": "checkout", "version": "v6"}')
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 400 ") and b"shorter" in answer
    assert box.take_registrations() == []


def test_token_never_logged(token_server: MonitorServer, box: SnapshotBox,
                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="monitor.api"):
        for authorization in (f"Bearer {TOKEN}", f"Bearer {TOKEN[:-1]}"):
            call(token_server, "POST", "/api/v1/releases", headers={"Authorization": authorization},
                 body=b'{"service": "checkout", "version": "v7"}')
    assert caplog.records  # the requests were logged, at debug level
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text
    assert len(box.take_registrations()) == 1


def test_large_body_answers_413_without_being_read(token_server: MonitorServer) -> None:
    two_mib = 2 * 1024 * 1024
    # Only the head is sent: a server that tried to read the body would time out first.
    answer = raw_exchange(token_server, (
        f"POST /api/v1/rollback?release=v2.3 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {two_mib}\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 413 ")
    assert b"Content-Type: application/json" in head
    assert str(MAX_BODY_BYTES).encode() in body
    register_head = raw_exchange(token_server, (
        f"POST /api/v1/releases HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n").encode())
    assert register_head.startswith(b"HTTP/1.0 413 ")
    get = raw_exchange(token_server, f"GET /metrics HTTP/1.1\r\nContent-Length: {two_mib}\r\n"
                                     "\r\n".encode())
    assert get.startswith(b"HTTP/1.0 413 ")


def test_post_without_length_has_no_body_and_chunked_answers_411(
    token_server: MonitorServer,
) -> None:
    # As `curl -X POST` sends it: no Content-Length, so no body (RFC 9112 6.3).
    answer = raw_exchange(token_server, (
        f"POST /api/v1/rollback?service=checkout&release=v2.3 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.0 200 "), answer
    chunked = raw_exchange(token_server, b"POST /api/v1/rollback HTTP/1.1\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.0 411 ")


def test_body_at_the_limit_is_accepted(server: MonitorServer) -> None:
    status, _, _ = call(server, "POST", "/api/v1/rollback?service=checkout&release=v2.3",
                        body=b"x" * MAX_BODY_BYTES)
    assert status == 200


@pytest.mark.parametrize("length", ["-1", "12abc", "١٢", "5, 6"])
def test_malformed_content_length_is_400(server: MonitorServer, length: str) -> None:
    answer = raw_exchange(server, f"GET /healthz HTTP/1.1\r\nContent-Length: {length}\r\n\r\n"
                          .encode())
    assert answer.startswith(b"HTTP/1.0 400 ")


def test_malformed_request_line_answers_json(server: MonitorServer) -> None:
    answer = raw_exchange(server, b"GET /healthz HTTP/9\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 ") and b"application/json" in head
    assert "error" in json.loads(body)


def random_request(rng: np.random.Generator) -> tuple[str, str, bytes | None]:
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PURGE",
               "X" + "".join(rng.choice(list("ABCDEFGHIJ"), size=4))]
    prefixes = ["/", "/metrics", "/api/v1/", "/api/v1/verdict", "/api/v1/gate", "/healthz/",
                "/api/v1/releases", "/api/v1/rollback"]
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789-._~%/=&?")
    tail = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
    method = str(rng.choice(methods))
    body = bytes(rng.integers(0, 256, size=int(rng.integers(0, 64)), dtype=np.uint8))
    return method, str(rng.choice(prefixes)) + tail, body if method == "POST" else None


def test_random_requests_add_no_series(token_server: MonitorServer, box: SnapshotBox) -> None:
    before = series(token_server)
    rng = np.random.default_rng(20240611)
    statuses = []
    for _ in range(1000):
        method, path, body = random_request(rng)
        headers = AUTHORIZED if rng.random() < 0.5 else {}
        statuses.append(call(token_server, method, path, body=body, headers=headers)[0])
    after = series(token_server)
    assert set(after) == set(before)
    counted = sum(v for (name, _), v in after.items()
                  if name == "release_monitor_http_requests_total")
    previous = sum(v for (name, _), v in before.items()
                   if name == "release_monitor_http_requests_total")
    assert counted - previous == 1000 + 1  # the random requests and the first /metrics
    assert all(400 <= s < 500 or s == 200 for s in statuses)
    assert 404 in statuses and 405 in statuses
    assert box.take_registrations() == []  # random bytes never pass as a registration


def test_internal_error_answers_500_without_detail() -> None:
    class BrokenBox(SnapshotBox):
        def get(self) -> Snapshot:
            raise RuntimeError("disk on fire /var/lib/secret")

    with serve(BrokenBox(), version="1") as running:
        status, answer = call_json(running, "GET", "/healthz")
        assert (status, answer) == (500, {"error": "internal error"})


def test_shutdown_closes_the_socket() -> None:
    running = serve(SnapshotBox(), version="1")
    address = (running.host, running.port)
    assert call(running, "GET", "/healthz")[0] == 200
    running.shutdown()
    running.shutdown()  # a second call is harmless
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


def test_port_in_use_is_a_monitor_error(server: MonitorServer) -> None:
    with pytest.raises(MonitorError, match="cannot listen"):
        serve(SnapshotBox(), port=server.port, version="1")


def test_empty_token_is_rejected() -> None:
    with pytest.raises(ValueError, match="token"):
        serve(SnapshotBox(), version="1", token="")
