"""A/A calibration: how far apart healthy windows of the same release already are.

Health signals are autocorrelated and a baseline is an earlier stretch of time, so a
textbook test finds "significant" differences between two healthy windows all the time.
A candidate must stand outside what healthy history shows, not merely outside the test's
own idea of noise.
"""

from __future__ import annotations

import numpy as np

from baselines.frame import SignalFrame
from detectors import compare


def aa_shifts(frame: SignalFrame, *, windows: int = 4) -> np.ndarray:
    """Largest relative shift seen between consecutive healthy windows, per signal.

    The frame is cut into `windows` equal stretches; each stretch is compared with the one
    before it (the same statistic the judge applies to a candidate). Relative means divided
    by the larger of the baseline's |median| and its robust noise, as the judge does.
    """
    rows, columns = frame.values.shape
    if columns < windows * 4:
        return np.zeros(rows)
    edges = np.linspace(0, columns, windows + 1).round().astype(np.int64)
    scale = _scale(frame.values)
    worst = np.zeros(rows)
    for left, middle, right in zip(edges[:-2], edges[1:-1], edges[2:], strict=True):
        earlier = frame.values[:, left:middle]
        later = frame.values[:, middle:right]
        result = compare(earlier, later, confidence=0.95)
        relative = np.abs(np.asarray(result.shift)) / scale
        worst = np.fmax(worst, np.nan_to_num(relative))
    return worst


def _scale(values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        median = np.nanmedian(values, axis=1)
        mad = np.nanmedian(np.abs(values - median[:, None]), axis=1) * 1.4826
    return np.fmax(np.fmax(np.abs(np.nan_to_num(median)), np.nan_to_num(mad)), 1e-12)
