"""`monitor`: the root command and the commands a release pipeline calls."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from monitor import __version__
from monitor.cli import baselines, demo, replay, report
from monitor.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    OnlyServiceOption,
    ReleaseServiceOption,
    clear_errors,
    database_path,
    duration_option,
    echo_json,
    fail,
    known_service,
    load_config,
    open_release,
    open_store,
    remove_database,
)
from monitor.durations import format_duration
from monitor.errors import ConfigError, MonitorError, StoreError
from monitor.lock import DaemonLock, daemon_running
from monitor.names import name_problem, service_name_problem
from monitor.policy import (
    CHANGE_CLASSES,
    MonitorConfig,
    ServicePolicy,
    default_service,
    load_policy,
    parse_listen,
)
from monitor.redact import command_environment, redact_url
from monitor.render import releases_table, verdict_text
from monitor.verdicts import EXIT_CODES, EXIT_USAGE, document

app = typer.Typer(
    rich_markup_mode=None,
    help="Checks a new release in production and decides: pass, hotfix, rollback or "
    "inconclusive.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
release_app = typer.Typer(rich_markup_mode=None,
                          help="Register deploys and list the release history.",
                          no_args_is_help=True)
app.add_typer(release_app, name="release")
app.add_typer(baselines.app, name="baselines")
app.command(name="demo", short_help="Run the whole pipeline on a simulated service.")(demo.demo)
app.command(name="replay", short_help="Judge recorded releases offline.")(replay.replay)
app.command(name="record", short_help="Write a release's samples as a recording.")(replay.record)
app.command(name="report", short_help="Write a release's evidence as one HTML page.")(
    report.report)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"release-monitor {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """release-monitor: smoke test, verification, health signals against the baseline,
    then a verdict."""


@app.command(short_help="Run the daemon: scrape, judge, serve verdicts.")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", envvar="RELEASE_MONITOR_CONFIG",
                                         help="Policy file (TOML).")],
    db: DbOption = None,
    listen: Annotated[str | None, typer.Option(
        help="HOST:PORT for /metrics and the JSON API (default: the policy's, "
        "127.0.0.1:9847).")] = None,
) -> None:
    """Run the sidecar daemon: scrape, notice new versions, judge releases, serve verdicts."""
    from monitor.api import serve
    from monitor.clock import WallClock
    from monitor.daemon import Daemon
    from monitor.snapshot import SnapshotBox

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with clear_errors():
        cfg = load_policy(config)
        host, port = cfg.listen_host, cfg.listen_port
        if listen is not None:
            try:
                host, port = parse_listen(listen)
            except ValueError as exc:
                raise fail(f"--listen: {exc}", EXIT_USAGE) from None
        if db is None:
            check_database_folder(cfg)
        check_programs(cfg)
        path = database_path(db, cfg)
        created = not path.exists()
        store = open_store(db, cfg, create=True)
        held = ExitStack()
        try:
            if store.path:
                held.enter_context(DaemonLock(store.path))
        except StoreError:
            store.close()
            raise
        # Closed before the lock is let go: the next daemon finds the database at rest.
        held.callback(store.close)
        try:
            box = SnapshotBox()
            token = os.environ.get(cfg.api_token_env) if cfg.api_token_env else None
            if cfg.api_token_env and not token:
                typer.echo(f"note: {cfg.path}: monitor.api_token_env: {cfg.api_token_env} is "
                           "not set, so deploys cannot be registered over HTTP (403)", err=True)
            for name, policy in cfg.services.items():
                for note in secret_notes(policy):
                    typer.echo(f"note: {cfg.path}: services.{name}.{note}", err=True)
            try:
                server = serve(box, host=host, port=port, version=__version__,
                               token=token or None)
            except MonitorError as exc:  # the address is taken or not ours: the user's to change
                where = "--listen" if listen is not None else f"{cfg.path}: monitor.listen"
                raise fail(f"{where}: {exc}", EXIT_USAGE) from None
            daemon = Daemon(cfg, store, WallClock(), box=box, live=True)
        except BaseException:
            held.close()
            if created:
                # A run that never started leaves no database behind.
                remove_database(path)
            raise
    # A hang-up (the terminal went away) stops it as cleanly as SIGTERM and Ctrl-C, unless
    # it was started to ignore hang-ups (nohup).
    stops = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops.append(signal.SIGHUP)
    for signum in stops:
        signal.signal(signum, lambda *_: daemon.stop())
    typer.echo(f"release-monitor {__version__}: metrics {server.url}/metrics, "
               f"verdicts {server.url}/api/v1/verdict, database {store.path}")
    try:
        daemon.run()
    finally:
        server.shutdown()
        held.close()
    typer.echo("stopped")


@app.command("check-config", short_help="Validate a policy file.")
def check_config(
    config: Annotated[Path, typer.Argument(help="Policy file (TOML) to validate.")],
) -> None:
    """Validate a policy file; any mistake is one line naming the file and the key."""
    with clear_errors():
        cfg = load_policy(config)
        check_database_folder(cfg)
        check_programs(cfg)
    for name, policy in cfg.services.items():
        periods = ", ".join(f"{k} {format_duration(v)}" for k, v in policy.periods.items())
        parts = [counted(len(policy.targets), "target"), counted(len(policy.smoke), "smoke probe"),
                 counted(len(policy.verify), "verification command"),
                 counted(len(policy.signals), "signal"), counted(len(policy.hooks), "hook")]
        typer.echo(f"{name}: {', '.join(parts)}; checking period {periods}")
        if not (policy.signals or policy.smoke or policy.verify):
            typer.echo(f"{name}: note: no signals, smoke probes or verification commands: "
                       "nothing judges its releases")
        elif policy.signals and not policy.targets and policy.prometheus is None:
            typer.echo(f"{name}: note: signals but no targets and no [prometheus]: nothing "
                       "feeds them, so its releases end inconclusive")
        if policy.prometheus is None and cfg.retention < policy.baseline_window:
            # Summarized before they are pruned: a baseline holds at most what is kept.
            typer.echo(f"{name}: note: baseline_window: {format_duration(policy.baseline_window)} "
                       f"is longer than monitor.retention ({format_duration(cfg.retention)}): a "
                       "baseline is summarized from the samples retention keeps, not that long")
        for note in (query_notes(policy) + unit_notes(policy) + sampling_notes(policy)
                     + secret_notes(policy)):
            typer.echo(f"{name}: note: {note}")
    typer.echo(f"{config}: ok")


def check_database_folder(cfg: MonitorConfig) -> None:
    """A policy's database in a folder that does not exist is a mistake in the policy."""
    folder = database_path(None, cfg).parent
    if not folder.is_dir():
        raise ConfigError(f"{cfg.path}: monitor.database: directory {folder} does not exist")


