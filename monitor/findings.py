"""Findings (what a detector saw in one signal) and the verdict vocabulary."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PASS, HOTFIX, ROLLBACK, PENDING, INCONCLUSIVE = "pass", "hotfix", "rollback", "pending", "inconclusive"
VERDICTS = (PASS, HOTFIX, ROLLBACK, PENDING, INCONCLUSIVE)
MINOR, MAJOR = "minor", "major"


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
        return f"{self.signal}/{self.detector}"

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        fields = dict(data)
        for name in ("baseline", "candidate", "effect", "lower", "upper", "tolerance"):
            fields[name] = float("nan") if fields.get(name) is None else float(fields[name])
        return cls(**fields)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
