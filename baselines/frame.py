"""Judged signals of one release on a shared time grid: the unit every stage passes on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class SignalFrame:
    """One row per signal, one column per sample time; NaN marks a missing sample.

    `events` and `trials` carry the counts behind ratio signals (errors out of requests)
    so rates are judged as counts; they are NaN for every other kind of signal.
    """

    names: tuple[str, ...]
    times: np.ndarray
    values: np.ndarray
    events: np.ndarray
    trials: np.ndarray
    # Per quantile signal, the histogram's upper bounds its values were taken over: a
    # quantile interpolated in other buckets is not the same measurement.
    layouts: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls, names: tuple[str, ...]) -> SignalFrame:
        blank = np.full((len(names), 0), np.nan)
        return cls(names, np.zeros(0), blank, blank.copy(), blank.copy())

    @cached_property
    def rows(self) -> dict[str, int]:
        """Row of each signal by name (judging thousands of signals must not search a tuple)."""
        return {name: row for row, name in enumerate(self.names)}

    def row(self, name: str) -> int:
        return self.rows[name]

    def between(self, start: float, end: float) -> SignalFrame:
        """The columns with start <= time < end."""
        keep = (self.times >= start) & (self.times < end)
        return SignalFrame(
            self.names, self.times[keep], self.values[:, keep], self.events[:, keep],
            self.trials[:, keep], self.layouts,
        )

    @property
    def span(self) -> float:
        return float(self.times[-1] - self.times[0]) if self.times.size > 1 else 0.0


def measured(values: np.ndarray) -> np.ndarray:
    """The values with +-Inf as missing: an infinite gauge (a division by zero in the
    service, `+Inf` in its exposition) is no measurement, and one would make every spread
    of the windows holding it infinite, silencing the tests that use them."""
    return np.where(np.isinf(values), np.nan, values)
