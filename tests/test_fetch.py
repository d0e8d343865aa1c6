"""Bounded fetches against a real local HTTP server: each kind of bad target is cut at its limit."""

from __future__ import annotations

import gzip
import re
import socket
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from monitor.errors import ScrapeError
from monitor.fetch import ACCEPT, TransientScrapeError, bounded_request, fetch, redact_url, scrape
from monitor.policy import Probe
from monitor.stages import run_probe

GOOD_BODY = (
    b"# HELP http_requests_total Requests.\n"
    b"# TYPE http_requests_total counter\n"
    b'http_requests_total{method="get",code="200"} 1027\n'
    b'http_requests_total{method="get",code="500"} 3\n'
    b"up 1\n"
)
LIMIT = 64 * 1024
DEADLINE = 0.3
BOMB_SIZE = 100 * 1024 * 1024


def make_bomb() -> bytes:
    """A gzip stream of about 100 KB that inflates to 100 MB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(BOMB_SIZE // len(block))]
    return b"".join([*parts, compressor.flush()])


BOMB = make_bomb()


class Target(ThreadingHTTPServer):
    """A local server whose paths each play one kind of target."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.release = threading.Event()
        self.request_headers: list[dict[str, str]] = []
        self.client_ports: list[int] = []

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client hangs up early: here they do so on purpose."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: Target

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.request_headers.append(dict(self.headers.items()))
        self.server.client_ports.append(self.client_address[1])
        route = ROUTES[self.path.split("?")[0]]
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def send(self, body: bytes, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def start_unsized(self, **headers: str) -> None:
        """Headers of a body that ends when the connection closes."""
        self.send_response(200)
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.close_connection = True


def good(handler: Handler) -> None:
    handler.send(GOOD_BODY)


def gzipped(handler: Handler) -> None:
    handler.send(gzip.compress(GOOD_BODY), Content_Encoding="gzip")


def gzip_members(handler: Handler) -> None:
    half = len(GOOD_BODY) // 2
    body = gzip.compress(GOOD_BODY[:half]) + gzip.compress(GOOD_BODY[half:])
    handler.send(body, Content_Encoding="gzip")


def chunked(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for start in range(0, len(GOOD_BODY), 40):
        piece = GOOD_BODY[start : start + 40]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    handler.wfile.write(b"0\r\n\r\n")


def server_error(handler: Handler) -> None:
    handler.send(b"boom\n", status=500)


def large_declared(handler: Handler) -> None:
    handler.send(b"x" * (LIMIT + 1))


def large_streamed(handler: Handler) -> None:
    handler.start_unsized()
    line = b"filler_metric 1\n" * 4096
    for _ in range(64):  # 4 MB, far past the limit
        handler.wfile.write(line)


PAGE_LIMIT = 1024 * 1024   # what a smoke probe reads of a page


def big_page(handler: Handler) -> None:
    """A 2 MiB page, declared, with its ready mark near the start."""
    handler.send(b"<html>ready " + b"x" * 2 * PAGE_LIMIT)


def late_mark(handler: Handler) -> None:
    """A page whose mark comes only after the first MiB."""
    handler.send(b"x" * PAGE_LIMIT + b" ready")


def exactly_at_limit(handler: Handler) -> None:
    handler.start_unsized()
    handler.wfile.write(b"#" * LIMIT)


def bomb(handler: Handler) -> None:
    handler.send(BOMB, Content_Encoding="gzip")


def not_gzip(handler: Handler) -> None:
    handler.send(b"this is not gzip at all", Content_Encoding="gzip")


def truncated_gzip(handler: Handler) -> None:
    handler.send(gzip.compress(GOOD_BODY)[:-12], Content_Encoding="gzip")


def brotli(handler: Handler) -> None:
    handler.send(b"\x8b\x02\x80", Content_Encoding="br")


def not_utf8(handler: Handler) -> None:
    handler.send(b"up 1\nname_\xff 2\n")


def malformed(handler: Handler) -> None:
    handler.send(b"up 1\nup{ 2\n")


def hang(handler: Handler) -> None:
    handler.server.release.wait()


def dribble(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    while not handler.server.release.wait(0.05):
        handler.wfile.write(b"#")


def dribble_chunk_header(handler: Handler) -> None:
    """A chunk-size line sent a zero at a time: many socket reads for one chunk header."""
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    while not handler.server.release.wait(0.05):
        handler.wfile.write(b"0")


def dribble_headers(handler: Handler) -> None:
    """A status line, then a header a byte at a time: each read waits less than the deadline."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
    while not handler.server.release.wait(0.05):
        handler.wfile.write(b"x")


def superscript_length(handler: Handler) -> None:
    """A length of "²": a digit to str.isdigit, none to int()."""
    handler.send_response(200)
    handler.send_header("Content-Length", "\u00b2")
    handler.end_headers()
    handler.wfile.write(b"up 1\n")
    handler.close_connection = True


def hang_up(handler: Handler) -> None:
    """Takes the request, then closes the connection without a word."""
    handler.close_connection = True


ROUTES: dict[str, Callable[[Handler], None]] = {
    "/metrics": good,
    "/gzip": gzipped,
    "/gzip-members": gzip_members,
    "/chunked": chunked,
    "/error": server_error,
    "/large-declared": large_declared,
    "/large-streamed": large_streamed,
    "/at-limit": exactly_at_limit,
    "/big-page": big_page,
    "/late-mark": late_mark,
    "/bomb": bomb,
    "/not-gzip": not_gzip,
    "/truncated-gzip": truncated_gzip,
    "/brotli": brotli,
    "/not-utf8": not_utf8,
    "/malformed": malformed,
    "/hang": hang,
    "/dribble": dribble,
    "/dribble-chunk-header": dribble_chunk_header,
    "/dribble-headers": dribble_headers,
    "/hang-up": hang_up,
    "/superscript-length": superscript_length,
}


@pytest.fixture()
def target() -> Iterator[Target]:
    server = Target()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def fetch_error(url: str, **limits: float) -> str:
    with pytest.raises(ScrapeError) as caught:
        fetch(url, timeout=limits.get("timeout", 5.0), max_bytes=int(limits.get("max_bytes", LIMIT)))
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- good answers --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/gzip", "/gzip-members", "/chunked"])
def test_a_good_body_arrives_whole_whatever_its_framing(target: Target, path: str) -> None:
    assert fetch(target.url(path), timeout=5.0, max_bytes=LIMIT) == GOOD_BODY


def test_a_body_exactly_at_the_limit_is_accepted(target: Target) -> None:
    assert fetch(target.url("/at-limit"), timeout=5.0, max_bytes=LIMIT) == b"#" * LIMIT


def test_sends_the_accept_headers_and_the_callers_own(target: Target) -> None:
    fetch(target.url("/metrics"), timeout=5.0, max_bytes=LIMIT,
          headers={"Authorization": "Bearer t0ken", "accept-encoding": "br"})  # fmt: skip
    sent = target.request_headers[-1]
    assert sent["Accept"] == ACCEPT
    assert sent["Accept-Encoding"] == "gzip"
    assert sent["Authorization"] == "Bearer t0ken"


def test_a_callers_session_is_used_and_its_connection_kept_alive(target: Target) -> None:
    with requests.Session() as session:
        session.headers["User-Agent"] = "release-monitor-test"
        for path in ("/gzip", "/chunked", "/metrics"):
            assert fetch(target.url(path), timeout=5.0, max_bytes=LIMIT, session=session)
        assert [h["User-Agent"] for h in target.request_headers] == ["release-monitor-test"] * 3
        assert len(set(target.client_ports)) == 1


def test_a_connection_cut_short_is_not_reused(target: Target) -> None:
    with requests.Session() as session:
        with pytest.raises(ScrapeError):
            fetch(target.url("/large-declared"), timeout=5.0, max_bytes=LIMIT, session=session)
        assert fetch(target.url("/metrics"), timeout=5.0, max_bytes=LIMIT, session=session)
        assert len(set(target.client_ports)) == 2


def test_scrape_parses_what_it_fetched(target: Target) -> None:
    result = scrape(target.url("/gzip"), timeout=5.0, max_bytes=LIMIT)
    assert dict(zip(result.keys, result.values.tolist(), strict=True)) == {
        'http_requests_total{code="200",method="get"}': 1027.0,
        'http_requests_total{code="500",method="get"}': 3.0,
        "up": 1.0,
    }
    assert result.types == {"http_requests_total": "counter", "up": "untyped"}


# --- bad answers, each cut at its limit ----------------------------------------------


def test_a_non_2xx_status_is_an_error_naming_the_url(target: Target) -> None:
    message = fetch_error(target.url("/error"))
    assert message == f"GET {target.url('/error')}: HTTP 500 Internal Server Error"


def test_messages_never_show_credentials_or_query_values(target: Target) -> None:
    port = target.server_address[1]
    url = f"http://scraper:hunter2@127.0.0.1:{port}/error?token=s3cret&module=http#frag"
    message = fetch_error(url)
    assert message == f"GET http://127.0.0.1:{port}/error?token=***&module=***: HTTP 500 " \
        "Internal Server Error"  # fmt: skip
    for secret in ("scraper", "hunter2", "s3cret", "frag"):
        assert secret not in message


def test_a_refused_connection_is_an_error_naming_the_url() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = fetch_error(f"http://user:pw@127.0.0.1:{port}/metrics")
    assert message == f"GET http://127.0.0.1:{port}/metrics: cannot connect (Connection refused)"


def test_a_declared_oversized_body_is_refused(target: Target) -> None:
    message = fetch_error(target.url("/large-declared"))
    assert message.endswith(f"body of {LIMIT + 1} bytes is over the {LIMIT}-byte limit")


def test_an_undeclared_oversized_body_is_cut_at_the_limit(target: Target) -> None:
    message = fetch_error(target.url("/large-streamed"))
    assert message.endswith(f"body is over the {LIMIT}-byte limit")


def test_a_gzip_bomb_is_cut_at_the_limit_with_memory_bounded_by_it(target: Target) -> None:
    assert len(BOMB) < 200 * 1024  # the expanded size is 1,000 times more
    max_bytes = 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ScrapeError, match=f"body is over the {max_bytes}-byte limit"):
            fetch(target.url("/bomb"), timeout=5.0, max_bytes=max_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * max_bytes


@pytest.mark.parametrize(
    ("path", "ending"),
    [
        ("/not-gzip", "body is not valid gzip (Error -3 while decompressing data: "
                      "incorrect header check)"),
        ("/truncated-gzip", "gzip body is truncated"),
        ("/brotli", "unsupported Content-Encoding 'br'"),
    ],
)  # fmt: skip
def test_bad_encodings_are_errors(target: Target, path: str, ending: str) -> None:
    assert fetch_error(target.url(path)) == f"GET {target.url(path)}: {ending}"


def test_a_body_that_is_not_utf8_fails_the_scrape(target: Target) -> None:
    with pytest.raises(ScrapeError) as caught:
        scrape(target.url("/not-utf8"), timeout=5.0, max_bytes=LIMIT)
    assert str(caught.value) == f"GET {target.url('/not-utf8')}: body is not UTF-8 " \
        "(bad byte at offset 10)"  # fmt: skip


def test_a_malformed_body_fails_the_scrape_naming_url_and_line(target: Target) -> None:
    with pytest.raises(ScrapeError) as caught:
        scrape(target.url("/malformed"), timeout=5.0, max_bytes=LIMIT)
    assert str(caught.value).startswith(f"GET {target.url('/malformed')}: line 2: ")


@pytest.mark.parametrize("path", ["/hang", "/dribble", "/dribble-chunk-header", "/dribble-headers"])
def test_slow_targets_are_cut_at_the_deadline(target: Target, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(ScrapeError) as caught:
        fetch(target.url(path), timeout=DEADLINE, max_bytes=LIMIT)
    elapsed = time.monotonic() - started
    assert str(caught.value) == f"GET {target.url(path)}: timed out after {DEADLINE:g} s"
    assert DEADLINE <= elapsed <= DEADLINE * 1.1


# --- smoke probes are held to the same bounds -------------------------------------------


@pytest.mark.parametrize(("path", "expect", "detail"), [
    ("/metrics", {"expect_body": "up 1"}, r"^{url}: 200 in \d+ ms$"),
    ("/error", {}, "^{url}: status 500, expected 200$"),
    ("/metrics", {"expect_body": "ready"}, "^{url}: body lacks 'ready'$"),
    # A page is judged on its first MiB: a big one is no failure.
    ("/large-streamed", {}, r"^{url}: 200 in \d+ ms$"),
    ("/big-page", {"expect_body": "ready"}, r"^{url}: 200 in \d+ ms$"),
    ("/bomb", {}, r"^{url}: 200 in \d+ ms$"),
    ("/late-mark", {"expect_body": "ready"}, "^{url}: body lacks 'ready' in its first MiB$"),
    ("/dribble-headers", {}, f"^{{url}}: timed out after {DEADLINE:g} s$"),
    ("/dribble", {}, f"^{{url}}: timed out after {DEADLINE:g} s$"),
])
def test_a_smoke_probe_checks_status_body_and_the_whole_exchange_s_time(
        target: Target, path: str, expect: dict[str, str], detail: str) -> None:
    url = target.url(path)
    started = time.monotonic()
    result = run_probe(Probe("home", url, max_latency=DEADLINE, **expect))  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert result.ok == (detail.endswith(" ms$")), result
    assert re.match(detail.format(url=re.escape(url)), result.detail), result.detail
    assert elapsed <= DEADLINE * 1.1


# --- a connection back in its pool is no longer this request's to touch -----------------


class SpySocket(socket.socket):
    """Records each timeout and shutdown, with whether the response still held the connection."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.owner: ReleasingRaw | None = None
        self.timeouts_while_owned: list[bool] = []
        self.shut_down = threading.Event()

    def settimeout(self, value: float | None) -> None:
        assert self.owner is not None
        self.timeouts_while_owned.append(self.owner.connection is not None)
        super().settimeout(value)

    def shutdown(self, how: int) -> None:
        self.shut_down.set()
        super().shutdown(how)


class ReleasingRaw:
    """urllib3's side of a streamed body: the read that reaches the end puts the connection
    back in the pool (and may then wait, as a busy reader thread would)."""

    def __init__(self, chunks: list[bytes], sock: SpySocket, after_release: Callable[[], object]) -> None:
        self.connection: SimpleNamespace | None = SimpleNamespace(sock=sock)
        self._chunks = chunks
        self._after_release = after_release
        sock.owner = self

    def read1(self, amt: int, decode_content: bool = False) -> bytes:
        if not self._chunks:
            return b""
        chunk = self._chunks.pop(0)
        if not self._chunks:
            self.connection = None
            self._after_release()
        return chunk

    def release_conn(self) -> None:
        self.connection = None

    def close(self) -> None:
        self.connection = None


class OneAnswer(requests.adapters.BaseAdapter):
    """A transport that answers 200 with the given raw body."""

    def __init__(self, raw: ReleasingRaw) -> None:
        super().__init__()
        self.raw = raw

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response.raw, response.url = 200, self.raw, request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def fake_session(raw: ReleasingRaw) -> requests.Session:
    session = requests.Session()
    session.mount("http://", OneAnswer(raw))
    return session


def test_the_socket_is_not_touched_after_the_connection_went_back_to_its_pool() -> None:
    with SpySocket() as sock:
        raw = ReleasingRaw([b"up ", b"1\n"], sock, after_release=lambda: None)
        _, body = bounded_request(fake_session(raw), requests.Request("GET", "http://127.0.0.1:1/"),
                                  where="GET test", timeout=5.0, max_bytes=LIMIT)
    assert body == b"up 1\n"
    assert sock.timeouts_while_owned == [True, True]


def test_the_deadline_does_not_shut_a_socket_already_back_in_its_pool() -> None:
    with SpySocket() as sock:
        # The last read ends after the deadline; a shutdown would come within its wait.
        raw = ReleasingRaw([b"up 1\n"], sock, after_release=lambda: sock.shut_down.wait(DEADLINE))
        with pytest.raises(TransientScrapeError, match="timed out"):
            bounded_request(fake_session(raw), requests.Request("GET", "http://127.0.0.1:1/"),
                            where="GET test", timeout=DEADLINE / 10, max_bytes=LIMIT)
    assert not sock.shut_down.is_set()


# --- arguments and URLs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        ({"timeout": 0.0, "max_bytes": 10}, "timeout"),
        ({"timeout": float("inf"), "max_bytes": 10}, "timeout"),
        ({"timeout": 1.0, "max_bytes": 0}, "max_bytes"),
        ({"timeout": 1.0, "max_bytes": 1.5}, "max_bytes"),
    ],
)
def test_meaningless_limits_are_rejected(limits: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fetch("http://127.0.0.1:1/metrics", **limits)  # type: ignore[arg-type]


def test_a_server_that_hangs_up_unanswered_is_not_called_unreachable(target: Target) -> None:
    assert fetch_error(target.url("/hang-up")) == (
        f"GET {target.url('/hang-up')}: closed without an answer (RemoteDisconnected)")


def test_a_length_in_superscript_digits_is_no_length(target: Target) -> None:
    # No ValueError from int("²"): the body is read to the connection's end, as unsized.
    assert fetch(target.url("/superscript-length"), timeout=5.0, max_bytes=LIMIT) == b"up 1\n"


def test_an_invalid_url_is_a_scrape_error() -> None:
    message = fetch_error("ftp://user:pw@example.invalid/metrics")
    assert message == "GET ftp://example.invalid/metrics: request failed (InvalidSchema)"


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("http://a:b@host:9100/metrics", "http://host:9100/metrics"),
        ("https://host/m?x=1&y=", "https://host/m?x=***&y=***"),
        ("http://[::1]:9100/metrics", "http://[::1]:9100/metrics"),
        ("http://host/m?s3cr3t", "http://host/m?***"),       # a bare value, all secret
        ("http://host/m?s3cr3t&a=1&&b", "http://host/m?***&a=***&***"),
        ("http://host/m\x1b[2J", "http://host/m?[2J"),
        ("http://[::1/metrics", "http://[::1/metrics"),
        ("http://h:99999/m?token=t#x", "http://h:99999/m?***"),       # unparsable, still safe
        ("http://u:pw@h:99999/m", "http://*** (credentials hidden)"),
        ("http://user:pa/ss@host:99999/m", "http://*** (credentials hidden)"),
        ("http://user:pa#ss@host:99999", "http://*** (credentials hidden)"),
        ("http://user:p?w@host:99999/m", "http://*** (credentials hidden)"),
    ],
)
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe
