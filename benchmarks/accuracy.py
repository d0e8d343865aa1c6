"""Accuracy on real and injected releases: release-monitor against simple peers.

Cases come from `benchmarks.datasets` (real labelled series cut into releases, injected
regressions in their healthy stretches, A/A releases). The product judges each one
through `monitor.replay.replay`, the same core the daemon uses, evaluation by evaluation
on a simulated clock; the peers of `benchmarks.peers` answer at the same evaluation times.

    python -m benchmarks.accuracy [--data ../shared/data] [--quick] [--json] [--jobs 2]

Prints one markdown table (or, with --json, one JSON object) and the command that made it.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import (
    DATASETS,
    LEAK_HORIZON,
    Case,
    Series,
    build_cases,
    load,
    one_look_z,
    reference_power,
)
from benchmarks.peers import PEERS, PeerInput, PeerOutcome
from monitor.policy import ServicePolicy, SignalRule
from monitor.recording import Recording
from monitor.replay import replay
from monitor.signals import RawSeries

PRODUCT = "release-monitor"
METHODS = (PRODUCT, *PEERS)
ALARMS = ("hotfix", "rollback")
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data"
# A few series of each data set for --quick: one per kind where the set has several.
QUICK_SERIES = (
    "realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv", "realTraffic/TravelTime_387.csv",
    "application-crash-rate-1/app1-02.csv", "mongodb-application-rps/mongo-02.csv",
    "nile", "quality_control_1",
)

_SIGNAL_NAMES = {
    "errors": "crash_rate", "latency": "latency_seconds", "resource": "cpu_usage",
    "traffic": "requests_per_second", "level": "level", "memory": "memory_bytes",
}


def rule_for(kind: str, limit: float | None = None) -> SignalRule:
    """The signal rule a careful operator writes for a kind of signal (defaults otherwise).

    Error and crash rates: worse when higher, critical. CPU-, latency- and temperature-
    like: worse when higher. Request and traffic rates (and series of unknown meaning):
    worse either way. Memory: worse when higher, with a leak check against its limit.

    >>> rule_for("errors").critical, rule_for("traffic").bad
    (True, 'both')
    """
    name = _SIGNAL_NAMES[kind]
    if kind == "errors":
        return SignalRule(name=name, metric=name, bad="increase", critical=True)
    if kind in ("latency", "resource"):
        return SignalRule(name=name, metric=name, bad="increase")
    if kind == "memory":
        return SignalRule(name=name, metric=name, bad="increase", leak=True, limit=limit)
    return SignalRule(name=name, metric=name, bad="both")


def policy_for(case: Case) -> ServicePolicy:
    """One signal, evaluated once per sample, the documented defaults for the rest."""
    return ServicePolicy(name=case.group, evaluation_interval=case.step, leak_horizon=LEAK_HORIZON,
                         signals=(rule_for(case.kind, case.limit),))


def recording_for(case: Case, signal: str) -> Recording:
    """The case as a recording of two releases: the baseline, then the candidate."""
    def raw(part: slice) -> RawSeries:
        times = case.times[part]
        return RawSeries((signal,), times, (case.series,) * times.size, case.values[None, part])

    before, after = slice(0, case.cut), slice(case.cut, None)
    return Recording(case.case_id, ("baseline", "candidate"),
                     {"baseline": raw(before), "candidate": raw(after)})


def evaluation_times(case: Case) -> np.ndarray:
    """The times `monitor.replay` evaluates at: one interval apart until the period ends."""
    candidate = case.times[case.cut :]
    step = float(np.median(np.diff(candidate))) if candidate.size > 1 else case.step
    interval = max(case.step, step)
    count = int(np.ceil(case.period / interval - 1e-9))
    return np.minimum(case.released + interval * np.arange(1, count + 1), case.released + case.period)


@dataclass(frozen=True)
class Outcome:
    """A method's answer on one case; `detectors` say which of the product's fired."""

    verdict: str
    first_alarm_at: float | None
    detectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    group: str
    series: str
    kind: str
    label: str
    major: bool
    injection: str
    step: float
    anomaly_start: float | None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    contrast: float = float("nan")  # an injected change in the baseline's A/A spreads
    one_look: float = float("nan")  # what a plain test sees at the end (`one_look_z`)


def judge_product(case: Case) -> Outcome:
    """The product's verdict, through the same replay loop as `monitor replay`."""
    policy = policy_for(case)
    signal = policy.signals[0].name
    result = replay(recording_for(case, signal), release="candidate", baseline="baseline",
                    policy=policy, period=case.period)
    evaluation = result.evaluation
    fired = sorted({f"{f.detector}:{f.severity}" for f in evaluation.findings})
    return Outcome(evaluation.verdict, evaluation.first_alarm_at, tuple(fired))


