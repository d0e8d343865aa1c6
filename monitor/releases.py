"""The release state machine: smoke -> verification -> watching -> done.

Each step reads and writes the store, so a daemon restarted at any instant picks up
where it stopped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import Any

from baselines.frame import SignalFrame
from baselines.selection import choose_baselines
from baselines.summary import Baseline, SignalBaseline, merge, summarize
from monitor.clock import Clock
from monitor.commands import Stopped
from monitor.deadlines import Interrupter, interruptible
from monitor.durations import format_duration
from monitor.errors import AlreadyJudged, ScrapeError, UnknownRelease
from monitor.evaluate import Evaluation, JudgeState, evaluate
from monitor.findings import INCONCLUSIVE, PASS, PENDING, ROLLBACK
from monitor.health import attempted
from monitor.hooks import HookRunner, claims
from monitor.policy import MonitorConfig, ServicePolicy, SignalRule
from monitor.promql import PromClient, promql_frame
from monitor.redact import redact_url
from monitor.scrape_check import unqueried
from monitor.signals import RawSeries, baseline_layouts, derive
from monitor.snapshot import TargetHealth
from monitor.stages import CheckResult, run_command, run_probe
from monitor.store import Release, Store
from monitor.views import signal_views

SMOKE, VERIFICATION, WATCHING, DONE = "smoke", "verification", "watching", "done"
# What an evaluation gave: the result and signal views, or the data source's error; and
# how long it took.
_Evaluated = tuple[Evaluation | None, list[dict[str, Any]], str, float]

log = logging.getLogger("release_monitor")

# How far back the metric names a PromQL service's queries select are looked for, and how
# often a server that fails to list them is asked.
NAMES_LOOKBACK = 7 * 86400.0
NAMES_TRIES = 3


@dataclass(frozen=True)
class StageRunners:
    """How smoke probes and verification commands run (replaced in tests)."""

    probe: Callable[..., CheckResult] = run_probe
    command: Callable[..., CheckResult] = run_command


def _attempted(result: CheckResult, attempt: int) -> CheckResult:
    """A probe's result, saying which attempt it came from after the first."""
    if attempt == 1:
        return result
    return replace(result, detail=f"{result.detail} (attempt {attempt})")


def _judged_as(release: Release) -> tuple[str, float, str]:
    """What an evaluation of the release depends on besides its samples."""
    return release.change_class, release.period, release.judge_state


