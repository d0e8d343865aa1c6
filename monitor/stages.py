"""The release stages before health signals: smoke probes and verification commands."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from monitor.commands import run_bounded
from monitor.errors import ScrapeError
from monitor.fetch import bounded_request
from monitor.policy import Probe, VerifyCommand
from monitor.redact import command_environment, redact_url

_PROBE_BODY_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def run_probe(probe: Probe, session: requests.Session | None = None) -> CheckResult:
    """One HTTP request: expected status, optional body text, the whole exchange within
    the latency budget (a server that trickles its answer is cut off at the budget). Only
    the body's first MiB is read: a big page is no failure, and `expect_body` must be in
    that part."""
    http = session or requests.Session()
    where = redact_url(probe.url)
    started = time.monotonic()
    # Only gzip: the bounded reader inflates nothing else.
    request = requests.Request("GET", probe.url, headers={"Accept-Encoding": "gzip"})
    try:
        response, body = bounded_request(http, request, where=where, timeout=probe.max_latency,
                                         max_bytes=_PROBE_BODY_LIMIT, any_status=True,
                                         prefix=True)
    except ScrapeError as exc:
        return CheckResult(probe.name, False, str(exc))
    finally:
        if session is None:
            http.close()
    latency = time.monotonic() - started
    status = response.status_code
    if status != probe.expect_status:
        return CheckResult(probe.name, False, f"{where}: status {status}, expected {probe.expect_status}")
    if probe.expect_body and probe.expect_body not in body.decode("utf-8", "replace"):
        read = " in its first MiB" if len(body) >= _PROBE_BODY_LIMIT else ""
        return CheckResult(probe.name, False, f"{where}: body lacks {probe.expect_body!r}{read}")
    if latency > probe.max_latency:
        return CheckResult(probe.name, False, f"{where}: took {latency:.2f}s, budget {probe.max_latency:g}s")
    return CheckResult(probe.name, True, f"{where}: {status} in {latency * 1000:.0f} ms")


def run_command(command: VerifyCommand, env: dict[str, str] | None = None,
                stopping: threading.Event | None = None) -> CheckResult:
    """Run one verification command as an argument list (no shell); exit 0 passes.

    The command runs in its own process group so that a time-out kills everything it
    started, not just its first process. Raises `Stopped` when `stopping` is set first.
    """
    try:
        finished = run_bounded(command.argv, env=command_environment(env or {}),
                               timeout=command.timeout, stopping=stopping)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
        reason = getattr(exc, "strerror", None) or exc
        return CheckResult(command.name, False, f"cannot start {command.argv[0]!r}: {reason}")
    if finished.returncode is None:
        return CheckResult(command.name, False, f"timed out after {command.timeout:g}s")
    if finished.returncode != 0:
        return CheckResult(command.name, False,
                           f"exit {finished.returncode}: {finished.last_line}".rstrip(": "))
    return CheckResult(command.name, True, finished.last_line or "exit 0")
