"""The live daemon under a small load on loopback: 60 targets every second, about 6 s.

`benchmarks/load.py` at a small scale: a tenth of the targets hang, a twentieth answer
500, the rest serve 59-195 series. This is the one test on the wall clock, since what it
checks is the live daemon's own scheduling; it ends on an event (every target has begun
its sixth scrape), never on a sleep.
"""

from __future__ import annotations

import os
import platform

import pytest

from benchmarks.load import (
    FAILING,
    HANGING,
    HEALTHY,
    LoadPlan,
    LoadResult,
    malloc_arenas,
    run_load,
    target_kinds,
)

ROUNDS = 6
PLAN = LoadPlan(targets=60, interval=1.0, timeout=0.5, seconds=30.0, rounds=ROUNDS, servers=2,
                poll_every=0.1, rss_every=1.0, evaluation_interval=2.0, separate_process=False)
KIND_COUNTS = {HEALTHY: 51, HANGING: 6, FAILING: 3}


@pytest.fixture(scope="module")
def result() -> LoadResult:
    return run_load(PLAN)


def test_the_plan_has_the_kinds_asked_for() -> None:
    kinds = target_kinds(PLAN.targets, PLAN.hanging, PLAN.failing, PLAN.seed)
    assert {kind: kinds.count(kind) for kind in KIND_COUNTS} == KIND_COUNTS


def test_the_run_ended_on_its_event(result: LoadResult) -> None:
    # The sixth round begins 5 intervals after the first, give or take the spread of phases.
    assert ROUNDS - 1 <= result.seconds < ROUNDS + 1
    assert result.scrape_starts >= PLAN.targets * ROUNDS


def test_each_kind_is_up_or_down_for_its_own_reason(result: LoadResult) -> None:
    healthy, hanging, failing = (result.kinds[kind] for kind in (HEALTHY, HANGING, FAILING))
    assert {k: f.targets for k, f in result.kinds.items()} == KIND_COUNTS
    assert (healthy.up, healthy.errors, healthy.last_errors) == (51, 0, {})
    assert healthy.scrapes >= 51 * (ROUNDS - 1)
    assert (hanging.up, hanging.timeouts) == (0, 6)
    assert hanging.errors == hanging.scrapes >= 6 * (ROUNDS - 2)  # the last may be in flight
    assert list(hanging.last_errors) == ["timed out after 0.5 s"]
    assert (failing.up, failing.http_500) == (0, 3)
    assert failing.errors == failing.scrapes >= 3 * (ROUNDS - 1)
    assert result.store_errors == 0


def test_no_scrape_of_a_healthy_target_is_missed(result: LoadResult) -> None:
    # Every healthy target's plans are one interval apart, and each begun scrape but the
    # one in flight at the end was recorded.
    assert result.healthy_missed == 0
    assert result.healthy_short == 0


def test_scrapes_begin_on_time(result: LoadResult) -> None:
    assert result.lateness_p99_of_interval < 0.10


def test_metrics_is_served_throughout(result: LoadResult) -> None:
    assert result.metrics_failures == 0
    assert result.metrics_requests >= 0.5 * result.seconds / PLAN.poll_every
    assert result.metrics_p99_ms < 100.0
    assert result.metrics_longest_gap_ms < 500.0


def test_the_run_names_the_malloc_arenas_it_allowed(result: LoadResult,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    capped = platform.libc_ver()[0] == "glibc" and not os.environ.get("MALLOC_ARENA_MAX")
    assert result.malloc_arenas == malloc_arenas(capped)
    assert malloc_arenas(True) == "at most 2 (the daemon's cap)"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "16")
    assert malloc_arenas(False) == "at most 16 (MALLOC_ARENA_MAX)"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert malloc_arenas(False) == "the C library's default"


def test_a_farm_releasing_in_cycles_names_the_current_release() -> None:
    from benchmarks.load import TargetFarm

    farm = TargetFarm([HEALTHY, HEALTHY], servers=1, release_every=600.0)
    assert b'build_info{version="v1.0.0"' in farm.body(0)
    farm._began -= 2.5 * 600.0              # two and a half cycles later
    assert b'build_info{version="v1.0.2"' in farm.body(1)


def test_drift_is_fitted_after_the_first_release_cycle() -> None:
    from benchmarks.load import _settled

    plan = LoadPlan(release_every=120.0)
    rss = [(t, 100.0 + (50.0 if t < 120 else 0.0)) for t in range(0, 600, 60)]
    assert [t for t, _ in _settled(plan, rss)] == [120, 180, 240, 300, 360, 420, 480, 540]
    assert [t for t, _ in _settled(LoadPlan(), rss)] == list(range(60, 600, 60))


def test_the_sampler_follows_live_python_objects_when_asked() -> None:
    from benchmarks.load import RssSampler

    sampler = RssSampler(3600.0, traced=True, settle=0.0)
    sampler.start()
    kept = [bytearray(1000) for _ in range(2000)]          # 2 MB that stays alive
    samples = sampler.stop()
    assert len(samples) == 2 and len(sampler.traced) == 2
    assert sampler.traced[1] - sampler.traced[0] >= 1.9
    assert sampler.growth and "test_load.py" in sampler.growth[0]
    del kept
