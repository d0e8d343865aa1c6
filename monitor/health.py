"""How a data source is doing: a scraped target or a service's query API, one attempt at a
time, and a log line when a failure starts, changes or ends (not at every attempt of a
long outage)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from monitor.snapshot import TargetHealth

log = logging.getLogger("release_monitor")


def attempted(health: TargetHealth, *, error: str, at: float, seconds: float,
              samples: int) -> TargetHealth:
    """`health` after one more attempt, which failed with `error` or read `samples`."""
    # The same failure with other figures (a body's size, say) is no change.
    if error and gist(error) != gist(health.last_error):
        log.warning("%s failed: %s", _named(health), error)
    elif not error and health.last_error:
        log.info("%s works again", _named(health))
    return replace(
        health, up=not error, last_scrape=at, duration=seconds,
        scrapes_total=health.scrapes_total + 1,
        errors_total=health.errors_total + (1 if error else 0),
        samples=samples if not error else health.samples, last_error=error,
    )


def _named(health: TargetHealth) -> str:
    """`scrape of shop-a (shop)`: which of several alike targets, by the name it goes by."""
    what = "query" if health.query_api else "scrape"
    return f"{what} of {health.target} ({health.service})"


def gist(error: str) -> str:
    """An error without its figures."""
    return re.sub(r"\d+(\.\d+)?", "#", error)
