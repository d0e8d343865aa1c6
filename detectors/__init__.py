"""Statistics over (series, time) arrays: pure numpy/scipy functions, no I/O.

Every detector takes series x time arrays (time on the last axis, NaN = missing) and
returns small frozen results whose fields have the input's shape less the time axis.
"""

from detectors.changepoint import ChangeResult, cusum
from detectors.compare import CompareResult, compare
from detectors.leak import (
    LeakResult,
    deriv,
    lower_envelope,
    predict_linear,
    time_to_exhaustion,
    trend,
)
from detectors.rates import RateResult, dispersion, rate_increase

__all__ = [
    "ChangeResult",
    "CompareResult",
    "LeakResult",
    "RateResult",
    "compare",
    "cusum",
    "deriv",
    "dispersion",
    "lower_envelope",
    "predict_linear",
    "rate_increase",
    "time_to_exhaustion",
    "trend",
]
