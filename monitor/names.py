"""Names people give services and releases: they reach logs, metric labels, environment
values and terminals, so they are short and printable wherever they come from (the API, a
version label, the command line)."""

from __future__ import annotations

MAX_NAME_CHARS = 200


def name_problem(name: str) -> str | None:
    """What is wrong with `name` as a service or release name, or None."""
    if not 0 < len(name) <= MAX_NAME_CHARS:
        return f"must have 1 to {MAX_NAME_CHARS} characters"
    if not name.isprintable() or name != name.strip():
        return "must be printable, without leading or trailing spaces"
    return None
