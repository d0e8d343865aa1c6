"""A jump at a known moment: the release.

Comparing a candidate with a whole day of baseline cannot tell a jump from the daily
swing when the candidate sits at a busy hour. The moment of release is known, though, and
a healthy series rarely jumps at any one moment: the median of the first `w` samples
after the release less the median of the last `w` before it, for several widths `w`, is
a step that healthy history can calibrate (the same difference between adjacent windows
anywhere in the baseline, `baselines.calibration.step_spreads`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors._arrays import FloatArray, nan_median

WIDTHS = (4, 8, 16, 32, 64)


@dataclass(frozen=True)
class StepResult:
    """(series, widths): the medians on each side and their difference at each width, NaN
    where either side is shorter than `w` or has fewer than half of its `w` samples."""

    widths: tuple[int, ...]
    before: FloatArray
    after: FloatArray

    @property
    def step(self) -> FloatArray:
        return self.after - self.before


def release_step(before: np.ndarray, after: np.ndarray, widths: tuple[int, ...] = WIDTHS) -> StepResult:
    """Median of the first w samples of `after` less that of the last w of `before`.

    Both arrays are (series, time) with NaN for missing samples; `before` ends at the
    release and `after` starts there. A side with fewer than half of its w samples is NaN:
    a gap would stretch the window away from the release, and drift over the gap would
    look like a jump. Medians make one wild sample on either side harmless.
    """
    before, after = np.atleast_2d(before), np.atleast_2d(after)
    rows = before.shape[0]
    behind_all = np.full((rows, len(widths)), np.nan)
    ahead_all = np.full((rows, len(widths)), np.nan)
    for index, width in enumerate(widths):
        if before.shape[1] < width or after.shape[1] < width:
            continue
        last, first = before[:, -width:], after[:, :width]
        enough = ((np.sum(~np.isnan(last), axis=1) * 2 >= width)
                  & (np.sum(~np.isnan(first), axis=1) * 2 >= width))
        ahead_all[:, index] = np.where(enough, nan_median(first), np.nan)
        behind_all[:, index] = np.where(enough, nan_median(last), np.nan)
    return StepResult(tuple(widths), behind_all, ahead_all)
