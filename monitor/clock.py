"""The one source of time: the wall clock live, a simulated clock in demo, replay and tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        """Wait until `deadline`; return False when `stop` was set first."""
        ...


class WallClock:
    """Real time; sleeping wakes early when the stop event is set."""

    def now(self) -> float:
        return time.time()

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        delay = max(0.0, deadline - time.time())
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)


class SimClock:
    """Simulated time that only moves when told to; sleeping jumps ahead at once."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def sleep_until(self, deadline: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        with self._lock:
            self._now = max(self._now, deadline)
        return True
