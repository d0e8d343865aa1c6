"""The peers at the product's false-alarm rate: each peer swept across its own settings.

`benchmarks.accuracy` runs every peer at the setting people usually write, where the
peers alarm far more often than release-monitor does, so their higher detection rates
there say nothing about which judge is better. Here each peer runs at a grid of settings
(stricter quantiles and longer runs, higher confidence and wider allowed bands, larger
penalties) on the very same cases, and the table answers the question that matters: at
no more false alarms than release-monitor raises, how much does each peer catch, and how
many false alarms does it need to catch as much as release-monitor does?

False alarms are counted over every release with nothing wrong (the data sets' null cuts
and the A/A releases together); detection over the injected major regressions and,
separately, over the data sets' real labelled bad releases.

    python -m benchmarks.matched [--data ../shared/data] [--quick] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy import ALARMS, DEFAULT_DATA, PRODUCT, judge_product, peer_input, select_series
from benchmarks.datasets import DATASETS, Case, build_cases, load
from benchmarks.peers import PEERS, PeerInput, PeerOutcome

Setting = dict[str, float]
SWEEPS: dict[str, tuple[Setting, ...]] = {
    "static-threshold": tuple({"quantile": q, "k": k} for q in (0.99, 0.999, 1.0)
                              for k in (3, 6, 12, 24)),
    "kayenta": tuple({"confidence": c, "allowed_increase": 1.0 + band, "allowed_decrease": 1.0 - band}
                     for c in (0.98, 0.999, 0.99999, 0.9999999) for band in (0.1, 0.25, 0.5)),
    "predict-linear": tuple({"quantile": q, "k": k} for q in (0.99, 1.0) for k in (3, 6, 12, 24)),
    "pelt": tuple({"penalty": p} for p in (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)),
}


@dataclass(frozen=True)
class CaseMarks:
    """Per case: is it a release with nothing wrong, is it major or real bad, and for
    each method and setting whether it alarmed (null) or caught the regression (bad)."""

    null: bool
    major: bool
    real_bad: bool
    hits: dict[str, tuple[bool, ...]]


def _hit(case: Case, verdict: str, first_alarm_at: float | None) -> bool:
    """A false alarm on a release with nothing wrong, a catch on a bad one."""
    if verdict not in ALARMS:
        return False
    if case.label == "null":
        return True
    return (first_alarm_at is not None and case.anomaly_start is not None
            and first_alarm_at >= case.anomaly_start - 1e-6)


def mark_case(case: Case) -> CaseMarks:
    """The product once, every peer at every setting of its sweep."""
    product = judge_product(case)
    hits: dict[str, tuple[bool, ...]] = {PRODUCT: (_hit(case, product.verdict, product.first_alarm_at),)}
    release: PeerInput = peer_input(case)
    for name, settings in SWEEPS.items():
        peer: Callable[..., PeerOutcome] = PEERS[name]
        answers = [peer(release, **setting) for setting in settings]
        hits[name] = tuple(_hit(case, a.verdict, a.first_alarm_at) for a in answers)
    return CaseMarks(case.label == "null", case.major, case.label == "bad" and case.group in DATASETS,
                     hits)


@dataclass(frozen=True)
class Point:
    """One method at one setting: its false-alarm rate and detection rates."""

    setting: Setting
    false_alarms: float
    majors: float
    real_bad: float


def points(marks: Sequence[CaseMarks], method: str) -> list[Point]:
    settings = SWEEPS.get(method, ({},))
    null = [m for m in marks if m.null]
    major = [m for m in marks if m.major]
    real = [m for m in marks if m.real_bad]
    out = []
    for index, setting in enumerate(settings):
        def rate(group: list[CaseMarks], index: int = index) -> float:
            return float(np.mean([m.hits[method][index] for m in group])) if group else float("nan")
        out.append(Point(setting, rate(null), rate(major), rate(real)))
    return out


def matched(product: Point, curve: Sequence[Point]) -> dict[str, Any]:
    """A peer against the product: its best detection at no more false alarms, and the
    fewest false alarms at which it catches at least as many majors."""
    within = [p for p in curve if p.false_alarms <= product.false_alarms + 1e-12]
    best = max(within, key=lambda p: (p.majors, -p.false_alarms), default=None)
    enough = [p for p in curve if p.majors >= product.majors - 1e-12]
    cheapest = min(enough, key=lambda p: (p.false_alarms, -p.majors), default=None)
    return {
        "majors_at_product_false_alarms": best.majors if best else 0.0,
        "real_bad_at_product_false_alarms": best.real_bad if best else 0.0,
        "setting_at_product_false_alarms": best.setting if best else None,
        "false_alarms_for_product_majors": cheapest.false_alarms if cheapest else None,
        "setting_for_product_majors": cheapest.setting if cheapest else None,
        # Catching fewer at no more false alarms also means needing more to catch as many.
        "beaten": best is None or best.majors < product.majors,
    }


def run(data: Path, *, quick: bool, seed: int, jobs: int,
        datasets: Sequence[str] = DATASETS) -> dict[str, Any]:
    began = time.perf_counter()
    series = select_series(load(data, datasets), quick)
    sizes = {"max_null": 2, "inject_cuts": 1, "aa_per_series": 1} if quick else {}
    cases = [c for group in build_cases(series, seed=seed, **sizes).values() for c in group]
    if jobs <= 1:
        marks = [mark_case(c) for c in cases]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            marks = list(pool.map(mark_case, cases, chunksize=8))
    [product] = points(marks, PRODUCT)
    curves = {name: points(marks, name) for name in SWEEPS}
    return {
        "seed": seed, "quick": quick, "cases": len(cases),
        "null_cases": sum(m.null for m in marks), "major_cases": sum(m.major for m in marks),
        "real_bad_cases": sum(m.real_bad for m in marks),
        "seconds": round(time.perf_counter() - began, 1),
        "product": product.__dict__,
        "peers": {name: {"curve": [p.__dict__ for p in curve], **matched(product, curve)}
                  for name, curve in curves.items()},
    }


def _pct(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value * 100:.1f}%"


def _setting(setting: Setting | None) -> str:
    return "none" if setting is None else ", ".join(f"{k}={v:.10g}" for k, v in setting.items())


def markdown(report: dict[str, Any]) -> str:
    product = report["product"]
    lines = [
        f"release-monitor: {_pct(product['false_alarms'])} false alarms on "
        f"{report['null_cases']} releases with nothing wrong, {_pct(product['majors'])} of "
        f"{report['major_cases']} injected majors caught, {_pct(product['real_bad'])} of "
        f"{report['real_bad_cases']} real bad releases.",
        "",
        "| peer | majors caught at <= release-monitor's false alarms | real bad caught there "
        "| its setting | false alarms to catch as many majors | its setting | beaten |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for name, peer in report["peers"].items():
        lines.append(
            f"| {name} | {_pct(peer['majors_at_product_false_alarms'])} "
            f"| {_pct(peer['real_bad_at_product_false_alarms'])} "
            f"| {_setting(peer['setting_at_product_false_alarms'])} "
            f"| {_pct(peer['false_alarms_for_product_majors'])} "
            f"| {_setting(peer['setting_for_product_majors'])} | {'yes' if peer['beaten'] else 'no'} |")
    lines += ["", "Each peer's whole sweep (false alarms, majors caught, real bad caught):"]
    for name, peer in report["peers"].items():
        cells = [f"{_setting(p['setting'])}: {_pct(p['false_alarms'])} / {_pct(p['majors'])} / "
                 f"{_pct(p['real_bad'])}" for p in peer["curve"]]
        lines.append(f"- {name}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.matched",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="a few series and cuts: seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder at {args.data}: pass --data DIR (see ../shared/data/README.md)",
              file=sys.stderr)
        return 2
    report = run(args.data, quick=args.quick, seed=args.seed, jobs=args.jobs, datasets=args.datasets)
    report["command"] = "python -m benchmarks.matched " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    if args.json:
        out(json.dumps(report))
        return 0
    out(f"`{report['command'].strip()}`: {report['cases']} releases, seed {report['seed']}, "
        f"{report['seconds']} s\n")
    out(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
