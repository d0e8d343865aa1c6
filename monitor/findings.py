"""Findings (what a detector saw in one signal) and the verdict vocabulary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

PASS, HOTFIX, ROLLBACK, PENDING, INCONCLUSIVE = "pass", "hotfix", "rollback", "pending", "inconclusive"
VERDICTS = (PASS, HOTFIX, ROLLBACK, PENDING, INCONCLUSIVE)
MINOR, MAJOR = "minor", "major"
SHIFT_DETECTORS = ("compare", "changepoint", "step")
# The whole window's last look at the period's end (monitor.evaluate.Z_FINAL): a shift, but
# one that only a lower bar saw, so its streak is its own and never feeds a rollback's.
FINAL = "final"


@dataclass(frozen=True)
class Finding:
    """One signal that a detector found worse in the candidate than in the baseline."""

    signal: str
    detector: str
    severity: str
    baseline: float
    candidate: float
    effect: float
    lower: float
    upper: float
    tolerance: float
    n_baseline: int
    n_candidate: int
    detail: str
    exhaustion: float | None = None
    at: float | None = None
    change_at: float | None = None

    @property
    def key(self) -> str:
        """What persistence counts consecutive sightings of: a signal's shift is one fact
        whichever of the shift detectors (whole window, after a change point, at the
        release's step) saw it this time; a leak or a rate rise is another."""
        family = "shift" if self.detector in SHIFT_DETECTORS else self.detector
        return f"{self.signal}/{family}"

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        fields = dict(data)
        for name in ("baseline", "candidate", "effect", "lower", "upper", "tolerance"):
            fields[name] = float("nan") if fields.get(name) is None else float(fields[name])
        return cls(**fields)


def json_safe(value: Any) -> Any:
    """The same structure with NaN and infinities as None (JSON has neither), keys as strings.

    >>> json_safe({"p95": float("nan"), "shift": [0.5, float("-inf")], 7: "seven"})
    {'p95': None, 'shift': [0.5, None], '7': 'seven'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
