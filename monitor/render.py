"""Verdicts and release histories as text for a terminal."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.durations import format_duration
from monitor.figures import (
    finding_figures,
    finding_unit,
    finite_number,
    format_value,
    signal_units,
    unit_of,
)


def when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def after(doc: Mapping[str, Any], key: str) -> str:
    """How long after the release started a moment came, e.g. '+4m30s'."""
    moment, started = finite_number(doc.get(key)), finite_number(doc.get("started_at"))
    if moment is None or started is None or not math.isfinite(moment - started):
        return "-"
    return "+" + format_duration(moment - started)


def verdict_text(doc: Mapping[str, Any]) -> str:
    """A verdict with its evidence, as a person reads it after a deploy."""
    lines = [
        f"{doc['service']} {doc['release']}: {doc['verdict'].upper()}"
        + (f" at {after(doc, 'decided_at')}" if doc.get("decided_at") else ""),
        f"  baseline {doc.get('baseline_release') or '-'}, {doc['change_class']} change, "
        f"checking period {format_duration(doc['period_seconds'])}{_ends(doc)}, "
        f"state {doc['state']}",
    ]
    if doc.get("reason"):
        lines.append(f"  reason: {doc['reason']}")
    if doc.get("invalidated"):
        lines.append("  invalidated since: found bad later, never a baseline")
    if doc.get("first_alarm_at"):
        lines.append(f"  first alarm {after(doc, 'first_alarm_at')}")
    for check in doc.get("checks", []):
        mark = "ok  " if check.get("ok") is True else "FAIL"
        lines.append(f"  {mark} {check['stage']}: {check['name']} ({check['detail']})")
    for hook in doc.get("hooks", []):
        lines.append(f"  hook {hook['hook']} on {hook['verdict']}: {hook_state(hook)}")
    if doc.get("signals"):
        lines.extend(signals_text(doc["signals"]))
    findings: Sequence[Mapping[str, Any]] = doc.get("findings", [])
    if findings:
        lines.append("  evidence:")
        wide = _name_width(f["signal"] for f in findings)
        units = signal_units(doc)
        lines.append(f"    {'signal':<{wide}} {'detector':<12} {'severity':<8} "
                     f"{'baseline':>12} {'candidate':>12}  detail")
        for f in findings:
            base, cand, _, _ = finding_figures(f, finding_unit(units, f["signal"]))
            lines.append(
                f"    {f['signal']:<{wide}} {f['detector']:<12} {f['severity']:<8} "
                f"{base:>12} {cand:>12}  {f.get('detail', '')}"
            )
    return "\n".join(lines)


def _ends(doc: Mapping[str, Any]) -> str:
    """When a release still being judged has its checking period over: what a person
    waiting on it wants to know."""
    started, period = finite_number(doc.get("started_at")), finite_number(doc.get("period_seconds"))
    if doc.get("state") == "done" or started is None or period is None:
        return ""
    return f" (ends {when(started + period)})"


def hook_state(hook: Mapping[str, Any]) -> str:
    """A hook action as a person reads it: under way, or how it ended and after how many tries."""
    if hook["state"] == "claimed":
        return "under way (or left for the next start)"
    tries = hook.get("attempts")
    ended = "delivered" if hook["state"] == "done" else "FAILED"
    counted = f" after {tries} attempt{'s' if tries != 1 else ''}" if tries else ""
    return f"{ended}{counted} ({hook.get('outcome', '')})"


BARS = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 16


def sparkline(baseline: Sequence[float], candidate: Sequence[float]) -> str:
    """Baseline and candidate on one shared scale, split by a bar: '▂▃▂▃│▅▆▇█'."""
    left, right = _squeeze(_numbers(baseline)), _squeeze(_numbers(candidate))
    points = [v for v in (*left, *right) if math.isfinite(v)]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    if not math.isfinite(span):   # -1e308 to 1e308: no scale shows both
        return ""

    def bar(value: float) -> str:
        if not math.isfinite(value):
            return " "
        return BARS[min(len(BARS) - 1, int((value - low) / span * len(BARS)))]

    return "".join(map(bar, left)) + "│" + "".join(map(bar, right))


def _numbers(values: Any) -> list[float]:
    """A view's values as floats: NaN for a gap (JSON's null), nothing for what is no list."""
    if not isinstance(values, list | tuple):
        return []
    return [math.nan if (number := finite_number(v)) is None else number for v in values]


def _squeeze(values: Sequence[float]) -> list[float]:
    """At most SPARK_POINTS means of equal slices."""
    if len(values) <= SPARK_POINTS:
        return list(values)
    size = len(values) / SPARK_POINTS
    chunks = (values[int(i * size): int((i + 1) * size)] for i in range(SPARK_POINTS))
    # A gap blanks only a slice with nothing else in it.
    return [sum(valid) / len(valid) if (valid := [v for v in chunk if math.isfinite(v)])
            else math.nan for chunk in chunks if chunk]


def signals_text(views: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per judged signal: baseline │ candidate sparkline and the two medians (of
    a ratio, its value over all its requests)."""
    lines = ["  signals (baseline │ candidate):"]
    wide = _name_width(view["signal"] for view in views)
    for view in views:
        baseline, pooled = view.get("baseline"), view.get("pooled")
        if isinstance(pooled, Mapping):
            # A ratio over all its requests: the median step of a rare error has none.
            label, base, candidate = "all", pooled.get("baseline"), pooled.get("candidate")
        else:
            label, candidate = "p50", view.get("candidate")
            base = baseline.get("p50") if isinstance(baseline, Mapping) else None
        spark = sparkline(view.get("baseline_series", []), view.get("values", []))
        unit = unit_of(view)
        lines.append(
            f"    {view['signal']:<{wide}} {spark:<33} baseline {label} {format_value(unit, base):>9}"
            f"  candidate {label} {format_value(unit, candidate):>9}"
        )
    return lines


def _name_width(names: Iterable[str]) -> int:
    """A column as wide as its longest signal name, and no narrower than 18."""
    return max([18, *(len(name) for name in names)])


def releases_table(docs: Sequence[Mapping[str, Any]]) -> str:
    """The release history as aligned columns, each as wide as its longest value."""
    header = ("service", "release", "started", "class", "state", "verdict", "decided", "baseline")
    rows = [header] + [(
        doc["service"], doc["release"], when(doc["started_at"]), doc["change_class"],
        doc["state"],
        # A pass found bad since is no pass to build on: said where the verdict is.
        f"{doc['verdict']} (found bad)" if doc.get("invalidated") else doc["verdict"],
        after(doc, "decided_at"), doc.get("baseline_release") or "-",
    ) for doc in docs]
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(header) - 1)]
    return "\n".join(
        " ".join(f"{str(value):<{width}}" for value, width in zip(row, widths, strict=False))
        + f" {row[-1]}" for row in rows)
