"""Prometheus metrics built from the latest snapshot: verdicts, findings and self-health.

The collector reads only `SnapshotBox.get()`, so a scrape never touches SQLite. Every
label value comes from the snapshot (policy and daemon state), never from an HTTP request;
the request counter has a fixed set of endpoints and code classes created up front.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor.findings import PENDING, VERDICTS
from monitor.snapshot import Snapshot, SnapshotBox, TargetHealth

PREFIX = "release_monitor_"
ENDPOINTS = ("metrics", "verdict", "releases", "gate", "rollback", "health", "other")
CODE_CLASSES = ("2xx", "4xx", "5xx")

_RELEASE = ("service", "release")
_FINDING = ("service", "release", "signal", "detector", "severity")
_FINDING_FIGURES = (
    ("effect", "finding_effect_ratio",
     "Relative change of the candidate against the baseline (none against a constant zero)."),
    ("lower", "finding_lower_ratio", "Lower bound of the effect's confidence interval."),
    ("upper", "finding_upper_ratio", "Upper bound of the effect's confidence interval."),
    ("tolerance", "finding_tolerance_ratio", "Effect the policy tolerates for this signal."),
    ("n_baseline", "finding_baseline_samples",
     "Baseline samples behind the finding (requests, for an error ratio)."),
    ("n_candidate", "finding_candidate_samples",
     "Candidate samples behind the finding (requests, for an error ratio)."),
)
_DETECTOR = _FINDING.index("detector")
_RATIO_FIGURES = ("effect", "lower", "upper", "tolerance")
# A leak finding's figures are slopes in the signal's unit per second, not relative changes.
_LEAK_FIGURES = (("candidate", "candidate"), ("baseline", "baseline"), ("lower", "lower"),
                 ("upper", "upper"), ("tolerance", "tolerated"))
_QUANTILES = (("p05", "0.05"), ("p50", "0.5"), ("p95", "0.95"))

Labels = tuple[str, ...]
Document = Mapping[str, Any]


class RequestCounter:
    """Thread-safe counts of HTTP answers by endpoint and code class, all present from 0."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Labels, int] = {(e, c): 0 for e in ENDPOINTS for c in CODE_CLASSES}

    def count(self, endpoint: str, status: int) -> None:
        """Count one answer; unknown endpoints count as "other", 1xx/3xx are not counted."""
        key = (endpoint if endpoint in ENDPOINTS else "other", f"{status // 100}xx")
        with self._lock:
            if key in self._counts:
                self._counts[key] += 1

    def counts(self) -> dict[Labels, int]:
        """A copy of the counts keyed by (endpoint, code class)."""
        with self._lock:
            return dict(self._counts)


class SnapshotCollector(Collector):
    """Yields the monitor's metric families from the latest published snapshot."""

    def __init__(
        self, box: SnapshotBox, *, version: str, requests: RequestCounter | None = None
    ) -> None:
        self._box = box
        self._version = version
        self._requests = requests if requests is not None else RequestCounter()

    def collect(self) -> Iterator[Any]:
        snapshot = self._box.get()
        documents = [snapshot.verdicts[key] for key in sorted(snapshot.verdicts)]
        yield _build_info(self._version)
        yield from _release_families(documents)
        yield from _finding_families(documents)
        yield _check_family(documents)
        yield from _signal_families(documents)
        yield from _target_families(snapshot.targets)
        yield from _evaluation_families(snapshot)
        yield _requests_family(self._requests)


def build_registry(
    box: SnapshotBox, *, version: str, requests: RequestCounter | None = None
) -> CollectorRegistry:
    """A fresh registry (never the global one) exposing the snapshot in `box`.

    Pass the `RequestCounter` the HTTP server updates to export its request counts;
    without one, the request counter is exported at 0.

    Example:
        >>> from prometheus_client import generate_latest
        >>> registry = build_registry(SnapshotBox(), version="0.1.0")
        >>> b'release_monitor_build_info{version="0.1.0"} 1.0' in generate_latest(registry)
        True
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(box, version=version, requests=requests))
    return registry


def _number(value: Any) -> float | None:
    """A finite float, or None for missing, NaN, infinite or non-numeric values."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _gauge(name: str, documentation: str, labels: Labels) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels))


