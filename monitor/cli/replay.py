"""`monitor replay` and `monitor record`: try a policy on recorded releases."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from monitor.cli.common import (
    ConfigOption,
    DbOption,
    ReleaseServiceOption,
    clear_errors,
    duration_option,
    echo_json,
    fail,
    load_config,
    open_store,
    refuse_database_as_out,
    release_in,
)
from monitor.durations import format_duration, parse_duration
from monitor.errors import ConfigError
from monitor.findings import PENDING, ROLLBACK
from monitor.policy import MonitorConfig, ServicePolicy
from monitor.render import verdict_text
from monitor.verdicts import EXIT_CODES, EXIT_USAGE

if TYPE_CHECKING:
    from monitor.signals import RawSeries
    from monitor.store import Release, Store

# The verdict whose exit code a replay of several recordings ends with: the gravest.
GRAVITY = ("pass", "pending", "inconclusive", "hotfix", "rollback")


def replay(
    recordings: Annotated[list[Path], typer.Argument(help="Recording CSV files.")],
    release: Annotated[str, typer.Option(help="The release to judge.")],
    baseline: Annotated[str | None, typer.Option(
        help="The release to compare with (default: the one just before).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy file (TOML).")] = None,
    service: Annotated[str | None, typer.Option(
        help="Which service of the policy (default: its only one).")] = None,
    period: Annotated[str | None, typer.Option(
        help="Checking period, e.g. 30m (default: the policy's for a minor change).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object per recording, one per line.")] = False,
) -> None:
    """Replay recorded releases through the evaluation core; one verdict per recording.

    The exit code is the verdict's (as `monitor verdict`); of several recordings, the
    gravest verdict's (rollback, hotfix, inconclusive, pending, pass).
    """
    from monitor.policy import load_policy
    from monitor.recording import load_recording
    from monitor.replay import replay as run_replay

    if service is not None and policy is None:
        raise fail("--service: picks a service of --policy; give --policy too", EXIT_USAGE)
    if baseline is not None and baseline == release:
        raise fail(f"--baseline: {baseline!r} is the release being judged; name an earlier one",
                   EXIT_USAGE)
    with clear_errors():
        chosen = None
        if policy is not None:
            config = load_policy(policy)
            chosen = _one_service(config, service)
        seconds = _period_seconds(period)
        results = []
        for path in recordings:
            result = run_replay(load_recording(path), release=release, baseline=baseline,
                                policy=chosen, period=seconds)
            results.append(result.to_dict())
    for doc in results:
        if as_json:
            echo_json(doc)
        else:
            typer.echo(f"{doc['recording']}:")
            typer.echo(verdict_text({**doc, "change_class": "replayed", "state": "done"}))
    gravest = max((doc["verdict"] for doc in results), key=GRAVITY.index)
    raise typer.Exit(EXIT_CODES[gravest])


def _period_seconds(period: str | None) -> float | None:
    if period is None:
        return None
    seconds = duration_option("--period", period)
    if not 0 < seconds < float("inf"):
        raise fail(f"--period: must be a finite duration longer than zero, got {period!r}",
                   EXIT_USAGE)
    return seconds


def _one_service(config: MonitorConfig, name: str | None) -> ServicePolicy:
    if name is not None:
        return config.service(name)
    if len(config.services) != 1:
        raise ConfigError(f"{config.path}: services: {len(config.services)} services; "
                          "pick one with --service")
    return next(iter(config.services.values()))


def record(
    release: Annotated[str, typer.Option(help="The release to record.")],
    out: Annotated[Path, typer.Option(help="CSV file to write.")],
    service: ReleaseServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a release's raw samples, and its baseline's, as a recording for replay.

    A service read by PromQL (give its --config) is recorded from its query API: each
    signal as its queries answer, over the window the monitor judges it on.
    """
    from monitor.errors import RecordingError
    from monitor.recording import write_recording

    with clear_errors():
        settings = load_config(config)
        store, found = release_in(open_store(db, settings, read_only=True), release, service)
        refuse_database_as_out(out, store)
        policy = settings.services.get(found.service) if settings is not None else None
        if policy is not None and policy.prometheus is not None:
            samples = _queried_samples(store, found, policy)
            where, hint = "answered by its PromQL queries", ""
        else:
            samples = _scraped_samples(store, found)
            where = "are stored"
            hint = "" if settings is not None else "; a service read by PromQL is recorded with its --config"
        # A release without samples would only fail later, at replay; a baseline without
        # them would replay the release as a service's first, judged on leaks alone.
        empty = [version for version, raw in samples.items() if not np.any(~np.isnan(raw.values))]
        if found.version in empty:
            raise RecordingError(f"no samples of {found.version} of service {found.service} "
                                 f"{where}: nothing to record{hint}")
        if found.baselines and set(found.baselines) <= set(empty):
            raise RecordingError(
                f"no samples of {'+'.join(found.baselines)}, the baseline of {found.version} of "
                f"service {found.service}, {where} (past their retention?): a replay without "
                f"them would judge {found.version} as the service's first release{hint}")
        written = {version: raw for version, raw in samples.items() if version not in empty}
        rows = write_recording(out, written)
    typer.echo(f"wrote {rows} samples of {', '.join(written)} to {out}")
    # A recording carries no checking period: replay takes the policy's minor one unless told.
    period = format_duration(found.period)
    if parse_duration(period) != found.period:
        period = f"{found.period:g}s"   # the exact period: format_duration reads 1h30m15s as 1h30m
    command = ["monitor", "replay", str(out), "--release", found.version, "--period", period]
    if policy is not None:
        command += ["--policy", str(config), "--service", found.service]
    typer.echo(f"replay it on {found.version}'s {period} checking period: {shlex.join(command)}")
    if found.verdict == PENDING:
        typer.echo(f"note: {found.version} is still being judged: the recording ends where its "
                   "samples do, and a replay calls the rest of its period unwatched", err=True)


