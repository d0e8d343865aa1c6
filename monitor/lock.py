"""One daemon per database.

Two `monitor run` on one database would both scrape and store every sample, so each
release would count twice the samples it has and look far surer than it is. The daemon
holds an advisory lock on a file beside the database for as long as it runs; the kernel
drops it when the process ends, however it ends. The CLI's other commands (`release
start`, `verdict`, ...) take no lock: they are meant to run beside the daemon.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from monitor.errors import StoreError

# A CLI command looking whether a daemon runs (`daemon_running`) holds a shared lock for a
# moment: a daemon starting then waits that moment out. A daemon holds its lock for good.
LOCK_PATIENCE_SECONDS = 0.5


def _lock_within(fd: int, patience: float) -> bool:
    """Take the exclusive lock, trying again for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def lock_file(database: str | Path) -> Path:
    """Where the daemon of the database at `database` holds its lock."""
    return Path(f"{database}.lock")


class DaemonLock:
    """The lock of the daemon of the database at `database` (see `lock_file`)."""

    def __init__(self, database: str | Path, *, patience: float = LOCK_PATIENCE_SECONDS) -> None:
        self.database = Path(database)
        self.patience = patience
        self.path = lock_file(database)
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the daemon's lock file {self.path}: "
                             f"{exc.strerror or exc}") from None
        if not _lock_within(fd, self.patience):
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"database {self.database} is in use by another `monitor run` "
                             f"(pid {holder}); one daemon per database")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def daemon_running(database: str | Path) -> bool:
    """Whether a `monitor run` holds the database at `database` now (reading only: the
    lock file is neither created nor changed)."""
    try:
        fd = os.open(lock_file(database), os.O_RDONLY)
    except OSError:
        return False    # never run here, or not ours to look at: nothing says it runs
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)    # closing drops a lock taken just now
    return False