def _counter(name: str, documentation: str, labels: Labels) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, labels=list(labels))


def _fill(family: Any, rows: Mapping[Labels, Any]) -> Any:
    """Add one sample per label tuple, skipping values that are not finite numbers."""
    for labels, value in rows.items():
        number = _number(value)
        if number is not None:
            family.add_metric(list(labels), number)
    return family


def _release_key(document: Document) -> Labels:
    return (_text(document.get("service")), _text(document.get("release")))


def _build_info(version: str) -> InfoMetricFamily:
    family = InfoMetricFamily(PREFIX + "build", "Version of the release monitor.",
                              labels=["version"])
    family.add_metric([version], {})
    return family


def _release_families(documents: list[Document]) -> Iterator[Any]:
    """Verdict state set, release timestamps and the release info series."""
    verdict = _gauge("verdict", "Current verdict of a release: 1 for its state, 0 for others.",
                     (*_RELEASE, "verdict"))
    for document in documents:
        current = document.get("verdict")
        current = current if current in VERDICTS else PENDING
        for state in VERDICTS:
            verdict.add_metric([*_release_key(document), state], 1.0 if state == current else 0.0)
    yield verdict
    for field, name, documentation in (
        ("started_at", "release_start_timestamp_seconds", "When the release started."),
        ("decided_at", "release_decided_timestamp_seconds", "When the verdict was decided."),
        ("first_alarm_at", "release_first_alarm_timestamp_seconds",
         "When a finding first crossed its tolerance."),
    ):
        rows = {_release_key(d): d.get(field) for d in documents}
        yield _fill(_gauge(name, documentation, _RELEASE), rows)
    info = InfoMetricFamily(PREFIX + "release", "Baseline, change class and state of a release.",
                            labels=[*_RELEASE, "baseline", "change_class", "state"])
    for document in documents:
        extra = [_text(document.get(k)) for k in ("baseline_release", "change_class", "state")]
        info.add_metric([*_release_key(document), *extra], {})
    yield info


def _finding_families(documents: list[Document]) -> Iterator[GaugeMetricFamily]:
    """Effect figures per finding and the projected time to memory exhaustion."""
    findings: dict[Labels, Mapping[str, Any]] = {}
    exhaustion: dict[Labels, Any] = {}
    for document in documents:
        for finding in document.get("findings") or ():
            release = _release_key(document)
            signal = _text(finding.get("signal"))
            kind = (_text(finding.get("detector")), _text(finding.get("severity")))
            # A later finding with the same labels replaces the earlier one: one series each.
            findings[(*release, signal, *kind)] = finding
            if _number(finding.get("exhaustion")) is not None:
                exhaustion[(*release, signal)] = finding.get("exhaustion")
    for field, name, documentation in _FINDING_FIGURES:
        rows = {labels: finding.get(field) for labels, finding in findings.items()
                if field not in _RATIO_FIGURES or labels[_DETECTOR] != "leak"}
        yield _fill(_gauge(name, documentation, _FINDING), rows)
    slopes = {(*labels, figure): finding.get(field)
              for labels, finding in findings.items() if labels[_DETECTOR] == "leak"
              for field, figure in _LEAK_FIGURES}
    yield _fill(_gauge("leak_slope_per_second",
                       "A leak finding's slope, in the signal's unit per second: the candidate's "
                       "(and its interval's lower and upper bounds), the baseline's, and the "
                       "rise tolerated beyond the baseline's.", (*_FINDING, "figure")), slopes)
    yield _fill(_gauge("leak_exhaustion_seconds",
                       "Projected time until a leaking signal reaches its limit.",
                       (*_RELEASE, "signal")), exhaustion)


def _check_family(documents: list[Document]) -> GaugeMetricFamily:
    """1 when a smoke or verification check passed, 0 when it failed."""
    rows: dict[Labels, float] = {}
    for document in documents:
        for check in document.get("checks") or ():
            labels = (*_release_key(document), _text(check.get("stage")), _text(check.get("name")))
            rows[labels] = 1.0 if check.get("ok") else 0.0
    family = _gauge("check_passed", "Whether a smoke or verification check passed.",
                    (*_RELEASE, "stage", "check"))
    return _fill(family, rows)


