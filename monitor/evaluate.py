"""The one evaluation core: (policy, baseline, candidate samples, now) -> verdict.

The daemon (and through it the demo), `monitor replay` and the benchmarks all call
`evaluate`; `monitor verdict` reads what it decided. Nothing judges a release elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, cast

import numpy as np
from scipy import stats

from baselines.calibration import LADDER, MIN_WINDOWS, spread_at
from baselines.frame import SignalFrame
from baselines.summary import (
    Baseline,
    SignalBaseline,
    deseasonalize,
    leak_blocks,
)
from detectors import compare, cusum, rate_increase, time_to_exhaustion, trend
from detectors.step import WIDTHS as STEP_WIDTHS
from detectors.step import release_step
from monitor.durations import format_duration
from monitor.figures import format_value, unit_of
from monitor.findings import (
    FINAL,
    HOTFIX,
    INCONCLUSIVE,
    MAJOR,
    MINOR,
    PASS,
    PENDING,
    ROLLBACK,
    SHIFT_DETECTORS,
    Finding,
)
from monitor.policy import ServicePolicy, SignalRule

ALPHA = 0.01
# How many A/A spreads outside healthy history a shift must stand, and the calibrated
# interval's half-width in spreads.
Z_FINDING = 3.5
Z_INTERVAL = 2.0
# Once the checking period is over, the whole window of a compared signal whose baseline was
# measured not to drift, and where nothing else saw a shift, is looked at once more at this
# lower bar: one look (repeated only while its finding persists), no longer one of many, at
# spreads that hold after the release too. What only this look sees is minor, a hotfix at
# most, and its streak is its own (detector FINAL): a rollback still needs the sequential bar.
Z_FINAL = 2.75
# The step at the release is the largest of up to five widths' steps, so it needs a higher
# bar than one test; and it must still stand in the latest samples, so that a cold start's
# brief jump (caches warming up) is not a regression.
Z_STEP = 4.0
# The textbook decision interval h = 5 for a reference value k = 0.5: the CUSUM only says
# where a shift may have begun; the part after it must still pass the calibrated test.
CUSUM_THRESHOLD = 5.0
# A memory climb is a leak to roll back for once the window holds this many garbage-
# collection blocks (`leak_block`) and, past the first (left to a warm-up after the deploy),
# still climbs, its floor still rising in the last block.
CONFIRM_BLOCKS = 3
# ...unless memory would run out within this many blocks, the wait for that: then there
# is no time to tell a leak from a warm-up.
URGENT_BLOCKS = CONFIRM_BLOCKS
CUSUM_SCALE_WINDOW = 16
# Why a release with no earlier one to compare with can pass (`first_reason`).
FIRST_RELEASE = "first release: judged on smoke, verification and leaks"
# A yardstick no smaller than this, so a baseline that is exactly zero divides nothing by zero.
SCALE_FLOOR = 1e-12
# A stretch of the release this share of the checking period long (and more than two
# sample intervals) without samples leaves it unjudged: inconclusive, however good the
# samples around it looked.
STALE_FRACTION = 0.25
Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVE: dict[str, Alternative] = {"increase": "greater", "decrease": "less", "both": "two-sided"}


@dataclass(frozen=True)
class JudgeState:
    """What the judge remembers between evaluations of one release."""

    streaks: Mapping[str, int] = field(default_factory=dict)
    first_alarm_at: float | None = None
    hotfix_at: float | None = None
    hotfix_evidence: tuple[Finding, ...] = ()
    over_at: float | None = None    # the first evaluation at or after the period's end
    # The newest sample the last evaluation saw: a finding's streak grows only on samples
    # newer than that, so evaluations of the same data (a replaced release's, a daemon
    # restarting) never make it persist.
    seen_until: float | None = None
    judged_at: float | None = None   # when the last evaluation ran: a restart keeps the pace

    def to_json(self) -> str:
        return json.dumps({
            "streaks": dict(self.streaks),
            "first_alarm_at": self.first_alarm_at,
            "hotfix_at": self.hotfix_at,
            "hotfix_evidence": [f.to_dict() for f in self.hotfix_evidence],
            "over_at": self.over_at,
            "seen_until": self.seen_until,
            "judged_at": self.judged_at,
        })

    @classmethod
    def from_json(cls, text: str) -> JudgeState:
        data = json.loads(text or "{}")
        return cls(
            streaks=_shift_streaks(data.get("streaks", {})),
            first_alarm_at=data.get("first_alarm_at"),
            hotfix_at=data.get("hotfix_at"),
            hotfix_evidence=tuple(Finding.from_dict(f) for f in data.get("hotfix_evidence", [])),
            over_at=data.get("over_at"),
            seen_until=data.get("seen_until"),
            judged_at=data.get("judged_at"),
        )


def _shift_streaks(streaks: Mapping[str, int]) -> dict[str, int]:
    """Streaks stored before a signal's shift was one finding whichever detector saw it
    ("latency/compare") carry on under the shared key ("latency/shift")."""
    out: dict[str, int] = {}
    for key, count in streaks.items():
        signal, _, detector = key.rpartition("/")
        merged = f"{signal}/shift" if detector in SHIFT_DETECTORS else key
        out[merged] = max(out.get(merged, 0), int(count))
    return out


@dataclass(frozen=True)
class Evaluation:
    verdict: str
    reason: str
    findings: tuple[Finding, ...]
    state: JudgeState
    first_alarm_at: float | None
    decided_at: float | None
    done: bool


@dataclass
class _Observations:
    findings: list[Finding] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # signals without a sample, not needed


def evaluate(
    policy: ServicePolicy,
    baseline: Baseline | None,
    candidate: SignalFrame,
    *,
    started: float,
    period: float,
    now: float,
    state: JudgeState | None = None,
    first_release: bool = False,
    until: float | None = None,
    first_reason: str = FIRST_RELEASE,
) -> Evaluation:
    """Judge a candidate release at `now` and carry the judge's memory forward.

    A finding sets the verdict only once it has been seen in `policy.persistence`
    consecutive evaluations; a major one means rollback, a minor one hotfix. When the
    checking period is over with nothing found the release passes, or is inconclusive
    if a signal that matters had too little data, or a long stretch of the release had no
    samples at all (up to its end: the period's, or `until`, when the next release
    replaced it). A minor finding with a signal that matters unjudged for want of data is
    no hotfix but inconclusive: the unjudged signal could hide a rollback.
    """
    state = state or JudgeState()
    end = now + 1e-6
    # The daemon reads exactly [started, now]: copying a frame of 10,000 series costs more
    # than judging a tenth of them.
    inside = bool(np.all((candidate.times >= started) & (candidate.times < end)))
    window = candidate if inside else candidate.between(started, end)
    over = now >= started + period
    cut_short = until is not None and until < started + period
    seen = observe(policy, baseline, window, now=now, started=started, final=over,
                   replaced=cut_short)
    # The newest time with a value (a PromQL grid runs to `now`, data or not).
    sampled = window.times[np.any(np.isfinite(window.values), axis=0)] if window.times.size \
        else window.times
    newest = float(sampled.max()) if sampled.size else state.seen_until
    # New samples, or the period over for a release that ran all of it (a recording ends
    # with its period, and the end's final look needs its evaluations to persist).
    fresh = ((newest is not None and (state.seen_until is None or newest > state.seen_until))
             or (over and not cut_short))
    streaks = {f.key: state.streaks.get(f.key, 0) + 1 if fresh else max(state.streaks.get(f.key, 0), 1)
               for f in seen.findings}
    persistent = [f for f in seen.findings if streaks[f.key] >= policy.persistence]
    majors = [f for f in persistent if f.severity == MAJOR]
    if majors:
        evidence = _ranked(seen.findings)
        first_alarm: float | None = state.first_alarm_at if state.first_alarm_at is not None else now
        new_state = JudgeState(streaks, first_alarm, state.hotfix_at, state.hotfix_evidence,
                               state.over_at, newest, now)
        # Corroborating major findings are named too, even before they have persisted.
        reason = _reason([f for f in seen.findings if f.severity == MAJOR])
        return Evaluation(ROLLBACK, reason, evidence, new_state, first_alarm, now, True)
    over_at = state.over_at if state.over_at is not None else (now if over else None)
    # Counted from the first evaluation past the end, so judging held up past the end (a
    # disk outage, a daemon down) still gets its evaluations.
    grace_end = (over_at or now) + (policy.persistence - 1) * policy.evaluation_interval
    hotfix_at, hotfix_evidence = state.hotfix_at, state.hotfix_evidence
    # A hotfix held back past the end (below) keeps the minor findings it would name.
    held = state.hotfix_evidence if hotfix_at is None else ()
    # A minor finding is not urgent: it makes a hotfix only if it still persists when the
    # period is over, so a healthy series' passing excursion is not one.
    if over and (persistent or held) and hotfix_at is None:
        settled = tuple(_ranked(persistent)) or held
        rising = [f for f in seen.findings if f.severity == MAJOR]
        if rising and now < grace_end:
            # A major finding seen at the end could still persist: a hotfix now would
            # settle for less than the rollback it may become. If it does not persist,
            # the hotfix stands on what persisted at the end, seen since or not.
            reason = ("watching past the period while a major finding could persist: "
                      + _reason(rising))
            new_state = JudgeState(streaks, state.first_alarm_at, None, settled, over_at,
                                   newest, now)
            return Evaluation(PENDING, reason, _ranked(seen.findings), new_state, None, None,
                              False)
        # A hotfix says the release works but for what it names: not while a signal that
        # matters was never judged for want of data (its shortfall is the verdict's reason).
        if seen.shortfalls:
            reason = (f"{'; '.join(seen.shortfalls)}; with that unjudged, no hotfix for the "
                      f"minor {_reason(settled)}")
            new_state = JudgeState(streaks, state.first_alarm_at, None, (), over_at, newest, now)
            return Evaluation(INCONCLUSIVE, reason, _ranked(seen.findings), new_state, None, now, True)
        hotfix_at, hotfix_evidence = now, settled
    first_alarm = state.first_alarm_at if state.first_alarm_at is not None else hotfix_at
    new_state = JudgeState(streaks, first_alarm, hotfix_at, hotfix_evidence, over_at, newest, now)
    evidence = _ranked(seen.findings) or hotfix_evidence
    if hotfix_at is not None:
        reason = _reason(list(hotfix_evidence))
        return Evaluation(HOTFIX, reason, tuple(evidence), new_state, first_alarm, hotfix_at, True)
    if not over:
        reason = ("minor, a hotfix if it persists to the period's end: " + _reason(persistent)
                  if persistent else "")
        return Evaluation(PENDING, reason, tuple(evidence), new_state, None, None, False)
    if seen.findings and now < grace_end:
        # Findings seen at the end have not had the evaluations they need to persist (or
        # judging was held up, by a disk outage say): watch a little longer, never pass them.
        reason = "watching past the period while findings persist: " + _reason(seen.findings)
        return Evaluation(PENDING, reason, tuple(evidence), new_state, None, None, False)
    if baseline is None and not first_release:
        reason = ("no healthy earlier release to compare with (`monitor baselines pin` "
                  "one for the releases after this)")
        return Evaluation(INCONCLUSIVE, reason, tuple(evidence), new_state, None, now, True)
    ended = min(started + period, until if until is not None else np.inf)
    if cut_short and seen.findings:
        # No more samples will come to confirm or clear them: no pass, and no action either.
        reason = (f"replaced after {format_duration(ended - started)}, before what it showed "
                  f"could persist: {_reason(seen.findings)}")
        return Evaluation(INCONCLUSIVE, reason, tuple(evidence), new_state, None, now, True)
    stopped = _data_stopped(policy, window, started=started, ended=ended, period=period)
    shortfalls = seen.shortfalls + ([stopped] if stopped else [])
    if shortfalls:
        reason = "; ".join(shortfalls)
        if cut_short and seen.shortfalls:
            reason = f"replaced after {format_duration(ended - started)}, too soon: {reason}"
        return Evaluation(INCONCLUSIVE, reason, tuple(evidence), new_state, None, now, True)
    reason = first_reason if baseline is None else ""
    if ended < started + period:
        ran = f"replaced after {format_duration(ended - started)}: judged on that part of the period"
        reason = "; ".join(filter(None, (reason, ran)))
    if seen.unjudged:
        reason = "; ".join(filter(None, (reason, "not judged: " + "; ".join(seen.unjudged))))
    return Evaluation(PASS, reason, tuple(evidence), new_state, None, now, True)


def _ranked(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (f.severity != MAJOR, f.signal, f.detector)))


def _reason(findings: Sequence[Finding]) -> str:
    return "; ".join(f"{f.signal}: {f.detail}" for f in _ranked(findings))


def observe(
    policy: ServicePolicy, baseline: Baseline | None, window: SignalFrame, *, now: float,
    started: float, final: bool = False, replaced: bool = False,
) -> _Observations:
    """Every finding in the window, and every signal that matters but lacks data; `final`
    once the checking period is over (the whole window's last look, see Z_FINAL), and
    `replaced` once the next release took over (no more data will come)."""
    seen = _Observations()
    rules = [r for r in policy.signals if r.name in window.rows]
    # An entry without a sample (a signal the baseline release never reported) is no
    # baseline: judged against it, a critical signal would pass whatever it does.
    known = {r.name: baseline.signals[r.name] for r in rules
             if baseline is not None and r.name in baseline.signals
             and _has_data(r, baseline.signals[r.name])}
    # A quantile interpolated in other buckets is another measurement: no comparison.
    rebucketed = {name: _layout_change(part.layout, window.layouts.get(name, ()))
                  for name, part in known.items()
                  if part.layout and window.layouts.get(name) and part.layout != window.layouts[name]}
    known = {name: part for name, part in known.items() if name not in rebucketed}
    ranked = [r for r in rules if r.kind != "ratio" and r.name in known]
    counted = [r for r in rules if r.kind == "ratio" and r.name in known]
    leaking = [r for r in rules if r.leak]
    if ranked:
        _compare_signals(ranked, known, window, now, started, final, seen)
    if counted:
        _rate_signals(counted, known, window, now, seen)
    if leaking:
        _leak_signals(policy, leaking, known, window, now, seen, final=final)
    _data_checks(rules, window, now=now, started=started, seen=seen, replaced=replaced)
    if baseline is not None:
        for rule in rules:
            if rule.name in known:
                continue
            # A signal new to the policy (or renamed) has no baseline yet: compared with
            # nothing, it was not judged, and a pass must say so.
            part = baseline.signals.get(rule.name)
            missing = f"{rule.name}: the baseline has no data for it"
            if rule.name in rebucketed:
                missing = f"{rule.name}: {rebucketed[rule.name]}"
            elif rule.numerator_query and part is not None and part.trials > 0:
                missing = (f"{rule.name}: the baseline counted requests but its numerator_query "
                           "answered nothing (add `or vector(0)` to it if that means no errors)")
            noted = {note.partition(":")[0] for note in seen.unjudged}
            if rule.critical or rule.must_have_data:
                seen.shortfalls.append(missing)
            elif not rule.leak and rule.name not in noted:   # a leak is judged on its own
                seen.unjudged.append(missing)
    return seen


def _layout_change(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    def bounds(layout: tuple[float, ...]) -> str:
        return ", ".join("+Inf" if np.isinf(b) else f"{b:g}" for b in layout)

    change = ("its baseline's releases used different histogram buckets"
              if any(np.isnan(b) for b in before)
              else f"its histogram's buckets changed ({bounds(before)} -> {bounds(after)})")
    return (f"{change}: a quantile in other buckets is not comparable with the baseline's "
            "(`monitor baselines pin` this release, once trusted, for the releases after it)")


def _has_data(rule: SignalRule, part: SignalBaseline) -> bool:
    return part.count > 0 and (rule.kind != "ratio" or part.trials > 0)


def _stack_reservoirs(parts: Sequence[SignalBaseline]) -> np.ndarray:
    width = max((p.reservoir.size for p in parts), default=0)
    out = np.full((len(parts), max(width, 1)), np.nan)
    for row, part in enumerate(parts):
        out[row, : part.reservoir.size] = part.reservoir
    return out


def _compare_signals(
    rules: Sequence[SignalRule], known: Mapping[str, SignalBaseline], window: SignalFrame,
    now: float, started: float, final: bool, seen: _Observations,
) -> None:
    for direction in ("increase", "decrease", "both"):
        group = [r for r in rules if r.bad == direction]
        if group:
            _compare_group(group, direction, known, window, now, started, final, seen)


def _compare_group(
    rules: Sequence[SignalRule], direction: str, known: Mapping[str, SignalBaseline],
    window: SignalFrame, now: float, started: float, final: bool, seen: _Observations,
) -> None:
    parts = [known[r.name] for r in rules]
    base = _stack_reservoirs(parts)
    values = raw = window.values[[window.row(r.name) for r in rules]]
    if any(p.hourly is not None for p in parts):
        # Judged against the same hours of healthy history, as the baseline was summarized.
        offsets = np.array([p.hourly if p.hourly is not None else (np.nan,) * 24 for p in parts])
        values = deseasonalize(window.times, values, offsets)
    median = np.array([p.median for p in parts])
    noise = np.array([p.noise for p in parts])
    scale = np.fmax(np.fmax(np.abs(np.nan_to_num(median)), np.nan_to_num(noise)), SCALE_FLOOR)
    spreads = _stack_spreads([p.aa_spread for p in parts])
    evidence = _shift_evidence(rules, direction, parts, base, values, scale, spreads)
    judged = _shift_findings(evidence, rules, parts, scale)
    # The CUSUM's scale is the long-run one (a window's spread times the square root of its
    # length): with the per-sample spread, autocorrelated healthy series alarm all the time.
    long_run = spread_at(spreads, np.full(len(parts), CUSUM_SCALE_WINDOW)) * np.sqrt(CUSUM_SCALE_WINDOW)
    change = cusum(
        values, reference_mean=median,
        reference_scale=np.fmax(np.where(np.isnan(long_run), noise, np.fmax(long_run, noise)), SCALE_FLOOR),
        threshold=CUSUM_THRESHOLD,
        direction=cast(Literal["increase", "decrease", "both"], direction),
    )
    starts = np.atleast_1d(change.change_index)
    detected = np.atleast_1d(change.detected)
    # Only a change point that the whole-window test missed is judged again after its start.
    again = [row for row in np.flatnonzero(detected & (starts > 0)).tolist() if judged[row] is None]
    late = dict.fromkeys(again, None)
    if again:
        column = np.arange(values.shape[1])
        after = np.where(column[None, :] >= starts[again][:, None], values[again], np.nan)
        again_rules, again_parts = [rules[r] for r in again], [parts[r] for r in again]
        after_evidence = _shift_evidence(again_rules, direction, again_parts, base[again], after,
                                         scale[again], spreads[again])
        found = _shift_findings(after_evidence, again_rules, again_parts, scale[again])
        late = dict(zip(again, found, strict=True))
    shifts: dict[int, Finding] = {}
    found_rows = [r for r, hit in enumerate(judged) if hit is not None]
    for row in sorted(found_rows + [r for r, hit in late.items() if hit is not None]):
        words, change_at = _began(starts[row], window.times, started)
        hit = judged[row]
        if hit is not None:
            shifts[row] = replace(hit, detail=hit.detail + words, at=now, change_at=change_at)
            continue
        # Seen only in the part after the change point.
        hit = late[row]
        assert hit is not None
        shifts[row] = replace(hit, detector="changepoint", detail=hit.detail + words, at=now,
                              change_at=change_at)
    # The step at the release where nothing major was seen: its narrower interval may show
    # a jump that the whole window, drowned in the daily swing, could not.
    # Counted in samples, not scrapes: a signal mostly missing has too little to judge.
    enough = np.sum(~np.isnan(raw), axis=1) >= np.array([r.min_samples for r in rules])
    open_rows = [row for row in range(len(rules))
                 if enough[row] and (row not in shifts or shifts[row].severity != MAJOR)]
    if open_rows:
        stepped = _judge_step([rules[r] for r in open_rows], direction,
                              [parts[r] for r in open_rows], raw[open_rows], window.times,
                              started, scale[open_rows])
        for row, hit in zip(open_rows, stepped, strict=True):
            if hit is not None and (row not in shifts or hit.severity == MAJOR):
                shifts[row] = replace(hit, at=now, change_at=started)
    # The final look (see Z_FINAL), at steady signals where nothing else saw a shift.
    quiet = [row for row in range(len(rules)) if final and parts[row].steady and row not in shifts]
    if quiet:
        # The same evidence as the whole-window test's, against a lower bar.
        looked = _shift_findings(evidence, rules, parts, scale, final=True, rows=quiet)
        for row in quiet:
            hit = looked[row]
            if hit is not None:
                words, change_at = _began(starts[row], window.times, started)
                shifts[row] = replace(hit, detail=hit.detail + words, at=now, change_at=change_at)
    seen.findings.extend(shifts[row] for row in sorted(shifts))
    short = _beyond_calibration(spreads, evidence.n_candidate) & evidence.eligible
    for row in np.flatnonzero(short).tolist():
        if row not in shifts:
            shifted = parts[row].median + evidence.shift[row]
            rule = rules[row]
            _too_short(seen, rule, f"median {_fmt(parts[row].median, rule)} -> {_fmt(shifted, rule)}",
                       int(evidence.n_candidate[row]), window, parts[row].count)


def _began(start: int, times: np.ndarray, started: float) -> tuple[str, float | None]:
    """Where the CUSUM saw a shift begin (index `start`, -1 for nowhere): the words for a
    finding's detail, counted from the release's start as every other offset is, and the
    time."""
    if start < 0 or not times.size:
        return "", None
    at = float(times[start])
    return f", shift began at +{format_duration(max(at - started, 0.0))}", at


def _beyond_calibration(spreads: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The rows whose window is more than twice as long as any the baseline had enough
    windows of to calibrate: the longest one's spread stands in, much wider than one of
    this length, so a real change may stand out and still not pass the bar."""
    known = ~np.isnan(spreads)
    last = known.shape[1] - 1 - np.argmax(known[:, ::-1], axis=1)
    longest = np.asarray(LADDER, dtype=float)[last]
    return known.any(axis=1) & (np.asarray(length) > 2 * longest)


def _too_short(seen: _Observations, rule: SignalRule, what: str, length: int,
               window: SignalFrame, baseline_count: int) -> None:
    """A change the plain test sees but a too-short baseline cannot calibrate: no pass for
    a signal that matters (inconclusive, with how long a baseline it takes), and a note
    for any other."""
    step = float(np.median(np.diff(window.times))) if window.times.size > 1 else 0.0
    note = (f"{rule.name}: {what} stands out, but a baseline of {format_duration(baseline_count * step)} "
            f"is too short to tell that from its own swings over {format_duration(length * step)} "
            f"(it takes {format_duration(MIN_WINDOWS * length * step)})")
    (seen.shortfalls if rule.critical or rule.must_have_data else seen.unjudged).append(note)


def _stack_spreads(spreads: Sequence[tuple[float, ...]], width: int = len(LADDER)) -> np.ndarray:
    """The A/A spreads of several signals as one (signals, ladder) array, NaN-padded."""
    out = np.full((len(spreads), width), np.nan)
    for row, spread in enumerate(spreads):
        out[row, : min(len(spread), width)] = spread[:width]
    return out


class _ShiftEvidence(NamedTuple):
    """The whole-window rank test of several signals, calibrated, before any bar. Where
    the rank test finds nothing (p >= ALPHA) the shift and its interval are not computed:
    they are NaN there, z too, bound -inf, and the row is not eligible."""

    shift: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    z: np.ndarray          # the shift in A/A spreads of its length
    pvalue: np.ndarray
    bound: np.ndarray      # the interval's end nearest no change, a share of the yardstick
    n_baseline: np.ndarray
    n_candidate: np.ndarray
    eligible: np.ndarray   # enough samples, the rank test, beyond ignore_below and absolute


def _shift_evidence(
    rules: Sequence[SignalRule], direction: str, parts: Sequence[SignalBaseline],
    base: np.ndarray, values: np.ndarray, scale: np.ndarray, spreads: np.ndarray,
) -> _ShiftEvidence:
    """Rank test with the Hodges-Lehmann shift, calibrated against healthy history.

    A finding needs all of: the rank test (p < ALPHA); the shift standing a bar of spreads
    (`_shift_findings`) outside what healthy baseline windows of the same length show (A/A
    calibration, which carries autocorrelation, drift and bursts that the rank test knows
    nothing of); and the whole interval (the wider of the rank test's and the calibrated
    one) beyond the signal's ignore_below.
    """
    # Only a row the rank test finds (p < ALPHA) can make a finding: the rest skip the
    # shift's interval, the test's costliest part.
    result = compare(base, values, confidence=0.95, alternative=_ALTERNATIVE[direction],
                     interval_below=ALPHA)
    shift, lower, upper = (np.atleast_1d(np.asarray(a, dtype=float)) for a in
                           (result.shift, result.lower, result.upper))
    n_base = np.atleast_1d(result.n_baseline)
    n_cand = np.atleast_1d(result.n_candidate)
    noise = np.array([p.noise for p in parts])
    # Without a calibrated length (a short baseline), independent samples' spread: optimistic,
    # so such a baseline never stands alone: the rank test and the floors still apply.
    sigma = spread_at(spreads, n_cand)
    sigma = np.where(np.isnan(sigma), noise / np.sqrt(np.maximum(n_cand, 1)), sigma)
    lower = np.fmin(lower, shift - Z_INTERVAL * sigma)
    upper = np.fmax(upper, shift + Z_INTERVAL * sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        worse = _worse(shift, direction)
        z = np.where(sigma > 0, worse / sigma, np.where(worse > 0, np.inf, 0.0))
    calibrated_p = stats.norm.sf(z) * (2.0 if direction == "both" else 1.0)
    pvalue = np.fmax(np.nan_to_num(np.atleast_1d(result.pvalue), nan=1.0), calibrated_p)
    bound = np.nan_to_num(_bound(lower / scale, upper / scale, direction), nan=-np.inf)
    enough = n_cand >= np.array([r.min_samples for r in rules])
    beyond = ((bound > np.array([r.ignore_below for r in rules]))
              & (np.abs(shift) > np.array([r.absolute for r in rules])))
    return _ShiftEvidence(shift, lower, upper, z, pvalue, bound, n_base, n_cand,
                          enough & beyond & (pvalue < ALPHA))


def _shift_findings(
    evidence: _ShiftEvidence, rules: Sequence[SignalRule], parts: Sequence[SignalBaseline],
    scale: np.ndarray, *, final: bool = False, rows: Sequence[int] | None = None,
) -> list[Finding | None]:
    """The findings the evidence makes beyond Z_FINDING spreads (of `rows`, or all), major
    beyond the tolerance on a critical signal. At the `final` look the bar is Z_FINAL and
    every finding minor, its detector FINAL."""
    out: list[Finding | None] = [None] * len(rules)
    passing = evidence.eligible & (evidence.z > (Z_FINAL if final else Z_FINDING))
    if rows is not None:
        passing &= np.isin(np.arange(len(rules)), rows)
    # Python work only for the rows that make a finding.
    for row in np.flatnonzero(passing).tolist():
        rule, part = rules[row], parts[row]
        major = rule.critical and evidence.bound[row] > rule.tolerance and not final
        shift = evidence.shift[row]
        candidate = part.median + shift
        out[row] = Finding(
            signal=rule.name, detector=FINAL if final else "compare",
            severity=MAJOR if major else MINOR,
            baseline=part.median, candidate=candidate, effect=_share(shift, scale[row]),
            lower=_share(evidence.lower[row], scale[row]),
            upper=_share(evidence.upper[row], scale[row]),
            tolerance=rule.tolerance if major else rule.ignore_below,
            n_baseline=int(evidence.n_baseline[row]), n_candidate=int(evidence.n_candidate[row]),
            detail=(f"median {_fmt(part.median, rule)} -> {_fmt(candidate, rule)} "
                    f"({_relative(shift, part.median, part.noise)}{_many(evidence.z[row])} A/A "
                    f"spreads, p={evidence.pvalue[row]:.2g}{', final look' if final else ''})"),
        )
    return out


def _judge_step(
    rules: Sequence[SignalRule], direction: str, parts: Sequence[SignalBaseline],
    values: np.ndarray, times: np.ndarray, started: float, scale: np.ndarray,
) -> list[Finding | None]:
    """A jump at the moment of release beyond the jumps healthy history makes anywhere.

    Only where the baseline ran right up to the release (its last samples end within a
    few steps of the start): a baseline from before a rolled-back release, or several
    releases merged, has no moment the candidate follows on from. The step must stand
    Z_STEP spreads of adjacent healthy windows' steps at its width, the latest samples
    must still stand as far from the baseline's last ones, and the interval must clear
    the signal's ignore_below, as for the whole-window comparison.
    """
    out: list[Finding | None] = [None] * len(rules)
    if times.size == 0:
        return out
    # Both sides must reach the release: the baseline's last samples and the candidate's
    # first ones within a few steps of it (NaN gaps at either end are checked per width).
    adjacent = [row for row, p in enumerate(parts)
                if p.tail.size and p.aa_step_spread and np.isfinite(p.tail_end)
                and started - p.tail_end <= 3.0 * p.tail_step + 1e-6
                and -1e-6 <= times[0] - started <= 3.0 * p.tail_step + 1e-6]
    if not adjacent:
        return out
    tails = np.full((len(adjacent), max(parts[r].tail.size for r in adjacent)), np.nan)
    for index, row in enumerate(adjacent):
        tail = parts[row].tail
        tails[index, tails.shape[1] - tail.size :] = tail
    found = release_step(tails, values[adjacent], STEP_WIDTHS)
    latest = release_step(tails, values[adjacent][:, ::-1], STEP_WIDTHS)
    sigma = _stack_spreads([parts[r].aa_step_spread for r in adjacent], len(STEP_WIDTHS))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, _worse(found.step, direction) / sigma, np.nan)
        z_now = np.where(sigma > 0, _worse(latest.step, direction) / sigma, np.nan)
        # The step's direction must be the one judged at its width, now as at the start.
        held = (z_now > Z_STEP) & (np.sign(latest.step) == np.sign(found.step))
        z = np.where(held, z, np.nan)
    jumped = np.flatnonzero(np.any(z > Z_STEP, axis=1))
    # The width at which each row that jumped stands furthest out (a NaN width never does).
    furthest = np.argmax(np.where(np.isnan(z[jumped]), -np.inf, z[jumped]), axis=1)
    for index, width in zip(jumped.tolist(), furthest.tolist(), strict=True):
        row = adjacent[index]
        rule, step = rules[row], float(found.step[index, width])
        low, high = step - Z_INTERVAL * sigma[index, width], step + Z_INTERVAL * sigma[index, width]
        bound = float(_bound(low / scale[row], high / scale[row], direction))
        if not (bound > rule.ignore_below and abs(step) > rule.absolute):
            continue
        major = rule.critical and bound > rule.tolerance
        before, after = float(found.before[index, width]), float(found.after[index, width])
        count = STEP_WIDTHS[width]
        out[row] = Finding(
            signal=rule.name, detector="step", severity=MAJOR if major else MINOR,
            baseline=before, candidate=after, effect=_share(step, scale[row]),
            lower=_share(low, scale[row]), upper=_share(high, scale[row]),
            tolerance=rule.tolerance if major else rule.ignore_below,
            n_baseline=count, n_candidate=count,
            detail=(f"jumped at the release: median of the last {count} samples "
                    f"{_fmt(before, rule)} -> first {count} after {_fmt(after, rule)} "
                    f"({_relative(step, before, parts[row].noise)}"
                    f"{_many(z[index, width])} A/A steps)"),
        )
    return out


def _hours_scale(seasonal: np.ndarray, complement: np.ndarray, level: np.ndarray,
                 at_hours: np.ndarray) -> np.ndarray:
    """How much wider counts stray at the candidate's hours than over the whole baseline,
    whose windows of every hour its spreads were measured on: counts stray as the root of
    their rate, so a quiet night's errors by less than the busy day's (1 without a profile;
    of the misses, for a hit ratio tested on its `complement`)."""
    tested = np.where(complement, 1.0 - level, level)
    hours = np.where(complement, 1.0 - at_hours, at_hours)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(np.maximum(hours, 0.0) / tested)
    return np.where(seasonal & np.isfinite(scale) & (tested > 0), scale, 1.0)


def _worse(change: np.ndarray, direction: str) -> np.ndarray:
    """How much worse a change is, the way the rule counts it (positive = worse)."""
    return {"increase": change, "decrease": -change, "both": np.abs(change)}[direction]


def _bound(lower: np.ndarray | float, upper: np.ndarray | float, direction: str) -> Any:
    """How far an interval's nearer end stands on the worse side of no change, the way
    the rule counts it (positive: the whole interval is worse)."""
    return {"increase": lower, "decrease": -upper, "both": np.fmax(lower, -upper)}[direction]


def _rate_signals(
    rules: Sequence[SignalRule], known: Mapping[str, SignalBaseline], window: SignalFrame,
    now: float, seen: _Observations,
) -> None:
    """Ratios judged as counts. A ratio that is worse when lower (a hit or success ratio)
    is judged as its complement rising (misses out of the same trials) when that is the
    smaller count, else as its own count falling; one worse either way in the direction it
    moved, at twice the one-sided p-value."""
    parts = [known[r.name] for r in rules]
    rows = [window.row(r.name) for r in rules]
    base_trials = np.array([p.trials for p in parts])
    cand_trials = np.nansum(window.trials[rows], axis=1)
    # A ratio with an hourly profile is compared with the profile taken out of both sides'
    # counts, as its A/A spreads were measured: a release at the busy hour meets the busy
    # hour's errors, not the whole week's average.
    seasonal = np.array([p.hourly is not None and not np.isnan(p.deseasonalized_events)
                         for p in parts])
    base_events = np.array([p.deseasonalized_events if s else p.events
                            for p, s in zip(parts, seasonal, strict=True)])
    observed = np.nansum(window.events[rows], axis=1)
    # What the hours of the candidate add to its errors (none without a profile): the
    # baseline's ratio at those hours is what the candidate's is shown and measured against.
    hours_added = np.zeros(len(rows))
    profiled = np.flatnonzero(seasonal)
    if profiled.size:   # most ratios have no profile: their rows are left alone
        picked = [rows[i] for i in profiled]
        offsets = np.array([parts[i].hourly for i in profiled], dtype=float)
        hours = ((window.times // 3600) % 24).astype(np.int64)
        hours_added[profiled] = np.nansum(window.trials[picked] * offsets[:, hours], axis=1)
    # The candidate's errors less its hours' share (`deseasonalized_events`, summed).
    cand_events = np.clip(observed - hours_added, 0.0, cand_trials)
    with np.errstate(divide="ignore", invalid="ignore"):
        fell = cand_events / cand_trials < base_events / base_trials
    down = np.array([r.bad == "decrease" or (r.bad == "both" and bool(f))
                     for r, f in zip(rules, fell, strict=True)])
    # A fall is tested on the smaller count: a hit ratio's misses rising, a low success
    # share's successes falling (its misses are nearly every request, and a Poisson test
    # of those assumes fifty times the binomial variance of a 2% share).
    swapped = down & (base_events <= base_trials - base_events)
    complement = down & ~swapped
    # Misses are tested with the misses' own dispersion: the complement of a 99.9% hit
    # ratio bursts far more than the hits do (a baseline stored without it: the ratio's).
    phi = np.array([max(p.dispersion if not c or np.isnan(p.complement_dispersion)
                        else p.complement_dispersion, 1.0)
                    for p, c in zip(parts, complement, strict=True)])
    tested_base = np.where(complement, base_trials - base_events, base_events)
    tested_cand = np.where(complement, cand_trials - cand_events, cand_events)
    # Whether the tested count rose; for a swapped one, whether the baseline's rate
    # stands above the candidate's (the same test, the releases' roles exchanged).
    result = rate_increase(
        np.where(swapped, tested_cand, tested_base), np.where(swapped, cand_trials, base_trials),
        np.where(swapped, tested_base, tested_cand), np.where(swapped, base_trials, cand_trials),
        dispersion=phi,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_ratio = base_events / base_trials + hours_added / cand_trials
        observed_ratio = observed / cand_trials
    # Calibrated as the rank test is: how far healthy windows' ratios stray.
    intervals = np.sum(np.nan_to_num(window.trials[rows]) > 0, axis=1)
    spreads = _stack_spreads([p.aa_spread for p in parts])
    sigma = spread_at(spreads, intervals) * _hours_scale(seasonal, complement,
                                                         base_events / base_trials, expected_ratio)
    short = _beyond_calibration(spreads, intervals)
    excess_rate = np.atleast_1d(result.cand_rate) - np.atleast_1d(result.base_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, excess_rate / sigma, np.where(excess_rate > 0, np.inf, 0.0))
    z = np.where(np.isnan(sigma), np.inf, z)   # uncalibrated: the count test alone decides
    for row, rule in enumerate(rules):
        ratio_lower = float(np.atleast_1d(result.ratio_lower)[row])
        excess = float(np.atleast_1d(result.excess)[row])
        # A direction chosen after the fact is a two-sided test, as the rank test's is.
        pvalue = min(1.0, float(np.atleast_1d(result.pvalue)[row]) * (2 if rule.bad == "both" else 1))
        expected, actual = float(expected_ratio[row]), float(observed_ratio[row])
        # At least how much the tested count's rate rose beyond the baseline's, per trial.
        level = float(np.atleast_1d(result.base_rate)[row])
        rose_by = level * (ratio_lower - 1.0)
        if swapped[row]:
            # The baseline's rate of the count over the candidate's is at least
            # `ratio_lower`: the count fell by at least 1 - 1 / ratio_lower of its level.
            baseline_rate = float(np.atleast_1d(result.cand_rate)[row])
            fell_by = baseline_rate * (1.0 - 1.0 / ratio_lower) if ratio_lower > 0 else 0.0
            excess = float(cand_trials[row] * baseline_rate - cand_events[row])
            bound = fell_by / expected if expected > 0 else float("nan")
            effect = actual / expected - 1.0 if expected > 0 else float("nan")
            lower, upper = float("nan"), -bound
        elif down[row]:
            # The rise of the complement as a fall of the ratio itself, relative to its
            # level (from a level of 1, no misses at all, the fall is at least the misses'
            # rate itself).
            if level == 0:
                rose_by = float(np.atleast_1d(result.cand_rate_lower)[row])
            bound = rose_by / expected if expected > 0 else float("nan")
            effect = actual / expected - 1.0 if expected > 0 else float("nan")
            lower, upper = float("nan"), -bound
        else:
            seasonal_level = seasonal[row] and expected > 0 and level > 0
            bound = rose_by / expected if seasonal_level else ratio_lower - 1.0
            with np.errstate(divide="ignore", invalid="ignore"):
                effect = float(np.float64(actual) / expected - 1.0)
            lower, upper = bound, float("nan")
        floor = rule.ignore_below
        if not (cand_trials[row] >= rule.min_trials and excess >= rule.min_events
                and pvalue < ALPHA and bound > floor and abs(actual - expected) > rule.absolute):
            continue
        if not z[row] > Z_FINDING:
            if short[row]:
                _too_short(seen, rule, f"{_pct(expected, signed=False)} -> "
                           f"{_pct(actual, signed=False)}", int(intervals[row]), window,
                           parts[row].count)
            continue
        major = rule.critical and bound > rule.tolerance
        seen.findings.append(Finding(
            signal=rule.name, detector="rate", severity=MAJOR if major else MINOR,
            baseline=expected, candidate=actual, effect=effect, lower=lower, upper=upper,
            tolerance=rule.tolerance if major else floor,
            n_baseline=int(parts[row].trials), n_candidate=int(cand_trials[row]),
            detail=(f"{_pct(expected, signed=False)} -> {_pct(actual, signed=False)} "
                    f"{'(the baseline at the same hours) ' if seasonal[row] else ''}"
                    f"({int(observed[row])} in {int(cand_trials[row])}, "
                    f"{excess:.0f} {'fewer' if down[row] else 'more'} than expected, "
                    f"p={pvalue:.2g})"),
            at=now,
        ))


def _leak_signals(
    policy: ServicePolicy, rules: Sequence[SignalRule], known: Mapping[str, SignalBaseline],
    window: SignalFrame, now: float, seen: _Observations, *, final: bool = False,
) -> None:
    """Lower-envelope slope of memory, against the baseline's slope and the memory limit.

    The excess slope must also stand Z_FINDING spreads outside the slopes of healthy
    baseline windows of the same length, when the baseline was long enough to calibrate
    them: a daily cycle or a saw-tooth climbs too, for a while.
    """
    if window.times.size < 8:
        return
    # A process that warms up after the deploy (caches, heap sizing, a JIT) climbs at first
    # and then levels off: once the window is long enough, its first block is left to that.
    # Once the period is over, two blocks past the first are all there will be (a 15-minute
    # period of 5-minute blocks holds barely three, from a first scrape just after the start).
    settled = window.span >= (CONFIRM_BLOCKS - (1 if final else 0)) * policy.leak_block
    kept = window.times >= window.times[0] + (policy.leak_block if settled else 0.0)
    times, memory = window.times[kept], window.values[[window.row(r.name) for r in rules]][:, kept]
    if times.size < 8:
        return
    span = float(times[-1] - times[0])
    blocks = max(4, leak_blocks(span, policy.leak_block))
    short_blocks = span / blocks < policy.leak_block
    result = trend(times, memory, blocks=blocks)
    slope, lower, level = (np.atleast_1d(np.asarray(a, dtype=float))
                           for a in (result.slope, result.lower, result.level))
    counts = np.sum(~np.isnan(memory), axis=1)
    spreads = _stack_spreads([known[r.name].aa_slope_spread if r.name in known else ()
                              for r in rules])
    sigma = spread_at(spreads, counts)
    for row, rule in enumerate(rules):
        base = known.get(rule.name)
        base_slope = max(0.0, np.nan_to_num(base.slope)) if base is not None else 0.0
        floor = abs(level[row]) * rule.ignore_below / policy.leak_horizon
        if counts[row] < rule.min_samples or not (lower[row] - base_slope > floor):
            continue
        if sigma[row] > 0 and slope[row] - base_slope <= Z_FINDING * sigma[row]:
            continue
        if short_blocks and (base is None or not base.quantiles):
            # No healthy history to say how far a garbage collector's saw-tooth climbs:
            # only blocks at least one collection cycle long may call a rise a leak.
            continue
        rise = slope[row] * span
        sawtooth = (base.quantiles.get("p95", 0.0) - base.quantiles.get("p05", 0.0)
                    if base is not None and base.quantiles else 0.0)
        if short_blocks and rise <= sawtooth:
            continue  # blocks shorter than a GC cycle: only a rise beyond the saw-tooth counts
        limit = _limit(rule, window)
        exhaustion = (float(time_to_exhaustion(level[row], slope[row], limit))
                      if limit is not None else float("inf"))
        # A climb is a leak to roll back for once it goes on past a warm-up, or sooner if
        # memory would run out before that could be seen.
        urgent = exhaustion <= URGENT_BLOCKS * policy.leak_block
        climbing = urgent or (settled and _floor_rises(
            window.times, window.values[window.row(rule.name)], slope[row], policy.leak_block))
        major = exhaustion <= policy.leak_horizon and climbing
        exhausts = (f", limit {_fmt(limit, rule)} in {format_duration(exhaustion)}"
                    if limit is not None and np.isfinite(exhaustion) else "")
        if exhaustion <= policy.leak_horizon and not climbing:
            exhausts += "; a rollback once it goes on climbing (a warm-up levels off)"
        seen.findings.append(Finding(
            signal=rule.name, detector="leak", severity=MAJOR if major else MINOR,
            baseline=base_slope, candidate=float(slope[row]), effect=float(slope[row] - base_slope),
            lower=float(lower[row]), upper=float(np.atleast_1d(result.upper)[row]),
            tolerance=floor, n_baseline=base.count if base is not None else 0,
            n_candidate=int(counts[row]),
            detail=(f"grows {_fmt(slope[row] * 60, rule)}/min (baseline {_fmt(base_slope * 60, rule)}"
                    f"/min){exhausts}"),
            exhaustion=exhaustion if np.isfinite(exhaustion) else None, at=now,
        ))


def _floor_rises(times: np.ndarray, values: np.ndarray, slope: float, block: float) -> bool:
    """Whether memory's floor (its lowest value over a garbage-collection cycle, `block`
    long) over the last block stands above the floor of the block before by at least half
    of what `slope` says, and by at least half of what that block rose over the one before
    it: a leak goes on climbing, a warm-up levels off (slowing down as it does)."""
    floors = []
    for back in (3, 2, 1):
        inside = values[(times > times[-1] - back * block) & (times <= times[-1] - (back - 1) * block)]
        floors.append(float(np.nanmin(inside)) if np.any(np.isfinite(inside)) else np.nan)
    earlier, before, last = floors
    rises = last - before > 0.5 * slope * block
    # Not against the deploy's first block, left to a warm-up: a leak that started with one
    # would read as slowing down.
    if times[-1] - 3 * block < times[0] + block:
        return bool(rises)
    slowing = np.isfinite(earlier) and last - before < 0.5 * (before - earlier)
    return bool(rises and not slowing)


def _limit(rule: SignalRule, window: SignalFrame) -> float | None:
    """The memory limit: the policy's, else the limit metric's latest value; a value of 0
    or less is no limit (cAdvisor's container_spec_memory_limit_bytes of an unlimited one)."""
    if rule.limit is not None:
        return rule.limit
    name = f"{rule.name}:limit"
    if name in window.rows:
        values = window.values[window.row(name)]
        values = values[~np.isnan(values)]
        return float(values[-1]) if values.size and values[-1] > 0 else None
    return None


def _data_checks(
    rules: Sequence[SignalRule], window: SignalFrame, *, now: float, started: float,
    seen: _Observations, replaced: bool = False,
) -> None:
    """Signals that matter but have too little data, with how much longer it would take
    (not of a release replaced: no more will come)."""
    elapsed = max(now - started, 1.0)
    rows = np.array([window.row(rule.name) for rule in rules], dtype=np.int64)
    ratio = np.array([rule.kind == "ratio" for rule in rules], dtype=bool)
    needed = np.array([rule.critical or rule.must_have_data for rule in rules], dtype=bool)
    # One look at every row at once: only signals without data or with a data floor need words.
    sampled = np.where(ratio, np.any(np.isfinite(window.trials), axis=1)[rows],
                       np.any(np.isfinite(window.values), axis=1)[rows])
    for index in np.flatnonzero(~sampled | needed).tolist():
        rule, row = rules[index], int(rows[index])
        if not sampled[index]:
            # Nothing at all, rather than too little: most often a metric name that the
            # target does not expose, which waiting will not fix. A signal that need not
            # have data does not hold the verdict up, but a pass says it was not judged.
            missing = f"{rule.name}: no samples of {_sources(rule)}"
            if "[$step]" in rule.query + rule.numerator_query + rule.denominator_query:
                missing += (" (the query answered nothing: a metric or label it selects that "
                            "the server has not, for this version, or a prometheus.step under "
                            "two scrape intervals, so that [$step] holds one scrape)")
            (seen.shortfalls if needed[index] else seen.unjudged).append(missing)
            continue
        if rule.kind == "ratio":
            trials = float(np.nansum(window.trials[row]))
            if trials < rule.min_trials:
                more = "" if replaced else _more_time(rule.min_trials - trials, trials / elapsed)
                seen.shortfalls.append(
                    f"{rule.name}: {trials:.0f} requests seen, {rule.min_trials:.0f} needed{more}")
            continue
        count = int(np.sum(~np.isnan(window.values[row])))
        if count < rule.min_samples:
            more = "" if replaced else _more_time(rule.min_samples - count, count / elapsed,
                                                  "pace of samples")
            noun = "sample" if count == 1 else "samples"
            seen.shortfalls.append(f"{rule.name}: {count} {noun}, {rule.min_samples} needed{more}")


def _data_stopped(policy: ServicePolicy, window: SignalFrame, *, started: float, ended: float,
                  period: float) -> str | None:
    """The longest stretch of the release (from its start to its end) without a sample of
    any judged signal, when it is too long to call the release watched: a target gone, a
    query API down, a recording shorter than the period. One signal without values while
    the others go on (a latency quantile with no traffic) is not that.
    """
    rules = [r for r in policy.signals if r.name in window.rows]
    if not rules:
        return None
    rows = [window.row(r.name) for r in rules]
    values, counted = window.values[rows], np.isfinite(window.trials[rows])
    present = np.isfinite(values) | counted
    sampled = present.any(axis=0)
    if policy.prometheus is not None and values.shape[1] > 1:
        # A PromQL server that was down itself answers a gauge with its last sample for up
        # to its lookback (5 minutes) while the rates beside it answer nothing: where a
        # signal is missing, a value that only repeats the step before is no new sight.
        # Signals all there and flat (a queue at 0) are watched.
        repeated = np.zeros(values.shape, dtype=bool)
        repeated[:, 1:] = values[:, 1:] == values[:, :-1]
        fresh = ((np.isfinite(values) & ~repeated) | counted).any(axis=0)
        sampled &= fresh | present.all(axis=0)
    times = window.times[sampled & (window.times <= ended)]
    if times.size == 0:
        if sampled.any():
            # Only samples from after it ended (when the next release was already running).
            return f"no samples before the release ended at +{format_duration(ended - started)}"
        # Signals that matter already say so, each by name.
        return None if any(r.critical or r.must_have_data for r in rules) else (
            "no samples of any judged signal")
    edges = np.concatenate([[started], times, [ended]])
    gaps = np.diff(edges)
    interval = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    worst = int(np.argmax(gaps))
    if gaps[worst] <= max(STALE_FRACTION * period, 2.0 * interval):
        return None
    return (f"no samples from +{format_duration(edges[worst] - started)} to "
            f"+{format_duration(edges[worst + 1] - started)}: that stretch was never watched")


def _sources(rule: SignalRule) -> str:
    """What a rule reads, as its policy names it."""
    if rule.kind == "ratio":
        numerator = rule.numerator or rule.numerator_query
        denominator = rule.denominator or rule.denominator_query
        return f"{numerator} with {denominator}"
    return rule.metric or rule.query or rule.name


def _more_time(missing: float, per_second: float, pace: str = "traffic") -> str:
    """How much longer `missing` takes at `per_second`: requests come with traffic, a
    signal's samples at the pace of its scrapes (or query steps)."""
    if per_second <= 0:
        return " (no traffic: cannot tell how long)"
    return f" (about {format_duration(missing / per_second)} more at the current {pace})"


def _many(z: float) -> str:
    """How many spreads, to a point: against a baseline that never moved, thousands."""
    return f"{z:.1f}" if z < 1000 else "over 1000"


def _fmt(value: float, rule: SignalRule) -> str:
    """A value of `rule`'s signal in its unit, as the verdict's tables show it."""
    return format_value(unit_of({"signal": rule.name, "kind": rule.kind, "limit": rule.limit,
                                 "leak": rule.leak}), value)


def _share(change: float, scale: float) -> float:
    """A finding's effect or bound as a share of its yardstick (the baseline's level, or its
    noise where that is larger); NaN (null in JSON) against a baseline that is exactly zero
    and never moved, where no share means anything."""
    return float(change / scale) if scale > SCALE_FLOOR else float("nan")


def _relative(change: float, baseline: float, noise: float) -> str:
    """'+12.5%, ': the change as a share of the level it is measured from; nothing where
    that level is within the noise of zero (0 -> 0.4 is no meaningful percentage)."""
    if baseline == 0 or abs(baseline) < noise:
        return ""
    return f"{_pct(change / abs(baseline))}, "


def _pct(value: float, signed: bool = True) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.2f}%"