def peer_input(case: Case) -> PeerInput:
    return PeerInput(case.baseline, case.times[case.cut :], case.candidate, evaluation_times(case),
                     rule_for(case.kind).bad, case.limit)


def judge_case(case: Case) -> CaseResult:
    """Every method's outcome on one case."""
    outcomes = {PRODUCT: judge_product(case)}
    release = peer_input(case)
    for name, peer in PEERS.items():
        answer: PeerOutcome = peer(release)
        outcomes[name] = Outcome(answer.verdict, answer.first_alarm_at)
    return CaseResult(case.case_id, case.group, case.series, case.kind, case.label, case.major,
                      case.injection, case.step, case.anomaly_start, outcomes, case.contrast,
                      one_look_z(case))


def judge_all(cases: Sequence[Case], jobs: int) -> list[CaseResult]:
    """Judge every case, in order; `jobs` worker processes (1: in this process)."""
    if jobs <= 1:
        return [judge_case(c) for c in cases]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(judge_case, cases, chunksize=8))


# --- scoring ---------------------------------------------------------------------------


def detected(result: CaseResult, method: str) -> bool:
    """An alarm at or after the regression began (an earlier one is a false alarm, not a catch)."""
    outcome = result.outcomes[method]
    return (outcome.verdict in ALARMS and outcome.first_alarm_at is not None
            and result.anomaly_start is not None and outcome.first_alarm_at >= result.anomaly_start - 1e-6)


def delay_samples(result: CaseResult, method: str) -> float:
    outcome = result.outcomes[method]
    assert outcome.first_alarm_at is not None and result.anomaly_start is not None
    return (outcome.first_alarm_at - result.anomaly_start) / result.step


@dataclass
class Score:
    """One row of the table: a method on one group of cases."""

    null: int = 0
    false_alarms: int = 0
    false_rollbacks: int = 0
    inconclusive: int = 0
    bad: int = 0
    caught: int = 0
    major: int = 0
    major_caught: int = 0
    delays: list[float] = field(default_factory=list)

    def add(self, result: CaseResult, method: str) -> None:
        verdict = result.outcomes[method].verdict
        self.inconclusive += verdict == "inconclusive"
        if result.label == "null":
            self.null += 1
            self.false_alarms += verdict in ALARMS
            self.false_rollbacks += verdict == "rollback"
            return
        self.bad += 1
        self.major += result.major
        if detected(result, method):
            self.caught += 1
            self.major_caught += result.major
            self.delays.append(delay_samples(result, method))

    def summary(self) -> dict[str, Any]:
        def rate(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            "null_cases": self.null, "bad_cases": self.bad, "major_cases": self.major,
            "false_alarm_rate": rate(self.false_alarms, self.null),
            "false_rollback_rate": rate(self.false_rollbacks, self.null),
            "detection_rate": rate(self.caught, self.bad),
            "major_detection_rate": rate(self.major_caught, self.major),
            "median_delay_samples": float(np.median(self.delays)) if self.delays else None,
            "inconclusive": self.inconclusive,
        }


