"""`monitor demo`."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from monitor import __version__
from monitor.cli.common import clear_errors, fail
from monitor.errors import MonitorError
from monitor.snapshot import SnapshotBox
from monitor.store import Store
from monitor.verdicts import EXIT_USAGE

if TYPE_CHECKING:
    from monitor.api import MonitorServer


def demo(
    db: Annotated[Path | None, typer.Option(
        help="Keep the demo's database here (default: a temporary file).")] = None,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Keep /metrics and the JSON API up afterwards, until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve (0 picks a free one).",
                                      min=0, max=65535, metavar="<int>")] = 9847,
) -> None:
    """Run the whole pipeline on an embedded simulated service (five releases, seconds)."""
    box = SnapshotBox()
    # SIGTERM ends the demo as Ctrl-C does, so its temporary database goes too.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _play(box, db, serve, port)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _play(box: SnapshotBox, db: Path | None, serve: bool, port: int) -> None:
    from monitor.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="release-monitor-demo-") as scratch:
        path = db if db is not None else Path(scratch) / "demo.db"
        if db is not None and db.exists():
            raise typer.BadParameter(f"{db} already exists; the demo writes a new database",
                                     param_hint="--db")
        # The port, then the database: either one's error comes before the demo's banner,
        # and a port in use leaves no database behind.
        server = _listen(box, port) if serve else None
        try:
            with clear_errors():
                Store.open(path).close()
            typer.echo(f"release-monitor {__version__} demo: service 'demo', releases "
                       f"v2.1..v2.5, simulated clock, database {path}\n")
            started = time.monotonic()
            with clear_errors():
                run_demo(path, echo=typer.echo, box=box)
            typer.echo(f"\ndone in {time.monotonic() - started:.1f}s of real time.")
            if db is not None:
                typer.echo(f"Try: monitor verdict --db {db} --release v2.3")
            if server is not None:
                # Inside the try: Ctrl-C or SIGTERM right after the line is a clean stop too.
                try:
                    typer.echo(f"serving {server.url}/metrics and {server.url}/api/v1/verdict"
                               "?service=demo&release=v2.3 (Ctrl-C stops)")
                    threading.Event().wait()
                except KeyboardInterrupt:
                    pass
        finally:
            if server is not None:
                server.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _listen(box: SnapshotBox, port: int) -> MonitorServer:
    from monitor.api import serve as start_server

    try:
        return start_server(box, host="127.0.0.1", port=port, version=__version__)
    except MonitorError as exc:
        raise fail(f"--port: {exc}", EXIT_USAGE) from None
