"""Named errors with one-line messages; the CLI turns each into a line and an exit code."""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error the monitor reports to a user."""


class ConfigError(MonitorError):
    """A policy file is unreadable or wrong: the message names the file and the key."""


class StoreError(MonitorError):
    """The database cannot be opened, read or written."""


class UnknownRelease(MonitorError):
    """No release matches what was asked for."""


class OlderRelease(UnknownRelease):
    """The release exists, but is older than the latest few a running monitor's API serves."""


class NotABaseline(MonitorError):
    """The release cannot be a baseline: it did not pass, or was invalidated since."""


class AmbiguousRelease(MonitorError):
    """Several services have the release; `--service` must say which."""


class AlreadyJudged(MonitorError):
    """A deploy was registered under a version whose release has its verdict already."""


class Refused(MonitorError):
    """A running monitor's API refused a request as bad (HTTP 4xx): wrong token, unknown
    service, a malformed version."""


class ScrapeError(MonitorError):
    """A target's answer could not be fetched or parsed; nothing from it is stored."""


class RecordingError(MonitorError):
    """A recording CSV is malformed: the message names the file and the line."""
