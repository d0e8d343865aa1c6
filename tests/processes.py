"""Test helpers for processes: a stop asked for at a known moment, and waiting for a
process to end, both without a clock."""

from __future__ import annotations

import os
import select
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


def exits_within(pid: int, seconds: float) -> bool:
    """Whether the process has exited or does so within `seconds` (a pidfd turns readable
    on exit, so this waits for the event, not for a clock)."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([handle], [], [], seconds)
        return bool(ready)
    finally:
        os.close(handle)


def group_members(group: int) -> list[int]:
    """Processes of a process group that have not exited (zombies aside: PID 1 may never
    reap them here)."""
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            living.append(int(stat.parent.name))
    return living
