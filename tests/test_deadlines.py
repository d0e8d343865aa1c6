"""Watchdogs: one thread shuts sockets down at their deadlines; a cancelled one is spared."""

from __future__ import annotations

import socket
import threading
import time

from monitor.deadlines import Watchdog


def test_watchdogs_fire_at_their_deadlines_from_one_thread_and_spare_the_cancelled() -> None:
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        now = time.monotonic()
        dogs = [Watchdog(lambda s=mine: s, now + 0.01 * (index % 5))
                for index, (mine, _) in enumerate(pairs)]
        for dog in dogs[1::2]:
            dog.cancel()
        assert all(dog.fired.wait(5.0) for dog in dogs[::2])
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
