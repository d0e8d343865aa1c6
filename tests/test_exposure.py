"""What the monitor exposes: loopback listeners by default, no state change without a token.

Every listener binds 127.0.0.1 unless told otherwise: the policy's default address,
`monitor run`, `monitor demo --serve`, `monitor.api.serve` and the demo service, and a
scan of the package source finds no listener that binds every interface by default.
Changing state over HTTP is off without a token, the token is compared in constant time,
and bodies over 1 MiB are refused. That random paths and methods add no series to
`/metrics` is checked in `tests/test_api.py::test_random_requests_add_no_series`.
"""

from __future__ import annotations

import ast
import hmac
import http.client
import inspect
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import monitor.api
from monitor.api import MAX_BODY_BYTES, SOCKET_TIMEOUT_SECONDS, MonitorServer, serve
from monitor.cli.app import app
from monitor.clock import SimClock
from monitor.demo_service import SimulatedService
from monitor.errors import ConfigError
from monitor.policy import MonitorConfig, parse_policy
from monitor.snapshot import Snapshot, SnapshotBox

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("monitor", "detectors", "baselines")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EVERY_INTERFACE = {"", "0.0.0.0", "::", "[::]"}
TOKEN = "correct-horse-battery-staple"
ADDRESS_NAMES = {"host", "addr", "address", "bind", "listen", "listen_host", "bind_host"}
SERVER_CALLS = {"HTTPServer", "ThreadingHTTPServer", "TCPServer", "ThreadingTCPServer",
                "WSGIServer", "bind", "create_server"}
PROMETHEUS_SERVERS = {"start_http_server", "start_wsgi_server"}  # their addr defaults to 0.0.0.0


class _Refused(Exception):
    """Raised by a stand-in `serve` once it has seen the address it was asked to bind."""


# -- listeners ---------------------------------------------------------------------------------


SERVICE = '[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics"\n'


def test_the_policy_listens_on_loopback_by_default() -> None:
    config = parse_policy(SERVICE)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9847)
    assert MonitorConfig(path="x").listen_host == "127.0.0.1"


@pytest.mark.parametrize("listen", ["[]:9847", ":9847", "9847"])
def test_a_listen_address_without_a_host_is_refused(listen: str) -> None:
    # An empty host would bind every interface.
    with pytest.raises(ConfigError, match="monitor.listen"):
        parse_policy(f'[monitor]\nlisten = "{listen}"\n')


def test_a_configured_address_is_kept() -> None:
    config = parse_policy('[monitor]\nlisten = "[::1]:9900"\n' + SERVICE)
    assert (config.listen_host, config.listen_port) == ("::1", 9900)


def test_serve_binds_loopback_by_default() -> None:
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    server = serve(SnapshotBox(), version="test")
    try:
        assert server.host == "127.0.0.1"
    finally:
        server.shutdown()


