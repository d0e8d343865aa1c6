"""The monitor's HTTP server: `/metrics`, the JSON verdict API, gate and rollback webhooks.

Every answer is built from the latest `Snapshot`; no request reaches SQLite. The gate and
rollback endpoints speak the webhook conventions of Flagger and Argo Rollouts: a 2xx answer
means "go" (gate) or "roll back" (rollback), anything else means "not now".

Each route says, per method, whether it changes state. Reading never needs a token: the
gate and rollback questions accept GET and POST, since Flagger's webhooks are POSTs that
carry no Authorization header. The one state-changing request, `POST /api/v1/releases`
(register a deploy, like `monitor release start`), needs the bearer token the server was
started with and is refused with 403 when there is none. It does not write to SQLite
either: it queues a `Registration` in the `SnapshotBox` for the daemon thread.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest

from monitor.clock import Clock, WallClock
from monitor.deadlines import Watchdog
from monitor.errors import AmbiguousRelease, MonitorError, OlderRelease, UnknownRelease
from monitor.exporter import RequestCounter, build_registry
from monitor.findings import PASS, ROLLBACK, json_safe
from monitor.names import name_problem
from monitor.policy import CHANGE_CLASSES
from monitor.snapshot import RECENT_RELEASES, Registration, Snapshot, SnapshotBox

MAX_BODY_BYTES = 1 << 20
SOCKET_TIMEOUT_SECONDS = 5.0
# From waiting for a request to its answer's last byte: a client that sends (or reads) a
# byte now and then is never idle for the socket timeout, and would hold its thread.
REQUEST_DEADLINE_SECONDS = 15.0
# Connections served at once: each holds a thread until it ends or times out, so a flood
# of idle or slow clients must not grow threads without end. Beyond this, 503 at once.
MAX_CONNECTIONS = 64
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n")
JSON_TYPE = "application/json"
# Our names are all legacy-valid, so generate_latest's output is text format 0.0.4.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

logger = logging.getLogger(__name__)

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_MAX_QUERY_FIELDS = 16
_REGISTRATION_FIELDS = frozenset({"service", "version", "change"})
_RETRY_SECONDS = "5"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, built before anything is written to the socket."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Context:
    """What every request handler may read; the token stays out of any repr."""

    box: SnapshotBox
    registry: CollectorRegistry
    requests: RequestCounter
    version: str
    clock: Clock
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Request:
    """What an answer may use from the request: its query parameters and its body."""

    query: Mapping[str, str]
    body: bytes


class BadRequest(MonitorError):
    """The query string or the body is malformed or incomplete."""


class _DuplicateField(ValueError):
    """A JSON object names the same field twice."""


class MonitorServer:
    """A running HTTP server; `shutdown()` stops it and closes its socket."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._stopped = False

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def registry(self) -> CollectorRegistry:
        return self._httpd.context.registry

    def wait_for_connections(self, condition: Callable[[int], bool], timeout: float) -> bool:
        """Wait until the number of open connections meets `condition` (False on timeout)."""
        return self._httpd.wait_for_connections(condition, timeout)

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and wait for the server thread."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MonitorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def serve(
    box: SnapshotBox,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    version: str,
    token: str | None = None,
    clock: Clock | None = None,
    max_connections: int = MAX_CONNECTIONS,
    request_deadline: float = REQUEST_DEADLINE_SECONDS,
) -> MonitorServer:
    """Serve `/metrics` and the JSON API for `box` from a background thread.

    Port 0 picks a free port; read it back from `.port`. At most `max_connections` are
    served at once; more get 503 at once. A connection is closed when a request (waiting
    for it included) is not answered within `request_deadline` seconds. Reading (every GET, and the POST
    webhooks of `/api/v1/gate` and `/api/v1/rollback`) needs no token. Registering a
    deploy with `POST /api/v1/releases` needs `token` and an `Authorization: Bearer
    <token>` header; without a token it is refused with 403. Accepted registrations wait
    in `box.take_registrations()`, stamped with `clock` (the wall clock by default).

    Example:
        >>> import requests
        >>> server = serve(SnapshotBox(), version="0.1.0")
        >>> requests.get(server.url + "/healthz", timeout=5).json()["status"]
        'ok'
        >>> server.shutdown()
    """
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    requests = RequestCounter()
    registry = build_registry(box, version=version, requests=requests)
    context = _Context(box, registry, requests, version, clock or WallClock(), token)
    server_class = _HTTPServer6 if ":" in host else _HTTPServer
    try:
        httpd = server_class((host, port), context, max_connections, request_deadline)
    except OSError as error:
        raise MonitorError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name="monitor-http", daemon=True)
    thread.start()
    return MonitorServer(httpd, thread)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Shut down at once; a slow client's thread ends by itself within the socket timeout.
    block_on_close = False
    # The kernel's queue of connections not yet accepted (socketserver's default is 5): a
    # burst of pipeline polls must reach process_request, which answers the excess with
    # 503, rather than be dropped unanswered.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], context: _Context,
                 max_connections: int = MAX_CONNECTIONS,
                 request_deadline: float = REQUEST_DEADLINE_SECONDS) -> None:
        self.context = context
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self.open_connections = 0
        self._connections = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections:
            busy = self.open_connections >= self.max_connections
            if not busy:
                self.open_connections += 1
                self._connections.notify_all()
        if busy:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._closed()

    def _closed(self) -> None:
        with self._connections:
            self.open_connections -= 1
            self._connections.notify_all()

    def _refuse(self, request: socket.socket) -> None:
        """503 without a thread, and without waiting on a client that does not read."""
        try:
            request.setblocking(False)
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def wait_for_connections(self, condition: Callable[[int], bool], timeout: float) -> bool:
        with self._connections:
            return self._connections.wait_for(lambda: condition(self.open_connections), timeout)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN, which can hang on bad DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine; the default prints a traceback.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    disable_nagle_algorithm = True
    timeout = SOCKET_TIMEOUT_SECONDS
    server_version = "release-monitor"
    sys_version = ""
    endpoint = "other"

    def handle_one_request(self) -> None:
        """Like the standard library's, but every method reaches `_dispatch` (405, not 501),
        and the whole exchange is held to the server's request deadline."""
        deadline = time.monotonic() + self.server.request_deadline
        watchdog = Watchdog(lambda: self.connection, deadline)
        try:
            self._handle_one_request()
        except OSError:
            if not watchdog.fired.is_set():
                raise
        finally:
            watchdog.cancel()
        if watchdog.fired.is_set():
            self.close_connection = True   # its socket was shut down at the deadline

    def _handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._dispatch()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found while parsing the request line also answer in JSON."""
        self.close_connection = True
        # A request line too broken to name its version still gets a status line.
        self.request_version = "HTTP/1.0"
        self._send(_error(code, message or self.responses.get(code, ("error",))[0]))

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        try:
            reply = self._route()
        except Exception:
            logger.exception("internal error answering %s", self.endpoint)
            reply = _error(500, "internal error")
        self._send(reply)

    def _route(self) -> Reply:
        url = urlsplit(self.path)
        route = _ROUTES.get(url.path)
        self.endpoint = route.endpoint if route else "other"
        # Read (or refuse) the body first, even for a request answered with an error, so
        # the connection stays in step.
        body = self._read_body()
        if isinstance(body, Reply):
            return body
        if route is None:
            return _error(404, "no such endpoint")
        # HEAD is GET without the body (`_send` leaves it out): a load balancer's check.
        action = route.actions.get("GET" if self.command == "HEAD" else self.command)
        if action is None:
            allow = ", ".join(sorted(route.actions))
            return _error(405, f"use {allow}", headers=(("Allow", allow),))
        if action.changes_state:
            problem = self._authorize()
            if problem is not None:
                return problem
        try:
            return action.answer(self.server.context, _Request(_parse_query(url.query), body))
        except OlderRelease as error:
            return _error(410, str(error))
        except UnknownRelease as error:
            return _error(404, str(error))
        except (AmbiguousRelease, BadRequest) as error:
            return _error(400, str(error))

    def _read_body(self) -> bytes | Reply:
        """The body, at most MAX_BODY_BYTES; a large or unmeasured one is refused unread.

        Without Content-Length or Transfer-Encoding a request has no body (RFC 9112 6.3).
        """
        lengths = set(self.headers.get_all("Content-Length") or [])
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            return _error(411, f"send a Content-Length of at most {MAX_BODY_BYTES} bytes "
                               "instead of Transfer-Encoding")
        if not lengths:
            return b""
        length = lengths.pop().strip()
        if lengths or not _CONTENT_LENGTH.fullmatch(length):
            self.close_connection = True
            return _error(400, "bad Content-Length")
        expected = int(length)
        if expected > MAX_BODY_BYTES:
            self.close_connection = True
            return _error(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(expected)
        if len(body) < expected:
            self.close_connection = True
            return _error(400, "the body is shorter than its Content-Length")
        return body

    def _authorize(self) -> Reply | None:
        """None when the request carries the bearer token, else the refusal to send."""
        token = self.server.context.token
        if token is None:
            return _error(403, "changing state over HTTP is disabled: start the monitor "
                               "with an API token (the variable its policy's "
                               "monitor.api_token_env names)")
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        given = credentials.strip().encode("latin-1", "replace")
        if scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode("utf-8")):
            return None
        challenge = ("WWW-Authenticate", 'Bearer realm="release-monitor"')
        return _error(401, "a valid bearer token is required", headers=(challenge,))

    def _send(self, reply: Reply) -> None:
        self.server.context.requests.count(self.endpoint, reply.status)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    body = json.dumps(json_safe(payload), allow_nan=False, default=str)
    return Reply(status, body.encode("utf-8"), JSON_TYPE, headers)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return _json(status, {"error": message}, headers)


def _parse_query(query: str) -> dict[str, str]:
    """One value per parameter; repeating a parameter is an error, not a guess."""
    try:
        fields = parse_qs(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        raise BadRequest("too many query parameters") from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        raise BadRequest(f"give each parameter once: {', '.join(repeated)}")
    return {name: values[0] for name, values in fields.items()}


def find_document(snapshot: Snapshot, query: Mapping[str, str]) -> Mapping[str, Any]:
    """The verdict document a query names; `service` may be left out when it is unique.

    With `service` and no `release`, the service's latest release: what a Flagger webhook,
    whose URL cannot name each new version, asks about.

    Raises BadRequest without either, UnknownRelease when nothing matches and
    AmbiguousRelease when several services have the release.
    """
    release = query.get("release", "")
    service = query.get("service", "")
    if not release and service:
        return _latest(snapshot, service)
    if not release:
        raise BadRequest("give release=, service= or both")
    if not service:
        services = snapshot.services_with(release)
        # A release older than those served counts too: it is no less that service's.
        named = sorted({*services, *snapshot.older_in(release)})
        if len(named) > 1:
            raise AmbiguousRelease(
                f"release {release!r} exists in services {', '.join(named)}: add service="
            )
        service = services[0] if services else ""
    document = snapshot.verdict(service, release)
    if document is None:
        where = f" of service {service!r}" if service else ""
        if release in snapshot.older.get(service, ()) or not service and snapshot.older_in(release):
            raise OlderRelease(f"release {release!r}{where} is older than the latest "
                               f"{RECENT_RELEASES} this API serves; its database has it")
        raise UnknownRelease(f"no release {release!r}{where} among the latest "
                             f"{RECENT_RELEASES} of each service")
    return document


def _latest(snapshot: Snapshot, service: str) -> Mapping[str, Any]:
    documents = [doc for (name, _), doc in snapshot.verdicts.items() if name == service]
    if not documents:
        raise UnknownRelease(f"no release of service {service!r}")
    return min(documents, key=_newest_first)


def _answer_metrics(context: _Context, request: _Request) -> Reply:
    return Reply(200, generate_latest(context.registry), METRICS_TYPE)


def _answer_verdict(context: _Context, request: _Request) -> Reply:
    return _json(200, find_document(context.box.get(), request.query))


def _answer_releases(context: _Context, request: _Request) -> Reply:
    documents = sorted(context.box.get().verdicts.values(), key=_newest_first)
    return _json(200, {"releases": documents})


def _newest_first(document: Mapping[str, Any]) -> tuple[float, str, str]:
    started = document.get("started_at")
    started = started if isinstance(started, int | float) and math.isfinite(started) else 0.0
    return (-started, str(document.get("service")), str(document.get("release")))


def _answer_gate(context: _Context, request: _Request) -> Reply:
    document = find_document(context.box.get(), request.query)
    # A release found bad after its pass (invalidated) is no longer one to let through.
    go = document.get("verdict") == PASS and not document.get("invalidated")
    return _json(200 if go else 412, document)


def _answer_rollback(context: _Context, request: _Request) -> Reply:
    document = find_document(context.box.get(), request.query)
    return _json(200 if document.get("verdict") == ROLLBACK else 412, document)


def _answer_health(context: _Context, request: _Request) -> Reply:
    """200 while the monitor works; 503 while its store fails (a full disk, say), when
    what it scrapes is lost and nothing is judged."""
    snapshot = context.box.get()
    health = {"status": "ok", "last_evaluation": snapshot.last_evaluation,
              "version": context.version}
    if snapshot.store_error:
        return _json(503, {**health, "status": "store failing", "error": snapshot.store_error})
    return _json(200, health)


def _answer_register(context: _Context, request: _Request) -> Reply:
    snapshot = context.box.get()
    registration = parse_registration(request.body, snapshot.services,
                                      received_at=context.clock.now())
    known = snapshot.verdict(registration.service, registration.version)
    judged = (known.get("verdict") if known is not None and known.get("state") == "done"
              else snapshot.older.get(registration.service, {}).get(registration.version))
    if judged:
        return _error(409, f"{registration.service} {registration.version} was judged already "
                           f"({judged}); a new deploy needs a new version")
    if not context.box.register(registration):
        why = ("the monitor is stopping; retry once it is back" if context.box.closed
               else "too many registrations are waiting; retry shortly")
        return _error(503, why, headers=(("Retry-After", _RETRY_SECONDS),))
    change = f"{registration.change_class} change" if registration.change_class else "no class given"
    logger.info("deploy of %s %s (%s) received over HTTP", registration.service,
                registration.version, change)
    return _json(202, {"accepted": True, "service": registration.service,
                       "version": registration.version, "change": registration.change_class})


def parse_registration(body: bytes, services: Collection[str], *,
                       received_at: float) -> Registration:
    """The deploy a registration body announces; BadRequest with a one-line reason otherwise.

    The body is a JSON object with `service` (one of `services`), `version` and optionally
    `change` ("minor" or "major"; left out: "minor" for a new release, and an existing
    one keeps its own); no other fields.

    Example:
        >>> parse_registration(b'{"service": "checkout", "version": "v2.3"}', ["checkout"],
        ...                    received_at=0.0)
        Registration(service='checkout', version='v2.3', change_class=None, received_at=0.0)
    """
    fields = _json_object(body)
    if not fields.keys() <= _REGISTRATION_FIELDS:
        raise BadRequest("the body may only have the fields service, version and change")
    service = _name_field(fields, "service")
    version = _name_field(fields, "version")
    change = fields.get("change") if "change" in fields else None
    if "change" in fields and (not isinstance(change, str) or change not in CHANGE_CLASSES):
        raise BadRequest(f"change must be one of {', '.join(CHANGE_CLASSES)}")
    if service not in services:
        raise BadRequest(f"service {service!r} is not configured in this monitor")
    return Registration(service, version, change, received_at)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as one JSON object in UTF-8, with each field named once."""
    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_fields)
    except UnicodeDecodeError:
        raise BadRequest("the body must be UTF-8") from None
    except _DuplicateField:
        raise BadRequest("the body names a field twice") from None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise _DuplicateField
    return fields