def sampling_notes(policy: ServicePolicy) -> list[str]:
    """Signals that must have `min_samples` samples, which the shortest checking period
    cannot hold at one sample per scrape interval (or query step): its releases would all
    end inconclusive, whatever the traffic."""
    if policy.prometheus is not None:
        pace, source = policy.prometheus.step, "prometheus.step"
    elif policy.targets:
        # The grid signals are read on: the typical target's interval.
        pace = statistics.median(t.interval for t in policy.targets)
        source = "the targets' interval"
    else:
        return []
    shortest = min(policy.periods.values(), default=0.0)
    held = int(shortest // pace)
    notes = []
    for rule in policy.signals:
        if not (rule.critical or rule.must_have_data) or rule.kind == "ratio":
            continue   # a ratio needs requests (min_trials), which come with traffic
        # A counter's rate, and a histogram's quantile, begin at their second sample.
        counted = held - (rule.kind != "gauge")
        if counted < rule.min_samples:
            notes.append(f"signals.{rule.name}: the {format_duration(shortest)} period holds "
                         f"about {counted} samples at one per {format_duration(pace)} "
                         f"({source}), fewer than its min_samples ({rule.min_samples}): its "
                         "releases end inconclusive; shorten the step or lengthen the period")
    return notes


def secret_notes(policy: ServicePolicy) -> list[str]:
    """Secrets the policy reads from environment variables that are not set here: every
    query would fail, and releases end inconclusive."""
    source = policy.prometheus
    if source is None:
        return []
    return [f"prometheus.{key}: {variable} is not set in this environment; where the daemon "
            "runs without it, every query fails (its releases end inconclusive)"
            for key, variable in (("bearer_token_env", source.bearer_token_env),
                                  ("basic_password_env", source.basic_password_env))
            if variable and not os.environ.get(variable)]


def query_notes(policy: ServicePolicy) -> list[str]:
    """PromQL that reads the same series for every release, or counts an event in several
    steps of a ratio: legal, and almost never meant."""
    notes = []
    for rule in policy.signals:
        queries = [q for q in (rule.query, rule.numerator_query, rule.denominator_query) if q]
        if policy.prometheus is not None and queries and not any("$version" in q for q in queries):
            notes.append(f"signals.{rule.name}: no query uses $version, so every release "
                         "is judged on the same series")
        counts = [q for q in (rule.numerator_query, rule.denominator_query) if q]
        if any("$step" not in q for q in counts):
            notes.append(f"signals.{rule.name}: a count over a fixed window counts an event in "
                         "every step it covers; use increase(...[$step]), with a step of at "
                         "least two scrape intervals")
        for query in queries:
            # `$verison` is sent as written, and the server's parse error cannot say why.
            # ($1 in label_replace's replacement is PromQL's own.)
            placeholders = set(re.findall(r"\$([A-Za-z_]\w*)", query))
            for name in sorted(placeholders - {"service", "version", "step"}):
                notes.append(f"signals.{rule.name}: ${name} is no placeholder ($service, "
                             "$version, $step): it is sent as written")
        if rule.numerator_query and not re.search(r"\bor\b", rule.numerator_query):
            notes.append(f"signals.{rule.name}: numerator_query answers nothing while there are "
                         "no errors (a sum over no series), and a baseline without an answer is "
                         "not compared with; add `or vector(0)` if that means no errors")
    return notes


# A fraction this large is most likely a percentage written as one (25 for 25%).
_PERCENT_LIKE = 5.0
# A memory limit below this is most likely not in bytes.
_BYTES_LIKE = 1024 * 1024


def unit_notes(policy: ServicePolicy) -> list[str]:
    """Values that are legal but most likely in the wrong unit."""
    notes = []
    for index, target in enumerate(policy.targets):
        if target.timeout > target.interval:
            notes.append(f"targets[{index}].timeout: {format_duration(target.timeout)} is longer "
                         f"than its interval ({format_duration(target.interval)}): a hanging "
                         "target misses scrapes before a failure is said"
                         # Minutes of timeout: most likely milliseconds meant.
                         + (' (durations take a unit: "2s")' if target.timeout >= 100 else ""))
    from monitor.evaluate import CONFIRM_BLOCKS, URGENT_BLOCKS

    shortest = min(policy.periods.values(), default=0.0)
    if any(r.leak for r in policy.signals) and (CONFIRM_BLOCKS - 1) * policy.leak_block >= shortest:
        notes.append(f"leak_block: {format_duration(policy.leak_block)} leaves no room to see "
                     f"a leak go on climbing within the {format_duration(shortest)} period "
                     f"(it takes {CONFIRM_BLOCKS - 1} blocks after the first): a leak there is a "
                     f"rollback only if memory would run out within "
                     f"{format_duration(URGENT_BLOCKS * policy.leak_block)}")
    for rule in policy.signals:
        for key in ("tolerance", "ignore_below"):
            value = getattr(rule, key)
            if value >= _PERCENT_LIKE:
                notes.append(f"signals.{rule.name}.{key}: {value:g} is +{value * 100:g}%; "
                             "it is a fraction (0.25 is 25%)")
        if rule.kind == "quantile" and rule.metric.partition("{")[0].endswith("_bucket"):
            histogram = rule.metric.partition("{")[0].removesuffix("_bucket")
            notes.append(f"signals.{rule.name}.metric: a quantile names the histogram, whose "
                         f"_bucket series it reads: {histogram!r}, unless the histogram's own "
                         "name ends in _bucket")
        if rule.limit is not None and rule.limit < _BYTES_LIKE:
            notes.append(f"signals.{rule.name}.limit: {rule.limit:g} is in the signal's unit, "
                         "bytes for memory (1 GiB is 1073741824)")
    return notes


def check_programs(cfg: MonitorConfig) -> None:
    """A verification command, or a hook that acts, whose program cannot be found here
    would fail every release (or never roll one back): a mistake in the policy, said now."""
    path = command_environment({}).get("PATH")
    for name, policy in cfg.services.items():
        commands = [(f"verify[{i}].argv", c.argv) for i, c in enumerate(policy.verify)]
        commands += [(f"hooks[{i}].command", h.command) for i, h in enumerate(policy.hooks)
                     if h.command and not h.dry_run]
        for key, argv in commands:
            if shutil.which(argv[0], path=path) is None:
                # A path (a relative one was made absolute from the policy file's folder).
                where = ("not found on PATH" if "/" not in argv[0] else
                         "not executable: chmod +x" if os.path.isfile(argv[0]) else "no such file")
                raise ConfigError(f"{cfg.path}: services.{name}.{key}: {argv[0]!r} is not an "
                                  f"executable program ({where})")


def counted(count: int, noun: str) -> str:
    """'1 target', '2 targets'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@release_app.command("start")
def release_start(
    service: Annotated[str, typer.Option(help="Service that was deployed.")],
    version: Annotated[str, typer.Option(help="Version that was deployed, e.g. v2.3.")],
    change: Annotated[str | None, typer.Option(
        help="Change class: minor (short checking period) or major (long). Default: minor "
        "for a new release; one registered before keeps its own.")] = None,
    config: ConfigOption = None,
    db: DbOption = None,
    url: Annotated[str | None, typer.Option(
        "--url", envvar="RELEASE_MONITOR_URL",
        help="Register with a running monitor's API (token from RELEASE_MONITOR_TOKEN) "
        "instead of writing the database.")] = None,
) -> None:
    """Register a deploy (what a CD pipeline calls right after deploying)."""
    from monitor.clock import WallClock
    from monitor.policy import MonitorConfig
    from monitor.releases import Releases

    if change is not None and change not in CHANGE_CLASSES:
        raise fail(f"--change: must be one of {', '.join(CHANGE_CLASSES)}, got {change!r}",
                   EXIT_USAGE)
    for option, name, problem in (("--service", service, service_name_problem(service)),
                                  ("--version", version, name_problem(version))):
        if problem is not None:
            raise fail(f"{option}: {problem}, got {name[:40]!r}", EXIT_USAGE)
    if url is not None:
        from monitor.client import register_remote

        token = os.environ.get("RELEASE_MONITOR_TOKEN", "")
        if not token:
            raise fail("--url: set RELEASE_MONITOR_TOKEN to the monitor's API token", EXIT_USAGE)
        with clear_errors():
            register_remote(url, service, version, change, token=token)
        # The monitor decides: a release under way keeps a longer period than `change`'s.
        kind = f"as a {change} change" if change else "a minor change if new"
        typer.echo(f"sent {service} {version} ({kind}) to {redact_url(url)}")
        return
    with clear_errors():
        cfg = load_config(config)
        if cfg is None:
            # Without a policy, the documented defaults (checking periods among them).
            cfg = MonitorConfig(path="<defaults>",
                                services={service: default_service(service, [])})
        cfg.service(service)  # a service the policy names, before any database is made
        # Only where it was told: a default database made in whatever folder a pipeline
        # step happens to run in would hold a release no daemon ever judges.
        store = open_store(db, cfg if config else None, create=db is not None or config is not None)
        others = [] if config else [s for s in store.services() if s != service]
        if others and service not in store.services():
            typer.echo(f"note: {store.path or 'the database'} knows nothing of {service!r} "
                       f"(it has {', '.join(others)}); without --config the policy is not "
                       "checked, and the monitor finds a service it does not name inconclusive",
                       err=True)
        releases = Releases(cfg, store, WallClock())
        release, new = releases.register(service, version, change_class=change)
        unmeasured = new and releases.without_yardstick(release)
    typer.echo(f"{'registered' if new else 'already registered:'} {release.service} "
               f"{release.version} ({release.change_class} change, checking period "
               f"{format_duration(release.period)}, baseline {release.baseline or 'none'}"
               f"{'' if new else ', ' + release.state})")
    if change is not None and release.change_class != change:
        typer.echo(f"note: kept as a {release.change_class} change: a checking period under "
                   f"way is never shortened (a new version starts a {change} one)", err=True)
    if unmeasured:
        typer.echo(f"note: no release before {release.version} passed (they are still judged, "
                   "or ended in a hotfix or inconclusive), so nothing measures its health "
                   "signals and it will end inconclusive; `monitor baselines pin` one you "
                   "trust for the releases after it", err=True)
    if store.path and not daemon_running(store.path):
        typer.echo(f"note: no `monitor run` is using {store.path}: nothing judges "
                   f"{release.version} until one starts", err=True)


@release_app.command("list")
def release_list(
    service: OnlyServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the release history with verdicts, newest first."""
    with clear_errors():
        cfg = load_config(config)
        store = open_store(db, cfg, read_only=True)
        if service is not None:
            known_service(store, service, cfg)
        docs = [document(store, r) for r in store.releases(service)]
    if as_json:
        # A history, not evidence: each release's signal series is `monitor verdict`'s.
        for doc in docs:
            del doc["signals"]
        echo_json({"releases": docs})
    elif docs:
        typer.echo(releases_table(docs))
    else:
        typer.echo("no releases yet")


WAIT_TIMEOUT = "2h"


@app.command(short_help="Print a release's verdict; the exit code says it.")
def verdict(
    release: Annotated[str, typer.Option(help="Release version, e.g. v2.3.")],
    service: ReleaseServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Block until the verdict is decided (for CI pipelines).")] = False,
    timeout: Annotated[str | None, typer.Option(
        help="With --wait: give up after this long and report pending, e.g. 45m "
        "(default 2h).")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", envvar="RELEASE_MONITOR_URL",
        help="Ask a running monitor's JSON API (e.g. http://127.0.0.1:9847) instead of "
        "reading the database.")] = None,
) -> None:
    """Print a release's verdict and evidence; the exit code says the verdict.

    Exit codes: 0 pass, 3 rollback, 4 hotfix, 5 pending, 6 inconclusive;
    1 internal error, 2 bad input (unknown release, bad option), 7 database unavailable.
    """
    from monitor.client import remote_document, wait_remote
    from monitor.clock import WallClock
    from monitor.verdicts import DECIDED, UNKNOWN_GRACE, wait_for_decision, wait_for_release

    if timeout is not None and not wait:
        raise fail("--timeout: only with --wait (without it the verdict is read at once)", EXIT_USAGE)
    seconds = duration_option("--timeout", timeout if timeout is not None else WAIT_TIMEOUT)
    with clear_errors():
        if url is not None:
            doc = (wait_remote(url, release, service, WallClock(), timeout=seconds) if wait
                   else remote_document(url, release, service))
        else:
            if wait:
                store = open_store(db, load_config(config), read_only=True)
                path = store.path

                def judged() -> bool:
                    return path is not None and daemon_running(path)

                if path and not judged():
                    typer.echo(f"note: no `monitor run` is using {path}: the verdict "
                               "will not change until one starts (waiting up to "
                               f"{format_duration(UNKNOWN_GRACE)} for one)", err=True)
                clock = WallClock()
                began = clock.now()
                found = wait_for_release(store, release, service, clock, timeout=seconds)
                left = seconds - (clock.now() - began)
                found = wait_for_decision(store, found, clock, timeout=left,
                                          judged=judged if path else None)
                if found.verdict not in DECIDED and found.state != "done" \
                        and clock.now() - began < seconds and not judged():
                    typer.echo(f"note: no `monitor run` used {path} for "
                               f"{format_duration(UNKNOWN_GRACE)}: stopped waiting", err=True)
            else:
                store, found = open_release(db, config, release, service, read_only=True)
            doc = document(store, found)
    if as_json:
        echo_json(doc)
    else:
        typer.echo(verdict_text(doc))
    raise typer.Exit(EXIT_CODES[doc["verdict"]])


