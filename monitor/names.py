"""Names people give services and releases: they reach logs, metric labels, environment
values and terminals, so they are short and printable wherever they come from (the API, a
version label, the command line)."""

from __future__ import annotations

import re

MAX_NAME_CHARS = 200
# A service is a table of the policy and a metric label: a plain word.
_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def name_problem(name: str) -> str | None:
    """What is wrong with `name` as a service or release name, or None."""
    if not 0 < len(name) <= MAX_NAME_CHARS:
        return f"must have 1 to {MAX_NAME_CHARS} characters"
    if not name.isprintable() or name != name.strip():
        return "must be printable, without leading or trailing spaces"
    return None


def service_name_problem(name: str) -> str | None:
    """What is wrong with `name` as a service's name, or None.

    >>> service_name_problem("a b")
    'service names use letters, digits, _ . -'
    """
    return name_problem(name) or (
        None if _SERVICE.fullmatch(name) else "service names use letters, digits, _ . -")
