"""Whether a service's first scrape (or its query API) has what its policy reads: a
misspelt metric is said when the daemon starts, not when a checking period ends with "no
samples", or never, where a query's `or vector(0)` reads the typo as no errors."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from monitor.policy import SignalRule
from monitor.signals import parse_selector


def scraped_names(keys: Iterable[str]) -> set[str]:
    """The metric names of a scrape's (canonical) series keys."""
    return {key.partition("{")[0] for key in keys}


def unread(rules: Iterable[SignalRule], names: set[str]) -> list[str]:
    """One line per metric a rule reads that no series of the scrape has, with the likely
    mistake: a histogram read as a gauge, a name close to one that is there.

    >>> rule = SignalRule("latency", metric="http_request_duration_seconds")
    >>> unread([rule], {"http_request_duration_seconds_bucket"})[0].split(": ", 1)[1]
    'no series of http_request_duration_seconds (it is a histogram: kind = "quantile")'
    >>> rule = SignalRule("p95", kind="quantile", metric="latency_seconds_bucket")
    >>> unread([rule], {"latency_seconds_bucket"})[0].split(": ", 1)[1]
    'no series of latency_seconds_bucket_bucket (a quantile names the histogram: metric = "latency_seconds")'
    """
    lines = []
    for rule in rules:
        for role, name in _read(rule):
            if name not in names:
                lines.append(f"{_key(rule)}: no series of {name}{_hint(rule, role, name, names)}")
    return lines


def _key(rule: SignalRule) -> str:
    """Where the policy names what the rule reads (a memory limit's metric is its signal's)."""
    signal, _, limit = rule.name.partition(":")
    return f"signals.{signal}.limit_metric" if limit else f"signals.{signal}"


def _read(rule: SignalRule) -> list[tuple[str, str]]:
    """(role, metric name) of what a scraped rule reads; histograms by their buckets."""
    if rule.query or rule.numerator_query:
        return []
    if rule.kind == "ratio":
        return [("numerator", parse_selector(rule.numerator)[0]),
                ("denominator", parse_selector(rule.denominator)[0])]
    if rule.kind == "quantile":
        return [("metric", parse_selector(rule.metric)[0] + "_bucket")]
    return [("metric", parse_selector(rule.metric)[0])]


def _hint(rule: SignalRule, role: str, name: str, names: set[str]) -> str:
    if rule.kind != "quantile" and f"{name}_bucket" in names:
        return ' (it is a histogram: kind = "quantile")'
    named = name.removesuffix("_bucket")
    if rule.kind == "quantile" and named.endswith("_bucket") and named in names:
        # The policy named the bucket series itself: the histogram is one suffix shorter.
        return f' (a quantile names the histogram: metric = "{named.removesuffix("_bucket")}")'
    return _spelling(name, names, errors=role == "numerator")


def _spelling(name: str, names: set[str], *, errors: bool) -> str:
    """A name close to `name` that is there; or, for an errors counter, that it may come."""
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.8)
    if close:
        return f" (did you mean {close[0]}?)"
    # A labelled error counter may have no series before its first error.
    return " yet (fine if it appears with the first error; else check the name)" if errors else ""


# What a PromQL expression holds besides metric names: strings, label matchers, ranges,
# the label lists of by/without/on/ignoring/group_*, and its keywords.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_COMMENT = re.compile(r"#[^\n]*")
# A whole name (not a function's: no "(" after it), not a $placeholder, a number or a unit.
_NAME = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end",
                       "by", "without", "on", "ignoring", "group_left", "group_right"})
_QUERY_KEYS = ("query", "numerator_query", "denominator_query")


def queried_metrics(expr: str) -> list[str]:
    """The metric names a PromQL expression selects, in order, once each.

    >>> queried_metrics('sum by (le) (rate(lat_bucket{le=~"a{b"}[$step])) or vector(0)')
    ['lat_bucket']
    >>> queried_metrics("max(process_resident_memory_bytes) > bool 1e9 unless on(job) up")
    ['process_resident_memory_bytes', 'up']
    """
    text = _COMMENT.sub(" ", _QUOTED.sub('""', expr))
    text = _LABEL_LISTS.sub(" ", _MATCHERS.sub(" ", text))
    names = (name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS)
    return list(dict.fromkeys(names))


def unqueried(rules: Iterable[SignalRule], names: set[str]) -> list[str]:
    """One line per metric a rule's queries select that the query API holds no series of,
    with a name close to it that it holds (or, for errors, that they may come).

    >>> rule = SignalRule("errors", kind="ratio", numerator_query="sum(rate(app_error_total{}[1m]))",
    ...                   denominator_query="sum(rate(app_requests_total{}[1m]))")
    >>> unqueried([rule], {"app_errors_total", "app_requests_total"})
    ['signals.errors.numerator_query: no series of app_error_total (did you mean app_errors_total?)']
    """
    lines = []
    for rule in rules:
        for key in _QUERY_KEYS:
            for name in queried_metrics(getattr(rule, key)):
                if name not in names:
                    hint = _spelling(name, names, errors=key == "numerator_query")
                    lines.append(f"{_key(rule)}.{key}: no series of {name}{hint}")
    return lines
