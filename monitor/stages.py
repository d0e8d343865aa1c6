"""The release stages before health signals: smoke probes and verification commands."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

import requests

from monitor.policy import Probe, VerifyCommand
from monitor.redact import command_environment, redact_url

_PROBE_BODY_LIMIT = 1024 * 1024
_OUTPUT_LIMIT = 4096


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def run_probe(probe: Probe, session: requests.Session | None = None) -> CheckResult:
    """One HTTP request: expected status, optional body text, within the latency budget."""
    http = session or requests.Session()
    where = redact_url(probe.url)
    started = time.monotonic()
    try:
        with http.get(probe.url, timeout=probe.max_latency, stream=True,
                      allow_redirects=False) as response:
            body = _read_bounded(response, _PROBE_BODY_LIMIT, started + probe.max_latency)
            status = response.status_code
    except (requests.RequestException, TimeoutError) as exc:
        return CheckResult(probe.name, False, f"{where}: {_failure(exc)}")
    latency = time.monotonic() - started
    if status != probe.expect_status:
        return CheckResult(probe.name, False, f"{where}: status {status}, expected {probe.expect_status}")
    if probe.expect_body and probe.expect_body not in body.decode("utf-8", "replace"):
        return CheckResult(probe.name, False, f"{where}: body lacks {probe.expect_body!r}")
    if latency > probe.max_latency:
        return CheckResult(probe.name, False, f"{where}: took {latency:.2f}s, budget {probe.max_latency:g}s")
    return CheckResult(probe.name, True, f"{where}: {status} in {latency * 1000:.0f} ms")


def _read_bounded(response: requests.Response, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(16384):
        size += len(chunk)
        if size > limit:
            raise requests.ConnectionError(f"body larger than {limit} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError("latency budget exceeded while reading the body")
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, requests.ConnectionError) and "larger than" in str(exc):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def run_command(command: VerifyCommand, env: dict[str, str] | None = None) -> CheckResult:
    """Run one verification command as an argument list (no shell); exit 0 passes.

    The command runs in its own process group so that a time-out kills everything it
    started, not just its first process.
    """
    try:
        process = subprocess.Popen(
            list(command.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, env=command_environment(env or {}),
        )
    except OSError as exc:
        return CheckResult(command.name, False, f"cannot start {command.argv[0]!r}: {exc.strerror}")
    try:
        output, _ = process.communicate(timeout=command.timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return CheckResult(command.name, False, f"timed out after {command.timeout:g}s")
    tail = output[-_OUTPUT_LIMIT:].decode("utf-8", "replace").strip().splitlines()
    last = tail[-1] if tail else ""
    if process.returncode != 0:
        return CheckResult(command.name, False, f"exit {process.returncode}: {last}".rstrip(": "))
    return CheckResult(command.name, True, last or "exit 0")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a process and everything in its process group, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()
