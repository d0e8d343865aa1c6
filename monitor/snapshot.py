"""An immutable picture of the monitor's state, published by the daemon thread.

The HTTP threads (exporter and JSON API) read only the latest snapshot; they never touch
SQLite, so a slow or broken disk cannot stall `/metrics`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class Snapshot:
    generated_at: float = 0.0
    verdicts: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    targets: tuple[TargetHealth, ...] = ()
    evaluation_seconds: float = 0.0
    evaluations_total: int = 0
    last_evaluation: float | None = None
    store_errors_total: int = 0
    started_at: float = 0.0

    def verdict(self, service: str, release: str) -> Mapping[str, Any] | None:
        return self.verdicts.get((service, release))

    def services_with(self, release: str) -> list[str]:
        return sorted(service for service, version in self.verdicts if version == release)


class SnapshotBox:
    """Holds the latest snapshot; swapping the reference is atomic."""

    def __init__(self, initial: Snapshot | None = None) -> None:
        self._snapshot = initial or Snapshot()
        self._lock = threading.Lock()

    def get(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