def _record_host(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace `monitor.api.serve` with one that records its host and stops the command."""
    hosts: list[str] = []

    def refuse(box: SnapshotBox, *, host: str = "127.0.0.1", **kwargs: Any) -> MonitorServer:
        hosts.append(host)
        raise _Refused

    monkeypatch.setattr(monitor.api, "serve", refuse)
    return hosts


def test_monitor_run_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[services.shop]\n[[services.shop.targets]]\nurl = "http://127.0.0.1:1/m"\n')
    hosts = _record_host(monkeypatch)
    result = CliRunner().invoke(app, ["run", "--config", str(policy), "--db",
                                      str(tmp_path / "m.db")])
    assert isinstance(result.exception, _Refused), result.output
    assert hosts == ["127.0.0.1"]


def test_monitor_demo_serve_binds_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.demo.run_demo", lambda *args, **kwargs: [])
    hosts = _record_host(monkeypatch)
    result = CliRunner().invoke(app, ["demo", "--serve", "--port", "0"])
    assert isinstance(result.exception, _Refused), result.output
    assert hosts == ["127.0.0.1"]


def test_the_demo_service_binds_loopback_by_default() -> None:
    assert inspect.signature(SimulatedService.start).parameters["host"].default == "127.0.0.1"
    with SimulatedService(SimClock(), seed=1) as service:
        assert service.url.startswith("http://127.0.0.1:")


# -- the source scan ---------------------------------------------------------------------------


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _default_problems(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[str]:
    """Address parameters whose default is not a loopback address."""
    arguments = node.args
    positional = arguments.posonlyargs + arguments.args
    pairs = list(zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults,
                     strict=True))
    pairs += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d]
    for argument, default in pairs:
        value = _literal(default)
        if argument.arg in ADDRESS_NAMES and value is not None and value not in LOOPBACK:
            yield f"{node.name}({argument.arg}={value!r})"


def _call_problems(node: ast.Call) -> Iterator[str]:
    """Servers bound to a literal address of every interface, or left to a wide default."""
    name = _callee(node)
    if name in SERVER_CALLS and node.args and isinstance(node.args[0], ast.Tuple):
        host = _literal(node.args[0].elts[0]) if node.args[0].elts else None
        if host is not None and host not in LOOPBACK:
            yield f"{name}(({host!r}, ...))"
    if name in PROMETHEUS_SERVERS:
        addr = next((k.value for k in node.keywords if k.arg == "addr"), None)
        if addr is None or (_literal(addr) is not None and _literal(addr) not in LOOPBACK):
            yield f"{name}(...) without a loopback addr="


def listener_problems(source: str) -> list[str]:
    """Everything in `source` that would listen beyond loopback by default."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and node.value in EVERY_INTERFACE - {""}:
            problems.append(f"literal {node.value!r}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            problems.extend(_default_problems(node))
        elif isinstance(node, ast.Call):
            problems.extend(_call_problems(node))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = _literal(node.value)
            if node.target.id in ADDRESS_NAMES and value is not None and value not in LOOPBACK:
                problems.append(f"{node.target.id} = {value!r}")
    return problems


@pytest.mark.parametrize("source", [
    "def serve(box, host='0.0.0.0'): ...",
    "def serve(box, *, host=''): ...",
    "class C:\n    listen_host: str = ''\n",
    "server = ThreadingHTTPServer(('', 8080), Handler)",
    "sock.bind(('0.0.0.0', 0))",
    "start_http_server(9100, registry=registry)",
    "ADDRESS = '::'",
])
def test_the_scan_finds_wide_listeners(source: str) -> None:
    assert listener_problems(source) != []


@pytest.mark.parametrize("source", [
    "def serve(box, host='127.0.0.1'): ...",
    "server = ThreadingHTTPServer((host, port), Handler)",
    "start_http_server(0, addr='127.0.0.1', registry=registry)",
    "greeting = ''",
])
def test_the_scan_passes_loopback_listeners(source: str) -> None:
    assert listener_problems(source) == []


def test_no_listener_in_the_package_binds_every_interface_by_default() -> None:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 20  # the scan really read the package
    found = {str(path.relative_to(ROOT)): listener_problems(path.read_text(encoding="utf-8"))
             for path in files}
    assert {path: problems for path, problems in found.items() if problems} == {}


# -- state-changing requests -------------------------------------------------------------------


@pytest.fixture()
def box() -> SnapshotBox:
    return SnapshotBox(Snapshot(services=("checkout",)))


@pytest.fixture()
def open_server(box: SnapshotBox) -> Iterator[MonitorServer]:
    """A server started without a token: reading only."""
    running = serve(box, version="test")
    yield running
    running.shutdown()


@pytest.fixture()
def token_server(box: SnapshotBox) -> Iterator[MonitorServer]:
    running = serve(box, version="test", token=TOKEN)
    yield running
    running.shutdown()


def _call(server: MonitorServer, method: str, path: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


REGISTRATION = json.dumps({"service": "checkout", "version": "v9"}).encode()


def _state_changing_requests() -> list[tuple[str, str]]:
    return [(path, method) for path, route in monitor.api._ROUTES.items()
            for method, action in route.actions.items() if action.changes_state]


def test_every_state_changing_request_is_refused_without_a_token(
        open_server: MonitorServer, box: SnapshotBox) -> None:
    requests = _state_changing_requests()
    assert ("/api/v1/releases", "POST") in requests
    for path, method in requests:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            assert _call(open_server, method, path, REGISTRATION, headers) == 403
    assert box.take_registrations() == []


def test_the_token_is_compared_in_constant_time(token_server: MonitorServer, box: SnapshotBox,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return constant_time(given, expected)

    monkeypatch.setattr(monitor.api.hmac, "compare_digest", spy)
    same_length = ["x" * len(TOKEN), TOKEN[:-1] + "!", "!" + TOKEN[1:]]
    for wrong in same_length:
        assert _call(token_server, "POST", "/api/v1/releases", REGISTRATION,
                     {"Authorization": f"Bearer {wrong}"}) == 401
    assert box.take_registrations() == []
    assert compared == [(wrong.encode(), TOKEN.encode()) for wrong in same_length]
    assert _call(token_server, "POST", "/api/v1/releases", REGISTRATION,
                 {"Authorization": f"Bearer {TOKEN}"}) == 202
    assert len(box.take_registrations()) == 1


def _head_only(server: MonitorServer, head: str) -> bytes:
    """Send a request head alone and read the answer: a server reading the body would stall."""
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(head.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_over_one_mebibyte_is_refused_even_with_the_token(
        token_server: MonitorServer, box: SnapshotBox) -> None:
    assert MAX_BODY_BYTES == 1024 * 1024
    answer = _head_only(token_server, f"POST /api/v1/releases HTTP/1.1\r\nHost: x\r\n"
                                      f"Authorization: Bearer {TOKEN}\r\n"
                                      f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 413 ")
    assert box.take_registrations() == []


def test_connections_past_the_cap_get_503_at_once_and_the_server_recovers() -> None:
    with serve(SnapshotBox(), version="t", max_connections=4) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
        try:
            # Four clients that connect and say nothing hold every slot...
            assert server.wait_for_connections(lambda n: n == 4, timeout=5)
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("GET", "/healthz")
            busy = connection.getresponse()
            assert busy.status == 503 and busy.getheader("Retry-After") == "1"
            connection.close()
        finally:
            for sock in idle:
                sock.close()
        # ...and once they hang up, the server answers again.
        assert server.wait_for_connections(lambda n: n == 0, timeout=5)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
        connection.close()


def test_a_request_not_finished_within_the_deadline_loses_its_connection() -> None:
    # A client that sends a byte now and then is never idle for the socket timeout; the
    # deadline on the whole exchange frees its slot all the same. Here the client stops
    # short of the end of its headers, and the deadline (0.5 s) comes well before the
    # socket timeout would.
    assert SOCKET_TIMEOUT_SECONDS >= 5
    with serve(SnapshotBox(), version="t", request_deadline=0.5) as server:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert server.wait_for_connections(lambda n: n == 1, timeout=5)
            answer = b""
            while chunk := client.recv(65536):   # until the server closes it
                answer += chunk
        assert time.monotonic() - started < SOCKET_TIMEOUT_SECONDS
        assert not answer.startswith(b"HTTP/1.1 200")
        assert server.wait_for_connections(lambda n: n == 0, timeout=5)


def test_a_burst_of_connections_gets_an_answer_each() -> None:
    # More clients at once than socketserver's default backlog of 5, and than the cap:
    # each is served or told 503, none is dropped without an answer.
    with serve(SnapshotBox(), version="t", max_connections=4) as server:
        burst = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
        try:
            for sock in burst:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            statuses = []
            for sock in burst:
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                statuses.append(answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else answer[:20])
        finally:
            for sock in burst:
                sock.close()
    assert set(statuses) <= {b"200", b"503"}, statuses
    assert b"200" in statuses
