"""Secrets stay secret: a marker planted in every credential the monitor holds never shows up
in what it logs, serves, prints or stores, even while everything around it fails.

The marker sits in webhook URLs (user info and query string), in a scrape target's URL, in
the API token and in a PromQL bearer token. The daemon then runs on a simulated clock
against the simulated shop while webhooks answer 500 or refuse connections, a target
answers 500, the PromQL server answers 500, and a release fails its smoke test.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import sqlite3
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from monitor.api import serve
from monitor.cli.app import app
from monitor.clock import SimClock
from monitor.daemon import Daemon
from monitor.demo_service import SimulatedService
from monitor.errors import ConfigError, ScrapeError
from monitor.hooks import deliver
from monitor.policy import Hook, load_policy, parse_policy
from monitor.promql import PromClient
from monitor.snapshot import SnapshotBox
from monitor.store import Store

MARKER = "mRk7qZ2xW9"
API_TOKEN_ENV = "RELEASE_MONITOR_TEST_API_TOKEN"
PROM_TOKEN_ENV = "RELEASE_MONITOR_TEST_PROM_TOKEN"
USERS = ("alice", "bob", "carol")


def _forms() -> list[str]:
    """The marker as it is, and as HTTP basic auth would carry it."""
    encoded = [base64.b64encode(f"{user}:{MARKER}".encode()).decode() for user in USERS]
    return [MARKER, MARKER.lower(), *encoded]


def assert_clean(where: str, text: str | bytes) -> None:
    seen = text.decode("latin-1") if isinstance(text, bytes) else text
    for form in _forms():
        assert form not in seen, f"the secret shows in {where}: ...{_around(seen, form)}..."


def _around(text: str, form: str) -> str:
    at = text.index(form)
    return text[max(0, at - 120): at + 40]


class _Failing(BaseHTTPRequestHandler):
    """Answers 500 to everything and remembers what it was sent."""

    seen: list[str]

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append(f"{self.requestline}\n{self.headers}")
        body = b"internal error\n"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail  # noqa: N815 - the stdlib's names

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Failing:
    url: str
    seen: list[str] = field(default_factory=list)


@pytest.fixture()
def failing() -> Iterator[Failing]:
    handler: type[_Failing] = type("Handler", (_Failing,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Failing(f"127.0.0.1:{server.server_address[1]}", handler.seen)
    server.shutdown()
    server.server_close()


@pytest.fixture()
def refused() -> str:
    """An address nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture()
def shop() -> Iterator[tuple[SimulatedService, SimClock]]:
    clock = SimClock()
    simulated = SimulatedService(clock, seed=5, version="v2.2")
    simulated.start()
    yield simulated, clock
    simulated.stop()


def write_policy(folder: Path, shop: str, failing: str, refused: str) -> Path:
    secret = f"{MARKER}@"
    policy = folder / "policy.toml"
    policy.write_text(f"""
[monitor]
database = "m.db"
api_token_env = "{API_TOKEN_ENV}"

[services.demo]
version_metric = "demo_build_info"
period = {{ minor = "30m" }}

[[services.demo.targets]]
url = "{shop}/metrics"

[[services.demo.targets]]
url = "http://carol:{secret}{failing}/metrics?token={MARKER}&module=http"

[[services.demo.smoke]]
name = "database connected"
url = "{shop}/health"
expect_body = '"connected"'

[services.demo.signals.error_ratio]
kind = "ratio"
numerator = "http_request_errors_total"
denominator = "http_requests_total"
critical = true

[services.demo.signals.queue_depth]
metric = "work_queue_depth"

[[services.demo.hooks]]
name = "answers 500"
on = ["pass", "rollback"]
url = "http://alice:{secret}{failing}/services/{MARKER}/hook?token={MARKER}"
timeout = "2s"
budget = "3s"

[[services.demo.hooks]]
name = "refuses"
on = ["pass", "rollback"]
url = "https://bob:{secret}{refused}/hook?token={MARKER}"
budget = "3s"

[services.prom]

[services.prom.prometheus]
url = "http://{failing}"
bearer_token_env = "{PROM_TOKEN_ENV}"
retries = 1

[services.prom.signals.errors]
query = 'sum(rate(errors_total{{version="$version"}}[1m]))'

[[services.prom.hooks]]
name = "answers 500"
on = ["inconclusive"]
url = "http://alice:{secret}{failing}/hook?token={MARKER}"
budget = "1s"
""")
    return policy


