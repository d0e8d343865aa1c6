"""`monitor report`: a release's verdict as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from monitor.cli.common import (
    ConfigOption,
    DbOption,
    ReleaseServiceOption,
    clear_errors,
    fail,
    open_release,
    refuse_database_as_out,
)
from monitor.files import written_whole
from monitor.verdicts import EXIT_USAGE, document


def report(
    release: Annotated[str, typer.Option(help="Release version, e.g. v2.3.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="HTML file to write (replaced if it exists).")],
    service: ReleaseServiceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a release's verdict, checks, findings and signal plots as one HTML page.

    The page needs no network: keep it as a CI artifact or attach it to a ticket.
    """
    from monitor.report import render_report

    with clear_errors():
        store, found = open_release(db, config, release, service, read_only=True)
        try:
            refuse_database_as_out(out, store)
            page = render_report(document(store, found))
        finally:
            store.close()
    try:
        with written_whole(out) as handle:
            handle.write(page)
    except OSError as exc:
        raise fail(f"--out: cannot write {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    typer.echo(str(out))
