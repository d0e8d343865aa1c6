"""Numbers as people read them: a signal's unit, a scale that keeps figures short, and a
finding's figures, the same in the terminal and in the HTML report."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.findings import FINAL, SHIFT_DETECTORS

# Their effects, bounds and tolerances are shares of the baseline.
RELATIVE_DETECTORS = (*SHIFT_DETECTORS, FINAL, "rate")


def finite_number(value: Any) -> float | None:
    """A finite int or float as a float; None for anything else (None, NaN, text, a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:   # an integer of 400 digits, from JSON
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Scale:
    """Values divided by `factor` read in `suffix`: bytes / 2**20 read in ' MiB'."""

    factor: float
    suffix: str

    def label(self, value: float, digits: int = 3) -> str:
        scaled = value / self.factor
        return f"{float(f'{scaled:.{digits}g}'):.{max(digits, 6)}g}{self.suffix}"

    def tick_labels(self, ticks: Sequence[float]) -> list[str]:
        """Labels of axis ticks, with as many digits as it takes to tell them apart: ticks
        0.2 MiB apart near 191 MiB read 191.2 and 191.4, not 191 twice."""
        for digits in range(3, 13):
            labels = [self.label(t, digits) for t in ticks]
            if len(set(labels)) == len(labels):
                return labels
        return labels


_IEC = ((2.0**40, " TiB"), (2.0**30, " GiB"), (2.0**20, " MiB"), (2.0**10, " KiB"))
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def unit_of(view: Mapping[str, Any]) -> str:
    """What a signal's numbers measure: percent, bytes, seconds, rate (per second) or plain."""
    name = str(view.get("signal", "")).lower()
    kind = view.get("kind")
    if kind == "ratio":
        return "percent"
    if kind == "rate" and name.endswith("_count"):
        return "rate"   # a histogram's observations per second, whatever they measure
    if view.get("limit") is not None or view.get("leak") or "memory" in name or "bytes" in name:
        return "bytes"
    if kind == "quantile" or any(word in name for word in ("latency", "duration", "seconds")):
        return "seconds"
    return "rate" if kind == "rate" else "plain"


def signal_units(doc: Mapping[str, Any]) -> dict[str, str]:
    """Each judged signal's unit, from what a verdict document says of it."""
    return {str(view.get("signal")): unit_of(view) for view in doc.get("signals") or ()}


def finding_unit(units: Mapping[str, str], signal: Any) -> str:
    """A finding's unit: its signal's (`signal_units`), else what the name says."""
    return units.get(str(signal)) or unit_of({"signal": signal})

def scale_for(unit: str, magnitude: float) -> Scale:
    """The scale that keeps numbers around `magnitude` short: 283607447 bytes -> MiB."""
    magnitude = abs(magnitude)
    if unit == "percent":
        return Scale(0.01, "%")
    if unit == "seconds":
        if 0 < magnitude < 1e-3:
            return Scale(1e-6, " µs")
        return Scale(1e-3, " ms") if 0 < magnitude < 1 else Scale(1.0, " s")
    if unit == "bytes":
        return next((Scale(size, suffix) for size, suffix in _IEC if magnitude >= size),
                    Scale(1.0, " B"))
    per = "/s" if unit == "rate" else ""
    return next((Scale(size, suffix + per) for size, suffix in _SI if magnitude >= size),
                Scale(1.0, per))


def format_value(unit: str, value: Any) -> str:
    """One number in its signal's unit: format_value("bytes", 3 * 2**30) == '3 GiB'."""
    number = finite_number(value)
    if number is None:
        return "-"
    return scale_for(unit, number).label(number)


def percent(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.3g}%" if signed else f"{value * 100:.3g}%"


def finding_figures(finding: Mapping[str, Any], unit: str) -> tuple[str, str, str, str]:
    """Baseline, candidate, effect with its interval, and tolerance, as read in the table.

    Shift and rate detectors state effects relative to the baseline (percent); the leak
    detector states slopes, read here per minute in the signal's unit.
    """
    detector = finding.get("detector")
    base, cand, effect, lower, upper, tolerance = (
        finite_number(finding.get(k)) for k in ("baseline", "candidate", "effect", "lower", "upper",
                                          "tolerance"))
    if detector in RELATIVE_DETECTORS:
        return (format_value(unit, base), format_value(unit, cand),
                _with_interval(effect, lower, upper, percent), percent(tolerance, signed=False))
    if detector == "leak":
        # lower/upper bound the candidate's slope; the effect is that slope less the baseline's.
        shift = base or 0.0
        lower = None if lower is None else lower - shift
        upper = None if upper is None else upper - shift
        return (_per_minute(unit, base), _per_minute(unit, cand),
                _with_interval(effect, lower, upper, lambda v: _per_minute(unit, v, signed=True)),
                _per_minute(unit, tolerance))
    shown = functools.partial(format_value, unit)
    return shown(base), shown(cand), _with_interval(effect, lower, upper, shown), shown(tolerance)


def _per_minute(unit: str, slope: float | None, signed: bool = False) -> str:
    if slope is None:
        return "-"
    text = format_value(unit if unit != "rate" else "plain", slope * 60) + "/min"
    return ("+" + text) if signed and slope >= 0 else text


def _with_interval(effect: float | None, lower: float | None, upper: float | None,
                   show: Callable[[float], str]) -> str:
    """'+17.9% [+15.1%, +20.2%]', or one-sided '+17.9% (≥ +15.1%)'."""
    if effect is None:
        return "-"
    if lower is not None and upper is not None:
        return f"{show(effect)} [{show(lower)}, {show(upper)}]"
    if lower is not None:
        return f"{show(effect)} (≥ {show(lower)})"
    if upper is not None:
        return f"{show(effect)} (≤ {show(upper)})"
    return show(effect)
