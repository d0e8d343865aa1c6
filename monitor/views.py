"""What each judged signal looked like: compact series for sparklines, reports and Grafana."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from baselines.frame import SignalFrame
from baselines.summary import Baseline, SignalBaseline
from monitor.policy import SignalRule

CANDIDATE_POINTS = 120
BASELINE_POINTS = 48


def signal_views(rules: Sequence[SignalRule], baseline: Baseline | None, frame: SignalFrame,
                 *, started: float) -> list[dict[str, Any]]:
    """One small JSON-able view per signal: baseline band and series, candidate series."""
    views = []
    for rule in rules:
        if rule.name not in frame.rows:
            continue
        values = frame.values[frame.row(rule.name)]
        times, points = downsample(frame.times - started, values, CANDIDATE_POINTS)
        base = baseline.signals.get(rule.name) if baseline is not None else None
        valid = values[~np.isnan(values)]
        view: dict[str, Any] = {
            "signal": rule.name,
            "kind": rule.kind,
            "bad": rule.bad,
            "critical": rule.critical,
            "limit": rule.limit,
            "leak": rule.leak,
            "baseline": None if base is None else {
                q: base.quantiles.get(q) for q in ("p05", "p50", "p95")
            },
            "baseline_series": [] if base is None else _rounded(
                downsample(np.arange(base.reservoir.size, dtype=float), base.reservoir,
                           BASELINE_POINTS)[1]),
            "candidate": float(np.median(valid)) if valid.size else None,
            "latest": float(valid[-1]) if valid.size else None,
            "times": _rounded(times),
            "values": _rounded(points),
        }
        if rule.kind == "ratio":
            view["pooled"] = _pooled(rule, base, frame)
        views.append(view)
    return views


def _pooled(rule: SignalRule, base: SignalBaseline | None, frame: SignalFrame) -> dict[str, Any]:
    """A ratio over all its counts, as the rate test compares it: the median of per-step
    ratios is 0 wherever most steps have no error at all."""
    row = frame.row(rule.name)
    events, trials = float(np.nansum(frame.events[row])), float(np.nansum(frame.trials[row]))
    return {
        "baseline": base.rate if base is not None and base.trials > 0 else None,
        "candidate": events / trials if trials > 0 else None,
    }


def downsample(times: np.ndarray, values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of equal slices of the series, at most `points` of them; NaN slices dropped."""
    if values.size <= points:
        keep = ~np.isnan(values)
        return times[keep], values[keep]
    edges = np.linspace(0, values.size, points + 1).round().astype(np.int64)
    sums = np.add.reduceat(np.nan_to_num(values), edges[:-1])
    counts = np.add.reduceat((~np.isnan(values)).astype(float), edges[:-1])
    middles = times[(edges[:-1] + edges[1:] - 1) // 2]
    keep = counts > 0
    return middles[keep], sums[keep] / counts[keep]


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]
