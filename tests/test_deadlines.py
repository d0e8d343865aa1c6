"""Watchdogs: one thread shuts sockets down at their deadlines; a cancelled one is spared."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from monitor.deadlines import Watchdog
from monitor.errors import ScrapeError
from monitor.fetch import fetch


def test_watchdogs_fire_at_their_deadlines_from_one_thread_and_spare_the_cancelled() -> None:
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        now = time.monotonic()
        dogs = []
        for index, (mine, _) in enumerate(pairs):
            if index % 2 == 0:
                dogs.append(Watchdog(lambda s=mine: s, now + 0.01 * (index % 5)))
            else:
                dogs.append(Watchdog(lambda s=mine: s, now + 0.2))
                dogs[-1].cancel()
        # Fired in deadline order: once this one has, every cancelled one's time has come.
        last = Watchdog(lambda: None, now + 0.3)
        assert all(dog.fired.wait(5.0) for dog in dogs[::2]) and last.fired.wait(5.0)
        assert [t.name for t in threading.enumerate()].count("deadlines") == 1
        for index, (mine, _) in enumerate(pairs):
            mine.settimeout(0.0)
            if index % 2 == 0:
                assert mine.recv(1) == b""          # shut down: reads end at once
            else:
                assert not dogs[index].fired.is_set()
                try:
                    mine.recv(1)
                    raise AssertionError("a cancelled watchdog shut its socket down")
                except BlockingIOError:
                    pass                            # open, with nothing to read
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_a_socket_given_back_meanwhile_is_left_alone() -> None:
    mine, theirs = socket.socketpair()
    try:
        dog = Watchdog(lambda: None, time.monotonic())
        assert dog.fired.wait(5.0)
        mine.settimeout(0.0)
        theirs.sendall(b"x")
        assert mine.recv(1) == b"x"
    finally:
        mine.close()
        theirs.close()


class _TLSInTLS:
    """What urllib3 hands over for TLS through an HTTPS proxy: no shutdown of its own."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def _broken() -> socket.socket:
    raise RuntimeError("a connection in a state nobody foresaw")


def test_tls_inside_tls_is_shut_down_and_one_failing_watchdog_stops_none_after_it() -> None:
    mine, theirs = socket.socketpair()
    try:
        failing = Watchdog(_broken, time.monotonic())
        wrapped = Watchdog(lambda: _TLSInTLS(mine), time.monotonic() + 0.01)  # type: ignore[arg-type, return-value]
        assert failing.fired.wait(5.0) and wrapped.fired.wait(5.0)
        mine.settimeout(1.0)
        assert mine.recv(1) == b""
    finally:
        mine.close()
        theirs.close()


def test_a_proxy_trickling_its_answer_to_connect_is_cut_at_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)                                  # CONNECT example.invalid:443
            conn.sendall(b"HTTP/1.1 200 Connection established\r\nX-Padding: ")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=proxy, daemon=True).start()
    session = requests.Session()
    session.trust_env = False         # this proxy, whatever the environment names
    session.proxies = {"https": f"http://127.0.0.1:{listener.getsockname()[1]}"}
    started = time.monotonic()
    try:
        with pytest.raises(ScrapeError, match=r"timed out after 0\.3 s$"):
            fetch("https://example.invalid/metrics", timeout=0.3, max_bytes=1024, session=session)
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        session.close()
        listener.close()
