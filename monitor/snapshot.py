"""An immutable picture of the monitor's state, published by the daemon thread.

The HTTP threads (exporter and JSON API) read only the latest snapshot; they never touch
SQLite, so a slow or broken disk cannot stall `/metrics`. Deploys registered over HTTP go
the other way, through a small bounded queue in the same box that the daemon thread drains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_PENDING_REGISTRATIONS = 100


RECENT_RELEASES = 5       # per service, exported and served; older ones stay in the store


@dataclass(frozen=True)
class TargetHealth:
    service: str
    target: str              # URL without credentials or query string
    up: bool
    last_scrape: float       # unix seconds of the last attempt
    duration: float          # seconds the last attempt took
    scrapes_total: int
    errors_total: int
    samples: int             # samples stored from the last good scrape
    last_error: str = ""
    query_api: bool = False  # a service's query API (PromQL), not a scraped target


@dataclass(frozen=True)
class Snapshot:
    generated_at: float = 0.0
    verdicts: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    targets: tuple[TargetHealth, ...] = ()
    evaluation_seconds: float = 0.0
    evaluations_total: int = 0
    last_evaluation: float | None = None
    store_errors_total: int = 0
    store_error: str = ""    # the store's failure now: a full disk, say ("" while it works)
    started_at: float = 0.0
    services: tuple[str, ...] = ()  # configured services: the ones a deploy may be registered for
    hook_failures: Mapping[tuple[str, ...], int] = field(default_factory=dict)  # (service, hook)
    # Per service, its releases older than the RECENT_RELEASES in `verdicts`: named, not
    # served; each with its verdict once judged ("" while it is being judged).
    older: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def verdict(self, service: str, release: str) -> Mapping[str, Any] | None:
        return self.verdicts.get((service, release))

    def services_with(self, release: str) -> list[str]:
        return sorted(service for service, version in self.verdicts if version == release)

    def older_in(self, release: str) -> list[str]:
        """The services that have `release` among their older releases."""
        return sorted(service for service, versions in self.older.items() if release in versions)


@dataclass(frozen=True)
class Registration:
    """A deploy announced over HTTP, waiting for the daemon thread to start its release."""

    service: str
    version: str
    change_class: str | None  # "minor" or "major"; None: "minor" for a new release
    received_at: float       # unix seconds, from the server's clock


class SnapshotBox:
    """Holds the latest snapshot (swapping the reference is atomic) and pending registrations."""

    def __init__(self, initial: Snapshot | None = None) -> None:
        self._snapshot = initial or Snapshot()
        self._lock = threading.Lock()
        self._registrations: queue.Queue[Registration] = queue.Queue(MAX_PENDING_REGISTRATIONS)
        # Set by the daemon: a registration is taken up at once, not at its next planned
        # step (minutes away, for a service judged by PromQL alone).
        self.on_registration: Callable[[], None] = lambda: None
        self.closed = False

    def get(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def register(self, registration: Registration) -> bool:
        """Queue a registration for the daemon thread; False when the queue is full, or
        registrations are closed (`closed`: the daemon is stopping)."""
        with self._lock:
            if self.closed:
                return False
            try:
                self._registrations.put_nowait(registration)
            except queue.Full:
                return False
        self.on_registration()
        return True

    def close_registrations(self) -> None:
        """Accept no more registrations: the daemon is stopping, and one accepted now could
        no longer be stored."""
        with self._lock:
            self.closed = True

    def take_registrations(self) -> list[Registration]:
        """The queued registrations, oldest first; at most a full queue's worth per call."""
        taken: list[Registration] = []
        # Bounded, so a client that keeps registering cannot hold the daemon thread here.
        for _ in range(MAX_PENDING_REGISTRATIONS):
            try:
                taken.append(self._registrations.get_nowait())
            except queue.Empty:
                break
        return taken
