"""Commands the monitor runs (verification tests, hooks): an argument list, never a shell;
their own process group, killed whole at the time limit; and only the end of their output
kept, so a chatty test suite costs a few KiB of the daemon's memory, not gigabytes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from monitor.redact import printable

OUTPUT_TAIL = 4096
_LINE_LIMIT = 300
_READ_SIZE = 64 * 1024
# How long, after the command ended, its output may take to reach its end: a background
# process it left behind may hold the pipe open.
_DRAIN_SECONDS = 1.0
# How often a running command looks whether the monitor is stopping.
_STOP_POLL_SECONDS = 0.1


class Stopped(Exception):
    """The monitor stopped while the command ran: it was killed, and says nothing either way."""


@dataclass(frozen=True)
class Finished:
    """How a command ended: its exit status (None when killed at the time limit), the last
    line of its output, and how long it ran."""

    returncode: int | None
    last_line: str
    seconds: float


def run_bounded(argv: Sequence[str], *, env: Mapping[str, str], timeout: float,
                stdin: bytes = b"", stopping: threading.Event | None = None) -> Finished:
    """Run `argv` with `stdin` as its input, for at most `timeout` seconds.

    Raises OSError or ValueError (a NUL byte in an argument) when it cannot start, and
    Stopped when `stopping` is set before it ends: its process group is killed then, so a
    stopping monitor is not held for the rest of a test suite's time limit.
    """
    if stopping is not None and stopping.is_set():
        raise Stopped(f"{argv[0]!r} not started: the monitor is stopping")
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, env=dict(env),
    )
    assert process.stdin is not None and process.stdout is not None
    tail = _Tail(process.stdout)
    feeder = threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True)
    feeder.start()
    returncode = _wait(process, started + timeout, stopping)
    if returncode is None or not tail.finish(_DRAIN_SECONDS):
        _kill_group(process)
        tail.finish(_DRAIN_SECONDS)
    process.stdout.close()
    if returncode is None and stopping is not None and stopping.is_set():
        raise Stopped(f"{argv[0]!r} killed: the monitor is stopping")
    return Finished(returncode, tail.last_line(), time.monotonic() - started)


def _wait(process: subprocess.Popen[bytes], deadline: float,
          stopping: threading.Event | None) -> int | None:
    """The exit status, or None once `deadline` (time.monotonic) passed or `stopping` is set."""
    while stopping is None or not stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return process.wait(timeout=remaining if stopping is None
                                else min(remaining, _STOP_POLL_SECONDS))
        except subprocess.TimeoutExpired:
            continue
    return None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a process and everything in its process group, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write the input and close it; a command that exits without reading it is fine."""
    try:
        if data:
            pipe.write(data)
        pipe.close()
    except OSError:
        pass


class _Tail:
    """Reads a pipe to its end in a thread, keeping only its last OUTPUT_TAIL bytes."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._kept = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self._pipe.fileno(), _READ_SIZE):
                self._kept += chunk
                del self._kept[:-OUTPUT_TAIL]
        except (OSError, ValueError):
            pass  # closed under us: what was read is kept

    def finish(self, seconds: float) -> bool:
        """Wait up to `seconds` for the end of the output; whether it came."""
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def last_line(self) -> str:
        """The output's last line, printable (no terminal escapes reach a log)."""
        lines = bytes(self._kept).decode("utf-8", "replace").strip().splitlines()
        return printable(lines[-1], limit=_LINE_LIMIT) if lines else ""
