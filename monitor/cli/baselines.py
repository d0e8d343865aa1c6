"""`monitor baselines`: which releases new releases are compared with."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from monitor.cli.common import (
    ConfigOption,
    DbOption,
    OnlyServiceOption,
    ReleaseServiceOption,
    clear_errors,
    known_service,
    load_config,
    open_release,
    open_store,
)
from monitor.figures import format_value, unit_of
from monitor.render import when

app = typer.Typer(rich_markup_mode=None, help="List, pin, unpin and invalidate baselines.",
                  no_args_is_help=True)

ServiceOption = Annotated[str, typer.Option(help="Service.")]


@app.command("list", short_help="Every release and whether it can be a baseline.")
def list_baselines(
    service: OnlyServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Every release with whether it can be a baseline, the pinned one, and stored summaries."""
    with clear_errors():
        cfg = load_config(config)
        store = open_store(db, cfg, read_only=True)
        services = [known_service(store, service, cfg)] if service else store.services()
        if not services:
            typer.echo("no releases yet")
        for name in services:
            pinned = store.pinned(name)
            why = store.release(name, pinned).why_not_pinnable() if pinned else None
            ignored = f" (ignored: {why})" if why else ""
            typer.echo(f"{name}: pinned {pinned or '-'}{ignored}")
            for release in store.releases(name):
                healthy = release.verdict == "pass" and not release.invalidated
                mark = "healthy" if healthy else ("invalidated" if release.invalidated
                                                  else release.verdict)
                stored = store.load_baseline(release.id)
                typer.echo(f"  {release.version:<10} {when(release.started_at)}  {mark:<12} "
                           f"{len(stored)} signal summaries")
                for signal, (summary, reservoir) in sorted(stored.items()):
                    quantiles = summary.get("quantiles") or {}
                    unit = unit_of({"signal": signal, "kind": _kind(summary)})
                    typer.echo(f"      {signal:<18} n={summary.get('count')} "
                               f"p50={format_value(unit, quantiles.get('p50'))} "
                               f"p95={format_value(unit, quantiles.get('p95'))} "
                               f"reservoir={reservoir.size}")


def _kind(summary: dict[str, Any]) -> str | None:
    """The signal's kind, from the definition it was summarized under (when stored)."""
    definition = summary.get("definition")
    return json.loads(definition).get("kind") if isinstance(definition, str) else None


@app.command("pin")
def pin(
    release: Annotated[str, typer.Argument(help="Release to compare new releases with.")],
    service: ReleaseServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Compare new releases with this one until unpinned."""
    with clear_errors():
        store, found = open_release(db, config, release, service)
        store.pin(found.service, found.version)
    typer.echo(f"{found.service}: new releases are compared with {found.version}")


@app.command("unpin")
def unpin(service: ServiceOption, db: DbOption = None, config: ConfigOption = None) -> None:
    """Go back to comparing with the last healthy release(s)."""
    with clear_errors():
        cfg = load_config(config)
        store = open_store(db, cfg)
        store.unpin(known_service(store, service, cfg))
    typer.echo(f"{service}: new releases are compared with the last healthy release")


@app.command("invalidate")
def invalidate(
    release: Annotated[str, typer.Argument(help="A release later found bad.")],
    service: ReleaseServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Never use this release as a baseline again."""
    with clear_errors():
        store, found = open_release(db, config, release, service)
        was_pinned = store.pinned(found.service) == found.version
        store.invalidate(found.service, found.version)
    unpinned = "; unpinned, new releases are compared with the last healthy release" if was_pinned else ""
    typer.echo(f"{found.service} {found.version}: invalidated; it is no longer a baseline{unpinned}")
