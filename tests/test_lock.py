"""One daemon per database: the lock beside the database file."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from monitor.errors import StoreError
from monitor.lock import DaemonLock, daemon_running


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    with DaemonLock(database) as first:
        assert first.path == tmp_path / "m.db.lock"
        assert first.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(StoreError, match=rf"database {database} is in use by another "
                           rf"`monitor run` \(pid {os.getpid()}\); one daemon per database"):
            DaemonLock(database, patience=0.0).__enter__()
    with DaemonLock(database):  # let go: the next daemon may start
        pass


def test_a_daemon_starting_waits_out_a_command_looking_whether_one_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "m.db"
    assert not daemon_running(database)
    looks = iter([True, True, False])   # a `verdict --wait` holds its shared lock a moment
    real = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX and next(looks, False):
            raise BlockingIOError
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)
    with DaemonLock(database):
        assert daemon_running(database)
    assert not daemon_running(database)


def test_a_lock_file_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot create the daemon's lock file .*missing"):
        DaemonLock(tmp_path / "missing" / "m.db").__enter__()
