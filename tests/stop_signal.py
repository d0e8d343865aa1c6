"""A stop asked for at a known moment, without a clock: once a file exists."""

from __future__ import annotations

import threading
from pathlib import Path


class StopOnceFileExists(threading.Event):
    """An Event that reads as set from the moment `path` exists: a command under way made
    it, so the stop comes while that command runs."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()
