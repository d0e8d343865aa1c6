"""A jump at a known moment: the release.

Comparing a candidate with a whole day of baseline cannot tell a jump from the daily
swing when the candidate sits at a busy hour. The moment of release is known, though, and
a healthy series rarely jumps at any one moment: the median of the first `w` samples
after the release less the median of the last `w` before it, for several widths `w`, is
a step that healthy history can calibrate (the same difference between adjacent windows
anywhere in the baseline, `baselines.calibration.step_spreads`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from detectors._arrays import FloatArray

WIDTHS = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class StepResult:
    """(series, widths): the medians on each side and their difference at each width, NaN
    where either side lacks `w` samples."""

    widths: tuple[int, ...]
    before: FloatArray
    after: FloatArray

    @property
    def step(self) -> FloatArray:
        return self.after - self.before


def release_step(before: np.ndarray, after: np.ndarray, widths: tuple[int, ...] = WIDTHS) -> StepResult:
    """Median of the first w valid samples of `after` less that of the last w of `before`.

    Both arrays are (series, time) with NaN for missing samples; `before` ends at the
    release and `after` starts there. Medians make one wild sample on either side harmless.
    """
    before, after = np.atleast_2d(before), np.atleast_2d(after)
    rows = before.shape[0]
    behind_all = np.full((rows, len(widths)), np.nan)
    ahead_all = np.full((rows, len(widths)), np.nan)
    # Valid samples packed to the release side: NaN gaps do not shorten a window.
    last = _packed(before[:, ::-1])
    first = _packed(after)
    for index, width in enumerate(widths):
        if last.shape[1] < width or first.shape[1] < width:
            continue
        # np.median gives NaN where a side has fewer than `width` valid samples.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            ahead_all[:, index] = np.median(first[:, :width], axis=1)
            behind_all[:, index] = np.median(last[:, :width], axis=1)
    return StepResult(tuple(widths), behind_all, ahead_all)


def _packed(values: np.ndarray) -> np.ndarray:
    """Each row's valid values moved to the front, in order, NaN after them."""
    valid = ~np.isnan(values)
    order = np.argsort(~valid, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1)
