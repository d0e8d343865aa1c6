"""One deadline for a whole HTTP exchange: socket timeouts bound each system call, so a
server that trickles its headers or body a byte at a time outlives any of them. A
watchdog shuts the socket down at the deadline instead, which ends every read at once.

requests gives no handle on the socket while it waits for the status line and headers;
`DeadlineAdapter` makes its connections watch the deadline that `deadline_for` sets for
the calling thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse

T = TypeVar("T")
log = logging.getLogger("release_monitor")


class Watchdog:
    """Shuts a socket down at `deadline` (time.monotonic), unless cancelled first.

    `sock` is asked at that moment, so a connection handed back to its pool meanwhile
    (None) is left alone: its socket may be another request's by then. One thread keeps
    every watchdog's time, not a timer thread per request.
    """

    def __init__(self, sock: Callable[[], socket.socket | None], deadline: float,
                 fired: threading.Event | None = None) -> None:
        self.fired = fired if fired is not None else threading.Event()
        self.deadline = deadline
        self._sock = sock
        self._cancelled = False
        self._lock = threading.Lock()
        # The interrupter of the exchange this thread is in, which may fire it early.
        self._interrupter = _CURRENT.interrupter
        _KEEPER.watch(self)
        if self._interrupter is not None:
            self._interrupter.add(self)

    def cancel(self) -> None:
        """Stop watching (it may have fired already)."""
        with self._lock:
            self._cancelled = True
            self._sock = _no_socket   # what it reached (a response) need not wait for its time
        if self._interrupter is not None:
            self._interrupter.discard(self)

    def fire(self) -> None:
        """The deadline passed: shut the socket down, unless cancelled."""
        with self._lock:
            if self._cancelled:
                return
            self.fired.set()
            _shut_down(self._sock())


def _shut_down(sock: object) -> None:
    """End every read on `sock`: a socket, or TLS inside TLS (through an HTTPS proxy), whose
    transport has no shutdown of its own but wraps a socket that does."""
    while sock is not None and not hasattr(sock, "shutdown"):
        sock = getattr(sock, "socket", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to interrupt


def _no_socket() -> None:
    return None


class _Timekeeper:
    """One daemon thread firing watchdogs in deadline order."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, watchdog: Watchdog) -> None:
        with self._changed:
            heapq.heappush(self._due, (watchdog.deadline, next(self._order), watchdog))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._changed.wait(wait)
                _, _, watchdog = heapq.heappop(self._due)
            try:
                watchdog.fire()   # a cancelled one does nothing
            except Exception:  # noqa: BLE001 - the one thread keeping every deadline lives on
                log.exception("deadline watchdog")


_KEEPER = _Timekeeper()


class Interrupter:
    """Cuts short, at once, every exchange under way within `interruptible(self)`: a
    stopping monitor waits for none of them to reach its deadline. Connecting is not cut
    short (the socket's own timeout bounds it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchdogs: set[Watchdog] = set()
        self.interrupted = False

    def interrupt(self) -> None:
        """Shut down the sockets of the exchanges under way, and of any begun from now on."""
        with self._lock:
            self.interrupted = True
            watchdogs = list(self._watchdogs)
        for watchdog in watchdogs:
            watchdog.fire()

    def add(self, watchdog: Watchdog) -> None:
        with self._lock:
            interrupted = self.interrupted
            if not interrupted:
                self._watchdogs.add(watchdog)
        if interrupted:
            watchdog.fire()

    def discard(self, watchdog: Watchdog) -> None:
        with self._lock:
            self._watchdogs.discard(watchdog)


class _Deadline(threading.local):
    """The deadline of the exchange this thread is in, whether it passed, and what may
    interrupt it."""

    at: float | None = None
    fired: threading.Event | None = None
    interrupter: Interrupter | None = None


_CURRENT = _Deadline()


@contextmanager
def interruptible(interrupter: Interrupter) -> Iterator[None]:
    """Within: this thread's bounded exchanges end when `interrupter.interrupt()` is called."""
    _CURRENT.interrupter = interrupter
    try:
        yield
    finally:
        _CURRENT.interrupter = None


@contextmanager
def deadline_for(deadline: float) -> Iterator[threading.Event]:
    """Within: this thread's requests through a DeadlineAdapter stop waiting for the status
    line and headers at `deadline`. Yields the event set when the deadline cut one short."""
    fired = threading.Event()
    _CURRENT.at, _CURRENT.fired = deadline, fired
    try:
        yield fired
    finally:
        _CURRENT.at, _CURRENT.fired = None, None


def _head_within_deadline(sock: socket.socket | None, read: Callable[[], T]) -> T:
    """Read a response's status line and headers, shut down at the thread's deadline."""
    deadline, fired = _CURRENT.at, _CURRENT.fired
    if deadline is None or sock is None:
        return read()
    watchdog = Watchdog(lambda: sock, deadline, fired)
    try:
        return read()
    finally:
        watchdog.cancel()


class _Connection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 does
        return _head_within_deadline(self.sock, super().getresponse)

    def _tunnel(self) -> None:
        # A proxy's answer to CONNECT, read inside connect().
        _head_within_deadline(self.sock, super()._tunnel)


class _TLSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 does
        return _head_within_deadline(self.sock, super().getresponse)

    def _tunnel(self) -> None:
        _head_within_deadline(self.sock, super()._tunnel)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, its connections (proxied too) honouring `deadline_for`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has pools of its own
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def watch_deadlines(session: requests.Session) -> requests.Session:
    """Put DeadlineAdapter in place of requests' plain adapter on `session`; an adapter of
    anyone else's choosing is left as it is."""
    for prefix in ("http://", "https://"):
        if type(session.adapters.get(prefix)) is requests.adapters.HTTPAdapter:
            session.mount(prefix, DeadlineAdapter())
    return session
