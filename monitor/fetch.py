"""Bounded HTTP GET of a target's metrics: one total deadline, and a size cap that holds
after decompression, so a slow, huge or hostile target costs a known amount and no more."""

from __future__ import annotations

import http.client
import math
import socket
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from monitor.deadlines import Watchdog, deadline_for, watch_deadlines
from monitor.errors import ScrapeError
from monitor.exposition import ParsedScrape, parse
from monitor.redact import printable as _printable
from monitor.redact import redact_url

ACCEPT = "text/plain;version=0.0.4"
_READ_SIZE = 64 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_WBITS_BY_ENCODING = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}
_BODY_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
_TIMEOUTS = (urllib3.exceptions.TimeoutError, TimeoutError)
# What `_reason` says of a server that took the connection and closed it unanswered.
_HUNG_UP = ("RemoteDisconnected", "Connection reset by peer")


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> bytes:
    """GET `url` and return its body, decompressed, within `timeout` seconds in total.

    A body over `max_bytes` after decompression fails; a gzip bomb costs memory
    of the order of `max_bytes`, never its expanded size. `headers` are added to the
    request (Accept-Encoding stays gzip, the only encoding asked for). Every failure
    is a ScrapeError of one line naming the URL without its credentials.

    >>> fetch("http://127.0.0.1:9100/metrics", timeout=2.0, max_bytes=8 << 20)  # doctest: +SKIP
    b'# HELP node_load1 1m load average.\\n...'
    """
    _check_limits(timeout, max_bytes)
    http_session = session if session is not None else requests.Session()
    request = requests.Request("GET", url, headers=_request_headers(headers))
    try:
        _, body = bounded_request(
            http_session, request, where=f"GET {redact_url(url)}", timeout=timeout, max_bytes=max_bytes
        )
        return body
    finally:
        if session is None:
            http_session.close()


