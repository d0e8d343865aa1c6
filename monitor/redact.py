"""Keep secrets out of logs, metrics and messages."""

from __future__ import annotations

import os
from urllib.parse import unquote_plus, urlsplit


def redact_url(url: str, *, path: bool = True) -> str:
    """The URL as safe to log: no user or password, query values hidden, no fragment; and
    with `path` false no path either (a webhook's, such as Slack's, is its secret).

    >>> redact_url("https://bob:s3cret@example.com:8443/metrics?token=abc&module=http")
    'https://example.com:8443/metrics?token=***&module=***'
    >>> redact_url("http://10.0.0.1:9100/metrics?s3cr3t&debug=1")
    'http://10.0.0.1:9100/metrics?***&debug=***'
    >>> redact_url("https://hooks.slack.com/services/T0/B0/XXXX", path=False)
    'https://hooks.slack.com/***'
    """
    if "//" not in url.split("?", 1)[0] and "@" in url.split("?", 1)[0]:
        # No scheme: "user:password@host/path" would parse as a scheme and a path.
        url = "//" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Unparsable (a port out of range, an unclosed "["): shown as written, less its query.
        # With an "@" anywhere, where credentials end cannot be told (a password may hold
        # "/", "?" or "#"), so only the scheme is shown.
        scheme = url[: url.index("//") + 2] if "//" in url else ""
        if "@" in url:
            return printable(f"{scheme}*** (credentials hidden)", limit=200)
        head, _, query = url.split("#", 1)[0].partition("?")
        return printable(head + ("?***" if query else ""), limit=200)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    shown_path = parts.path if path or parts.path in ("", "/") else "/***"
    safe = f"{parts.scheme}://{netloc}{shown_path}" if parts.scheme else f"{netloc}{shown_path}"
    if parts.query:
        # A parameter without "=" is all value (`?s3cr3t`): hidden whole.
        shown = [f"{unquote_plus(item.split('=', 1)[0])}=***" if "=" in item else "***"
                 for item in parts.query.split("&") if item]
        safe += "?" + ("&".join(shown) or "***")
    return printable(safe, limit=200)


def printable(text: str, limit: int) -> str:
    """One line of printable characters, cut at `limit`."""
    cleaned = "".join(char if char.isprintable() else "?" for char in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


# What a command run by the monitor inherits: enough to find programs and speak a language,
# never the monitor's own tokens and passwords.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "PYTHONPATH",
              "VIRTUAL_ENV", "KUBECONFIG")


def command_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a verification or hook command: an allowlist plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if k in _INHERITED}, **extra}
