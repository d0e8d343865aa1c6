"""Tests of the `monitor` command line, through Typer's CliRunner, on the demo's database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from baselines.selection import choose_baselines
from monitor.cli.app import app, main
from monitor.clock import SimClock
from monitor.demo import run_demo
from monitor.lock import DaemonLock
from monitor.store import Store

REPO = Path(__file__).resolve().parent.parent
# Options read from the environment must not leak in from the shell running the tests.
runner = CliRunner(env={"RELEASE_MONITOR_DB": None, "RELEASE_MONITOR_CONFIG": None})

POLICY = """\
[services.shop]
evaluation_interval = "30s"

[[services.shop.targets]]
url = "http://127.0.0.1:8080/metrics"

[services.shop.signals.errors]
kind = "ratio"
numerator = "http_request_errors_total"
denominator = "http_requests_total"
"""

DOCUMENT_KEYS = {"service", "release", "baseline_release", "verdict", "decided_at",
                 "first_alarm_at", "findings"}
# The README's list of a finding's keys.
FINDING_KEYS = {"signal", "detector", "severity", "baseline", "candidate", "effect", "lower",
                "upper", "tolerance", "n_baseline", "n_candidate", "detail", "exhaustion", "at",
                "change_at"}


def monitor(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def error_line(result: Result) -> str:
    """The single line a failing command writes on stderr."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def command_tree() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and subcommand, as (path of names from `monitor`, click command)."""
    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        # Typer ships its own copy of click, so groups are recognised by their subcommands.
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk((*path, name), sub)

    yield from walk(("monitor",), typer.main.get_command(app))


COMMANDS = list(command_tree())
COMMAND_IDS = [" ".join(path) for path, _ in COMMANDS]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's database, made once for this module; tests that change it use a copy."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    run_demo(path, echo=lambda line: None)
    return path


@pytest.fixture
def healthy_csv(demo_db: Path, tmp_path: Path) -> Path:
    """The demo's healthy v2.2 (after v2.1), recorded for replay."""
    out = tmp_path / "v2.2.csv"
    assert monitor("record", "--db", demo_db, "--release", "v2.2", "--out", out).exit_code == 0
    return out


