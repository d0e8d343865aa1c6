"""`monitor demo`."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from monitor import __version__
from monitor.cli.common import clear_errors


def demo(
    db: Annotated[Path | None, typer.Option(
        help="Keep the demo's database here (default: a temporary file).")] = None,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Keep /metrics and the JSON API up afterwards, until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve (0 picks a free one).")] = 9847,
) -> None:
    """Run the whole pipeline on an embedded simulated service (five releases, seconds)."""
    from monitor.demo import run_demo
    from monitor.snapshot import SnapshotBox

    box = SnapshotBox()
    with tempfile.TemporaryDirectory(prefix="release-monitor-demo-") as scratch:
        path = db if db is not None else Path(scratch) / "demo.db"
        if db is not None and db.exists():
            raise typer.BadParameter(f"{db} already exists; the demo writes a new database",
                                     param_hint="--db")
        typer.echo(f"release-monitor {__version__} demo: service 'demo', releases v2.1..v2.5, "
                   f"simulated clock, database {path}\n")
        started = time.monotonic()
        with clear_errors():
            run_demo(path, echo=typer.echo, box=box)
        typer.echo(f"\ndone in {time.monotonic() - started:.1f}s of real time.")
        if db is not None:
            typer.echo(f"Try: monitor verdict --db {db} --release v2.3")
        if serve:
            from monitor.api import serve as start_server

            server = start_server(box, host="127.0.0.1", port=port, version=__version__)
            typer.echo(f"serving {server.url}/metrics and "
                       f"{server.url}/api/v1/verdict?service=demo&release=v2.3 (Ctrl-C stops)")
            # SIGTERM ends it as Ctrl-C does, so the temporary database goes too.
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
            finally:
                server.shutdown()
