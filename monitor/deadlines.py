"""One deadline for a whole HTTP exchange: socket timeouts bound each system call, so a
server that trickles its headers or body a byte at a time outlives any of them. A
watchdog shuts the socket down at the deadline instead, which ends every read at once.

requests gives no handle on the socket while it waits for the status line and headers;
`DeadlineAdapter` makes its connections watch the deadline that `deadline_for` sets for
the calling thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse


class Watchdog:
    """Shuts a socket down at `deadline` (time.monotonic), unless cancelled first.

    `sock` is asked at that moment, so a connection handed back to its pool meanwhile
    (None) is left alone: its socket may be another request's by then.
    """

    def __init__(self, sock: Callable[[], socket.socket | None], deadline: float,
                 fired: threading.Event | None = None) -> None:
        self.fired = fired if fired is not None else threading.Event()
        self._sock = sock
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        """Stop the timer (it may already have fired)."""
        self._timer.cancel()

    def _fire(self) -> None:
        self.fired.set()
        sock = self._sock()
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: nothing left to interrupt


class _Deadline(threading.local):
    """The deadline of the exchange this thread is in, and whether it passed."""

    at: float | None = None
    fired: threading.Event | None = None


_CURRENT = _Deadline()


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


def _head_within_deadline(sock: socket.socket | None, read: Callable[[], HTTPResponse]
                          ) -> HTTPResponse:
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


class _TLSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 does
        return _head_within_deadline(self.sock, super().getresponse)


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