# 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


# Click's usage errors, whether Typer uses click or a copy of it of its own.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException: type[Exception] = next(
    c for c in UsageError.__mro__ if c.__name__ == "ClickException")


def main(args: list[str] | None = None) -> None:
    """Console entry point: a usage error is one line and exits 2; a crash exits 1, never a
    code that reads as a verdict."""
    args = sys.argv[1:] if args is None else args
    try:
        code = app(args=args, prog_name="monitor", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # Its message is the help, printed where `--help` prints it.
            typer.echo(str(exc))
        else:
            typer.echo(usage_line(exc, args), err=True)
        sys.exit(EXIT_USAGE)
    except ClickException as exc:
        typer.echo(f"error: {click_message(exc)}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence for exit codes
        typer.echo(f"error: internal: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if code == EXIT_INTERRUPTED:   # Typer's answer to Ctrl-C
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: Exception, args: list[str]) -> str:
    """`error: monitor verdict: Missing option '--release'. (see 'monitor verdict -h')`:
    what is wrong and where to read more, on one line as every other bad input."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else command_path(args)
    message = click_message(exc)
    missing = re.search(r"Missing option '(--[\w-]+)'", message)
    stray = _stray_words(ctx, args[len(where.split()) - 1:]) if missing and ctx else []
    if missing and stray:
        # `monitor verdict v2.3`: the value is there, without its option's name.
        message = f"{message.rstrip('.')}: {missing.group(1)} {stray[0]}?"
    return f"error: {where}: {message} (see '{where} -h')"


def _stray_words(ctx: typer.Context, args: list[str]) -> list[str]:
    """The words of `args` that are neither an option nor an option's value."""
    takes_value = {name for param in ctx.command.params if not getattr(param, "is_flag", True)
                   for name in (*param.opts, *param.secondary_opts)}
    stray, after_option = [], False
    for arg in args:
        if not after_option and not arg.startswith("-"):
            stray.append(arg)
        after_option = arg in takes_value
    return stray


def command_path(args: list[str]) -> str:
    """`monitor baselines pin` for the arguments `baselines pin --db`: the (sub)commands
    named, as click says them, for the errors it raises before it knows the command."""
    command, path = typer.main.get_command(app), ["monitor"]
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        path.append(arg)
    return " ".join(path)


def click_message(exc: Exception) -> str:
    """The message click would show, on one line."""
    format_message = getattr(exc, "format_message", None)
    return " ".join((format_message() if callable(format_message) else str(exc)).split())
