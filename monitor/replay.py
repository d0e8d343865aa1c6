"""Replay a recorded release through the evaluation core on a simulated clock."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from baselines.frame import SignalFrame
from baselines.summary import Baseline, summarize
from monitor.errors import RecordingError
from monitor.evaluate import Evaluation, JudgeState, evaluate
from monitor.exposition import split_key
from monitor.policy import ServicePolicy, SignalRule, default_service
from monitor.recording import Recording, queried, recorded_frame, recorded_signals
from monitor.releases import judged_rules
from monitor.signals import RawSeries, baseline_layouts, derive
from monitor.views import signal_views

# A replay runs no smoke test or verification: a first release is judged on leaks alone.
FIRST_REPLAYED = ("first release in the recording: judged on leaks alone (a replay runs no "
                  "smoke test or verification)")


@dataclass(frozen=True)
class ReplayResult:
    recording: str
    service: str
    release: str
    baseline_release: str | None
    started_at: float
    period: float
    evaluation: Evaluation
    evaluations: int
    signals: tuple[dict[str, Any], ...] = ()   # as `monitor verdict` shows them (views)

    def to_dict(self) -> dict[str, Any]:
        e = self.evaluation
        return {
            "recording": self.recording,
            "service": self.service,
            "release": self.release,
            "baseline_release": self.baseline_release,
            "verdict": e.verdict,
            "reason": e.reason,
            "started_at": self.started_at,
            "period_seconds": self.period,
            "decided_at": e.decided_at,
            "first_alarm_at": e.first_alarm_at,
            "evaluations": self.evaluations,
            "findings": [f.to_dict() for f in e.findings],
            "signals": list(self.signals),
        }


def replay(
    recording: Recording, *, release: str, baseline: str | None = None,
    policy: ServicePolicy | None = None, period: float | None = None,
) -> ReplayResult:
    """Judge `release` as the daemon would have, evaluation by evaluation, until decided.

    The baseline is `baseline`, or else the release whose samples come just before it.
    Without a policy every signal gets the documented default rule.
    """
    if release not in recording.series:
        known = ", ".join(recording.releases)
        raise RecordingError(f"{recording.path}: no release {release!r} (releases: {known})")
    base_name = baseline if baseline is not None else _previous(recording, release)
    if base_name is not None and base_name not in recording.series:
        raise RecordingError(f"{recording.path}: no baseline release {base_name!r}")
    candidate_raw = recording.series[release]
    _check_source(recording, candidate_raw, policy)
    if policy is None:
        names = sorted({split_key(key)[0] for key in candidate_raw.keys})
        policy = default_service("replay", names)
    step = float(np.median(np.diff(candidate_raw.times))) if candidate_raw.times.size > 1 else 60.0
    interval = max(policy.evaluation_interval, step)
    policy = replace(policy, evaluation_interval=interval)
    rules = judged_rules(policy)
    reference = _baseline(policy, recording, base_name, rules) if base_name else None
    candidate = _frame(policy, rules, candidate_raw, within=baseline_layouts(reference))
    started = recording.first_sample(release)
    checking = period if period is not None else policy.period("minor")
    result = _run(recording.path, policy, release, base_name, reference, candidate, started,
                  checking, _next_start(recording, release))
    note = _unjudged_note(candidate_raw, policy)
    if note:
        reason = "; ".join(filter(None, (result.evaluation.reason, note)))
        result = replace(result, evaluation=replace(result.evaluation, reason=reason))
    # The signals up to the decision (a hotfix's: when it was found at the period's end).
    decided = result.evaluation.decided_at
    seen = candidate if decided is None else candidate.between(started, decided + 1e-6)
    return replace(result, signals=tuple(signal_views(policy.signals, reference, seen,
                                                      started=started)))


def _check_source(recording: Recording, raw: RawSeries, policy: ServicePolicy | None) -> None:
    """A recording is replayed as it was read: signals recorded from PromQL queries under
    a policy that reads them so, scraped samples under one that scrapes."""
    if policy is None or policy.prometheus is None:
        if queried(raw):
            raise RecordingError(
                f"{recording.path}: holds signals recorded from PromQL queries: replay it with "
                "the policy of the service they were read for (--policy), whose [prometheus] "
                "reads them")
    elif raw.keys and not queried(raw):
        raise RecordingError(
            f"{recording.path}: holds scraped samples, but the policy reads service "
            f"{policy.name} by PromQL ([prometheus]): replay it with a policy that scrapes")
    elif raw.keys and not recorded_signals(raw) & {rule.name for rule in policy.signals}:
        # Every signal of the policy would read as a query that answered nothing.
        raise RecordingError(
            f"{recording.path}: holds signals {', '.join(sorted(recorded_signals(raw)))}, none of "
            "which the policy judges: was it recorded for another service, or renamed?")


def _unjudged_note(raw: RawSeries, policy: ServicePolicy) -> str:
    """For a recording of PromQL signals, the recorded signals the policy does not judge
    while some of its own have nothing recorded: a renamed signal reads as a query that
    answered nothing, and this says what the recording holds instead (a signal silent all
    along reads the same, so it is a note, not a refusal)."""
    if policy.prometheus is None:
        return ""
    judged = {rule.name for rule in policy.signals}
    unknown = sorted(recorded_signals(raw) - judged)
    if not unknown or judged <= recorded_signals(raw):
        return ""
    return f"the recording also holds {', '.join(unknown)}, which the policy does not judge"


def _next_start(recording: Recording, release: str) -> float | None:
    """When the release after `release` in the recording began: the end of its running."""
    order = recording.releases
    index = order.index(release)
    return recording.first_sample(order[index + 1]) if index + 1 < len(order) else None


def _previous(recording: Recording, release: str) -> str | None:
    order = recording.releases
    index = order.index(release)
    return order[index - 1] if index > 0 else None


def _frame(policy: ServicePolicy, rules: list[SignalRule], raw: RawSeries, *,
           within: Mapping[str, tuple[float, ...]] | None = None) -> SignalFrame:
    """The signals as the daemon read them: by PromQL (recorded as they were answered) or
    derived from the scraped samples (histograms `within` a baseline's bounds)."""
    if policy.prometheus is not None:
        return recorded_frame(rules, raw)
    return derive(rules, raw, within=within)


def _baseline(policy: ServicePolicy, recording: Recording, name: str,
              rules: list[SignalRule]) -> Baseline:
    frame = _frame(policy, rules, recording.series[name])
    leaks = [r.name for r in policy.signals if r.leak]
    return Baseline((name,), summarize(frame, leak_signals=leaks, leak_block=policy.leak_block))


def _run(path: str, policy: ServicePolicy, release: str, base_name: str | None,
         baseline: Baseline | None, candidate: SignalFrame, started: float,
         period: float, until: float | None) -> ReplayResult:
    state = JudgeState()
    step = 0   # evaluations fall on started + step x interval, never on a summed drift
    evaluations = 0
    interval = policy.evaluation_interval
    # From here on every evaluation sees the same samples, and findings have had their
    # evaluations to persist: nothing changes until the period's end.
    settled = (float(candidate.times[-1]) if candidate.times.size else started) + (
        policy.persistence * interval)
    while True:
        # As the daemon does: one evaluation per interval, past the period's end while
        # findings seen at the end get their evaluations (never the same instant twice).
        step += 1
        now = started + step * interval
        result = evaluate(policy, baseline, candidate, started=started, period=period, now=now,
                          state=state, first_release=base_name is None, until=until,
                          first_reason=FIRST_REPLAYED)
        evaluations += 1
        state = result.state
        if result.done:
            break
        if now >= settled:
            # Straight to just before the end, on the same grid (one step early, so that
            # rounding in period / interval can never skip the first evaluation past it).
            step = max(step, math.ceil(period / interval) - 2)
    return ReplayResult(path, policy.name, release, base_name, started, period, result,
                        evaluations)
