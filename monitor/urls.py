"""Whether a URL from a policy or the command line can be requested at all."""

from __future__ import annotations

from urllib.parse import urlsplit


def url_problem(url: str) -> str | None:
    """What makes `url` no http(s) URL with a host and a valid port, or None.

    >>> url_problem("http://127.0.0.1:8080/metrics") is None
    True
    >>> url_problem("http://127.0.0.1:430610/")
    'port out of range (1-65535)'
    >>> url_problem("http://user:pw@/metrics")
    'no host'
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return "spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return "port out of range (1-65535)" if "out of range" in str(exc) else (
            "not a valid URL (a port that is not a number, or an unclosed [ of an IPv6 host)")
    if parts.scheme.lower() not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "no host"
    if port == 0:
        return "port out of range (1-65535)"
    return None