def _signal_families(documents: list[Document]) -> Iterator[Metric]:
    """Baseline quantiles and the candidate's value for each compared signal.

    The baseline is typed summary (quantiles only; OpenMetrics makes count and sum
    optional): promtool rejects a `quantile` label on a gauge.
    """
    baseline: dict[Labels, Any] = {}
    level: dict[Labels, Any] = {}
    candidate: dict[Labels, Any] = {}
    for document in documents:
        for signal in document.get("signals") or ():
            labels = (*_release_key(document), _text(signal.get("signal")))
            quantiles = signal.get("baseline") or {}
            for key, quantile in _QUANTILES:
                baseline[(*labels, quantile)] = quantiles.get(key)
            # An error ratio's value over all its requests, as the text view shows it.
            pooled = signal.get("pooled")
            if isinstance(pooled, Mapping):
                level[labels], candidate[labels] = pooled.get("baseline"), pooled.get("candidate")
            else:
                level[labels], candidate[labels] = quantiles.get("p50"), signal.get("candidate")
    summary = Metric(PREFIX + "signal_baseline", "Quantiles of a signal in the baseline release.",
                     "summary")
    for labels, value in baseline.items():
        number = _number(value)
        if number is not None:
            names = (*_RELEASE, "signal", "quantile")
            summary.add_sample(summary.name, dict(zip(names, labels, strict=True)), number)
    yield summary
    yield _fill(_gauge("signal_baseline_level", "Value of a signal in the baseline release, "
                       "to set against signal_candidate: its median, an error ratio's over all "
                       "its requests.", (*_RELEASE, "signal")), level)
    yield _fill(_gauge("signal_candidate", "Value of a signal in the candidate release: its "
                       "median, an error ratio's over all its requests.",
                       (*_RELEASE, "signal")), candidate)


def _target_families(targets: Iterable[TargetHealth]) -> Iterator[Any]:
    """Scrape health of every target the monitor reads."""
    by_target = {(t.service, t.target): t for t in targets}
    labels = ("service", "target")
    # Not before its first scrape: just after a start, 0 would read as a target down.
    yield _fill(_gauge("target_up", "1 when the last scrape of the target (or query of a "
                       "query API) succeeded; absent until the first.", labels),
                {k: 1.0 if t.up else 0.0 for k, t in by_target.items() if t.scrapes_total})
    yield _fill(_gauge("scrape_duration_seconds", "Duration of the last scrape.", labels),
                {k: t.duration for k, t in by_target.items()})
    yield _fill(_counter("scrapes_total", "Scrapes attempted.", labels),
                {k: t.scrapes_total for k, t in by_target.items()})
    yield _fill(_counter("scrape_errors_total", "Scrapes that failed.", labels),
                {k: t.errors_total for k, t in by_target.items()})
    yield _fill(_gauge("scrape_samples", "Samples stored from the last good scrape (0 for a "
                       "query API).", labels),
                {k: t.samples for k, t in by_target.items()})


def _evaluation_families(snapshot: Snapshot) -> Iterator[Any]:
    """How long evaluations take, how many ran, and the monitor's own errors."""
    yield _fill(_gauge("evaluation_duration_seconds", "Duration of the last evaluation.", ()),
                {(): snapshot.evaluation_seconds})
    yield _fill(_counter("evaluations_total", "Evaluations run.", ()),
                {(): snapshot.evaluations_total})
    yield _fill(_gauge("last_evaluation_timestamp_seconds", "When the last evaluation ran.", ()),
                {(): snapshot.last_evaluation})
    yield _fill(_counter("store_errors_total", "Failed reads or writes of the store.", ()),
                {(): snapshot.store_errors_total})
    yield _fill(_gauge("start_time_seconds", "When the monitor started.", ()),
                {(): snapshot.started_at})
    yield _fill(_counter("hook_failures_total", "Hook deliveries that failed after all their "
                         "retries.", ("service", "hook")), snapshot.hook_failures)


def _requests_family(requests: RequestCounter) -> CounterMetricFamily:
    family = _counter("http_requests_total", "HTTP answers by endpoint and code class.",
                      ("endpoint", "code"))
    return _fill(family, requests.counts())
