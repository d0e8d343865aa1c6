"""Commands run by the monitor: bounded in time and in the output kept."""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from processes import StopOnceFileExists, exits_within, group_members

from monitor.commands import OUTPUT_TAIL, Stopped, run_bounded

PYTHON = sys.executable
ENV = {"PATH": "/usr/bin:/bin"}


def test_only_the_end_of_a_huge_output_is_kept() -> None:
    # 64 MiB of output, then a last line: the daemon holds a few KiB of it, never all.
    script = "import sys\nfor _ in range(1024): sys.stdout.write('x' * 65535 + '\\n')\nprint('42 passed')"
    tracemalloc.start()
    try:
        finished = run_bounded([PYTHON, "-c", script], env=ENV, timeout=60.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (finished.returncode, finished.last_line) == (0, "42 passed")
    assert peak < 16 * OUTPUT_TAIL + 1024 * 1024, peak


def test_the_input_reaches_the_command_and_the_exit_status_comes_back() -> None:
    script = "import sys; print(sys.stdin.read()[::-1]); sys.exit(3)"
    finished = run_bounded([PYTHON, "-c", script], env=ENV, timeout=60.0, stdin=b"abc")
    assert (finished.returncode, finished.last_line) == (3, "cba")


def test_a_command_past_its_time_is_killed_with_its_children() -> None:
    started = time.monotonic()
    finished = run_bounded(["sh", "-c", "sleep 60 & sleep 60"], env=ENV, timeout=0.2)
    assert finished.returncode is None
    assert time.monotonic() - started < 10.0


def test_a_stopping_monitor_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"sleep 60 & echo $$ > {pid_file}.new; mv {pid_file}.new {pid_file}; sleep 60"
    started = time.monotonic()
    with pytest.raises(Stopped, match="killed: the monitor is stopping"):
        run_bounded(["sh", "-c", script], env=ENV, timeout=60.0, stopping=StopOnceFileExists(pid_file))
    assert time.monotonic() - started < 10.0
    # The background sleep too: killed with the group, it ends a moment after the signal.
    group = int(pid_file.read_text())
    assert all(exits_within(pid, 5.0) for pid in group_members(group))
    assert group_members(group) == []


def test_a_command_is_not_started_once_the_monitor_is_stopping(tmp_path: Path) -> None:
    stopping = threading.Event()
    stopping.set()
    marker = tmp_path / "ran"
    with pytest.raises(Stopped, match="not started"):
        run_bounded(["touch", str(marker)], env=ENV, timeout=60.0, stopping=stopping)
    assert not marker.exists()


def test_a_background_process_holding_the_output_open_does_not_hold_the_caller() -> None:
    started = time.monotonic()
    finished = run_bounded(["sh", "-c", "sleep 60 & echo started"], env=ENV, timeout=60.0)
    assert (finished.returncode, finished.last_line) == (0, "started")
    assert time.monotonic() - started < 10.0


def test_a_command_that_cannot_start_raises() -> None:
    with pytest.raises(OSError):
        run_bounded(["/nonexistent/verify"], env=ENV, timeout=1.0)
    with pytest.raises(ValueError):
        run_bounded(["echo", "a\0b"], env=ENV, timeout=1.0)


def test_the_last_line_is_printable_and_short() -> None:
    script = "import sys; sys.stdout.write('\\x1b[2Jcleared ' + '\\0' * 1000)"
    finished = run_bounded([PYTHON, "-c", script], env=ENV, timeout=60.0)
    assert finished.last_line.startswith("?[2Jcleared ???") and len(finished.last_line) == 300
    assert finished.last_line.isprintable()