class Releases:
    """Registers releases and moves each one through its stages."""

    def __init__(self, config: MonitorConfig, store: Store, clock: Clock,
                 runners: StageRunners | None = None, hooks: HookRunner | None = None,
                 stage_pool: Executor | None = None) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.runners = runners or StageRunners()
        self.hooks = hooks or HookRunner(store, clock)
        # Live, probes and verification commands (minutes, some of them) run in this pool
        # so the loop keeps scraping; their results are recorded back in the loop's thread.
        self.stage_pool = stage_pool
        self._stage_runs: dict[int, Future[list[CheckResult] | None]] = {}
        self.last_evaluation: dict[int, float] = {}
        # Releases whose baselines this process has chosen again with its policy.
        self._rebased: set[int] = set()
        # Releases whose targets have reported their version (see `_runs`).
        self._running: set[int] = set()
        # Per service, the error of a source that is failing now (set by the daemon).
        self.source_errors: dict[str, str] = {}
        self._resummarized: set[int] = set()   # stale baselines summarized again (or tried)
        # Per service, why the version its targets run cannot be told ("" when it can).
        self.unversioned: dict[str, str] = {}
        self.prom_clients: dict[tuple[str, int], PromClient] = {}
        # Services whose queries' metric names were checked (or are being), and the
        # failed tries of the others: a server that cannot list them is asked no more.
        self._queries_checked: set[str] = set()
        self._names_failures: Counter[str] = Counter()
        self._names_lock = threading.Lock()
        # Per service read by PromQL, how its query API answered (once it was asked).
        self.query_apis: dict[str, TargetHealth] = {}
        # Evaluations under way in the pool: the release as it was asked about, and when.
        self._evaluations: dict[int, tuple[Release, float, Future[_Evaluated]]] = {}
        # Wakes the daemon's loop, to take up a finished evaluation at once.
        self.wake: Callable[[], None] = lambda: None
        # Cuts short the queries and probes under way when the daemon stops.
        self.interrupter = Interrupter()

    def policy(self, service: str) -> ServicePolicy:
        return self.config.service(service)

    def start(self, service: str, version: str, *, change_class: str | None = None,
              at: float | None = None) -> Release:
        """Register a deploy; the baseline is chosen now and kept with the release."""
        return self.register(service, version, change_class=change_class, at=at)[0]

    def register(self, service: str, version: str, *, change_class: str | None = None,
                 at: float | None = None) -> tuple[Release, bool]:
        """Register a deploy: the release, and whether it is new.

        A new release is "minor" unless `change_class` says otherwise. A version registered
        before keeps its start and baseline (a pipeline's retry, or the daemon saw its
        version label first); while it is being judged, a `change_class` given replaces
        the one it had, with its checking period, when that is no shorter: the daemon can
        only guess, the pipeline knows, and a retried step that always says `minor` must
        not end a major change's check early. Once judged, it is AlreadyJudged: a verdict
        is never taken back, and a new deploy needs a new version.
        """
        policy = self.policy(service)
        when = self.clock.now() if at is None else at
        try:
            known: Release | None = self.store.release(service, version)
        except UnknownRelease:
            known = None
        if known is None:
            chosen = choose_baselines(self.store, service, before=when, count=policy.baselines)
            known, new = self.store.add_release(
                service, version, at=when, change_class=change_class or "minor",
                period=policy.period(change_class or "minor"),
                baselines=tuple(r.version for r in chosen),
            )
            if new:
                return known, True
        if known.state == DONE:
            raise AlreadyJudged(
                f"{service} {version} was registered before and judged already "
                f"({known.verdict}); a new deploy needs a new version (one rolled back to needs no "
                "registration: the monitor keeps judging the next release against it)")
        if change_class is not None and known.change_class != change_class:
            if policy.period(change_class) < policy.period(known.change_class):
                # A retried step that always says `minor` must not end a migration's check.
                log.info("%s %s registered again as a %s change: kept as %s, since a "
                         "checking period under way is never shortened", service, version,
                         change_class, known.change_class)
                return known, False
            known = self._reclassify(known, change_class, policy)
            if known.state == DONE:   # judged between the read above and this write
                raise AlreadyJudged(
                    f"{service} {version} was judged ({known.verdict}) as it was registered "
                    "again; a new deploy needs a new version")
        return known, False

    def _reclassify(self, release: Release, change_class: str,
                    policy: ServicePolicy) -> Release:
        """The change class and the policy's checking period for it. The period's end moves:
        the judge's note of when it passed no longer holds."""
        judge_state = replace(JudgeState.from_json(release.judge_state), over_at=None)
        return self.store.reclassify(release.id, change_class=change_class,
                                     period=policy.period(change_class),
                                     judge_state=judge_state.to_json())

    def advance(self, release: Release) -> Release:
        """Do whatever is due for one release now."""
        policy = self.config.services.get(release.service)
        if policy is None:
            return self._outside_policy(release)
        if release.state != DONE and release.period != policy.period(release.change_class):
            release = self._take_policy_period(release, policy)
        if release.state in (SMOKE, VERIFICATION) and release.id not in self._rebased:
            release = self._take_policy_baselines(release, policy)
        if release.state == SMOKE and self._awaits_deploy(release, policy):
            if self.clock.now() < release.started_at + release.period:
                return self._waiting_for_deploy(release)
            return self._never_deployed(release)
        if release.state == SMOKE:
            return self._smoke(release)
        if release.state == VERIFICATION:
            return self._verification(release)
        if release.state == WATCHING:
            return self._watch(release)
        return release

    def _awaits_deploy(self, release: Release, policy: ServicePolicy) -> bool:
        """Whether the smoke test waits for the release to run: a version registered before
        its deploy would have its predecessor probed in its name. Only a version label can
        tell what runs."""
        return bool(policy.version_metric and policy.targets) and not self._runs(release)

    def _waiting_for_deploy(self, release: Release) -> Release:
        """The release as it waits, its pending reason saying for what (said once)."""
        reason = f"waiting for a target to report version {release.version!r} before its smoke test"
        if release.reason == reason:
            return release
        log.info("%s %s: %s", release.service, release.version, reason)
        return self.store.add_verdict(
            release.id, at=self.clock.now(), verdict=PENDING, reason=reason, findings=[],
            first_alarm_at=None, decided_at=None, state=release.state,
            judge_state=release.judge_state)

    def _never_deployed(self, release: Release) -> Release:
        """A release whose targets never reported its version within its checking period:
        nothing of it was seen, so nothing is judged."""
        now = self.clock.now()
        reason = (f"never deployed: no target reported version {release.version!r} within "
                  f"its {format_duration(release.period)} checking period"
                  f"{self._other_versions(release, now)}")
        decided = self.store.add_verdict(
            release.id, at=now, verdict=INCONCLUSIVE, reason=reason, findings=[],
            first_alarm_at=None, decided_at=now, state=DONE, judge_state=release.judge_state,
            claims=self._claims(release, INCONCLUSIVE))
        # A person decides what to do with a deploy that never happened: its hooks hear of it.
        return self._announce(release, decided)

    def _outside_policy(self, release: Release) -> Release:
        """A release of a service the policy does not name (a typo given to `release start`
        without the policy, a service since removed): nothing can judge it, so it is
        inconclusive at once rather than pending for ever."""
        known = ", ".join(sorted(self.config.services)) or "none"
        now = self.clock.now()
        decided = self.store.add_verdict(
            release.id, at=now, verdict=INCONCLUSIVE,
            reason=f"service {release.service!r} is not in the policy (services: {known})",
            findings=[], first_alarm_at=None, decided_at=now, state=DONE,
            judge_state=release.judge_state)
        log.warning("%s %s: INCONCLUSIVE: %s", release.service, release.version, decided.reason)
        return decided

    def _take_policy_period(self, release: Release, policy: ServicePolicy) -> Release:
        """The policy's checking period for the release's change class: it was registered
        with another (`release start` without the policy uses the defaults)."""
        log.info("%s %s: checking period %s, the policy's for a %s change (registered with %s)",
                 release.service, release.version,
                 format_duration(policy.period(release.change_class)),
                 release.change_class, format_duration(release.period))
        return self._reclassify(release, release.change_class, policy)

    def _take_policy_baselines(self, release: Release, policy: ServicePolicy) -> Release:
        """The baselines the policy chooses (`baselines = N`), once per process, before the
        release is judged against any: `release start` without the policy chose one."""
        self._rebased.add(release.id)
        chosen = tuple(r.version for r in choose_baselines(
            self.store, release.service, before=release.started_at, count=policy.baselines))
        if chosen == release.baselines:
            return release
        log.info("%s %s: baseline %s, the policy's (registered with %s)", release.service,
                 release.version, "+".join(chosen) or "none", release.baseline or "none")
        return self.store.rebase(release.id, chosen)

    def _smoke(self, release: Release) -> Release:
        policy = self.policy(release.service)

        def probe_all() -> list[CheckResult] | None:
            """Every probe; those failing again, all together, up to `smoke_attempts` rounds
            (None: the daemon stopped meanwhile, and the stage runs again at the next start)."""
            results: dict[int, CheckResult] = {}
            for attempt in range(1, policy.smoke_attempts + 1):
                with interruptible(self.interrupter):
                    for index, probe in enumerate(policy.smoke):
                        if index not in results or not results[index].ok:
                            results[index] = _attempted(self.runners.probe(probe), attempt)
                if all(r.ok for r in results.values()) or attempt == policy.smoke_attempts:
                    break
                wait_until = self.clock.now() + policy.smoke_retry_wait
                if not self.clock.sleep_until(wait_until, self.hooks.stopping):
                    return None
            return [results[index] for index in range(len(policy.smoke))]

        results = self._stage(release, probe_all)
        if results is None:
            return release
        return self._after_stage(release, SMOKE, results, VERIFICATION)

    def _verification(self, release: Release) -> Release:
        policy = self.policy(release.service)
        env = {"RELEASE_SERVICE": release.service, "RELEASE_VERSION": release.version}

        def run_all() -> list[CheckResult] | None:
            results = []
            for command in policy.verify:
                try:
                    results.append(self.runners.command(command, env, self.hooks.stopping))
                except Stopped:
                    return None   # cut short: the stage runs again after the next start
                if not results[-1].ok:
                    break
            return results

        results = self._stage(release, run_all)
        if results is None:
            return release
        return self._after_stage(release, VERIFICATION, results, WATCHING)

    def _stage(self, release: Release,
               work: Callable[[], list[CheckResult] | None]) -> list[CheckResult] | None:
        """The stage's results, or None while it still runs in the pool (or was cut short
        by the monitor's stop, and stays to run again)."""
        if self.stage_pool is None:
            return work()
        running = self._stage_runs.get(release.id)
        if running is None:
            future = self._stage_runs[release.id] = self.stage_pool.submit(work)
            future.add_done_callback(lambda _: self.wake())   # the next stage at once
            return None
        if not running.done():
            return None
        del self._stage_runs[release.id]
        return running.result()

    def _after_stage(self, release: Release, stage: str, results: Sequence[CheckResult],
                     following: str) -> Release:
        now = self.clock.now()
        failed = [r for r in results if not r.ok]
        # The results and what they decide, in one transaction: a crash between the two
        # would run the stage again and store a second set of results beside the first.
        with self.store.transaction():
            for result in results:
                self.store.add_check(release.id, stage=stage, name=result.name, ok=result.ok,
                                     detail=result.detail, at=now)
            if not failed:
                # What it waited for (its deploy) is over.
                return self.store.update_release(release.id, state=following, reason="")
            reason = f"{stage} failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
            findings = [{"signal": r.name, "detector": stage, "severity": "major",
                         "baseline": None, "candidate": None, "effect": None,
                         "detail": r.detail} for r in failed]
            decided = self.store.add_verdict(
                release.id, at=now, verdict=ROLLBACK, reason=reason, findings=findings,
                first_alarm_at=now, decided_at=now, state=DONE, judge_state=release.judge_state,
                claims=self._claims(release, ROLLBACK),
            )
        return self._announce(release, decided)   # hooks fire once the verdict is stored

    def _watch(self, release: Release) -> Release:
        policy = self.policy(release.service)
        running = self._evaluations.get(release.id)
        if running is not None:
            asked, at, future = running
            if not future.done():
                return release
            del self._evaluations[release.id]
            if _judged_as(release) != _judged_as(asked):
                # Reclassified meanwhile: that evaluation judged another period. Again, now.
                self.last_evaluation[release.id] = -math.inf
            else:
                release = self._judged(release, at, future.result)
                if release.state != WATCHING:
                    return release
        now = self.clock.now()
        last = self.last_evaluation.get(release.id)
        if last is None:
            last = self._evaluated_before(release)
        end = release.started_at + release.period
        # Every evaluation interval, and once as soon as the period is over.
        due = now - last >= policy.evaluation_interval - 1e-6 or (now >= end and last < end)
        if not due:
            return release
        self.last_evaluation[release.id] = now
        if policy.prometheus is not None and self.stage_pool is not None:
            # Live, a slow query API holds a pool thread, not the loop and every other
            # service's scrapes; the result is taken up at a later step.
            future = self.stage_pool.submit(self._timed_evaluation, release, now)
            future.add_done_callback(lambda _: self.wake())
            self._evaluations[release.id] = (release, now, future)
            return release
        return self._judged(release, now, lambda: self._timed_evaluation(release, now))

    def _evaluated_before(self, release: Release) -> float:
        """When a release was last judged before this process took it up (its start if
        never): a daemon restarting in a loop must not judge it at every start, which past
        the period's end (when evaluations count without new samples) would make one
        sighting persist within seconds."""
        judged = JudgeState.from_json(release.judge_state).judged_at
        return release.started_at if judged is None else max(judged, release.started_at)

    def _timed_evaluation(self, release: Release, now: float) -> _Evaluated:
        started = time.monotonic()
        try:
            result, views = self.evaluate(release, now)
        except ScrapeError as exc:
            return None, [], str(exc), time.monotonic() - started
        return result, views, "", time.monotonic() - started

    def _judged(self, release: Release, now: float, evaluated: Callable[[], _Evaluated]
                ) -> Release:
        """Store what an evaluation at `now` found."""
        policy = self.policy(release.service)
        result, views, error, seconds = evaluated()
        if policy.prometheus is not None:
            self._query_api_attempted(release.service, policy, error, now, seconds)
        if result is None:
            # No verdict from data that could not be read; at the end of the period that
            # is inconclusive, never a pass or a rollback.
            if now < release.started_at + release.period:
                if release.verdict != PENDING or release.reason.endswith(error):
                    return release
                # Said now, not only when the period ends.
                return self.store.add_verdict(
                    release.id, at=now, verdict=PENDING, reason=f"data source failing: {error}",
                    findings=[], first_alarm_at=release.first_alarm_at, decided_at=None,
                    state=WATCHING, judge_state=release.judge_state, period=release.period)
            decided = self.store.add_verdict(
                release.id, at=now, verdict=INCONCLUSIVE, reason=f"data source failing: {error}",
                findings=[], first_alarm_at=release.first_alarm_at, decided_at=now, state=DONE,
                judge_state=release.judge_state, claims=self._claims(release, INCONCLUSIVE),
                period=release.period,
            )
            return self._announce(release, decided)
        if policy.prometheus is not None:
            self.source_errors[release.service] = ""   # the query API answered this time
        reason = result.reason
        failing = self.source_errors.get(release.service, "")
        if failing and result.verdict in (PENDING, INCONCLUSIVE):
            # First: the signals' "no samples" that follow are its consequence, not typos.
            reason = "; ".join(filter(None, (f"data source failing: {failing}", reason)))
        unversioned = self.unversioned.get(release.service, "")
        if unversioned and result.verdict in (PENDING, INCONCLUSIVE, PASS):
            # Judged on samples no target said were this version's: no pass on them.
            if result.verdict == PASS:
                result, reason = replace(result, verdict=INCONCLUSIVE), ""
            reason = "; ".join(filter(None, (reason, unversioned)))
        # The judge's memory (streaks) must be kept even when the verdict stays: a hotfix
        # has to be able to escalate to a rollback.
        changed = (result.verdict != release.verdict or result.done
                   or result.verdict == PENDING and release.verdict == PENDING
                   or result.state.to_json() != release.judge_state)
        if not changed:
            return release
        stored = self.store.add_verdict(
            release.id, at=now, verdict=result.verdict, reason=reason,
            findings=[f.to_dict() for f in result.findings],
            first_alarm_at=result.first_alarm_at, decided_at=result.decided_at,
            state=DONE if result.done else WATCHING, judge_state=result.state.to_json(),
            signals=views, claims=self._claims(release, result.verdict), period=release.period,
        )
        return self._announce(release, stored)

    def _query_api_attempted(self, service: str, policy: ServicePolicy, error: str, now: float,
                             seconds: float) -> None:
        assert policy.prometheus is not None
        health = self.query_apis.get(service) or TargetHealth(
            service, redact_url(policy.prometheus.url), False, 0.0, 0.0, 0, 0, 0, query_api=True)
        # Queries store no samples: the query API keeps them.
        self.query_apis[service] = attempted(health, error=error, at=now, seconds=seconds,
                                             samples=0)

    def _claims(self, before: Release, verdict: str) -> list[tuple[str, str]]:
        """The hooks `_announce` will fire, claimed in the verdict's own transaction."""
        if verdict == before.verdict or verdict == PENDING or self._replaced(before):
            return []
        return claims(before.service, before.version, verdict, self.policy(before.service).hooks)

    def _announce(self, before: Release, after: Release) -> Release:
        """Fire the hooks when a verdict is reached or changes (never for pending)."""
        if after.verdict != before.verdict and after.verdict != PENDING:
            log.info("%s %s: %s%s", after.service, after.version, after.verdict.upper(),
                     f": {after.reason}" if after.reason else "")
            if self._replaced(after):
                # The hooks act on what runs now: a rollback of the newer release (the fix,
                # often) for the verdict of the one it replaced would undo the wrong one.
                log.info("%s %s: replaced by a newer release, so no hook fires", after.service,
                         after.version)
            else:
                self.hooks.dispatch(after, self.policy(after.service).hooks)
        return after

    def _replaced(self, release: Release) -> bool:
        return self._neighbours(release)[1] is not None

    def resume_hooks(self) -> int:
        """Deliver again, with their original keys, hooks a crash left unfinished."""
        resumed = 0
        for release_id, action in self.store.unfinished_actions():
            release = next((r for r in self.store.releases() if r.id == release_id), None)
            if release is None or release.service not in self.config.services:
                continue
            hook = next((h for h in self.policy(release.service).hooks if h.name == action.hook),
                        None)
            if hook is not None and release.verdict == action.verdict:
                self.hooks.resume(release, hook, action.key)
                resumed += 1
        return resumed

    def evaluate(self, release: Release, now: float) -> tuple[Evaluation, list[dict[str, Any]]]:
        """Run the evaluation core on what the store holds for this release; also return
        a compact view of each signal for sparklines, reports and dashboards."""
        policy = self.policy(release.service)
        baseline, found_bad = self.baseline(release, policy)
        # Histograms that added buckets since the baseline: read over the baseline's bounds.
        frame = self.frame(policy, release.service, release.started_at, now + 1e-6,
                           version=release.version, within=baseline_layouts(baseline))
        earlier, following = self._neighbours(release)
        # The service's first release, even once a later one has replaced it; or the first
        # after releases that all rolled back or were found bad, which no baseline can
        # ever come from.
        first = not release.baselines and not earlier
        result = evaluate(
            policy, baseline, frame, started=release.started_at, period=release.period, now=now,
            state=JudgeState.from_json(release.judge_state), first_release=first,
            until=following,
        )
        if frame.times.size == 0 and policy.prometheus is None and result.verdict == INCONCLUSIVE:
            result = replace(result, reason=result.reason + self._other_versions(release, now))
        if found_bad and baseline is None and result.verdict == INCONCLUSIVE:
            # Not "no healthy earlier release": there was one, until it was found bad.
            result = replace(result, reason=(
                f"its baseline {'+'.join(found_bad)} was found bad (invalidated) while it "
                "was judged, and nothing else was compared with"))
        elif found_bad and baseline is not None:
            # Its record still names the baselines it was registered with: say which counted.
            note = (f"its baseline {'+'.join(found_bad)} was found bad (invalidated) while it "
                    f"was judged: compared with {baseline.label} alone")
            result = replace(result, reason="; ".join(filter(None, (result.reason, note))))
        return result, signal_views(policy.signals, baseline, frame, started=release.started_at)

    def _other_versions(self, release: Release, now: float) -> str:
        """Why a release has no scrape at all, when its targets report other versions: a
        version given to `release start` that is not the version label's value, say."""
        seen = self.store.versions_scraped(release.service, release.started_at, now + 1e-6)
        others = [v for v in seen if v != release.version]
        if not others:
            return ""
        return (f"; the targets report version {', '.join(repr(v) for v in others)}, "
                f"not {release.version!r}")

    def frame(self, policy: ServicePolicy, service: str, start: float, end: float, *,
              version: str | None, within: Mapping[str, tuple[float, ...]] | None = None
              ) -> SignalFrame:
        """A release's signals: by PromQL when the service has a query API, else from the
        samples this monitor scraped itself (histograms read `within` a baseline's bounds,
        as `derive` does)."""
        if policy.prometheus is not None:
            return self._promql_frame(policy, service, start, end, version=version)
        keys = self.store.series_keys(service)
        # Only the series the rules read: a service exports many more than it is judged on.
        wanted = judged_metric_names(policy)
        series = [i for i, key in keys.items() if key.split("{", 1)[0] in wanted]
        window = self.store.read_window(service, start, end, version=version, series=series)
        raw = RawSeries(
            keys=tuple(keys.get(int(i), "") for i in window.series_ids),
            times=window.times, targets=window.targets, values=window.values,
        )
        return derive(judged_rules(policy), raw, within=within)

    def _promql_frame(self, policy: ServicePolicy, service: str, start: float, end: float, *,
                      version: str | None) -> SignalFrame:
        source = policy.prometheus
        assert source is not None
        # One client (and HTTP session) per thread: the pool may evaluate two releases of
        # a service at once, and a session shared between threads can mix up connections.
        key = (service, threading.get_ident())
        client = self.prom_clients.get(key)
        if client is None:
            client = self.prom_clients[key] = PromClient(source, clock=self.clock,
                                                         stopping=self.hooks.stopping,
                                                         interrupter=self.interrupter)
        frame = promql_frame(client, judged_rules(policy), start=start, end=end,
                             step=source.step,
                             variables={"service": service, "version": version or ""})
        if self._names_due(service):
            self._check_queries(client, policy, service, end)
        return frame

    def _names_due(self, service: str) -> bool:
        """Whether this thread is to check the service's queries' metric names now (two
        releases of a service may be judged at once: one checks)."""
        with self._names_lock:
            due = service not in self._queries_checked
            self._queries_checked.add(service)
        return due

    def _check_queries(self, client: PromClient, policy: ServicePolicy, service: str,
                       now: float) -> None:
        """Warn, once per service, of each metric a query selects that the server held no
        series of over the last NAMES_LOOKBACK: a misspelt errors counter under
        `or vector(0)` reads as no errors at all."""
        try:
            names = client.metric_names(now - NAMES_LOOKBACK, now)
        except ScrapeError as exc:   # the queries still work: asked again next time, twice
            with self._names_lock:
                self._names_failures[service] += 1
                if self._names_failures[service] < NAMES_TRIES:
                    self._queries_checked.discard(service)
            log.info("%s: metric names not checked: %s", service, exc)
            return
        for line in unqueried(judged_rules(policy), names):
            log.warning("%s: %s at %s", service, line, client.where)

    def baseline(self, release: Release,
                 policy: ServicePolicy) -> tuple[Baseline | None, list[str]]:
        """The stored baseline of the release's chosen baseline release(s), built on demand,
        and those of them found bad (invalidated) since they were chosen, left out."""
        parts, found_bad = [], []
        for version in release.baselines:
            chosen = self.store.release(release.service, version)
            if chosen.invalidated:
                found_bad.append(version)   # no yardstick for anything now
                continue
            part = self.baseline_of(chosen, policy)
            if part is not None:
                parts.append(part)
        return (merge(parts) if parts else None), found_bad

    def baseline_of(self, healthy: Release, policy: ServicePolicy) -> Baseline | None:
        stored = self.store.load_baseline(healthy.id)
        if stored:
            signals = {name: SignalBaseline.from_summary(summary, reservoir)
                       for name, (summary, reservoir) in stored.items()}
            stale = {r.name for r in policy.signals if _stale(r, stored.get(r.name))}
            # Quantiles stored before their buckets were kept: summarized again if they can
            # be, else compared as they are.
            unlaid = {r.name for r in policy.signals if r.kind == "quantile"
                      and r.name in stored and "layout" not in stored[r.name][0]} - stale
            # Ratios whose daily profile was fitted on per-interval medians: again, if they
            # can be, else judged without it (its offsets were wrong where errors are rare).
            unpooled = {r.name for r in policy.signals if r.kind == "ratio" and r.name in stored
                        and stored[r.name][0].get("hourly")
                        and not stored[r.name][0].get("hourly_pooled")} - stale
            if not stale and not unlaid and not unpooled:
                return Baseline((healthy.version,), signals)
            # Summarized under another definition of a signal (a metric name since put
            # right), or before it was in the policy: those again, while samples last (the
            # others keep their summaries, made when every sample was there).
            fresh = self._summarized(healthy, policy, only=stale | unlaid | unpooled) \
                if healthy.id not in self._resummarized else None
            self._resummarized.add(healthy.id)
            kept = {name: replace(part, hourly=None, deseasonalized_events=float("nan"))
                    if name in unpooled else part
                    for name, part in signals.items() if name not in stale}
            return Baseline((healthy.version,), {**kept, **(fresh.signals if fresh else {})})
        return self._summarized(healthy, policy)

    def _summarized(self, healthy: Release, policy: ServicePolicy,
                    only: set[str] | None = None) -> Baseline | None:
        """The release's baseline (of the signals named `only`, or all) summarized from its
        stored samples, and saved (None when none are left)."""
        end = self._end_of(healthy)
        start = max(healthy.started_at, end - policy.baseline_window)
        frame = self.frame(policy, healthy.service, start, end, version=healthy.version)
        if frame.times.size == 0:
            return None
        leaks = [r.name for r in policy.signals if r.leak]
        signals = {name: summary for name, summary in
                   summarize(frame, leak_signals=leaks, leak_block=policy.leak_block).items()
                   if only is None or name in only}
        definitions = {r.name: r.definition() for r in policy.signals}
        self.store.save_baselines(healthy.id, {
            name: ({**summary.to_summary(), **_defined(definitions.get(name))}, summary.reservoir)
            for name, summary in signals.items()})
        return Baseline((healthy.version,), signals)

    def keep_baselines(self, before: float, *, since: float = float("-inf")) -> int:
        """Summarize, while their samples last, the releases that may yet be a baseline and
        whose window loses samples when those taken before `before` are pruned (`since`:
        the previous such cut, before which nothing was left to save). A baseline is
        otherwise summarized when a later release first needs it, which may be after a
        rolled-back release and a long retention. Returns how many were summarized."""
        kept = 0
        for service, policy in self.config.services.items():
            if policy.prometheus is not None:
                continue   # its samples live in Prometheus: pruning here takes none of them
            releases = self.store.releases(service)
            for release in releases:
                if release.state != DONE or release.why_not_pinnable() is not None:
                    continue
                end = _next_start(release, releases)
                if end is None:
                    continue   # still running: summarized from its latest samples when needed
                start = max(release.started_at, end - policy.baseline_window)
                if start >= before or end <= since or self.store.load_baseline(release.id):
                    continue
                kept += self.baseline_of(release, policy) is not None
        return kept

    def _end_of(self, release: Release) -> float:
        """A release is running until the next release of its service starts."""
        following = self._neighbours(release)[1]
        return following if following is not None else self.clock.now()

    def without_yardstick(self, release: Release) -> bool:
        """Whether the release has no baseline though releases came before it that could
        have been one (still judged, or ended in a hotfix or inconclusive): it will end
        inconclusive. A service's first release, or the first after rollbacks only, is
        judged on smoke, verification and leaks instead."""
        return not release.baselines and self._neighbours(release)[0]

    def _neighbours(self, release: Release) -> tuple[bool, float | None]:
        """Whether another release of the service that could be a baseline (not rolled
        back, not invalidated) started no later than this one, and when the next one
        started (if one has): one read of the service's releases."""
        others = [r for r in self.store.releases(release.service) if r.id != release.id]
        earlier = any(r.started_at <= release.started_at and r.verdict != ROLLBACK
                      and not r.invalidated for r in others)
        later = [r for r in others if r.started_at > release.started_at
                 and r.verdict != ROLLBACK and self._runs(r)]
        return earlier, _next_start(release, later)

    def _runs(self, release: Release) -> bool:
        """Whether a release has taken over: its targets have reported its version (a
        version registered before its deploy, or never deployed, replaces nothing). A
        service read by PromQL has no scrapes to tell: its registration counts."""
        policy = self.config.services.get(release.service)
        if policy is None or policy.prometheus is not None or release.id in self._running:
            return True
        if self.store.version_scraped_since(release.service, release.version, release.started_at):
            self._running.add(release.id)   # once it has run, it has taken over for good
            return True
        return False


