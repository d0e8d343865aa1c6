"""What every command shares: database and policy options, and errors as one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.durations import parse_duration
from monitor.errors import (
    AlreadyJudged,
    AmbiguousRelease,
    ConfigError,
    MonitorError,
    NotABaseline,
    RecordingError,
    Refused,
    StoreError,
    UnknownRelease,
)
from monitor.findings import json_safe
from monitor.lock import lock_file
from monitor.policy import MonitorConfig, load_policy
from monitor.store import Release, Store
from monitor.verdicts import EXIT_INTERNAL, EXIT_STORE, EXIT_USAGE

DEFAULT_DB = "release-monitor.db"

DbOption = Annotated[
    Path | None,
    typer.Option("--db", envvar="RELEASE_MONITOR_DB",
                 help="SQLite database; by default the policy's, or else the file "
                      "release-monitor.db in the current directory."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="RELEASE_MONITOR_CONFIG", help="Policy file (TOML)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ReleaseServiceOption = Annotated[
    str | None,
    typer.Option(help="Service (may be left out when one service has that release)."),
]
OnlyServiceOption = Annotated[str | None, typer.Option(help="Only this service.")]


def echo_json(doc: Any) -> None:
    """One line of strict JSON: NaN and infinities (a quantile of no data) are null."""
    typer.echo(json.dumps(json_safe(doc), allow_nan=False))


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def duration_option(option: str, text: str) -> float:
    """Seconds in a duration given on the command line; bad input names the option."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", EXIT_USAGE) from None


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the monitor's own errors into one line on stderr and a documented exit code."""
    try:
        yield
    except (ConfigError, UnknownRelease, AmbiguousRelease, NotABaseline, RecordingError,
            Refused, AlreadyJudged, ValueError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except StoreError as exc:
        raise fail(str(exc), EXIT_STORE) from None
    except MonitorError as exc:
        raise fail(str(exc), EXIT_INTERNAL) from None


def load_config(path: Path | None) -> MonitorConfig | None:
    return load_policy(path) if path is not None else None


def open_store(db: Path | None, config: MonitorConfig | None = None, *,
               create: bool = False, read_only: bool = False) -> Store:
    """The database named on the command line, else the policy's, else the default.

    Only the commands that record something (`run`, `release start`) create it: a mistyped
    --db for `verdict` is an error, not a new empty database. The commands that only read
    (`read_only`) change nothing in it and need no write access to it.
    """
    path = database_path(db, config)
    # An empty file (a `touch`, a mount placeholder) is no database either: opening it
    # would write one.
    if not create and (not path.exists() or (path.is_file() and path.stat().st_size == 0)):
        raise StoreError(f"no database at {path}: give --db or --config, or run this where "
                         "`monitor run` keeps its database")
    return Store.open(path, read_only=read_only)


def database_path(db: Path | None, config: MonitorConfig | None = None) -> Path:
    """The database named on the command line, else the policy's, else the default."""
    if db is not None:
        return db
    if config is not None:
        return Path(config.path).parent / config.database
    return Path(DEFAULT_DB)


def refuse_database_as_out(out: Path, store: Store) -> None:
    """Fail when `out` is the database the command reads or one of its companion files:
    writing there would destroy the release history (and a running daemon's database)."""
    if store.path is not None:
        database = Path(store.path)
        for name in (database, Path(f"{database}-wal"), Path(f"{database}-shm"),
                     lock_file(database)):
            if out.resolve() == name.resolve() or (out.exists() and name.exists()
                                                   and out.samefile(name)):
                raise fail(f"--out: {out} is the database {database} (or one of its files): "
                           "give another path", EXIT_USAGE)


def remove_database(path: Path) -> None:
    """Delete a database this command created and could not go on with, and its companions."""
    for name in (str(path), f"{path}-wal", f"{path}-shm", lock_file(path)):
        Path(name).unlink(missing_ok=True)


def open_release(
    db: Path | None, config: Path | None, release: str, service: str | None, *,
    read_only: bool = False,
) -> tuple[Store, Release]:
    """The store (as `open_store`, with the policy at `config`) and the release named in it."""
    return release_in(open_store(db, load_config(config), read_only=read_only), release, service)


def release_in(store: Store, release: str, service: str | None) -> tuple[Store, Release]:
    """The store and the release named in it; the store closed when there is none."""
    try:
        return store, store.find_release(release, service)
    except BaseException:
        store.close()
        raise


def known_service(store: Store, service: str, config: MonitorConfig | None = None) -> str:
    """The service, if the database holds releases of it or the policy names it: a typo
    must not read as a service with nothing pinned or no releases yet."""
    services = store.services()
    if service not in services and (config is None or service not in config.services):
        known = ", ".join(services) or "none"
        raise UnknownRelease(f"no releases of service {service!r} (services: {known})")
    return service


def is_terminal() -> bool:
    return sys.stdout.isatty()