def _recorded_versions(found: Release,
                       releases: Sequence[Release]) -> Iterator[tuple[Release, float]]:
    """The release's baselines, then the release (of its service's `releases`), each with
    when the release after it began (infinity for none): its first stretch of running,
    the one a baseline is summarized over when the release after it is judged. The order
    a recording holds them in."""
    for version in reversed([found.version, *found.baselines]):
        this = next(r for r in releases if r.version == version)
        later = [r.started_at for r in releases if r.started_at > this.started_at]
        yield this, min(later) if later else float("inf")


def _replacement(found: Release, releases: Sequence[Release]) -> Release | None:
    """The release that replaced `found` within its checking period and before its
    verdict: a replay sees it where its samples begin, as the daemon judged `found` on
    the part it ran (a release rolled back before it came was judged whole)."""
    end_of_period = found.started_at + found.period
    later = [r for r in releases
             if found.started_at < r.started_at < end_of_period and r.verdict != ROLLBACK]
    first = min(later, key=lambda r: r.started_at) if later else None
    if first is None or (found.decided_at is not None and found.decided_at < first.started_at):
        return None
    return first


def _stretches(store: Store, found: Release) -> list[tuple[Release, float]]:
    """What a recording of `found` holds: its baselines and itself (`_recorded_versions`),
    then its replacement (`_replacement`) up to the end of its period."""
    releases = store.releases(found.service)
    stretches = list(_recorded_versions(found, releases))
    replacement = _replacement(found, releases)
    if replacement is not None:
        stretches.append((replacement, found.started_at + found.period))
    return stretches


def _scraped_samples(store: Store, found: Release) -> dict[str, RawSeries]:
    """Every stored sample of each stretch (`_stretches`)."""
    from monitor.signals import RawSeries

    keys = store.series_keys(found.service)
    samples = {}
    for this, end in _stretches(store, found):
        window = store.read_window(found.service, this.started_at, end, version=this.version)
        samples[this.version] = RawSeries(tuple(keys[int(i)] for i in window.series_ids),
                                          window.times, window.targets, window.values)
    return samples


def _queried_samples(store: Store, found: Release, policy: ServicePolicy) -> dict[str, RawSeries]:
    """Each stretch's signals (`_stretches`) as its PromQL queries answer them now, over
    what the daemon reads: a baseline's last `baseline_window` before the next release,
    the release's checking period and the evaluations a finding may need past it, and its
    replacement up to the end of that period."""
    from monitor.promql import PromClient, promql_frame
    from monitor.recording import frame_as_samples
    from monitor.releases import judged_rules

    source = policy.prometheus
    assert source is not None
    now = time.time()
    samples = {}
    with PromClient(source) as client:
        for this, end in _stretches(store, found):
            end = min(end, now)
            start = this.started_at
            if this.started_at > found.started_at and end <= start:
                continue   # a replacement registered to start later: nothing to ask yet
            if this.version == found.version:
                end = min(end, start + this.period + policy.persistence * policy.evaluation_interval)
            elif this.started_at < found.started_at:   # a baseline
                start = max(start, end - policy.baseline_window)
            frame = promql_frame(client, judged_rules(policy), start=start, end=end,
                                 step=source.step,
                                 variables={"service": found.service, "version": this.version})
            samples[this.version] = frame_as_samples(frame)
    return samples