def _next_start(release: Release, releases: Sequence[Release]) -> float | None:
    """When the next release of the service started after `release` (None: none has). One
    rolled back replaced nothing: the release before it runs again."""
    later = [r.started_at for r in releases
             if r.started_at > release.started_at and r.verdict != ROLLBACK]
    return min(later) if later else None


def judged_metric_names(policy: ServicePolicy) -> set[str]:
    """Every metric name the policy's rules read (histograms by their bucket series)."""
    names: set[str] = set()
    for rule in judged_rules(policy):
        for selector in (rule.metric, rule.numerator, rule.denominator):
            if selector:
                name = selector.split("{", 1)[0].strip()
                names.update((name, f"{name}_bucket"))
    return names


def judged_rules(policy: ServicePolicy) -> list[SignalRule]:
    """The policy's signals plus a hidden gauge for each memory limit read from a metric."""
    rules = list(policy.signals)
    for rule in policy.signals:
        if rule.leak and rule.limit_metric:
            rules.append(SignalRule(name=f"{rule.name}:limit", kind="gauge",
                                    metric=rule.limit_metric, aggregate="max"))
    return rules


def _stale(rule: SignalRule, stored: tuple[dict[str, Any], Any] | None) -> bool:
    """Whether a stored summary no longer stands for the rule: missing, made under another
    definition, or (stored before definitions were) without a sample."""
    if stored is None:
        return True
    summary = stored[0]
    if "definition" in summary:
        return bool(summary["definition"] != rule.definition())
    return int(summary.get("count", 0)) == 0


def _defined(definition: str | None) -> dict[str, str]:
    return {"definition": definition} if definition is not None else {}