@pytest.fixture
def demo_copy(demo_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{demo_db}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{copy}{suffix}")
    return copy


def test_the_command_tree_has_the_documented_commands() -> None:
    assert {"monitor run", "monitor check-config", "monitor release start", "monitor release list",
            "monitor verdict", "monitor replay", "monitor record", "monitor demo",
            "monitor baselines list", "monitor baselines pin", "monitor baselines unpin",
            "monitor baselines invalidate"} <= set(COMMAND_IDS)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_every_command_has_help(path: tuple[str, ...], command: Any) -> None:
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)}: {param.name} has no help"
    result = monitor(*path[1:], "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and command.help.split()[0] in result.output, result.output


def test_version() -> None:
    result = monitor("--version")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("release-monitor ")


@pytest.mark.parametrize(("args", "expected"), [
    (["verdict"], "error: monitor verdict: Missing option '--release'. (see 'monitor verdict -h')"),
    # The value given without its option's name (an option's own value is not taken for it).
    (["verdict", "--db", "m.db", "--json", "v2.3"],
     "error: monitor verdict: Missing option '--release': --release v2.3? "
     "(see 'monitor verdict -h')"),
    (["verdict", "--release", "v1", "--bogus"],
     "error: monitor verdict: No such option: --bogus (see 'monitor verdict -h')"),
    (["nosuch"], "error: monitor: No such command 'nosuch'. (see 'monitor -h')"),
    (["baselines", "pin"],
     "error: monitor baselines pin: Missing argument 'release'. (see 'monitor baselines pin -h')"),
    # Raised before click knows the command: named from the arguments.
    (["verdict", "--release"],
     "error: monitor verdict: Option '--release' requires an argument. (see 'monitor verdict -h')"),
    (["baselines", "pin", "--db"],
     "error: monitor baselines pin: Option '--db' requires an argument. "
     "(see 'monitor baselines pin -h')"),
])
def test_a_usage_error_is_one_line_and_exits_2(
        args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [expected]


def test_the_entry_point_passes_on_exit_codes_and_prints_help_without_arguments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verdict", "--release", "v1", "--db", str(tmp_path / "none.db")])
    assert exited.value.code == 7
    assert capsys.readouterr().err.startswith("error: no database at ")
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert "Usage: monitor" in out and err == ""


def test_ctrl_c_during_a_wait_says_so_and_exits_130(
        demo_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(demo_copy)
    store.start_release("demo", "v9", at=time.time(), change_class="minor", period=900.0,
                        baselines=("v2.2",))
    store.close()

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt   # what Ctrl-C raises in the sleep between two looks

    monkeypatch.setattr("monitor.verdicts.wait_for_decision", interrupted)
    with pytest.raises(SystemExit) as exited:
        main(["verdict", "--db", str(demo_copy), "--release", "v9", "--wait"])
    assert exited.value.code == 130
    assert capsys.readouterr().err.endswith("\ninterrupted\n")


def test_a_value_of_the_wrong_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--port", "abc"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    # The reason's wording is Typer's and varies between its versions.
    assert line.startswith("error: monitor demo: Invalid value for '--port': "), line
    assert line.endswith(" (see 'monitor demo -h')"), line


def test_a_group_without_a_command_prints_its_help_and_exits_2() -> None:
    result = subprocess.run([sys.executable, "-m", "monitor", "release"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout.startswith("Usage: monitor release [OPTIONS] COMMAND"), result.stdout
    assert "Register deploys" in result.stdout and result.stderr == ""


def test_check_config_refuses_a_database_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[monitor]\ndatabase = "no/such/dir/m.db"\n\n' + POLICY, encoding="utf-8")
    for args in (("check-config", path), ("run", "--config", path)):
        result = monitor(*args)
        assert result.exit_code == 2, result.output
        assert error_line(result) == (f"error: {path}: monitor.database: directory "
                                      f"{tmp_path / 'no/such/dir'} does not exist")


@pytest.mark.parametrize(("table", "key"), [
    ('[[services.shop.verify]]\nname = "tests"\nargv = ["no-such-program-7f3a", "-k", "x"]\n',
     "verify[0].argv"),
    ('[[services.shop.hooks]]\nname = "undo"\ncommand = ["./no-such-script-7f3a"]\n'
     "dry_run = false\n", "hooks[0].command"),
])
def test_a_command_whose_program_cannot_be_found_is_refused(tmp_path: Path, table: str,
                                                            key: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY + "\n" + table, encoding="utf-8")
    # A program given by a relative path is looked for beside the policy file.
    program, where = (("no-such-program-7f3a", "not found on PATH") if "verify" in key
                      else (str(tmp_path / "no-such-script-7f3a"), "no such file"))
    for args in (("check-config", path), ("run", "--config", path)):
        result = monitor(*args)
        assert result.exit_code == 2, result.output
        assert error_line(result) == (
            f"error: {path}: services.shop.{key}: {program!r} is not an executable program "
            f"({where})")
    if "hooks" in key:
        # Once there, it is found wherever the command runs.
        script = tmp_path / "no-such-script-7f3a"
        script.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        script.chmod(0o644)
        assert error_line(monitor("check-config", path)).endswith(
            f"{program!r} is not an executable program (not executable: chmod +x)")
        script.chmod(0o755)
        assert monitor("check-config", path).exit_code == 0
        script.unlink()
    # A hook that only says what it would run needs no program yet.
    path.write_text(POLICY + '\n[[services.shop.hooks]]\nname = "undo"\n'
                    'command = ["./no-such-script-7f3a"]\ndry_run = true\n', encoding="utf-8")
    assert monitor("check-config", path).exit_code == 0


def test_check_config_accepts_a_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    result = monitor("check-config", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "shop: 1 target, 0 smoke probes, 0 verification commands, 1 signal, 0 hooks; "
        "checking period minor 15m, major 2h00m")
    assert "note:" not in result.stdout
    assert result.stdout.rstrip().endswith(f"{path}: ok")


def _check_config_notes(folder: Path, policy: str) -> list[str]:
    """The notes `monitor check-config` prints for this policy, which it accepts."""
    path = folder / "policy.toml"
    path.write_text(policy, encoding="utf-8")
    result = monitor("check-config", path)
    assert result.exit_code == 0, result.output
    return [line for line in result.stdout.splitlines() if "note:" in line]


@pytest.mark.parametrize(("policy", "note"), [
    ('[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics"\n',
     "shop: note: no signals, smoke probes or verification commands: nothing judges its "
     "releases"),
    ('[services.shop.signals.latency]\nmetric = "latency_seconds"\n',
     "shop: note: signals but no targets and no [prometheus]: nothing feeds them, so its "
     "releases end inconclusive"),
], ids=["nothing-to-judge", "signals-nothing-feeds"])
def test_check_config_notes_a_service_that_cannot_be_judged(tmp_path: Path, policy: str,
                                                            note: str) -> None:
    assert note in _check_config_notes(tmp_path, policy)


def test_check_config_notes_queries_that_read_the_same_series_or_count_twice(
    tmp_path: Path,
) -> None:
    notes = _check_config_notes(tmp_path, '[services.p.prometheus]\nurl = "http://127.0.0.1:9090"\n'
                                '[services.p.signals.lat]\nquery = \'label_replace(up{version='
                                '"$verison"}, "a", "$1", "b", "(.*)")\'\n'
                                '[services.p.signals.errors]\nkind = "ratio"\n'
                                'numerator_query = \'sum(increase(e{version="$version"}[1m]))\'\n'
                                'denominator_query = \'sum(increase(r{version="$version"}[$step]))\'\n')
    assert notes == [
        "p: note: signals.lat: no query uses $version, so every release is judged on the same "
        "series",
        "p: note: signals.lat: $verison is no placeholder ($service, $version, $step): it is "
        "sent as written",
        "p: note: signals.errors: a count over a fixed window counts an event in every step it "
        "covers; use increase(...[$step]), with a step of at least two scrape intervals",
        "p: note: signals.errors: numerator_query answers nothing while there are no errors (a "
        "sum over no series), and a baseline without an answer is not compared with; add `or "
        "vector(0)` if that means no errors",
    ]
    fallback = _check_config_notes(tmp_path, '[services.p.prometheus]\nurl = "http://127.0.0.1:9090"\n'
                                   '[services.p.signals.errors]\nkind = "ratio"\n'
                                   'numerator_query = \'sum(increase(e{version="$version"}[$step])) '
                                   'or vector(0)\'\n'
                                   'denominator_query = \'sum(increase(r{version="$version"}[$step]))\'\n')
    assert fallback == []


def test_check_config_notes_values_most_likely_in_the_wrong_unit(tmp_path: Path) -> None:
    notes = _check_config_notes(tmp_path, '[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics"\n'
                                'interval = "2s"\ntimeout = 1000\n'
                                '[services.shop.signals.latency]\nmetric = "latency_seconds"\n'
                                'tolerance = 25\nignore_below = 0.05\n'
                                '[services.shop.signals.p95]\nkind = "quantile"\n'
                                'metric = "latency_seconds_bucket"\n'
                                '[services.shop.signals.memory]\nmetric = "rss_bytes"\n'
                                'leak = true\nlimit = 512\n')
    assert notes == [
        'shop: note: targets[0].timeout: 16m40s is longer than its interval (2s): a hanging '
        'target misses scrapes before a failure is said (durations take a unit: "2s")',
        "shop: note: signals.latency.tolerance: 25 is +2500%; it is a fraction (0.25 is 25%)",
        "shop: note: signals.p95.metric: a quantile names the histogram, whose _bucket series it "
        "reads: 'latency_seconds', unless the histogram's own name ends in _bucket",
        "shop: note: signals.memory.limit: 512 is in the signal's unit, bytes for memory "
        "(1 GiB is 1073741824)",
    ]


def test_check_config_names_file_and_key_of_a_mistake(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.replace('"30s"', '"30 seconds"'), encoding="utf-8")
    result = monitor("check-config", path)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {path}: services.shop.evaluation_interval: ")
    assert result.stdout == ""


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = monitor("check-config", path)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {path}: cannot read")


def test_release_start_then_list(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    result = monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db)
    assert result.exit_code == 0, result.output
    assert "registered shop v1 (minor change" in result.stdout
    result = monitor("release", "start", "--service", "shop", "--version", "v2", "--change", "major",
                     "--db", db)
    assert result.exit_code == 0, result.output

    listed = monitor("release", "list", "--db", db)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("shop", "v2"), ("shop", "v1")]

    as_json = monitor("release", "list", "--db", db, "--json")
    assert as_json.exit_code == 0, as_json.output
    releases = json.loads(as_json.stdout)["releases"]
    assert [(d["service"], d["release"], d["change_class"], d["verdict"]) for d in releases] == [
        ("shop", "v2", "major", "pending"), ("shop", "v1", "minor", "pending")]
    assert releases[0]["period_seconds"] == 7200.0
    assert "signals" not in releases[0] and "findings" in releases[0]


def test_release_start_without_a_policy_notes_a_service_the_database_never_saw(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with DaemonLock(db):    # a daemon runs on it
        assert monitor("release", "start", "--service", "shop", "--version", "v1",
                       "--db", db).exit_code == 0
        again = monitor("release", "start", "--service", "shop", "--version", "v2", "--db", db)
        assert "knows nothing" not in again.stderr
        typo = monitor("release", "start", "--service", "shopp", "--version", "v2", "--db", db)
    assert typo.exit_code == 0, typo.output
    assert typo.stderr == (f"note: {db} knows nothing of 'shopp' (it has shop); without --config "
                           "the policy is not checked, and the monitor finds a service it does "
                           "not name inconclusive\n")


def test_a_wait_that_no_daemon_can_end_stops_after_a_minute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pipeline's 45 minutes are not waited out on a database no `monitor run` uses.
    clocks: list[tuple[float, SimClock]] = []

    def simulated() -> SimClock:
        began = time.time()
        clocks.append((began, SimClock(start=began)))
        return clocks[-1][1]

    monkeypatch.setattr("monitor.clock.WallClock", simulated)
    db = tmp_path / "m.db"
    assert monitor("release", "start", "--service", "shop", "--version", "v1",
                   "--db", db).exit_code == 0
    waited = monitor("verdict", "--release", "v1", "--db", db, "--wait", "--timeout", "45m")
    assert waited.exit_code == 5, waited.output
    assert waited.stderr.endswith(f"note: no `monitor run` used {db} for 1m: stopped waiting\n")
    began, clock = clocks[-1]
    assert 60.0 <= clock.now() - began <= 65.0


def test_release_start_and_a_wait_note_that_no_daemon_runs(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    started = monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db)
    assert started.exit_code == 0, started.output
    assert started.stderr == (f"note: no `monitor run` is using {db}: nothing judges v1 until "
                              "one starts\n")
    waited = monitor("verdict", "--release", "v1", "--db", db, "--wait", "--timeout", "0s")
    assert waited.exit_code == 5, waited.output
    assert waited.stderr == (f"note: no `monitor run` is using {db}: the verdict will not "
                             "change until one starts (waiting up to 1m for one)\n")
    with DaemonLock(db):
        assert monitor("verdict", "--release", "v1", "--db", db, "--wait",
                       "--timeout", "0s").stderr == ""
        # v1 is still being judged: v2 has nothing to be measured against.
        second = monitor("release", "start", "--service", "shop", "--version", "v2", "--db", db)
    assert second.exit_code == 0 and "baseline none" in second.stdout, second.output
    assert second.stderr == ("note: no release before v2 passed (they are still judged, or "
                             "ended in a hotfix or inconclusive), so nothing measures its "
                             "health signals and it will end inconclusive; `monitor baselines "
                             "pin` one you trust for the releases after it\n")


def test_release_start_again_says_so_and_takes_the_change_class_while_judging(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    first = monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db)
    assert first.stdout.startswith("registered shop v1 (minor change, checking period 15m")
    with closing(Store.open(db)) as store:
        started = store.release("shop", "v1").started_at
    # The daemon saw the version label first and guessed minor; the pipeline knows better.
    again = monitor("release", "start", "--service", "shop", "--version", "v1", "--change", "major",
                    "--db", db)
    assert again.exit_code == 0, again.output
    assert again.stdout == ("already registered: shop v1 (major change, checking period 2h00m, "
                            "baseline none, smoke)\n")
    with closing(Store.open(db)) as store:
        [release] = store.releases("shop")
    assert (release.change_class, release.period, release.started_at) == ("major", 7200.0, started)
    # A retry that does not say the class keeps the one the release has.
    retry = monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db)
    assert retry.stdout.startswith("already registered: shop v1 (major change, checking period 2h00m")
    # Nor does one that says `minor` (a pipeline's step written for small fixes): a
    # migration's check is never cut short, and the note says so.
    minor = monitor("release", "start", "--service", "shop", "--version", "v1", "--change", "minor",
                    "--db", db)
    assert minor.exit_code == 0, minor.output
    assert minor.stdout.startswith("already registered: shop v1 (major change, checking period 2h00m")
    assert "note: kept as a major change: a checking period under way is never shortened" in minor.stderr
    with closing(Store.open(db)) as store:
        assert store.release("shop", "v1").period == 7200.0


def test_release_start_of_a_judged_version_is_an_error_that_changes_nothing(demo_copy: Path) -> None:
    with closing(Store.open(demo_copy)) as store:
        before = store.release("demo", "v2.3")
    result = monitor("release", "start", "--service", "demo", "--version", "v2.3", "--change", "major",
                     "--db", demo_copy)
    assert result.exit_code == 2, result.output
    assert error_line(result) == ("error: demo v2.3 was registered before and judged already "
                                  "(rollback); a new deploy needs a new version (one rolled back to needs "
                                  "no registration: the monitor keeps judging the next release "
                                  "against it)")
    with closing(Store.open(demo_copy)) as store:
        assert store.release("demo", "v2.3") == before


def test_release_start_with_a_policy_uses_its_period(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY + '[services.shop.period]\nminor = "5m"\n', encoding="utf-8")
    result = monitor("release", "start", "--service", "shop", "--version", "v1",
                     "--config", policy, "--db", tmp_path / "m.db")
    assert result.exit_code == 0, result.output
    assert "checking period 5m" in result.stdout


def test_release_start_refuses_a_service_the_policy_does_not_name(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    db = tmp_path / "m.db"
    result = monitor("release", "start", "--service", "nosuch", "--version", "v1",
                     "--config", policy, "--db", db)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (f"error: {policy}: services.nosuch: not in the policy "
                                  "(services: shop)")
    assert not db.exists()


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--version", "", "must have 1 to 200 characters"),
    ("--version", "v" * 201, "must have 1 to 200 characters"),
    ("--version", "v\x1b[31mred", "must be printable"),
    ("--service", " shop", "must be printable"),
    ("--service", "shop front", "service names use letters, digits, _ . -"),   # no policy's
])
def test_release_start_refuses_names_the_api_would(tmp_path: Path, option: str, value: str,
                                                   problem: str) -> None:
    names = {"--service": "shop", "--version": "v1", option: value}
    db = tmp_path / "m.db"
    result = monitor("release", "start", *[x for pair in names.items() for x in pair], "--db", db)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {option}: {problem}")
    assert not db.exists()


def test_release_start_refuses_an_unknown_change_class(tmp_path: Path) -> None:
    result = monitor("release", "start", "--service", "shop", "--version", "v1", "--change", "huge",
                     "--db", tmp_path / "m.db")
    assert result.exit_code == 2, result.output
    assert "--change" in error_line(result)


def test_release_list_of_an_empty_database(tmp_path: Path) -> None:
    from monitor.store import Store

    Store.open(tmp_path / "m.db").close()
    result = monitor("release", "list", "--db", tmp_path / "m.db")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no releases yet"


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for args in (("verdict", "--release", "v1"), ("release", "list"), ("baselines", "list")):
        result = monitor(*args, "--db", typo)
        assert result.exit_code == 7, result.output
        assert str(typo) in error_line(result)
    assert not typo.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    for args in (("verdict", "--release", "v1"), ("release", "list"), ("baselines", "list")):
        result = monitor(*args, "--db", empty)
        assert result.exit_code == 7, result.output
        assert error_line(result).startswith(f"error: no database at {empty}")
    assert empty.stat().st_size == 0


@pytest.mark.parametrize("args", [("verdict", "--release", "v1"), ("release", "list"),
                                  ("baselines", "list"),
                                  ("release", "start", "--service", "shop", "--version", "v1")])
@pytest.mark.parametrize("user_version", [0, 2, 99])
def test_another_programs_database_is_left_alone(tmp_path: Path, args: tuple[str, ...],
                                                 user_version: int) -> None:
    foreign = tmp_path / "app.db"
    with closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute(f"PRAGMA user_version = {user_version}")
    before = foreign.read_bytes()
    result = monitor(*args, "--db", foreign)
    assert result.exit_code == 7, result.output
    assert error_line(result) == (f"error: {foreign} is not a release-monitor database "
                                  "(another program's tables are in it): give another --db")
    assert foreign.read_bytes() == before
    assert not (tmp_path / "app.db-wal").exists()


def test_baselines_list_of_an_empty_database(tmp_path: Path) -> None:
    Store.open(tmp_path / "m.db").close()
    result = monitor("baselines", "list", "--db", tmp_path / "m.db")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no releases yet"


def test_verdict_of_an_unknown_release(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db).exit_code == 0
    result = monitor("verdict", "--release", "v9.9", "--db", db)
    assert result.exit_code == 2, result.output
    assert "v9.9" in error_line(result)


def test_verdict_of_an_ambiguous_release_needs_the_service(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    for service in ("shop", "cart"):
        started = monitor("release", "start", "--service", service, "--version", "v1", "--db", db)
        assert started.exit_code == 0, started.output
    result = monitor("verdict", "--release", "v1", "--db", db)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "v1" in line and "cart" in line and "shop" in line, line

    chosen = monitor("verdict", "--release", "v1", "--service", "cart", "--db", db, "--json")
    assert chosen.exit_code == 5, chosen.output  # registered, not decided: pending
    assert json.loads(chosen.stdout)["service"] == "cart"
    # Still judged: the text says when its checking period is over.
    started = json.loads(chosen.stdout)["started_at"]
    text = monitor("verdict", "--release", "v1", "--service", "cart", "--db", db)
    ends = datetime.fromtimestamp(started + 900, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    assert f"checking period 15m (ends {ends}), state smoke" in text.stdout, text.stdout


@pytest.mark.parametrize(
    ("release", "code", "words"),
    [
        ("v2.1", 0, ["PASS"]),
        ("v2.2", 0, ["PASS"]),
        ("v2.3", 3, ["ROLLBACK", "error_ratio", "memory"]),
        ("v2.4", 4, ["HOTFIX"]),
        ("v2.5", 3, ["ROLLBACK", "smoke"]),
    ],
)
def test_demo_verdicts_and_exit_codes(demo_db: Path, release: str, code: int, words: list[str]) -> None:
    result = monitor("verdict", "--db", demo_db, "--release", release)
    assert result.exit_code == code, result.output
    for word in words:
        assert word in result.stdout, (word, result.stdout)


def test_verdict_json_document(demo_db: Path) -> None:
    result = monitor("verdict", "--db", demo_db, "--release", "v2.3", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert DOCUMENT_KEYS <= doc.keys(), doc.keys()
    assert (doc["service"], doc["release"], doc["baseline_release"], doc["verdict"]) == (
        "demo", "v2.3", "v2.2", "rollback")
    assert doc["started_at"] < doc["first_alarm_at"] <= doc["decided_at"]
    assert doc["findings"], doc
    for finding in doc["findings"]:
        assert finding.keys() == FINDING_KEYS, finding.keys()
    major = {f["signal"] for f in doc["findings"] if f["severity"] == "major"}
    assert {"error_ratio", "memory"} <= major, doc["findings"]


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_when_a_quantile_has_no_data(tmp_path: Path) -> None:
    # A signal the baseline never had: its stored quantiles are NaN, which JSON has not.
    db = tmp_path / "m.db"
    store = Store.open(db)
    release = store.start_release("shop", "v2", at=1.7e9, change_class="minor", period=900.0,
                                  baselines=("v1",))
    store.add_verdict(release.id, at=1.7e9 + 60, verdict="pass", reason="", findings=[],
                      first_alarm_at=None, decided_at=1.7e9 + 60, state="done", judge_state="{}",
                      signals=[{"signal": "queue", "baseline": {"p05": float("nan")}}])
    store.close()
    verdict = monitor("verdict", "--db", db, "--release", "v2", "--json")
    assert verdict.exit_code == 0, verdict.output
    assert _strict_json(verdict.stdout)["signals"] == [{"signal": "queue", "baseline": {"p05": None}}]
    listed = monitor("release", "list", "--db", db, "--json")
    assert _strict_json(listed.stdout)["releases"][0]["release"] == "v2"


def test_a_failed_smoke_check_is_a_finding_with_every_key(demo_db: Path) -> None:
    result = monitor("verdict", "--db", demo_db, "--release", "v2.5", "--json")
    assert result.exit_code == 3, result.output
    findings = json.loads(result.stdout)["findings"]
    assert findings and all(f["detector"] == "smoke" for f in findings)
    for finding in findings:
        assert finding.keys() == FINDING_KEYS, finding.keys()
        assert finding["effect"] is None and finding["detail"]


def test_record_then_replay_reproduces_the_rollback(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "v2.3.csv"
    recorded = monitor("record", "--db", demo_db, "--release", "v2.3", "--out", out)
    assert recorded.exit_code == 0, recorded.output
    assert "v2.2, v2.3" in recorded.stdout and out.stat().st_size > 0

    replayed = monitor("replay", out, "--release", "v2.3", "--json")
    assert replayed.exit_code == 3, replayed.output
    doc = json.loads(replayed.stdout)
    assert (doc["recording"], doc["release"], doc["baseline_release"], doc["verdict"]) == (
        str(out), "v2.3", "v2.2", "rollback")
    assert doc["findings"], doc

    text = monitor("replay", out, "--release", "v2.3")
    assert text.exit_code == 3, text.output
    assert str(out) in text.stdout and "ROLLBACK" in text.stdout


@pytest.mark.parametrize("version", ["v2.2", "v2.3", "v2.4"])
def test_replay_under_the_daemon_s_policy_reaches_its_verdict_at_the_same_moment(
        demo_db: Path, tmp_path: Path, version: str) -> None:
    # A pass, a rollback three evaluations in, a hotfix at the period's end: the replay
    # of each recording must say what the daemon said, when it said it.
    from monitor.demo import demo_policy
    from monitor.recording import load_recording
    from monitor.replay import replay

    live = json.loads(monitor("verdict", "--db", demo_db, "--release", version, "--json").stdout)
    out = tmp_path / f"{version}.csv"
    assert monitor("record", "--db", demo_db, "--release", version, "--out", out).exit_code == 0
    replayed = replay(load_recording(out), release=version, policy=demo_policy("http://127.0.0.1:1"),
                      period=live["period_seconds"])
    judged = replayed.evaluation
    assert (judged.verdict, judged.reason) == (live["verdict"], live["reason"])
    assert (judged.decided_at, judged.first_alarm_at) == (live["decided_at"], live["first_alarm_at"])
    assert replayed.baseline_release == live["baseline_release"]
    assert ({(f.signal, f.detector, f.severity) for f in judged.findings}
            == {(f["signal"], f["detector"], f["severity"]) for f in live["findings"]})


def test_record_prints_a_replay_command_that_runs_as_pasted(demo_db: Path, tmp_path: Path) -> None:
    import shlex

    out, policy = tmp_path / "an incident.csv", tmp_path / "two services.toml"
    policy.write_text(POLICY.replace("services.shop", "services.demo")
                      + POLICY.replace("services.shop", "services.cart"), encoding="utf-8")
    recorded = monitor("record", "--db", demo_db, "--config", policy, "--release", "v2.3",
                       "--out", out)
    assert recorded.exit_code == 0, recorded.output
    hint = recorded.stdout.splitlines()[1]
    assert hint.startswith("replay it on v2.3's 30m checking period: monitor replay ")
    command = shlex.split(hint.split(": ", 1)[1])
    assert command[-6:] == ["--period", "30m", "--policy", str(policy), "--service", "demo"]
    replayed = monitor(*command[1:], "--json")
    assert replayed.exit_code in (0, 3, 4, 6), replayed.output
    assert json.loads(replayed.stdout)["release"] == "v2.3"


def test_replay_of_a_healthy_recorded_release_passes(healthy_csv: Path) -> None:
    replayed = monitor("replay", healthy_csv, "--release", "v2.2", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["verdict"] == "pass"


def test_replay_of_several_recordings_exits_with_the_gravest_verdict(
    demo_db: Path, tmp_path: Path, healthy_csv: Path
) -> None:
    bad, good = tmp_path / "bad.csv", healthy_csv
    assert monitor("record", "--db", demo_db, "--release", "v2.3", "--out", bad).exit_code == 0
    # The healthy v2.1 -> v2.2 pair, renamed to the releases that the bad recording holds.
    text = good.read_text(encoding="utf-8").replace(",v2.2,", ",v2.3,").replace(",v2.1,", ",v2.2,")
    good.write_text(text, encoding="utf-8")

    both = monitor("replay", good, bad, "--release", "v2.3", "--json")
    assert [json.loads(line)["verdict"] for line in both.stdout.splitlines()] == ["pass", "rollback"]
    assert both.exit_code == 3, both.output
    assert monitor("replay", good, good, "--release", "v2.3").exit_code == 0


def test_replay_of_a_bad_recording_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,release,signal,value\n1767225600,v1,up,1_0\n", encoding="utf-8")
    result = monitor("replay", path, "--release", "v1")
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {path}: line 2: ")


def test_replay_names_a_bad_period(healthy_csv: Path) -> None:
    result = monitor("replay", healthy_csv, "--release", "v2.2", "--period", "15 minutes")
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith("error: --period: not a duration: '15 minutes'")
    zero = monitor("replay", healthy_csv, "--release", "v2.2", "--period", "0")
    assert zero.exit_code == 2, zero.output
    assert error_line(zero) == ("error: --period: must be a finite duration longer than zero, "
                                "got '0'")


def test_replay_options_that_cannot_work_are_bad_input(healthy_csv: Path) -> None:
    itself = monitor("replay", healthy_csv, "--release", "v2.2", "--baseline", "v2.2")
    assert itself.exit_code == 2, itself.output
    assert error_line(itself).startswith("error: --baseline: 'v2.2' is the release being judged")
    service = monitor("replay", healthy_csv, "--release", "v2.2", "--service", "shop")
    assert service.exit_code == 2, service.output
    assert error_line(service) == "error: --service: picks a service of --policy; give --policy too"


def test_replay_of_a_recording_shorter_than_its_period(healthy_csv: Path) -> None:
    # Thirty minutes of v2.2 judged over 100 days: inconclusive, and at once, not a
    # hundred days of evaluations on the same samples.
    result = monitor("replay", healthy_csv, "--release", "v2.2", "--period", "100d", "--json")
    assert result.exit_code == 6, result.output
    doc = json.loads(result.stdout)
    assert doc["reason"].startswith("no samples from +30m to +2400h00m"), doc["reason"]
    assert doc["evaluations"] < 200, doc["evaluations"]
    # v2.1, replaced by v2.2 in the recording, is judged on the time it ran.
    earlier = monitor("replay", healthy_csv, "--release", "v2.1", "--period", "1d", "--json")
    assert json.loads(earlier.stdout)["verdict"] == "pass", earlier.output


def test_record_to_a_missing_directory_names_the_file(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "absent" / "v2.3.csv"
    result = monitor("record", "--db", demo_db, "--release", "v2.3", "--out", out)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: {out}: cannot write")


def test_record_of_a_release_without_samples_writes_nothing(tmp_path: Path) -> None:
    db, out = tmp_path / "m.db", tmp_path / "v1.csv"
    registered = monitor("release", "start", "--service", "shop", "--version", "v1", "--db", db)
    assert registered.exit_code == 0, registered.output
    result = monitor("record", "--db", db, "--release", "v1", "--out", out)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "error: no samples of v1 of service shop are stored: nothing to record; a service "
        "read by PromQL is recorded with its --config")
    assert not out.exists()


def test_record_of_a_release_whose_baseline_has_no_samples_left_writes_nothing(
        tmp_path: Path) -> None:
    db, out = tmp_path / "m.db", tmp_path / "v2.csv"
    with Store.open(db) as store:
        store.start_release("shop", "v1", at=0.0, change_class="minor", period=60.0, baselines=())
        store.start_release("shop", "v2", at=600.0, change_class="minor", period=60.0,
                            baselines=("v1",))
        ids = store.series_ids("shop", ["up"])
        for at in (610.0, 620.0):   # v1's samples are gone (pruned), v2's are there
            store.write_scrape("shop", "127.0.0.1:8080", "v2", at, ids, [1.0])
    result = monitor("record", "--db", db, "--release", "v2", "--out", out)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "error: no samples of v1, the baseline of v2 of service shop, are stored (past their "
        "retention?): a replay without them would judge v2 as the service's first release; "
        "a service read by PromQL is recorded with its --config")
    assert not out.exists()


def test_replay_refuses_a_recording_read_otherwise_than_its_policy_reads(
        demo_db: Path, tmp_path: Path) -> None:
    scraped = tmp_path / "scraped.csv"
    assert monitor("record", "--db", demo_db, "--release", "v2.3", "--out", scraped).exit_code == 0
    by_promql = tmp_path / "promql.toml"
    by_promql.write_text('[services.shop.prometheus]\nurl = "http://127.0.0.1:9"\n'
                         '[services.shop.signals.up]\nquery = "up"\n', encoding="utf-8")
    result = monitor("replay", scraped, "--policy", by_promql, "--release", "v2.3")
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {scraped}: holds scraped samples, but the policy reads service shop by PromQL "
        "([prometheus]): replay it with a policy that scrapes")
    queried = tmp_path / "queried.csv"
    queried.write_text('timestamp,release,signal,value,target\n'
                       '0,v1,"promql_signal{name=""up""}",1,promql\n'
                       '0,v2,"promql_signal{name=""up""}",1,promql\n', encoding="utf-8")
    result = monitor("replay", queried, "--release", "v2")
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        f"error: {queried}: holds signals recorded from PromQL queries: replay it with the policy "
        "of the service they were read for (--policy), whose [prometheus] reads them")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("verdict", "--release", "v1"), id="verdict"),
        pytest.param(("release", "list"), id="release-list"),
        pytest.param(("release", "start", "--service", "shop", "--version", "v1"), id="release-start"),
        pytest.param(("baselines", "list"), id="baselines-list"),
    ],
)
@pytest.mark.parametrize("where", ["missing-directory", "directory"])
def test_an_unusable_database_exits_7_naming_the_path(
    tmp_path: Path, command: tuple[str, ...], where: str
) -> None:
    db = tmp_path / "absent" / "m.db" if where == "missing-directory" else tmp_path
    result = monitor(*command, "--db", db)
    assert result.exit_code == 7, result.output
    assert str(db) in error_line(result)
    assert not (tmp_path / "absent").exists()


def baseline_of(db: Path, version: str) -> str | None:
    with Store.open(db) as store:
        return store.release("demo", version).baseline


def test_baselines_list_shows_healthy_releases(demo_db: Path) -> None:
    result = monitor("baselines", "list", "--db", demo_db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "demo: pinned -"
    marks = {line.split()[0]: line.split()[3] for line in lines[1:] if line.startswith("  v")}
    assert marks == {"v2.1": "healthy", "v2.2": "healthy", "v2.3": "rollback", "v2.4": "hotfix",
                     "v2.5": "rollback"}


def test_pinned_baseline_is_used_by_the_next_release(demo_copy: Path) -> None:
    pinned = monitor("baselines", "pin", "v2.1", "--db", demo_copy)
    assert pinned.exit_code == 0, pinned.output
    listed = monitor("baselines", "list", "--db", demo_copy)
    assert listed.stdout.splitlines()[0] == "demo: pinned v2.1"

    started = monitor("release", "start", "--service", "demo", "--version", "v2.6", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert "baseline v2.1" in started.stdout
    assert baseline_of(demo_copy, "v2.6") == "v2.1"

    unpinned = monitor("baselines", "unpin", "--service", "demo", "--db", demo_copy)
    assert unpinned.exit_code == 0, unpinned.output
    started = monitor("release", "start", "--service", "demo", "--version", "v2.7", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert baseline_of(demo_copy, "v2.7") == "v2.2"  # the last healthy release again


def test_a_pin_never_makes_a_later_release_the_baseline_of_an_earlier_one(demo_copy: Path) -> None:
    # A release registered before v2.2 but judged only now (a deploy that waited) is
    # compared with what came before it, not with the pin that came after.
    assert monitor("baselines", "pin", "v2.2", "--db", demo_copy).exit_code == 0
    with Store.open(demo_copy) as store:
        pinned = store.release("demo", "v2.2")
        assert [r.version for r in choose_baselines(store, "demo", before=pinned.started_at)] == ["v2.1"]
        later = choose_baselines(store, "demo", before=pinned.started_at + 1)
        assert [r.version for r in later] == ["v2.2"]


@pytest.mark.parametrize("command", [("baselines", "unpin"), ("baselines", "list"),
                                     ("release", "list")])
def test_an_unknown_service_is_an_error(demo_copy: Path, command: tuple[str, str],
                                        tmp_path: Path) -> None:
    # Not "nosuch: pinned -" or "no releases yet": a typo must not read as nothing there.
    result = monitor(*command, "--service", "nosuch", "--db", demo_copy)
    assert result.exit_code == 2, result.output
    assert error_line(result) == "error: no releases of service 'nosuch' (services: demo)"
    # A service the policy names is no typo, releases or not.
    policy = tmp_path / "policy.toml"
    policy.write_text('[services.nosuch]\n[[services.nosuch.targets]]\n'
                      'url = "http://127.0.0.1:9/metrics"\n', encoding="utf-8")
    named = monitor(*command, "--service", "nosuch", "--db", demo_copy, "--config", policy)
    assert named.exit_code == 0, named.output


def test_pin_of_an_unknown_release(demo_copy: Path) -> None:
    result = monitor("baselines", "pin", "v7", "--db", demo_copy)
    assert result.exit_code == 2, result.output
    assert "v7" in error_line(result)


@pytest.mark.parametrize(("version", "why"), [("v2.3", "its verdict is rollback"),
                                              ("v2.4", "its verdict is hotfix")])
def test_only_a_healthy_release_can_be_pinned(demo_copy: Path, version: str, why: str) -> None:
    result = monitor("baselines", "pin", version, "--db", demo_copy)
    assert result.exit_code == 2, result.output
    assert f"demo {version} cannot be pinned: {why}" in error_line(result)
    with Store.open(demo_copy) as store:
        assert store.pinned("demo") is None


def test_a_pin_whose_release_became_unpinnable_is_ignored(demo_copy: Path) -> None:
    # A pin stored before pins were checked, of the rolled-back v2.3.
    with closing(sqlite3.connect(demo_copy)) as conn, conn:
        conn.execute("INSERT INTO pins (service, version) VALUES ('demo', 'v2.3')")
    listed = monitor("baselines", "list", "--db", demo_copy)
    assert listed.stdout.splitlines()[0] == "demo: pinned v2.3 (ignored: its verdict is rollback)"
    started = monitor("release", "start", "--service", "demo", "--version", "v2.6", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert baseline_of(demo_copy, "v2.6") == "v2.2"


def test_an_inconclusive_release_can_be_pinned(demo_copy: Path) -> None:
    with Store.open(demo_copy) as store:
        release = store.release("demo", "v2.4")
        store.add_verdict(release.id, at=release.started_at + 1, verdict="inconclusive",
                          reason="too quiet", findings=[], first_alarm_at=None,
                          decided_at=release.started_at + 1, state="done", judge_state="{}")
    assert monitor("baselines", "pin", "v2.4", "--db", demo_copy).exit_code == 0
    started = monitor("release", "start", "--service", "demo", "--version", "v2.6", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert baseline_of(demo_copy, "v2.6") == "v2.4"


def test_invalidating_the_pinned_release_unpins_it(demo_copy: Path) -> None:
    assert monitor("baselines", "pin", "v2.2", "--db", demo_copy).exit_code == 0
    result = monitor("baselines", "invalidate", "v2.2", "--db", demo_copy)
    assert result.exit_code == 0, result.output
    assert "unpinned" in result.stdout
    again = monitor("baselines", "pin", "v2.2", "--db", demo_copy)
    assert again.exit_code == 2 and "it was invalidated" in error_line(again)
    started = monitor("release", "start", "--service", "demo", "--version", "v2.6", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert baseline_of(demo_copy, "v2.6") == "v2.1"


def test_invalidated_release_is_no_longer_a_baseline(demo_copy: Path) -> None:
    result = monitor("baselines", "invalidate", "v2.2", "--db", demo_copy)
    assert result.exit_code == 0, result.output
    with Store.open(demo_copy) as store:
        healthy = store.healthy_releases("demo", before=float("inf"), limit=10)
    assert [release.version for release in healthy] == ["v2.1"]

    listed = monitor("baselines", "list", "--db", demo_copy)
    v22 = next(line for line in listed.stdout.splitlines() if line.startswith("  v2.2 "))
    assert "invalidated" in v22

    started = monitor("release", "start", "--service", "demo", "--version", "v2.6", "--db", demo_copy)
    assert started.exit_code == 0, started.output
    assert baseline_of(demo_copy, "v2.6") == "v2.1"

    as_json = monitor("verdict", "--release", "v2.2", "--db", demo_copy, "--json")
    assert json.loads(as_json.stdout)["invalidated"] is True
    text = monitor("verdict", "--release", "v2.2", "--db", demo_copy)
    assert "  invalidated since: found bad later, never a baseline" in text.stdout.splitlines()
    history = monitor("release", "list", "--db", demo_copy).stdout.splitlines()
    [v22] = [line for line in history if line.split()[1] == "v2.2"]
    assert " pass (found bad) " in v22


def test_demo_refuses_an_existing_database(tmp_path: Path) -> None:
    existing = tmp_path / "keep.db"
    existing.write_bytes(b"precious")
    result = monitor("demo", "--db", existing)
    assert result.exit_code == 2, result.output
    assert "already exists" in result.output
    assert existing.read_bytes() == b"precious"


def test_demo_database_in_a_missing_directory_fails_before_the_demo(tmp_path: Path) -> None:
    result = monitor("demo", "--db", tmp_path / "nowhere" / "demo.db")
    assert result.exit_code == 7, result.output
    assert result.stdout == ""
    assert "directory" in result.stderr and "does not exist" in result.stderr


def test_the_readme_documents_every_command() -> None:
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet; every command path must appear in it once it does")
    text = readme.read_text(encoding="utf-8")
    missing = [name for name in COMMAND_IDS if name not in text]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"


def test_sparkline_puts_both_on_one_scale() -> None:
    from monitor.render import sparkline

    assert sparkline([1, 1, 1, 1], [2, 2]) == "▁▁▁▁│██"
    assert sparkline([0, 7], [3.5]) == "▁█│▅"
    assert sparkline([], []) == ""
    # A gap blanks only a slice with nothing else in it; no scale spans -1e308 to 1e308.
    assert sparkline([1.0, None, 2.0, None] * 8, [3.0]) == "▁▅" * 8 + "│█"
    assert sparkline([-1e308], [1e308]) == ""


def test_evidence_columns_line_up_with_long_signal_names() -> None:
    from monitor.render import verdict_text

    finding = {"detector": "compare", "severity": "major", "baseline": 0.01, "candidate": 0.05,
               "detail": "up"}
    doc = {"service": "shop", "release": "v2.3", "baseline_release": "v2.2", "verdict": "rollback",
           "started_at": 0.0, "period_seconds": 900.0, "state": "done", "change_class": "minor",
           "findings": [finding | {"signal": "checkout_payment_authorization_errors"},
                        finding | {"signal": "cpu"}]}
    rows = verdict_text(doc).split("evidence:\n")[1].splitlines()
    # Every row's detector column starts where the header's does.
    assert len({row.index(word) for row, word in zip(rows, ("detector", "compare", "compare"),
                                                     strict=True)}) == 1


def test_evidence_reads_in_each_signals_unit() -> None:
    from monitor.render import verdict_text

    doc = {"service": "shop", "release": "v2.3", "baseline_release": "v2.2", "verdict": "rollback",
           "started_at": 0.0, "period_seconds": 900.0, "state": "done", "change_class": "minor",
           "signals": [{"signal": "errors", "kind": "ratio"}, {"signal": "rss", "kind": "gauge",
                                                                "limit": 2**30}],
           "findings": [
               {"signal": "errors", "detector": "rate", "severity": "major", "baseline": 0.0055,
                "candidate": 0.06, "detail": ""},
               {"signal": "rss", "detector": "leak", "severity": "major", "baseline": 0.0,
                "candidate": 3 * 2**20 / 60, "detail": ""},
               {"signal": "p99_latency", "detector": "compare", "severity": "minor",
                "baseline": 0.25, "candidate": 0.4, "detail": ""}]}
    rows = [row.split() for row in verdict_text(doc).split("evidence:\n")[1].splitlines()[1:]]
    assert [row[3:] for row in rows] == [["0.55%", "6%"], ["0", "B/min", "3", "MiB/min"],
                                         ["250", "ms", "400", "ms"]]


def test_an_error_ratio_reads_as_its_value_over_all_requests_not_its_median_step() -> None:
    import numpy as np

    from baselines.frame import SignalFrame
    from baselines.summary import Baseline, summarize
    from monitor.policy import SignalRule
    from monitor.render import signals_text
    from monitor.views import signal_views

    # Rare errors: most steps have none, so every median step is 0%.
    def frame(start: float, errors: list[float]) -> SignalFrame:
        trials = np.full(len(errors), 100.0)
        events = np.array(errors)
        nan = np.full(len(errors), np.nan)
        return SignalFrame(("errors", "cpu"), start + 15.0 * np.arange(len(errors)),
                           np.array([events / trials, np.full(len(errors), 0.4)]),
                           np.array([events, nan]), np.array([trials, nan]))

    rules = [SignalRule("errors", kind="ratio", numerator="e", denominator="t"),
             SignalRule("cpu", metric="cpu")]
    baseline = Baseline(("v1",), summarize(frame(0.0, [0, 0, 1, 0, 0, 0, 1, 0] * 10)))
    views = signal_views(rules, baseline, frame(7200.0, [0, 3, 0, 0, 0, 0, 0, 1] * 5), started=7200.0)
    assert views[0]["pooled"] == {"baseline": 0.0025, "candidate": 0.005}
    assert "pooled" not in views[1]
    errors, cpu = signals_text(views)[1:]
    assert errors.split()[-6:] == ["baseline", "all", "0.25%", "candidate", "all", "0.5%"]
    assert cpu.split()[-6:] == ["baseline", "p50", "0.4", "candidate", "p50", "0.4"]


def test_a_verdict_with_odd_fields_is_shown_with_gaps_not_a_traceback() -> None:
    from monitor.render import verdict_text

    doc = {"service": "shop", "release": "v2.3", "verdict": "pass", "state": "done",
           "change_class": "minor", "started_at": 0.0, "period_seconds": 900.0,
           "decided_at": "soon", "first_alarm_at": [1],
           "checks": [{"stage": "smoke", "name": "home", "detail": "200"}],
           "hooks": [{"hook": "notify", "verdict": "pass", "state": "done"}],
           "signals": [{"signal": "cpu", "baseline": [1, 2], "baseline_series": "x",
                        "values": [None, "7", 1.0, 2.0]}]}
    text = verdict_text(doc)
    assert text.startswith("shop v2.3: PASS at -\n")
    assert "  FAIL smoke: home (200)" in text          # no "ok": not shown as passing
    assert "hook notify on pass: delivered ()" in text
    assert "cpu                │  ▁█ " in text        # two gaps, then the two numbers


@pytest.mark.parametrize("command", [("verdict", "--release", "v1"),
                                     ("release", "start", "--service", "shop", "--version", "v1")])
def test_a_url_without_a_scheme_is_bad_input(command: tuple[str, ...],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELEASE_MONITOR_TOKEN", "t")
    for url in ("127.0.0.1:9847", "localhost:9847", "http://127.0.0.1:99999"):
        result = monitor(*command, "--url", url)
        assert result.exit_code == 2, result.output
        assert error_line(result) == (f"error: --url: {url!r} is not an http(s) URL with a host "
                                      "and a valid port (e.g. http://127.0.0.1:9847)")


def test_a_bad_timeout_names_the_option(demo_db: Path) -> None:
    result = monitor("verdict", "--release", "v2.3", "--wait", "--timeout", "abc", "--db", demo_db)
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith("error: --timeout: not a duration: 'abc'")


def test_a_timeout_without_wait_is_bad_input(demo_db: Path) -> None:
    result = monitor("verdict", "--release", "v2.3", "--timeout", "1h", "--db", demo_db)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "error: --timeout: only with --wait (without it the verdict is read at once)")


def test_demo_serve_on_a_port_in_use_says_so_before_running(tmp_path: Path) -> None:
    import signal
    import socket

    handler = signal.getsignal(signal.SIGTERM)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = monitor("demo", "--serve", "--port", port, "--db", tmp_path / "demo.db")
    assert result.exit_code == 2, result.output
    assert error_line(result).startswith(f"error: --port: cannot listen on 127.0.0.1:{port}: ")
    assert "done in" not in result.stdout
    assert not (tmp_path / "demo.db").exists()  # so that the next try is not refused for it
    assert signal.getsignal(signal.SIGTERM) is handler  # put back as it was
    assert monitor("demo", "--serve", "--port", 99999).exit_code == 2


def test_monitor_run_on_a_port_in_use_is_bad_input_naming_where_it_was_set(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        policy = tmp_path / "policy.toml"
        policy.write_text(f'[monitor]\nlisten = "127.0.0.1:{port}"\n\n' + POLICY, encoding="utf-8")
        from_policy = monitor("run", "--config", policy, "--db", tmp_path / "m.db")
        flag = monitor("run", "--config", policy, "--db", tmp_path / "m.db",
                       "--listen", f"127.0.0.1:{port}")
    assert from_policy.exit_code == 2, from_policy.output
    assert error_line(from_policy) == (f"error: {policy}: monitor.listen: cannot listen on "
                                       f"127.0.0.1:{port}: Address already in use")
    assert flag.exit_code == 2, flag.output
    assert error_line(flag).startswith("error: --listen: cannot listen on ")
    # A run that never started leaves no database (nor its lock) behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.toml"]
    # One already there stays, with what it holds.
    with closing(Store.open(tmp_path / "m.db")) as store:
        store.start_release("shop", "v1", at=0.0, change_class="minor", period=60.0, baselines=())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert monitor("run", "--config", policy, "--db", tmp_path / "m.db").exit_code == 2
    with closing(Store.open(tmp_path / "m.db")) as store:
        assert [r.version for r in store.releases("shop")] == ["v1"]


def test_help_is_plain_text_that_fits_a_terminal() -> None:
    root = monitor("--help")
    assert root.exit_code == 0, root.output
    commands = root.output.split("Commands:")[1].splitlines()
    # Each command's summary is whole, not cut off with "...".
    assert commands and not any(line.endswith("...") for line in commands), root.output
    assert "╭" not in root.output, root.output
    assert all(len(line) <= 80 for line in root.output.splitlines()), root.output
    verdict = monitor("verdict", "--help").output
    # A flag takes no value, so its help shows none.
    assert "--json " in verdict and "<bool>" not in verdict, verdict


def test_release_list_columns_fit_their_longest_value() -> None:
    docs = [{"service": name, "release": version, "started_at": 0.0, "change_class": "minor",
             "state": "done", "verdict": "pass", "decided_at": 60.0, "baseline_release": None}
            for name, version in (("checkout-payments-eu", "v2.3"), ("web", "2026.11.28-rc1"))]
    from monitor.render import releases_table

    lines = releases_table(docs).splitlines()
    starts = {line.index(" minor ") for line in lines[1:]} | {lines[0].index(" class ")}
    assert len(starts) == 1, lines      # every row's class column where the header's is


def test_release_start_makes_no_default_database_where_none_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pipeline step run in another folder must not register into a new database there.
    monkeypatch.chdir(tmp_path)
    result = monitor("release", "start", "--service", "shop", "--version", "v1")
    assert result.exit_code == 7, result.output
    assert result.stderr == ("error: no database at release-monitor.db: give --db or --config, "
                             "or run this where `monitor run` keeps its database\n")
    assert list(tmp_path.iterdir()) == []


def test_check_config_notes_leak_blocks_too_long_to_see_a_leak_go_on_within_the_period(
        tmp_path: Path) -> None:
    memory = ('[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics"\n'
              '[services.shop.signals.memory]\nmetric = "rss_bytes"\nleak = true\n'
              'limit = 1073741824\n')
    assert _check_config_notes(tmp_path, memory) == []          # 5m blocks in 15m: room
    assert _check_config_notes(tmp_path, '[services.shop]\nleak_block = "8m"\n' + memory) == [
        "shop: note: leak_block: 8m leaves no room to see a leak go on climbing within the 15m "
        "period (it takes 2 blocks after the first): a leak there is a rollback only if memory "
        "would run out within 24m"]


def test_check_config_notes_a_baseline_window_longer_than_retention(tmp_path: Path) -> None:
    shop = ('[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics"\n'
            '[services.shop.signals.latency]\nmetric = "latency_seconds"\n')
    assert _check_config_notes(tmp_path, '[monitor]\nretention = "2d"\n' + shop) == []
    assert _check_config_notes(tmp_path, '[monitor]\nretention = "3h"\n' + shop) == [
        "shop: note: baseline_window: 24h00m is longer than monitor.retention (3h00m): a baseline "
        "is summarized from the samples retention keeps, not that long"]


@pytest.mark.parametrize("command", ["record", "report"])
@pytest.mark.parametrize("companion", ["", "-wal", "-shm", ".lock"])
def test_out_refuses_the_database_it_reads(demo_db: Path, command: str, companion: str) -> None:
    before = demo_db.read_bytes()
    out = Path(f"{demo_db}{companion}")
    result = monitor(command, "--release", "v2.3", "--db", demo_db, "--out", out)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (f"error: --out: {out} is the database {demo_db} (or one of "
                                  "its files): give another path")
    assert demo_db.read_bytes() == before


def test_out_refuses_the_database_under_another_name(demo_db: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias.db"
    alias.symlink_to(demo_db)
    result = monitor("record", "--release", "v2.3", "--db", demo_db, "--out", alias)
    assert result.exit_code == 2, result.output
    assert monitor("release", "list", "--db", demo_db).exit_code == 0



def test_check_config_notes_a_query_secret_missing_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[services.checkout]\n[services.checkout.prometheus]\nurl = "http://127.0.0.1:9090"\n'
        'bearer_token_env = "PROM_TOKEN"\n[services.checkout.signals.latency]\n'
        'query = \'histogram_quantile(0.95, rate(x_bucket{version="$version"}[$step]))\'\n',
        encoding="utf-8")
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    result = monitor("check-config", path)
    assert result.exit_code == 0, result.output
    assert ("checkout: note: prometheus.bearer_token_env: PROM_TOKEN is not set in this "
            "environment; where the daemon runs without it, every query fails (its releases "
            "end inconclusive)") in result.stdout.splitlines()
    monkeypatch.setenv("PROM_TOKEN", "t")
    assert "PROM_TOKEN" not in monitor("check-config", path).stdout


def test_check_config_notes_a_period_too_short_for_the_samples_a_signal_needs(
        tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[services.checkout]\n[services.checkout.period]\nminor = "5m"\n'
        '[services.checkout.prometheus]\nurl = "http://127.0.0.1:9090"\nstep = "1m"\n'
        '[services.checkout.signals.latency_p95]\ncritical = true\n'
        'query = \'histogram_quantile(0.95, rate(x_bucket{version="$version"}[$step]))\'\n',
        encoding="utf-8")
    result = monitor("check-config", path)
    assert result.exit_code == 0, result.output
    assert ("checkout: note: signals.latency_p95: the 5m period holds about 5 samples at one "
            "per 1m (prometheus.step), fewer than its min_samples (10): its releases end "
            "inconclusive; shorten the step or lengthen the period") in result.stdout.splitlines()
    path.write_text(path.read_text(encoding="utf-8").replace('step = "1m"', 'step = "15s"'),
                    encoding="utf-8")
    assert "min_samples" not in monitor("check-config", path).stdout