@dataclass
class Exposed:
    """Everything the monitor showed while it ran."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str | bytes) -> None:
        self.texts[where] = text.decode("latin-1") if isinstance(text, bytes) else text


def test_no_secret_leaks_while_everything_fails(
    shop: tuple[SimulatedService, SimClock], failing: Failing, refused: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    simulated, clock = shop
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(API_TOKEN_ENV, MARKER)
    monkeypatch.setenv(PROM_TOKEN_ENV, MARKER)
    policy = write_policy(tmp_path, simulated.url, failing.url, refused)
    config = load_policy(policy)
    db = tmp_path / "m.db"
    store = Store.open(db)
    box = SnapshotBox()
    daemon = Daemon(config, store, clock, box=box)
    server = serve(box, version="test", token=MARKER, clock=clock)
    exposed = Exposed()
    try:
        daemon.run_until(clock.now() + 2400)       # v2.2 passes; its hooks fail
        bearer = {"Authorization": f"Bearer {MARKER}"}
        for name, headers in (("right token", bearer), ("wrong token", {"Authorization": "Bearer x"}),
                              ("no token", {})):
            answer = requests.post(f"{server.url}/api/v1/releases", headers=headers, timeout=5,
                                   json={"service": "prom", "version": "p1"})
            exposed.add(f"POST /api/v1/releases ({name}): {answer.status_code} {answer.headers}",
                        answer.text)
        simulated.deploy("v2.5")                   # its database is unreachable: smoke fails
        daemon.run_until(clock.now() + 1200)       # p1's period ends with PromQL failing
        _read_every_answer(server.url, exposed)
    finally:
        server.shutdown()
        daemon.close()
        store.close()

    # The failures really happened, with the secrets in play.
    rolled_back = _release(db, "demo", "v2.5")
    assert rolled_back["verdict"] == "rollback" and "smoke" in rolled_back["reason"]
    inconclusive = _release(db, "prom", "p1")
    assert inconclusive["verdict"] == "inconclusive", inconclusive["reason"]
    assert "data source failing: signal errors: Prometheus" in inconclusive["reason"]
    outcomes = _actions(db)
    assert sorted(f"{version} {hook}" for version, hook, _ in outcomes) == [
        "p1 answers 500", "v2.2 answers 500", "v2.2 refuses",
        "v2.5 answers 500", "v2.5 refuses"]
    assert all(outcome and "200" not in outcome for _, _, outcome in outcomes)
    received = "\n".join(failing.seen)
    assert f"token={MARKER}" in received                 # the webhook and target queries
    assert f"/services/{MARKER}/hook" in received        # a webhook's secret path (Slack's)
    assert f"Bearer {MARKER}" in received                # the PromQL bearer token
    exposed.add("the source errors", repr(daemon.releases.source_errors))

    _run_the_cli(db, policy, exposed)
    exposed.add("the SQLite dump", "\n".join(_dump(db)))
    exposed.add("the SQLite files", b"".join(path.read_bytes() for path in tmp_path.glob("m.db*")))
    exposed.add("the captured log", caplog.text)
    for record in caplog.records:
        exposed.add(f"log record {record.name}", record.getMessage())
    for where, text in exposed.texts.items():
        assert_clean(where, text)


def _read_every_answer(url: str, exposed: Exposed) -> None:
    queries = ["/metrics", "/healthz", "/api/v1/releases", "/nowhere",
               "/api/v1/verdict?service=demo&release=v2.5", "/api/v1/verdict?release=p1",
               "/api/v1/verdict?release=v2.2", "/api/v1/gate?release=v2.5",
               "/api/v1/rollback?release=v2.5", "/api/v1/verdict?release=unknown"]
    for query in queries:
        answer = requests.get(url + query, timeout=5)
        exposed.add(f"GET {query}: {answer.status_code} {answer.headers}", answer.text)
    answer = requests.get(f"{url}/api/v1/releases", timeout=5)
    assert {doc["release"] for doc in answer.json()["releases"]} >= {"v2.2", "v2.5", "p1"}


def _run_the_cli(db: Path, policy: Path, exposed: Exposed) -> None:
    runner = CliRunner()
    commands = [
        ["verdict", "--db", str(db), "--service", "demo", "--release", "v2.5", "--json"],
        ["verdict", "--db", str(db), "--service", "demo", "--release", "v2.5"],
        ["verdict", "--db", str(db), "--release", "p1", "--json"],
        ["release", "list", "--db", str(db), "--json"],
        ["release", "list", "--db", str(db)],
        ["check-config", str(policy)],
    ]
    for command in commands:
        result = runner.invoke(app, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        exposed.add(f"monitor {' '.join(command[:2])}", result.output)
    listed = json.loads(runner.invoke(app, commands[3]).output)
    assert len(listed["releases"]) == 3


def _release(db: Path, service: str, version: str) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM releases WHERE service = ? AND version = ?",
                           (service, version)).fetchone()
    return dict(row)


def _actions(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version, hook, outcome FROM actions "
                            "JOIN releases ON releases.id = release_id").fetchall()


def _dump(db: Path) -> Iterator[str]:
    """Every row of every table, as SQL text."""
    conn = sqlite3.connect(db)
    try:
        yield from conn.iterdump()
    finally:
        conn.close()


# ---------------------------------------------------------------- errors provoked on purpose


def _failure_text(exc: BaseException) -> str:
    return str(exc) + "\n" + "".join(traceback.format_exception(exc))


def test_promql_errors_name_the_server_not_the_token(
    failing: Failing, refused: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PROM_TOKEN_ENV, MARKER)
    config = load_policy(write_policy(tmp_path, "http://127.0.0.1:9", failing.url, refused))
    source = config.services["prom"].prometheus
    assert source is not None
    for server in (source, replace(source, url=f"http://{refused}/prom?tenant={MARKER}")):
        with PromClient(server, clock=SimClock()) as client, pytest.raises(ScrapeError) as raised:
            client.query_range("up", 1_767_225_600.0, 1_767_225_660.0, 15.0)
        assert_clean(f"the error from {server.url}", _failure_text(raised.value))
    assert f"Bearer {MARKER}" in "\n".join(failing.seen)
    assert_clean("the captured log", caplog.text)


BAD_HOOK_URLS = [
    f"bob:{MARKER}@127.0.0.1/hook?token={MARKER}",           # no scheme
    f"ftp://bob:{MARKER}@127.0.0.1/hook?token={MARKER}",     # no adapter for ftp
    f"http://bob:{MARKER}@127.0.0.1:99999/hook?token={MARKER}",
    f"http://bob:{MARKER}@[::1/hook?token={MARKER}",
    f"http://bob:{MARKER}@/hook?token={MARKER}",
    f"http://bob:{MARKER}@127.0.0.1:9/ho ok?token={MARKER}\n",
    f"//bob:{MARKER}@127.0.0.1:9/hook?token={MARKER}",
]


@pytest.mark.parametrize("url", BAD_HOOK_URLS)
def test_a_bad_hook_url_fails_without_showing_its_secrets(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = Hook(name="bad", on=("rollback",), url=url, timeout=1.0)
    body = {"service": "demo", "release": "v2.5", "verdict": "rollback", "baseline_release": None,
            "reason": "", "idempotency_key": "k"}
    outcome = deliver(hook, body)
    assert not outcome.ok
    assert_clean("the outcome", outcome.detail)
    assert_clean("the captured log", caplog.text)


@pytest.mark.parametrize("table", ["targets", "hooks"])
@pytest.mark.parametrize("url", [f"ftp://carol:{MARKER}@10.0.0.1/metrics?token={MARKER}",
                                 f"bob:{MARKER}@127.0.0.1/hook?token={MARKER}"])
def test_a_rejected_url_is_not_quoted_with_its_secrets(table: str, url: str) -> None:
    text = f'[[services.demo.{table}]]\nname = "x"\nurl = "{url}"\n'
    with pytest.raises(ConfigError) as raised:
        parse_policy(text, "policy.toml")
    assert "url" in str(raised.value)
    assert_clean("the policy error", _failure_text(raised.value))