def _name_field(fields: Mapping[str, Any], name: str) -> str:
    """A required short, printable string such as a service name or a version."""
    value = fields.get(name)
    if value is None:
        raise BadRequest(f"{name} is required")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    problem = name_problem(value)
    if problem is not None:
        raise BadRequest(f"{name} {problem}")
    return value


Answer = Callable[[_Context, _Request], Reply]


@dataclass(frozen=True)
class _Action:
    answer: Answer
    changes_state: bool = False  # True: needs the bearer token; refused when none is set


@dataclass(frozen=True)
class _Route:
    endpoint: str  # one of exporter.ENDPOINTS: the request counter's label
    actions: Mapping[str, _Action]  # by HTTP method


def _reads(answer: Answer, *methods: str) -> dict[str, _Action]:
    """The same read-only answer for each method (GET unless told)."""
    return {method: _Action(answer) for method in methods or ("GET",)}


_ROUTES = {
    "/metrics": _Route("metrics", _reads(_answer_metrics)),
    "/api/v1/verdict": _Route("verdict", _reads(_answer_verdict)),
    "/api/v1/releases": _Route("releases", {
        "GET": _Action(_answer_releases),
        "POST": _Action(_answer_register, changes_state=True),
    }),
    # Webhook questions: Flagger POSTs them without an Authorization header.
    "/api/v1/gate": _Route("gate", _reads(_answer_gate, "GET", "POST")),
    "/api/v1/rollback": _Route("rollback", _reads(_answer_rollback, "GET", "POST")),
    "/healthz": _Route("health", _reads(_answer_health)),
}