def scrape(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    max_series: int | None = None,
    headers: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> ParsedScrape:
    """Fetch `url` (as `fetch`) and parse it; any problem is one ScrapeError naming the URL.
    More than `max_series` series fail the scrape, as Prometheus's `sample_limit` does.

    >>> scrape("http://127.0.0.1:9100/metrics", timeout=2.0, max_bytes=8 << 20)  # doctest: +SKIP
    ParsedScrape(keys=['node_load1', ...], values=array([0.42, ...]), types={...})
    """
    body = fetch(url, timeout=timeout, max_bytes=max_bytes, headers=headers, session=session)
    where = f"GET {redact_url(url)}"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"{where}: body is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        parsed = parse(text)
    except ScrapeError as exc:
        raise ScrapeError(f"{where}: {exc}") from None
    if max_series is not None and len(parsed.keys) > max_series:
        raise ScrapeError(f"{where}: {len(parsed.keys)} series, more than max_series = {max_series}")
    return parsed


class TransientScrapeError(ScrapeError):
    """A failure another attempt may cure: a timeout, a broken connection, or a server
    asking to be retried, after `retry_after` seconds when it said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def bounded_request(
    session: requests.Session,
    request: requests.Request,
    *,
    where: str,
    timeout: float,
    max_bytes: int,
    any_status: bool = False,
    read_body: bool = True,
    prefix: bool = False,
) -> tuple[requests.Response, bytes]:
    """Send `request` and read its raw body (decompressed) within `timeout` seconds in total.

    A body over `max_bytes` after decompression fails, as in `fetch`. A status outside
    2xx fails at once unless `any_status`, when its body is read and returned like any
    other (for servers that explain their errors in it). Without `read_body` the answer
    ends at its headers: the status is all that counts (a webhook's), the body is b"".
    With `prefix` a longer body is no failure: its first `max_bytes` are returned (all a
    smoke probe looks at).
    Every failure is a ScrapeError of one line starting with `where`; a timeout or a
    connection that could not be made or broke is a TransientScrapeError, worth another
    attempt, unlike an oversized or badly encoded body or a refused status. The
    connection goes back to the session's pool only when the body was read to its end.

    >>> request = requests.Request("GET", "http://127.0.0.1:9090/api/v1/status/buildinfo")
    >>> response, body = bounded_request(requests.Session(), request, where="Prometheus",
    ...                                  timeout=5.0, max_bytes=1 << 20)  # doctest: +SKIP
    >>> response.status_code, body[:20]  # doctest: +SKIP
    (200, b'{"status":"success",')
    """
    # Sockets time out in real seconds, whatever clock drives the rest of the monitor.
    attempt = _Attempt(where, timeout, time.monotonic() + timeout)
    response = _open(session, request, attempt)
    if not any_status and not 200 <= response.status_code < 300:
        response.close()
        reason = _printable(response.reason or "", limit=60)
        raise attempt.failed(f"HTTP {response.status_code} {reason}".rstrip())
    if not read_body:
        response.close()
        return response, b""
    try:
        body, whole = _read_body(response, max_bytes, attempt, prefix=prefix)
    except BaseException:
        response.close()  # discards the connection: it may hold unread or cut data
        raise
    if whole:
        response.raw.release_conn()  # read to its end: fit for the session's next request
    else:
        response.close()
    return response, body


@dataclass(frozen=True)
class _Attempt:
    """One request: how to name it in messages, and its deadline on the monotonic clock."""

    where: str
    timeout: float
    deadline: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self, what: str) -> ScrapeError:
        return ScrapeError(f"{self.where}: {what}")

    def transient(self, what: str) -> TransientScrapeError:
        return TransientScrapeError(f"{self.where}: {what}")

    def timed_out(self) -> TransientScrapeError:
        return self.transient(f"timed out after {self.timeout:g} s")


def _check_limits(timeout: float, max_bytes: int) -> None:
    """Reject limits that would make the bounds meaningless."""
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")


def _request_headers(extra: Mapping[str, str] | None) -> CaseInsensitiveDict[str]:
    """Accept the 0.0.4 text format; only gzip, since that is what the reader inflates."""
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict({"Accept": ACCEPT})
    headers.update(extra or {})
    headers["Accept-Encoding"] = "gzip"
    return headers


def _open(
    http_session: requests.Session, request: requests.Request, attempt: _Attempt
) -> requests.Response:
    """Send the request and wait for the status line and headers, within the deadline."""
    remaining = attempt.remaining()
    if remaining <= 0:
        raise attempt.timed_out()
    watch_deadlines(http_session)
    with deadline_for(attempt.deadline) as fired:
        try:
            # What Session.request does, with the body left unread (stream=True).
            prepared = http_session.prepare_request(request)
            settings = http_session.merge_environment_settings(prepared.url, {}, True, None, None)
            response = http_session.send(prepared, timeout=(remaining, remaining),
                                         allow_redirects=False, **settings)
        except requests.Timeout:
            raise attempt.timed_out() from None
        except requests.ConnectionError as exc:
            if fired.is_set():  # the watchdog shut the socket at the deadline
                raise attempt.timed_out() from None
            reason = _reason(exc)
            if reason in _HUNG_UP:   # connected, then the server hung up without an answer
                raise attempt.transient(f"closed without an answer ({reason})") from None
            raise attempt.transient(f"cannot connect ({reason})") from None
        except requests.RequestException as exc:
            # The exception's own text may repeat the URL with its query and credentials.
            raise attempt.failed(f"request failed ({type(exc).__name__})") from None
    if fired.is_set():
        # Shut down mid-header, the socket reads as an end of headers: what came is cut short.
        response.close()
        raise attempt.timed_out()
    return response


def _read_body(response: requests.Response, max_bytes: int, attempt: _Attempt, *,
               prefix: bool = False) -> tuple[bytes, bool]:
    """Read raw chunks until the end, the deadline or the size cap, whichever comes first;
    the body, and whether it is whole (with `prefix`, the cap ends the read, not in error)."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    body = _BoundedBody(encoding, max_bytes, attempt, prefix=prefix)
    if not prefix:
        _check_declared_length(response, encoding, max_bytes, attempt)
    watchdog = Watchdog(lambda: _owned_socket(response.raw), attempt.deadline)
    try:
        while True:
            remaining = attempt.remaining()
            if remaining <= 0:
                raise attempt.timed_out()
            # urllib3 hands the connection back to its pool inside the read that reaches the
            # end; from then on its socket may be another request's.
            sock = _owned_socket(response.raw)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = response.raw.read1(_READ_SIZE, decode_content=False)
            if not chunk:
                break
            body.feed(chunk)
    except _Full:
        return body.parts(), False
    except _BODY_ERRORS as exc:
        if isinstance(exc, _TIMEOUTS) or watchdog.fired.is_set() or attempt.remaining() <= 0:
            raise attempt.timed_out() from None
        raise attempt.transient(f"connection broken while reading ({_reason(exc)})") from None
    finally:
        watchdog.cancel()
    if watchdog.fired.is_set():
        # The socket may have been shut down under the reader, so what arrived may be cut short.
        raise attempt.timed_out()
    return body.finish(), True


def _check_declared_length(
    response: requests.Response, encoding: str, max_bytes: int, attempt: _Attempt
) -> None:
    """Refuse an uncompressed body whose Content-Length already exceeds the cap."""
    declared = response.headers.get("Content-Length", "")
    if encoding == "identity" and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise attempt.failed(f"body of {declared} bytes is over the {max_bytes}-byte limit")


class _Full(Exception):
    """A body read as a prefix reached its cap."""


class _BoundedBody:
    """Collects a body up to a byte cap, inflating gzip or deflate one bounded step at a time."""

    def __init__(self, encoding: str, max_bytes: int, attempt: _Attempt, *,
                 prefix: bool = False) -> None:
        if encoding not in _WBITS_BY_ENCODING and encoding != "identity":
            raise attempt.failed(f"unsupported Content-Encoding {_printable(encoding, 40)!r}")
        self._wbits = _WBITS_BY_ENCODING.get(encoding)
        self._inflater = zlib.decompressobj(self._wbits) if self._wbits is not None else None
        self._parts: list[bytes] = []
        self._size = 0
        self._max_bytes = max_bytes
        self._attempt = attempt
        self._encoding = encoding
        self._prefix = prefix

    def feed(self, data: bytes) -> None:
        """Add raw bytes as received."""
        if self._inflater is None:
            self._keep(data)
            return
        try:
            self._inflate(data)
        except zlib.error as exc:
            raise self._attempt.failed(f"body is not valid {self._encoding} ({exc})") from None

    def finish(self) -> bytes:
        """The whole body; a compressed stream must have reached its end."""
        if self._inflater is not None and not self._inflater.eof:
            raise self._attempt.failed(f"{self._encoding} body is truncated")
        return self.parts()

    def parts(self) -> bytes:
        """What was kept so far."""
        return b"".join(self._parts)

    def _inflate(self, data: bytes) -> None:
        """Inflate without ever producing more than one byte past the cap."""
        assert self._inflater is not None
        pending = data
        while pending:
            room = self._max_bytes - self._size
            self._keep(self._inflater.decompress(pending, room + 1))
            if not self._inflater.eof:
                pending = self._inflater.unconsumed_tail
                continue
            pending = self._inflater.unused_data
            if pending and self._wbits != _GZIP_WBITS:
                raise self._attempt.failed("data after the end of the deflate stream")
            if pending:  # gzip allows several members back to back
                self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def _keep(self, data: bytes) -> None:
        """Append, or fail as soon as the cap is passed."""
        room = self._max_bytes - self._size
        self._size += len(data)
        if self._size > self._max_bytes:
            if self._prefix:
                self._parts.append(data[:room])
                raise _Full
            raise self._attempt.failed(f"body is over the {self._max_bytes}-byte limit")
        if data:
            self._parts.append(data)


def _owned_socket(raw: Any) -> socket.socket | None:
    """The socket of the response's connection while the response still holds it.

    urllib3 exposes it with stream=True, and forgets it once the connection is released.
    """
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _reason(exc: BaseException) -> str:
    """A short cause without the URL: the OS error text if there is one, else a class name."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    innermost = exc
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        innermost = current
        if isinstance(current, OSError) and current.strerror:
            return _printable(current.strerror, limit=80)
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked += list(current.args)
        stack.extend(item for item in linked if isinstance(item, BaseException))
    return type(innermost).__name__
