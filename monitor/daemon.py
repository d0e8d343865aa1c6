"""The sidecar loop: scrape targets, notice new versions, move releases on, publish.

Every step takes its time from one clock, so the same loop runs live on the wall clock
and in the demo, replay and tests on a simulated one that never sleeps.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import requests

from monitor.allocator import cap_malloc_arenas, return_free_memory
from monitor.clock import Clock
from monitor.deadlines import interruptible
from monitor.errors import MonitorError, ScrapeError, StoreError
from monitor.exposition import ParsedScrape, split_key
from monitor.fetch import scrape
from monitor.health import attempted, gist
from monitor.hooks import HookRunner
from monitor.names import name_problem
from monitor.policy import MonitorConfig, ServicePolicy, Target
from monitor.releases import Releases, judged_metric_names, judged_rules
from monitor.scrape_check import scraped_names, unread
from monitor.snapshot import RECENT_RELEASES, Snapshot, SnapshotBox, TargetHealth
from monitor.store import Release, Store
from monitor.verdicts import document

log = logging.getLogger("release_monitor")

PRUNE_EVERY = 3600.0
# The first prune comes this soon after a start: a daemon restarted more often than once
# an hour (a crash loop, a sidecar redeployed with its service) must still prune.
PRUNE_FIRST = 300.0
# How many times its targets' max_series a service's stored series may grow to with the
# metrics its policy reads (releases that rename series, new label values over a week).
SERIES_HISTORY = 10
HOOK_WORKERS = 8
# After a step failed in a way nothing else caught, the next try (not a busy loop).
STEP_RETRY_SECONDS = 5.0
# A store that refused writes works again once none was refused for this long.
STORE_RECOVERY_SECONDS = 60.0
# Scrapes of hanging targets hold a worker until their deadline; enough workers keep the
# healthy targets on time even when a tenth of a thousand targets hang.
_MAX_SCRAPE_WORKERS = 256


@dataclass
class _TargetState:
    service: str
    target: Target
    due: float
    health: TargetHealth
    in_flight: Future[_Fetched] | None = None
    started: float = 0.0
    unstored: bool = False   # the last scrape was fetched but the store refused it
    planned: float = 0.0  # when the scrape in flight (or the last one) was due
    # Whether the last stored scrape carried the policy's version_metric (None: no scrape
    # yet, or the policy names none).
    versioned: bool | None = None


_Fetched = tuple[ParsedScrape | None, str, float]


Scraper = Callable[[Target, requests.Session], ParsedScrape]
# (target without credentials, planned time, time the scrape began), from the scraping thread.
ScrapeStartHook = Callable[[str, float, float], None]


def _scrape(target: Target, session: requests.Session) -> ParsedScrape:
    return scrape(target.url, timeout=target.timeout, max_bytes=target.max_bytes,
                  max_series=target.max_series, session=session)


class Daemon:
    """The loop. The store is written from this thread only; scrapes (live) and hooks run
    in pools beside it and hand their results back to it."""

    def __init__(self, config: MonitorConfig, store: Store, clock: Clock, *,
                 box: SnapshotBox | None = None, releases: Releases | None = None,
                 scraper: Scraper = _scrape, live: bool = False) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.box = box or SnapshotBox()
        # Live, scrapes and hooks (which retry for minutes) run beside the loop so that
        # nothing slow delays it; on a simulated clock everything runs inline, in order.
        self.live = live
        # Before the pools make their threads.
        self.arenas_capped = cap_malloc_arenas() if live else False
        # Hooks fire side by side (one slow receiver holds up no other), a few at a time.
        self._hook_pool = ThreadPoolExecutor(HOOK_WORKERS, "hooks") if live else None
        self._stop = threading.Event()
        hooks = HookRunner(store, clock, background=self._hook_pool, stopping=self._stop)
        self._stage_pool = ThreadPoolExecutor(4, "stages") if live else None
        self.releases = releases or Releases(config, store, clock, hooks=hooks,
                                             stage_pool=self._stage_pool)
        self.scraper = scraper
        self.releases.wake = self._wake_soon
        self.box.on_registration = self._wake_soon
        # One session per scraping thread: a session shared between threads lets one thread
        # close or reuse a connection another is still reading (requests#1871).
        self._thread_sessions = threading.local()
        # Per service, the metric names of each target's first scrape, until all have
        # answered and the policy's names are checked against them (`_check_names`).
        self._first_names: dict[str, dict[str, set[str]]] = {}
        self._names_checked: set[str] = set()
        self._series_capped: set[str] = set()   # services warned of leaving series out
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.started_at = clock.now()
        self.targets = [
            _TargetState(name, target, self._first_due(target),
                         TargetHealth(name, target.label, False, 0.0, 0.0, 0, 0, 0))
            for name, policy in config.services.items() for target in policy.targets
        ]
        self.evaluation_seconds = 0.0
        # The recent releases the older ones were last read for, and those older ones.
        self._older_for: tuple[frozenset[tuple[str, str]], Mapping[str, Mapping[str, str]]] = (
            frozenset(), {})
        self.evaluations_total = 0
        self.last_evaluation: float | None = None
        self.store_errors_total = 0
        self.store_error = ""    # the store's failure now ("" while it works)
        self._store_said = ""    # the failure last logged
        self._store_failed_at = float("-inf")
        self._reads_failing_since: float | None = None
        self._errors_seen = 0   # store_errors_total at the last health check
        self._store_failed_reading = False   # the failure now is of reads, not writes
        self.next_prune = self.started_at + PRUNE_FIRST
        self._pruned_before = float("-inf")   # what the last prune removed: before this
        workers = min(_MAX_SCRAPE_WORKERS, len(self.targets))
        self._pool = ThreadPoolExecutor(workers, "scrape") if self.live and workers else None
        self._wake = threading.Event()
        # Load measurements set this to see how late each scrape begins against its plan.
        self.on_scrape_start: ScrapeStartHook | None = None

    def _first_due(self, target: Target) -> float:
        """Live, each target keeps its own phase within its interval, spread by a hash of its
        URL (as Prometheus does), so a thousand targets are not scraped in one burst."""
        if not self.live:
            return self.started_at
        return self.started_at + zlib.crc32(target.url.encode()) / 2**32 * target.interval

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Work until `stop()` is called (SIGTERM and Ctrl-C call it)."""
        if self.live:
            # What is loaded by now (modules, policy, pools) lives as long as the process; kept
            # out of full collections, which otherwise pause every thread (and /metrics) 100+ ms.
            gc.freeze()
        self.releases.resume_hooks()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                due = self.step()
            except Exception:  # noqa: BLE001 - the sidecar outlives any one step's failure
                log.exception("step failed; trying again in %g s", STEP_RETRY_SECONDS)
                due = self.clock.now() + STEP_RETRY_SECONDS
            # Woken early by a finished scrape or by stop(); either way, loop again.
            self.clock.sleep_until(due, self._wake)
        self.close()

    def _wake_soon(self) -> None:
        """Loop again now: a scrape or an evaluation in a pool finished."""
        self._wake.set()

    def stop(self) -> None:
        """Ask `run` to finish its current step and return (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def run_until(self, end: float) -> None:
        """Step a simulated clock forward until `end` (demo, tests)."""
        while self.clock.now() < end:
            due = self.step()
            self.clock.sleep_until(min(due, end))
        self.step()

    def step(self) -> float:
        """Do everything due now; return when something is next due."""
        now = self.clock.now()
        writes = (self.store.writes_ok, self.store.writes_failed)
        self._collect_scrapes()
        self._start_scrapes(now)
        self._register_deploys()
        self._advance_releases()
        if now >= self.next_prune:
            self._prune(now)
        self._store_health(writes)
        self.publish()
        return self._next_due()

    def close(self) -> None:
        # A registration answered 202 is a promise: no more are taken, and those taken are
        # stored before the process ends.
        self.box.close_registrations()
        try:
            self._register_deploys()
        except Exception:  # noqa: BLE001 - the rest of the shutdown must still happen
            log.exception("registrations received before the stop were not all stored")
        # Scrapes, probes and queries under way are of no use now: their sockets are shut
        # down, so the process is not held until their deadlines.
        self.releases.interrupter.interrupt()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._stage_pool is not None:
            # A stage cut short is run again after a restart: the release is still in it.
            self._stage_pool.shutdown(wait=False, cancel_futures=True)
        if self._hook_pool is not None:
            # Retries stop at once (stop() set their event); an attempt under way runs to
            # its time limit, and whatever is undelivered goes out after the next start.
            self._hook_pool.shutdown(wait=True, cancel_futures=True)
        with self._sessions_lock:
            for session in self._sessions:
                session.close()

    # -- scraping ---------------------------------------------------------------------------

    def _start_scrapes(self, now: float) -> None:
        """Start every due scrape; live, in the pool so a hanging target delays nothing."""
        for state in self.targets:
            if state.due > now or state.in_flight is not None:
                continue
            # The next one is planned from this one's planned time, so scrapes do not drift.
            state.planned = state.due
            state.due = max(state.due + state.target.interval, now)
            state.started = now
            if self._pool is None:
                self._record(state, *self._fetch(state), now)
                continue
            future = self._pool.submit(self._fetch, state)
            future.add_done_callback(lambda _: self._wake_soon())
            state.in_flight = future

    def _collect_scrapes(self) -> None:
        """Store the scrapes that finished since the last step (in the daemon thread)."""
        for state in self.targets:
            if state.in_flight is not None and state.in_flight.done():
                try:
                    fetched = state.in_flight.result()
                except Exception as exc:  # noqa: BLE001 - a scraper bug is that target's failure
                    fetched = (None, f"{state.health.target}: {type(exc).__name__}", 0.0)
                state.in_flight = None
                self._record(state, *fetched, state.started)

    def _fetch(self, state: _TargetState) -> _Fetched:
        if self.on_scrape_start is not None:
            self.on_scrape_start(state.health.target, state.planned, self.clock.now())
        started = time.monotonic()
        try:
            with interruptible(self.releases.interrupter):
                return self.scraper(state.target, self._session()), "", time.monotonic() - started
        except ScrapeError as exc:
            return None, str(exc), time.monotonic() - started

    def _session(self) -> requests.Session:
        """This thread's own HTTP session, made on its first scrape."""
        session: requests.Session | None = getattr(self._thread_sessions, "session", None)
        if session is None:
            session = self._thread_sessions.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _record(self, state: _TargetState, parsed: ParsedScrape | None, error: str,
                seconds: float, now: float) -> None:
        health = state.health
        stored = 0
        state.unstored = False
        if parsed is not None:
            try:
                stored = self._store_scrape(state, parsed, now)
            except ScrapeError as exc:
                error = str(exc)   # the target's: more series than the store takes
            except StoreError as exc:
                # The target answered; the store could not keep it: the store's failure,
                # not the target's (its alert and runbook are about the disk).
                self._store_failed(exc)
                state.unstored = True
        state.health = attempted(health, error=error, at=now, seconds=seconds, samples=stored)
        siblings = [s for s in self.targets if s.service == state.service]
        failing = [s.health.last_error for s in siblings if not s.health.up and s.health.last_error]
        self.releases.source_errors[state.service] = failing[0] if failing else ""
        policy = self.config.services[state.service]
        # No target reporting the version: samples go to the release registered last,
        # whatever runs, and a release never deployed would be judged on its predecessor.
        unversioned = [s for s in siblings if s.versioned is not None]
        self.releases.unversioned[state.service] = (
            f"no target reports {policy.version_metric} with a {policy.version_label!r} label "
            "(the policy's version_metric): which version ran cannot be told"
            if unversioned and not any(s.versioned for s in unversioned) else "")

    def _store_failed(self, exc: StoreError) -> None:
        """Count a failed read or write of the store, and log it unless it is the one
        already said (a full disk refuses every scrape until it is freed)."""
        self.store_errors_total += 1
        if gist(str(exc)) != gist(self._store_said):
            log.error("store: %s", exc)
            self._store_said = str(exc)

    def _store_health(self, writes: tuple[int, int]) -> None:
        """After a step, whether the store fails. It fails:
        - while its writes are refused (a full disk), until all have gone in for
          STORE_RECOVERY_SECONDS (a nearly full disk takes some and refuses others);
        - once its reads have failed at every step for STORE_RECOVERY_SECONDS (a damaged
          page; a backup holding the file a moment is no failure), until nothing has
          failed for as long.
        """
        ok = self.store.writes_ok - writes[0]
        failed = self.store.writes_failed - writes[1]
        now = self.clock.now()
        # Failures since the last look, the last step's publishing included.
        errors = self.store_errors_total - self._errors_seen
        self._errors_seen = self.store_errors_total
        if not errors:
            self._reads_failing_since = None
        elif self._reads_failing_since is None:
            self._reads_failing_since = now
        elif now - self._reads_failing_since >= STORE_RECOVERY_SECONDS:
            self.store_error, self._store_failed_at = self._store_said, now
            self._store_failed_reading = True
        if failed:
            self.store_error, self._store_failed_at = self.store.write_error, now
            self._store_failed_reading = False
        elif (self.store_error and now - self._store_failed_at >= STORE_RECOVERY_SECONDS
              and (ok or self._store_failed_reading)):
            log.info("store works again")
            self.store_error = self._store_said = ""

    def _store_scrape(self, state: _TargetState, parsed: ParsedScrape, now: float) -> int:
        policy = self.config.services[state.service]
        version = self._version(policy, parsed)
        if policy.version_metric:
            if version is None and state.versioned is not False:
                log.warning("%s: %s: no series of %s with a %r label: its version cannot be "
                            "told (is version_metric right?)", state.service, state.health.target,
                            policy.version_metric, policy.version_label)
            state.versioned = version is not None
        if version is not None:
            self._notice(policy, version, now)
        else:
            version = self._running_version(state.service)
        keys, values = parsed.with_declared_counters()
        self._check_names(state, keys)
        keys, values = self._admitted(state, keys, values)
        ids = self.store.series_ids(state.service, keys)
        self.store.write_scrape(state.service, state.health.target, version, now, ids, values)
        return len(parsed.keys)

    def _admitted(self, state: _TargetState, keys: list[str], values: np.ndarray
                  ) -> tuple[list[str], np.ndarray]:
        """The series of a scrape the store takes. A label of unbounded values (a request
        id, a user, a raw path) makes new series at every scrape, and each is kept until
        the retention has passed: once the service holds as many as its targets'
        `max_series` together, new series of metrics the policy does not read are left
        out, and past SERIES_HISTORY times that, new series of the metrics it does read
        fail the scrape (what is judged is never judged on part of its series)."""
        new = self.store.new_series(state.service, keys)
        if not new:
            return keys, values
        room = sum(t.target.max_series for t in self.targets if t.service == state.service)
        held = self.store.series_count(state.service)
        if held + len(new) <= room:
            self._series_capped.discard(state.service)   # warned again if it comes back
            return keys, values
        policy = self.config.services[state.service]
        read = judged_metric_names(policy) | {policy.version_metric}
        left_out = {key for key in new if split_key(key)[0] not in read}
        judged = len(new) - len(left_out)
        if judged and held + judged > SERIES_HISTORY * room:
            raise ScrapeError(
                f"{state.health.target}: {judged} new series of the metrics the policy reads, "
                f"and the service already holds {held}: more than {SERIES_HISTORY} x its "
                f"targets' max_series ({room} together); a label with unbounded values?")
        if left_out and state.service not in self._series_capped:
            self._series_capped.add(state.service)
            log.warning("%s: %d new series would pass its targets' max_series (%d together) "
                        "with the %d held: new series of metrics the policy does not read are "
                        "no longer stored (a label with unbounded values?)",
                        state.service, len(new), room, held)
        kept = np.fromiter((key not in left_out for key in keys), dtype=bool, count=len(keys))
        return [key for key, keep in zip(keys, kept, strict=True) if keep], values[kept]

    def _check_names(self, state: _TargetState, keys: list[str]) -> None:
        """Once every target of a service has answered once: warn of each metric its policy
        reads that none of them has (a misspelt name), now rather than at a period's end."""
        if state.service in self._names_checked:
            return
        seen = self._first_names.setdefault(state.service, {})
        if state.health.target in seen:
            return
        seen[state.health.target] = scraped_names(keys)
        if set(seen) < {s.health.target for s in self.targets if s.service == state.service}:
            return
        self._names_checked.add(state.service)
        names = set().union(*seen.values())
        del self._first_names[state.service]
        for line in unread(judged_rules(self.config.services[state.service]), names):
            log.warning("%s: %s in the scrapes of its targets", state.service, line)

    def _version(self, policy: ServicePolicy, parsed: ParsedScrape) -> str | None:
        """The version a target reports, from a label such as build_info{version="..."}."""
        if not policy.version_metric:
            return None
        for key in parsed.keys:
            if key.startswith(policy.version_metric):
                name, labels = split_key(key)
                version = labels.get(policy.version_label, "") if name == policy.version_metric else ""
                if version:
                    # It becomes a label, an environment value and a file name's neighbour:
                    # as strict as a version given to the API.
                    if name_problem(version) is not None:
                        log.warning("ignored a version label that is no valid release name")
                        return None
                    return version
        return None

    def _notice(self, policy: ServicePolicy, version: str, now: float) -> None:
        latest = self.store.releases(policy.name, limit=1)
        if latest and latest[0].version == version:
            return
        known = [r for r in self.store.releases(policy.name) if r.version == version]
        if known:
            return  # an older version seen again (a rollback in progress): not a new release
        log.info("new version %s of %s seen on a target", version, policy.name)
        self.releases.start(policy.name, version, at=now)

    def _running_version(self, service: str) -> str | None:
        latest = self.store.releases(service, limit=1)
        return latest[0].version if latest else None

    # -- releases ---------------------------------------------------------------------------

    def _register_deploys(self) -> None:
        """Deploys registered through the JSON API, queued by the HTTP threads."""
        for registration in self.box.take_registrations():
            try:
                self.releases.start(registration.service, registration.version,
                                    change_class=registration.change_class,
                                    at=registration.received_at)
            except StoreError as exc:
                self._store_failed(exc)
            except MonitorError as exc:
                log.error("registration: %s", exc)

    def _advance_releases(self) -> None:
        started = time.monotonic()
        evaluated = False
        # A full or read-only disk loses the samples just scraped: judging waits until they
        # can be stored again rather than decide from what the store happens to hold.
        waiting = {state.service for state in self.targets if state.unstored}
        try:
            active = self.store.active_releases()
        except StoreError as exc:
            self._store_failed(exc)
            return
        for release in active:
            if release.service in waiting:
                continue
            # Counted only when the release was judged, not on every step it is watched.
            before = self.releases.last_evaluation.get(release.id)
            try:
                self.releases.advance(release)
            except StoreError as exc:
                self._store_failed(exc)
            except Exception:  # noqa: BLE001 - one broken release must not stop the others
                log.exception("release %s %s", release.service, release.version)
            evaluated |= self.releases.last_evaluation.get(release.id) != before
        if evaluated:
            self.evaluation_seconds = time.monotonic() - started
            self.evaluations_total += 1
            self.last_evaluation = self.clock.now()
            if self.live:
                return_free_memory()

    def _prune(self, now: float) -> None:
        self.next_prune = now + PRUNE_EVERY
        cutoff = now - self.config.retention
        try:
            self.releases.keep_baselines(cutoff, since=self._pruned_before)
            # Series are forgotten only by a process that has watched a whole prune period:
            # the first marks only what a few minutes scraped (a slow target's series not).
            self.store.prune(cutoff, forget=self._pruned_before > float("-inf"))
            self._pruned_before = cutoff
        except StoreError as exc:
            self._store_failed(exc)
        except MonitorError as exc:   # nothing is pruned until its baselines are kept
            log.error("prune put off: %s", exc)

    def _next_due(self) -> float:
        now = self.clock.now()
        due = [state.due for state in self.targets if state.in_flight is None]
        intervals = [policy.evaluation_interval for policy in self.config.services.values()]
        # Releases are judged every interval; with the store failing, look again then too.
        due.append(now + min(intervals, default=60.0))
        return min(due, default=now + 60.0)

    # -- publishing -------------------------------------------------------------------------

    def publish(self) -> None:
        """Build a fresh snapshot for the HTTP threads from the store."""
        try:
            recent = self._recent()
            verdicts = {(r.service, r.version): document(self.store, r) for r in recent}
            older = self._older(frozenset(verdicts))
        except StoreError as exc:
            self._store_failed(exc)
            verdicts = {key: dict(doc) for key, doc in self.box.get().verdicts.items()}
            older = self.box.get().older
        self.box.publish(Snapshot(
            generated_at=self.clock.now(), verdicts=verdicts,
            targets=(*(state.health for state in self.targets),
                     *self.releases.query_apis.values()),
            evaluation_seconds=self.evaluation_seconds, evaluations_total=self.evaluations_total,
            last_evaluation=self.last_evaluation, store_errors_total=self.store_errors_total,
            store_error=self.store_error,
            started_at=self.started_at, services=tuple(self.config.services),
            hook_failures=self._hook_failures(), older=older,
        ))

    def _hook_failures(self) -> dict[tuple[str, ...], int]:
        """Every configured hook's failures, at zero until its first: a counter must exist
        before it rises for `increase()` to see the rise."""
        counts: dict[tuple[str, ...], int] = {
            (service, hook.name): 0
            for service, policy in self.config.services.items() for hook in policy.hooks}
        counts.update(self.releases.hooks.failures())
        return counts

    def _older(self, recent: frozenset[tuple[str, str]]) -> Mapping[str, Mapping[str, str]]:
        """Each service's releases older than the recent ones, with their verdicts once
        judged: read again when the recent ones change (a new release), or while one of
        the older ones is still being judged, not at every step."""
        judging = any(not verdict for versions in self._older_for[1].values()
                      for verdict in versions.values())
        if self._older_for[0] != recent or judging:
            older = {service: self.store.versions(service, skip=RECENT_RELEASES)
                     for service in {service for service, _ in recent}}
            self._older_for = (recent, older)
        return self._older_for[1]

    def _recent(self) -> list[Release]:
        recent: list[Release] = []
        for service in self.store.services():
            recent.extend(self.store.releases(service, limit=RECENT_RELEASES))
        return recent
