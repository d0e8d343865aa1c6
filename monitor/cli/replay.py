"""`monitor replay` and `monitor record`: try a policy on recorded releases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    open_release,
    refuse_database_as_out,
)
from monitor.errors import ConfigError
from monitor.policy import MonitorConfig, ServicePolicy
from monitor.render import verdict_text
from monitor.verdicts import EXIT_CODES, EXIT_USAGE

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
    """Write a release's raw samples, and its baseline's, as a recording for replay."""
    from monitor.errors import RecordingError
    from monitor.recording import write_recording
    from monitor.signals import RawSeries

    with clear_errors():
        store, found = open_release(db, config, release, service, read_only=True)
        refuse_database_as_out(out, store)
        releases = store.releases(found.service)
        wanted = [found.version, *found.baselines]
        samples = {}
        keys = store.series_keys(found.service)
        for version in reversed(wanted):
            this = next(r for r in releases if r.version == version)
            later = [r.started_at for r in releases if r.started_at > this.started_at]
            end = min(later) if later else float("inf")
            window = store.read_window(found.service, this.started_at, end, version=version)
            samples[version] = RawSeries(tuple(keys[int(i)] for i in window.series_ids),
                                         window.times, window.targets, window.values)
        if not np.any(~np.isnan(samples[found.version].values)):
            # A recording of nothing would only fail later, at replay.
            raise RecordingError(f"no samples of {found.version} of service {found.service} "
                                 "are stored: nothing to record")
        rows = write_recording(out, samples)
    typer.echo(f"wrote {rows} samples of {', '.join(samples)} to {out}")
