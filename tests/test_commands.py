"""Commands run by the monitor: bounded in time and in the output kept."""

from __future__ import annotations

import sys
import time
import tracemalloc

import pytest

from monitor.commands import OUTPUT_TAIL, run_bounded

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