def score(results: Sequence[CaseResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """group -> method -> summary."""
    table: dict[str, dict[str, Score]] = {}
    for result in results:
        for method in METHODS:
            table.setdefault(result.group, {}).setdefault(method, Score()).add(result, method)
    return {group: {m: s.summary() for m, s in methods.items()} for group, methods in table.items()}


def recipe_name(injection: str) -> str:
    """"level+50%" and "level-50%" are one recipe: "level 50%"."""
    for sign in "+-":
        if sign in injection:
            name, size = injection.split(sign, 1)
            return f"{name} {size}"
    return injection


def by_recipe(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """Injected cases per recipe: how many, how many major, each method's detection rate."""
    groups: dict[str, list[CaseResult]] = {}
    for r in results:
        if r.group == "injected":
            groups.setdefault(recipe_name(r.injection), []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for recipe, rows in groups.items():
        row: dict[str, Any] = {"cases": len(rows), "major": sum(r.major for r in rows)}
        row.update({m: sum(detected(r, m) for r in rows) / len(rows) for m in METHODS})
        out[recipe] = row
    return out


# Bands of contrast (an injected change in A/A spreads of its own series, see
# `benchmarks.datasets.contrast`) that the major injections are counted in.
CONTRAST_BANDS = ((0.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, math.inf))


def by_contrast(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """Injected majors by how far they stand out of their series' healthy wandering: how
    many, each method's detection rate in each band, what the reference test held to 5%
    false alarms catches ("reference", see `reference_power`), and what a plain one-look
    test catches at bars chosen in hindsight ("hindsight", see `hindsight_bars`); the last
    row, "all", is every major."""
    majors = [r for r in results if r.group == "injected" and r.major]
    bars = hindsight_bars(results)
    out: dict[str, dict[str, Any]] = {}
    for low, high in CONTRAST_BANDS:
        # The top band is open: a change in a series that never wanders counts there.
        rows = [r for r in majors if low <= r.contrast and (r.contrast < high or high == math.inf)]
        if rows:
            label = f"{low:g}-{high:g}" if math.isfinite(high) else f">= {low:g}"
            out[label] = _band(rows, bars)
    if majors:
        out["all"] = _band(majors, bars)
    return out


# The false-alarm rate the hindsight bars are chosen for, and the fewest null releases of a
# kind that get a bar of their own (fewer share the bar of all kinds pooled).
HINDSIGHT_FALSE_ALARMS = 0.05
HINDSIGHT_MIN_NULLS = 20


def hindsight_bars(results: Sequence[CaseResult],
                   false_alarms: float = HINDSIGHT_FALSE_ALARMS) -> dict[str, float]:
    """Per kind of signal, the lowest bar on `one_look` that no more than `false_alarms` of
    this run's own null and A/A releases of that kind pass: a plain end-of-period test tuned
    after seeing the very releases it is scored on. No judge can be tuned that way, so what
    it catches is a generous yardstick for any one-look test, though not a bound: a judge
    that takes the daily rhythm out or knows when a change began sees more.

    >>> rows = [CaseResult(str(k), "g", "s", "latency", "null", False, "", 1.0, None,
    ...                    one_look=float(k)) for k in range(100)]
    >>> hindsight_bars(rows)
    {'latency': 94.0}
    """
    nulls: dict[str, list[float]] = {}
    for r in results:
        if r.label == "null":
            nulls.setdefault(r.kind, []).append(-math.inf if math.isnan(r.one_look) else r.one_look)

    def bar(values: Sequence[float]) -> float:
        ordered = np.sort(values)
        allowed = math.floor(false_alarms * ordered.size + 1e-9)  # how many may pass
        return float(ordered[ordered.size - 1 - allowed])

    pooled = [v for values in nulls.values() for v in values]
    kinds = {r.kind for r in results}
    return {kind: bar(nulls[kind]) if len(nulls.get(kind, ())) >= HINDSIGHT_MIN_NULLS else bar(pooled)
            for kind in sorted(kinds) if pooled}


def _band(rows: Sequence[CaseResult], bars: Mapping[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"cases": len(rows)}
    row.update({m: sum(detected(r, m) for r in rows) / len(rows) for m in METHODS})
    powers = [p for p in (reference_power(r.kind, r.contrast) for r in rows) if not math.isnan(p)]
    row["reference"] = sum(powers) / len(powers) if powers else None
    row["hindsight"] = (sum(r.kind in bars and r.one_look > bars[r.kind] for r in rows) / len(rows)
                        if bars else None)
    return row


def diagnose(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Where the product errs: false alarms by kind and detector, misses by injection."""
    false_alarms: Counter[str] = Counter()
    by_series: Counter[str] = Counter()
    nulls: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for r in results:
        outcome = r.outcomes[PRODUCT]
        if r.label == "null":
            nulls[f"{r.group}/{r.kind}"] += 1
            if outcome.verdict in ALARMS:
                fired = ",".join(outcome.detectors) or "?"
                false_alarms[f"{r.group}/{r.kind} {outcome.verdict} [{fired}]"] += 1
                by_series[f"{r.group}/{r.series}"] += 1
        elif r.major and not detected(r, PRODUCT):
            missed[f"{r.kind} {r.injection.split('+')[0].split('-')[0]} ({outcome.verdict})"] += 1
    return {
        "null_cases_by_kind": dict(sorted(nulls.items())),
        "false_alarms": dict(false_alarms.most_common()),
        "false_alarms_by_series": dict(by_series.most_common(12)),
        "missed_major": dict(missed.most_common()),
    }


# --- output ----------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


NOTES = (
    "Detected: the first hotfix or rollback at or after the regression's start (an earlier alarm"
    " is a miss); delay in samples of the series. Peers have no minor/major: every alarm of theirs"
    " is a rollback.",
    "NAB's windows open about half a window (roughly 10 h) before the labelled incident, so most"
    " NAB bad cuts' 6-h candidates end before the incident itself: they measure early warning.",
    "Injected sizes are fractions of max(|baseline median|, MAD-based sd); major = averages at"
    " least 50% of that after its start, or a leak that reaches its limit within a day.",
    "Contrast: an injected change's mean size after it starts in RMS distances of the baseline's"
    " healthy windows of as many samples from its median. 'reference' = what a one-look Gaussian"
    " test with that spread, held to 5% false alarms, catches of a band's changes: a yardstick of"
    " how visible they are, not a bound. 'hindsight' = what a plain test of the candidate's median"
    " at the period's end catches, its bar per kind chosen after the fact so that 5% of this run's"
    " own null and A/A releases pass it.",
)


def markdown(scores: dict[str, dict[str, dict[str, Any]]], diagnosis: dict[str, Any],
             recipes: dict[str, dict[str, Any]] | None = None,
             contrasts: dict[str, dict[str, Any]] | None = None) -> str:
    lines = [
        "| data set | method | null | false alarms | false rollbacks | bad | detected | major detected"
        " | median delay (samples) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group, methods in scores.items():
        for method in METHODS:
            s = methods[method]
            delay = s["median_delay_samples"]
            major = f"{_pct(s['major_detection_rate'])} of {s['major_cases']}" if s["major_cases"] else "-"
            lines.append(
                f"| {group} | {method} | {s['null_cases']} | {_pct(s['false_alarm_rate'])} | "
                f"{_pct(s['false_rollback_rate'])} | {s['bad_cases']} | {_pct(s['detection_rate'])} | "
                f"{major} | {'-' if delay is None else f'{delay:g}'} |")
    lines += ["", *(f"- {note}" for note in NOTES)]
    if recipes:
        lines += ["", "| injected recipe | cases | major | " + " | ".join(METHODS) + " |",
                  "|---|---:|---:|" + "---:|" * len(METHODS)]
        lines += [f"| {name} | {row['cases']} | {row['major']} | "
                  + " | ".join(_pct(row[m]) for m in METHODS) + " |" for name, row in recipes.items()]
    if contrasts:
        lines += ["", "| injected majors standing out of their series' A/A spread by | cases | "
                  + " | ".join(METHODS) + " | reference | hindsight |",
                  "|---|---:|" + "---:|" * (len(METHODS) + 2)]
        lines += [f"| {band} | {row['cases']} | " + " | ".join(_pct(row[m]) for m in METHODS)
                  + f" | {_pct(row['reference'])} | {_pct(row['hindsight'])} |"
                  for band, row in contrasts.items()]
    lines += ["", "release-monitor's false alarms on null and A/A releases (group/kind verdict [detectors]):"]
    lines += [f"- {key}: {count}" for key, count in diagnosis["false_alarms"].items()] or ["- none"]
    lines += ["", "null releases per group/kind: " + ", ".join(
        f"{k} {v}" for k, v in diagnosis["null_cases_by_kind"].items())]
    lines += ["", "release-monitor's missed major injected regressions (kind recipe (verdict)):"]
    lines += [f"- {key}: {count}" for key, count in diagnosis["missed_major"].items()] or ["- none"]
    return "\n".join(lines)


def select_series(series: list[Series], quick: bool) -> list[Series]:
    return [s for s in series if s.name in QUICK_SERIES] if quick else series


def run(data: Path, *, quick: bool, seed: int, jobs: int,
        datasets: Sequence[str] = DATASETS) -> dict[str, Any]:
    """Load, cut, judge and score; the whole report as one JSON-able object."""
    began = time.perf_counter()
    series = select_series(load(data, datasets), quick)
    sizes = {"max_null": 2, "inject_cuts": 1, "aa_per_series": 1} if quick else {}
    groups = build_cases(series, seed=seed, **sizes)
    cases = [c for cases in groups.values() for c in cases]
    results = judge_all(cases, jobs)
    return {
        "seed": seed,
        "quick": quick,
        "series": len(series),
        "cases": len(cases),
        "seconds": round(time.perf_counter() - began, 1),
        "methods": list(METHODS),
        "groups": score(results),
        "injected_by_recipe": by_recipe(results),
        "injected_majors_by_contrast": by_contrast(results),
        "diagnosis": diagnose(results),
        "results": [_result_dict(r) for r in results],
    }


def _result_dict(result: CaseResult) -> dict[str, Any]:
    data = asdict(result)
    # NaN (no change measured) as null; a change in a series that never wanders stays inf.
    data["contrast"] = None if math.isnan(result.contrast) else result.contrast
    data["one_look"] = None if math.isnan(result.one_look) else result.one_look
    data["outcomes"] = {m: {"verdict": o.verdict, "first_alarm_at": o.first_alarm_at,
                            "detectors": list(o.detectors)} for m, o in result.outcomes.items()}
    return data


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of the labelled data sets (default ../shared/data)")
    parser.add_argument("--quick", action="store_true", help="a few series and cuts: seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    args = _arguments(argv)
    if not args.data.is_dir():
        print(f"no data folder at {args.data}: pass --data DIR (see ../shared/data/README.md)",
              file=sys.stderr)
        return 2
    command = "python -m benchmarks.accuracy " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = run(args.data, quick=args.quick, seed=args.seed, jobs=args.jobs, datasets=args.datasets)
    report["command"] = command.strip()
    if args.json:
        out(json.dumps(report))
        return 0
    out(f"`{report['command']}`: {report['cases']} releases from {report['series']} series, "
        f"seed {report['seed']}, {report['seconds']} s\n")
    out(markdown(report["groups"], report["diagnosis"], report["injected_by_recipe"],
                 report["injected_majors_by_contrast"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
