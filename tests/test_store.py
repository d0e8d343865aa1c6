"""Tests of monitor.store against real SQLite files (and in-memory databases)."""

from __future__ import annotations

import doctest
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

import monitor.store as store_module
from monitor.errors import AmbiguousRelease, NotABaseline, StoreError, UnknownRelease
from monitor.store import REASON_LIMIT, SERIES_GRACE, Action, Check, Release, Store

NOBODY = 65534
T0 = 1_767_225_600.0

NASTY = [
    "a;b; DROP TABLE releases; --",
    "it's \"quoted\" and `ticked`",
    "$(rm -rf /) and ${HOME}",
    "line one\nline two\r\nline three",
    "x" * 10_240,
    "nul\x00inside and unicode é 日本",
]


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made = Store.memory() if request.param == "memory" else Store.open(tmp_path / "m.db")
    yield made
    made.close()


def _release(store: Store, service: str = "demo", version: str = "v2", at: float = T0,
             baselines: tuple[str, ...] = ("v1",)) -> Release:
    return store.start_release(service, version, at=at, change_class="minor", period=600.0,
                               baselines=baselines)


# ------------------------------------------------------------------ series and samples


def test_series_ids_are_created_once_and_map_back_to_keys(store: Store) -> None:
    keys = ["up", 'http_requests_total{code="500"}', 'http_requests_total{code="200"}']
    ids = store.series_ids("demo", keys)
    assert ids.dtype == np.int64 and len(set(ids.tolist())) == 3
    assert store.series_ids("demo", keys[::-1]).tolist() == ids[::-1].tolist()
    assert store.series_ids("demo", ["up", "up"]).tolist() == [ids[0], ids[0]]
    assert store.series_keys("demo") == dict(zip(ids.tolist(), keys, strict=True))
    other = store.series_ids("other", ["up"])
    assert other[0] not in ids
    assert store.series_keys("nobody") == {}


def test_read_window_scatters_scrapes_and_leaves_nan_where_a_series_was_missing(
    store: Store,
) -> None:
    a, b, c = store.series_ids("demo", ["a", "b", "c"]).tolist()
    # Written out of time order, ids in any order within a scrape.
    store.write_scrape("demo", "t2", "v2", T0 + 20, np.array([c, a]), np.array([30.0, 10.0]))
    store.write_scrape("demo", "t1", "v1", T0 + 10, np.array([a, b]), np.array([1.0, 2.0]))
    store.write_scrape("demo", "t1", None, T0 + 30, np.array([b]), np.array([np.inf]))
    store.write_scrape("demo", "t1", "v1", T0 + 40, np.array([a]), np.array([9.0]))  # at end
    store.write_scrape("other", "t1", "v1", T0 + 15, np.array([a]), np.array([99.0]))

    window = store.read_window("demo", T0 + 10, T0 + 40)
    assert window.times.tolist() == [T0 + 10, T0 + 20, T0 + 30]
    assert window.targets == ("t1", "t2", "t1")
    assert window.versions == ("v1", "v2", None)
    assert window.series_ids.tolist() == sorted([a, b, c])
    expected = {a: [1.0, 10.0, np.nan], b: [2.0, np.nan, np.inf], c: [np.nan, 30.0, np.nan]}
    for row, series_id in enumerate(window.series_ids.tolist()):
        np.testing.assert_array_equal(window.values[row], expected[series_id])


def test_read_window_filters_by_version_and_series(store: Store) -> None:
    a, b = store.series_ids("demo", ["a", "b"]).tolist()
    store.write_scrape("demo", "t1", "v1", T0, [a, b], [1.0, 2.0])
    store.write_scrape("demo", "t1", "v2", T0 + 1, [a, b], [3.0, 4.0])
    only_v2 = store.read_window("demo", T0, T0 + 10, version="v2")
    assert only_v2.times.tolist() == [T0 + 1] and only_v2.values.tolist() == [[3.0], [4.0]]
    never = 10_000
    picked = store.read_window("demo", T0, T0 + 10, series=[never, b, b])
    assert picked.series_ids.tolist() == [b, never]
    np.testing.assert_array_equal(picked.values, [[2.0, 4.0], [np.nan, np.nan]])
    empty = store.read_window("demo", T0 + 100, T0 + 200)
    assert empty.values.shape == (0, 0) and empty.times.size == 0 and empty.targets == ()
    empty_rows = store.read_window("demo", T0 + 100, T0 + 200, series=[a])
    assert empty_rows.values.shape == (1, 0)


def test_read_window_matches_a_plain_loop_on_random_scrapes(store: Store) -> None:
    rng = np.random.default_rng(42)
    ids = store.series_ids("demo", [f"s{i}" for i in range(40)])
    reference: dict[tuple[int, float], float] = {}
    times = rng.permutation(np.arange(200.0))
    for at in times:
        chosen = rng.choice(ids, size=int(rng.integers(1, 40)), replace=False)
        values = rng.normal(size=chosen.size)
        version = "v1" if at < 120 else "v2"
        store.write_scrape("demo", f"t{int(at) % 3}", version, T0 + at, chosen, values)
        reference.update({(int(s), T0 + at): float(v) for s, v in zip(chosen, values,
                                                                       strict=True)})
    subset = rng.choice(ids, size=7, replace=False)
    for kwargs in ({}, {"version": "v2"}, {"series": subset}):
        window = store.read_window("demo", T0 + 50, T0 + 150, **kwargs)
        expected_times = [T0 + t for t in range(50, 150) if "version" not in kwargs or t >= 120]
        assert window.times.tolist() == expected_times
        for row, series_id in enumerate(window.series_ids.tolist()):
            for column, at in enumerate(window.times.tolist()):
                want = reference.get((series_id, at), np.nan)
                np.testing.assert_equal(window.values[row, column], want)
        seen = {s for (s, at) in reference if at in set(expected_times)}
        rows = sorted(set(subset.tolist())) if "series" in kwargs else sorted(seen)
        assert window.series_ids.tolist() == rows


def test_write_scrape_rejects_mismatched_or_repeated_ids(store: Store) -> None:
    with pytest.raises(ValueError, match="equal in length"):
        store.write_scrape("demo", "t", "v1", T0, [1, 2], [1.0])
    with pytest.raises(ValueError, match="repeat"):
        store.write_scrape("demo", "t", "v1", T0, [1, 1], [1.0, 2.0])
    assert store.sample_count() == 0


def test_prune_deletes_old_scrapes_in_chunks_and_counts_samples(store: Store) -> None:
    ids = store.series_ids("demo", ["a", "b", "c"])
    count = 2 * store_module._PRUNE_CHUNK + 10  # more than one chunk
    for i in range(count):
        store.write_scrape("demo", "t", "v1", T0 + i, ids, np.arange(3.0))
    store.write_scrape("other", "t", "v1", T0, ids[:1], [5.0])
    assert store.sample_count() == 3 * count + 1
    assert store.sample_count("demo") == 3 * count
    assert store.sample_count("nobody") == 0
    assert store.prune(T0 + count - 5) == count - 5 + 1
    assert store.sample_count("demo") == 15 and store.sample_count("other") == 0
    assert store.read_window("demo", 0.0, T0 + count).times[0] == T0 + count - 5
    assert store.prune(T0) == 0


# ------------------------------------------------------------------ releases


def test_start_release_is_idempotent_and_reads_back(store: Store) -> None:
    first = _release(store)
    assert first == Release(
        id=first.id, service="demo", version="v2", started_at=T0, change_class="minor",
        period=600.0, state="smoke", baselines=("v1",), verdict="pending", reason="",
        decided_at=None, first_alarm_at=None, ended_at=None, judge_state="{}",
        invalidated=False,
    )
    again = store.start_release("demo", "v2", at=T0 + 99, change_class="major", period=1.0,
                                baselines=())
    assert again == first
    assert store.release("demo", "v2") == first
    with pytest.raises(ValueError, match="change_class"):
        store.start_release("demo", "v3", at=T0, change_class="huge", period=1.0, baselines=())


def test_release_lookups_name_what_was_missing(store: Store) -> None:
    with pytest.raises(UnknownRelease, match="^no release 'v9' of service 'demo'$"):
        store.release("demo", "v9")
    with pytest.raises(UnknownRelease, match=r"^no release 'v9' \(services: none\)$"):
        store.find_release("v9")
    _release(store, "a", "v1")
    _release(store, "b", "v1")
    store.series_ids("c", ["up"])
    with pytest.raises(UnknownRelease, match=r"^no release 'v9' \(services: a, b, c\)$"):
        store.find_release("v9")
    with pytest.raises(AmbiguousRelease, match=r"several services \(a, b\)"):
        store.find_release("v1")
    assert store.find_release("v1", "b").service == "b"
    _release(store, "a", "v2")
    assert store.find_release("v2").service == "a"
    with pytest.raises(UnknownRelease, match="^no release 'v2' of service 'b'$"):
        store.find_release("v2", "b")


def test_release_listings_are_newest_first(store: Store) -> None:
    old = _release(store, "a", "v1", at=T0)
    new = _release(store, "a", "v2", at=T0 + 100)
    other = _release(store, "b", "v1", at=T0 + 50)
    assert [r.id for r in store.releases()] == [new.id, other.id, old.id]
    assert [r.id for r in store.releases("a")] == [new.id, old.id]
    assert [r.id for r in store.releases(limit=1)] == [new.id]
    assert store.releases("nobody") == []
    store.update_release(old.id, state="done")
    assert [r.id for r in store.active_releases()] == [new.id, other.id]
    assert store.services() == ["a", "b"]


def test_update_release_changes_only_named_known_fields(store: Store) -> None:
    release = _release(store)
    changed = store.update_release(release.id, state="watching", ended_at=T0 + 600,
                                   invalidated=True, judge_state='{"streak": 2}')
    assert changed == Release(**{**release.__dict__, "state": "watching",
                                 "ended_at": T0 + 600, "invalidated": True,
                                 "judge_state": '{"streak": 2}'})
    assert store.release("demo", "v2") == changed
    assert store.update_release(release.id) == changed
    with pytest.raises(ValueError, match="version"):
        store.update_release(release.id, version="v3")
    with pytest.raises(ValueError, match="verdict must be one of"):
        store.update_release(release.id, verdict="maybe")
    with pytest.raises(UnknownRelease):
        store.update_release(release.id + 100, state="done")
    assert store.release("demo", "v2") == changed


def test_invalidate_pins_and_healthy_releases(store: Store) -> None:
    for i in range(5):
        release = _release(store, "demo", f"v{i}", at=T0 + i)
        verdict = "rollback" if i == 2 else "pass"
        store.add_verdict(release.id, at=T0 + i, verdict=verdict, reason="", findings=[],
                          first_alarm_at=None, decided_at=T0 + i, state="done",
                          judge_state="{}")
    _release(store, "other", "v9", at=T0)
    assert store.invalidate("demo", "v3").invalidated
    with pytest.raises(UnknownRelease):
        store.invalidate("demo", "v99")
    healthy = store.healthy_releases("demo", before=T0 + 4, limit=10)
    assert [r.version for r in healthy] == ["v1", "v0"]
    assert [r.version for r in store.healthy_releases("demo", before=T0 + 10, limit=2)] == [
        "v4", "v1"]

    assert store.pinned("demo") is None
    store.pin("demo", "v1")
    store.pin("demo", "v0")
    assert store.pinned("demo") == "v0" and store.pinned("other") is None
    with pytest.raises(UnknownRelease):
        store.pin("demo", "v99")
    store.unpin("demo")
    store.unpin("demo")
    assert store.pinned("demo") is None
    with pytest.raises(NotABaseline, match="demo v2 cannot be pinned: its verdict is rollback"):
        store.pin("demo", "v2")
    with pytest.raises(NotABaseline, match="demo v3 cannot be pinned: it was invalidated"):
        store.pin("demo", "v3")
    store.pin("demo", "v4")
    store.invalidate("demo", "v4")
    assert store.pinned("demo") is None


# ------------------------------------------------------------------ checks, verdicts, baselines


def test_checks_round_trip_in_time_order(store: Store) -> None:
    release = _release(store)
    store.add_check(release.id, stage="verification", name="login", ok=False,
                    detail="exit 1", at=T0 + 5)
    store.add_check(release.id, stage="smoke", name="/health", ok=True, detail="200",
                    at=T0 + 1)
    assert store.checks(release.id) == [
        Check("smoke", "/health", True, "200", T0 + 1),
        Check("verification", "login", False, "exit 1", T0 + 5),
    ]
    with pytest.raises(UnknownRelease):
        store.add_check(release.id + 1, stage="smoke", name="x", ok=True, detail="", at=T0)


def test_a_transaction_stores_all_of_its_writes_or_none(store: Store) -> None:
    release = _release(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.add_check(release.id, stage="smoke", name="/", ok=True, detail="200", at=T0 + 1)
        store.update_release(release.id, state="verification")
        raise RuntimeError("the process died here")
    assert store.checks(release.id) == []
    assert store.release("demo", release.version).state == "smoke"
    with store.transaction():
        store.add_check(release.id, stage="smoke", name="/", ok=True, detail="200", at=T0 + 1)
        store.update_release(release.id, state="verification")
    assert len(store.checks(release.id)) == 1
    assert store.release("demo", release.version).state == "verification"


def test_add_verdict_appends_history_and_sets_the_release(store: Store) -> None:
    release = _release(store)
    findings = [{"signal": "latency", "shift": np.float64(0.25), "rows": np.arange(2),
                 "severity": "minor", "nan": float("nan")}]
    after = store.add_verdict(release.id, at=T0 + 60, verdict="hotfix", reason="latency +25%",
                              findings=findings, first_alarm_at=T0 + 30, decided_at=T0 + 60,
                              state="watching", judge_state='{"k": 1}')
    assert (after.verdict, after.reason, after.first_alarm_at, after.decided_at, after.state,
            after.judge_state) == ("hotfix", "latency +25%", T0 + 30, T0 + 60, "watching",
                                   '{"k": 1}')
    assert store.release("demo", "v2") == after
    store.add_verdict(release.id, at=T0 + 120, verdict="rollback", reason="errors x3",
                      findings=[], first_alarm_at=T0 + 30, decided_at=T0 + 120, state="done",
                      judge_state="{}")
    history = store.verdicts(release.id)
    assert [(v.at, v.verdict, v.reason) for v in history] == [
        (T0 + 60, "hotfix", "latency +25%"), (T0 + 120, "rollback", "errors x3")]
    stored = history[0].findings[0]
    assert stored["shift"] == 0.25 and stored["rows"] == [0, 1] and np.isnan(stored["nan"])
    with pytest.raises(ValueError, match="state must be one of"):
        store.add_verdict(release.id, at=T0, verdict="pass", reason="", findings=[],
                          first_alarm_at=None, decided_at=None, state="gone", judge_state="{}")
    with pytest.raises(UnknownRelease):
        store.add_verdict(release.id + 1, at=T0, verdict="pass", reason="", findings=[],
                          first_alarm_at=None, decided_at=None, state="done", judge_state="{}")
    assert len(store.verdicts(release.id)) == 2


def test_add_verdict_is_one_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db")
    store = Store(sqlite_utils.Database(conn))
    release = _release(store)
    # A trigger makes the history insert fail after the release row was updated.
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON verdicts "
                 "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(StoreError, match="refused"):
        store.add_verdict(release.id, at=T0, verdict="rollback", reason="r", findings=[],
                          first_alarm_at=T0, decided_at=T0, state="done", judge_state="{}")
    assert store.release("demo", "v2") == release
    assert store.verdicts(release.id) == []
    store.close()


def test_baselines_round_trip_and_replace(store: Store) -> None:
    release = _release(store)
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(3, 50))
    store.save_baselines(release.id, {"latency": ({"q": [0.1, 0.5], "n": np.int64(50)}, matrix)})
    store.save_baselines(release.id, {"errors": ({"rate": 0.01}, np.array([1.0, np.nan]))})
    loaded = store.load_baseline(release.id)
    assert sorted(loaded) == ["errors", "latency"]
    assert loaded["latency"][0] == {"q": [0.1, 0.5], "n": 50}
    np.testing.assert_array_equal(loaded["latency"][1], matrix)
    np.testing.assert_array_equal(loaded["errors"][1], [1.0, np.nan])
    loaded["errors"][1][0] = 7.0  # a private, writable copy
    store.save_baselines(release.id, {"errors": ({"rate": 0.02}, np.empty(0))})
    again = store.load_baseline(release.id)["errors"]
    assert again[0] == {"rate": 0.02} and again[1].shape == (0,)
    assert store.load_baseline(release.id + 1) == {}
    with pytest.raises(TypeError):
        store.save_baselines(release.id, {"cpu": ({"x": 1}, np.zeros(1)),
                                          "bad": ({"x": object()}, np.zeros(1))})
    assert sorted(store.load_baseline(release.id)) == ["errors", "latency"]   # all or none


def test_each_hook_is_claimed_once_per_release_and_verdict(store: Store) -> None:
    release = _release(store)
    assert store.claim_action(release.id, verdict="rollback", hook="argo", key="k1", at=T0)
    assert not store.claim_action(release.id, verdict="rollback", hook="argo", key="k2",
                                  at=T0 + 1)
    assert store.claim_action(release.id, verdict="rollback", hook="slack", key="k3", at=T0)
    assert store.claim_action(release.id, verdict="hotfix", hook="argo", key="k4", at=T0)
    store.finish_action(release.id, verdict="rollback", hook="argo", state="done", attempts=2,
                        outcome="HTTP 200", at=T0 + 5)
    assert store.actions(release.id) == [
        Action("rollback", "argo", "k1", "done", 2, "HTTP 200", T0 + 5),
        Action("rollback", "slack", "k3", "claimed", 0, "", T0),
        Action("hotfix", "argo", "k4", "claimed", 0, "", T0),
    ]
    with pytest.raises(ValueError, match="never claimed"):
        store.finish_action(release.id, verdict="pass", hook="argo", state="done", attempts=1,
                            outcome="", at=T0)
    with pytest.raises(UnknownRelease):
        store.claim_action(release.id + 1, verdict="rollback", hook="argo", key="k", at=T0)


@pytest.mark.parametrize("text", NASTY, ids=["semicolon", "quotes", "shell", "newlines",
                                              "10KB", "nul-unicode"])
def test_awkward_strings_round_trip_unchanged(store: Store, text: str) -> None:
    release = store.start_release(text, text, at=T0, change_class="major", period=1.0,
                                  baselines=(text,))
    assert (release.service, release.version, release.baseline) == (text, text, text)
    assert store.find_release(text).id == release.id
    ids = store.series_ids(text, [text, "plain"])
    assert store.series_keys(text)[int(ids[0])] == text
    store.write_scrape(text, text, text, T0, ids, [1.0, 2.0])
    window = store.read_window(text, T0, T0 + 1, version=text)
    assert window.targets == (text,) and window.versions == (text,)
    store.add_check(release.id, stage="smoke", name=text, ok=True, detail=text, at=T0)
    assert store.checks(release.id)[0] == Check("smoke", text, True, text, T0)
    updated = store.add_verdict(release.id, at=T0, verdict="hotfix", reason=text,
                                findings=[{text: text}], first_alarm_at=None, decided_at=T0,
                                state="watching", judge_state=text)
    # Only the reason is cut, past REASON_LIMIT (its own test checks how).
    assert updated.reason == text or len(text) > REASON_LIMIT >= len(updated.reason)
    assert updated.judge_state == text
    assert store.verdicts(release.id)[0].findings == [{text: text}]
    store.save_baselines(release.id, {text: ({text: text}, np.ones(2))})
    assert store.load_baseline(release.id)[text][0] == {text: text}
    store.claim_action(release.id, verdict="hotfix", hook=text, key=text, at=T0)
    store.finish_action(release.id, verdict="hotfix", hook=text, state="failed", attempts=1,
                        outcome=text, at=T0)
    assert store.actions(release.id) == [Action("hotfix", text, text, "failed", 1, text, T0)]
    store.add_verdict(release.id, at=T0, verdict="pass", reason=text, findings=[],
                      first_alarm_at=None, decided_at=T0, state="done", judge_state=text)
    store.pin(text, text)
    assert store.pinned(text) == text
    assert store.services() == [text]  # every table is still there, nothing else appeared


# ------------------------------------------------------------------ files, processes, errors


def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with Store.open(path) as daemon, Store.open(path) as cli:
        assert daemon.path == cli.path == str(path)
        release = daemon.start_release("demo", "v2", at=T0, change_class="minor",
                                       period=60.0, baselines=())
        assert cli.release("demo", "v2") == release
        ids = daemon.series_ids("demo", ["a", "b"])
        assert cli.series_ids("demo", ["b", "a", "c"]).tolist()[:2] == ids[::-1].tolist()
        assert daemon.series_ids("demo", ["c"])[0] not in ids
        daemon.write_scrape("demo", "t", "v2", T0, ids, [1.0, 2.0])
        assert cli.read_window("demo", T0, T0 + 1).values.tolist() == [[1.0], [2.0]]
        assert daemon.claim_action(release.id, verdict="pass", hook="h", key="k", at=T0)
        assert not cli.claim_action(release.id, verdict="pass", hook="h", key="k", at=T0)
        cli.add_verdict(release.id, at=T0, verdict="pass", reason="", findings=[],
                        first_alarm_at=None, decided_at=T0, state="done", judge_state="{}")
        assert daemon.active_releases() == []
        cli.pin("demo", "v2")
        assert daemon.pinned("demo") == "v2"


def test_concurrent_writers_lose_nothing_and_claim_each_hook_once(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    setup = Store.open(path)
    release = _release(setup)
    ids = setup.series_ids("demo", [f"s{i}" for i in range(50)])
    wins: list[list[bool]] = [[], []]
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with Store.open(path) as mine:
                for i in range(150):
                    mine.write_scrape("demo", f"t{worker}", "v2", T0 + i, ids, np.full(50, i))
                    wins[worker].append(mine.claim_action(
                        release.id, verdict="rollback", hook=f"h{i % 40}", key="k", at=T0))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert setup.sample_count("demo") == 2 * 150 * 50
    assert sum(wins[0]) + sum(wins[1]) == 40
    assert len(setup.actions(release.id)) == 40
    setup.close()


def test_processes_starting_together_on_a_new_file_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    start = threading.Barrier(4)
    found: list[int] = []
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            start.wait()
            with Store.open(path) as mine:
                found.append(_release(mine).id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(found)) == 1 and len(found) == 4


def test_pragmas_and_wal_are_set(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db")
    store = Store(sqlite_utils.Database(conn))
    pragma = {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys",
                           "user_version")}
    assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "synchronous": 1,
                      "foreign_keys": 1, "user_version": len(store_module.MIGRATIONS)}
    store.close()


def test_migrations_run_once_and_reopening_is_harmless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.db"
    with Store.open(path) as first:
        release = _release(first)
    with Store.open(path) as second:
        assert second.release("demo", "v2") == release
    calls: list[int] = []

    def add_notes(db: sqlite_utils.Database) -> None:
        calls.append(1)
        db.table("notes").create({"id": int, "text": str}, pk="id")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, add_notes))
    for _ in range(2):
        with Store.open(path) as upgraded:
            assert upgraded.release("demo", "v2") == release
    assert calls == [1]
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    shipped = len(store_module.MIGRATIONS) - 1
    assert version == shipped + 1
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:shipped])
    newer = f"schema version {shipped + 1}, newer than this program's {shipped}"
    with pytest.raises(StoreError, match=newer):
        Store.open(path)


def test_a_store_opened_for_reading_changes_nothing_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        release = store.start_release("demo", "v2", at=T0, change_class="minor", period=60.0,
                                      baselines=())
    before = path.read_bytes()
    with Store.open(path, read_only=True) as reader:
        assert reader.release("demo", "v2") == release
        with pytest.raises(StoreError, match="readonly"):
            reader.start_release("demo", "v3", at=T0, change_class="minor", period=60.0,
                                 baselines=())
    assert path.read_bytes() == before
    # An older file is not migrated by a reader: it says what will upgrade it.
    shipped = len(store_module.MIGRATIONS)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"PRAGMA user_version = {shipped - 1}")
    with pytest.raises(StoreError, match=f"schema version {shipped - 1}, older than this "
                                         f"program's {shipped}: this version's `monitor run`"):
        Store.open(path, read_only=True)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == shipped - 1


def test_a_reader_without_the_right_to_make_the_shm_file_reads_a_database_at_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        release = store.start_release("demo", "v2", at=T0, change_class="minor", period=60.0,
                                      baselines=())
    real, targets = Store._opened.__func__, []  # type: ignore[attr-defined]

    def no_shm(cls: type[Store], where: Path, target: str, **kwargs: bool) -> Store:
        # What SQLite answers a user who may not write the folder the -shm file goes in.
        targets.append(target)
        if "immutable" not in target:
            raise StoreError(f"cannot open database {where}: attempt to write a readonly database")
        return real(cls, where, target, **kwargs)

    monkeypatch.setattr(Store, "_opened", classmethod(no_shm))
    # No daemon runs (no -wal file): every page is in the file, which nothing changes now.
    with Store.open(path, read_only=True) as reader:
        assert reader.release("demo", "v2") == release
    assert [t.rsplit("?", 1)[1] for t in targets] == ["mode=ro", "mode=ro&immutable=1"]
    # A daemon runs (its -wal file is there): no reading past its locks, the error stands.
    Path(f"{path}-wal").write_bytes(b"")
    with pytest.raises(StoreError, match="readonly"):
        Store.open(path, read_only=True)


def test_migration_3_reads_the_joined_baselines_of_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Store.open(path):
        pass
    with closing(sqlite3.connect(path)) as conn, conn:
        # A file as the two first migrations left it: the baselines joined with "+".
        conn.execute("ALTER TABLE releases DROP COLUMN baselines")
        conn.execute("ALTER TABLE series DROP COLUMN last_at")
        conn.execute("PRAGMA user_version = 2")
        for version, baseline in (("1.4.0+b7", None), ("v1", None), ("v2", None),
                                  ("1.5.0+b8", "1.4.0+b7"), ("v3", "v1+v2"),
                                  ("1.6.0+b9", "1.5.0+b8+1.4.0+b7"), ("v4", "v9+v8")):
            conn.execute("INSERT INTO releases (service, version, started_at, change_class, "
                         "period, baseline) VALUES ('demo', ?, 0, 'minor', 60, ?)",
                         (version, baseline))
    with Store.open(path) as store:
        found = {r.version: r.baselines for r in store.releases("demo")}
    assert found == {"1.4.0+b7": (), "v1": (), "v2": (), "1.5.0+b8": ("1.4.0+b7",),
                     "v3": ("v1", "v2"), "1.6.0+b9": ("1.5.0+b8", "1.4.0+b7"),
                     "v4": ("v9", "v8")}     # versions since deleted: split as they were joined


def test_a_failed_write_raises_store_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db")
    store = Store(sqlite_utils.Database(conn))
    ids = store.series_ids("demo", [f"s{i}" for i in range(1000)])
    store.write_scrape("demo", "t", "v1", T0, ids, np.ones(1000))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is now "full"
    with pytest.raises(StoreError) as caught:
        store.write_scrape("demo", "t", "v1", T0 + 1, ids, np.ones(1000))
    assert "full" in str(caught.value) and "\n" not in str(caught.value)
    assert str(tmp_path / "m.db") in str(caught.value)
    assert store.read_window("demo", T0, T0 + 10).values.shape == (1000, 1)
    store.close()


def test_a_locked_database_becomes_store_error_then_works_again(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path)
    store = Store(sqlite_utils.Database(conn))
    conn.execute("PRAGMA busy_timeout = 20")  # keep the test fast
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="locked"):
        _release(store)
    assert store.releases() == []  # reads still work under a writer
    blocker.execute("ROLLBACK")
    assert _release(store).version == "v2"
    blocker.close()
    store.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="store-test-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    shutil.rmtree(folder)


def open_failure(path: Path) -> str:
    """The StoreError message of Store.open(path), opened without root's privileges.

    Root writes through any permission bits, so when the tests run as root the open is
    done in a forked child that first becomes `nobody`.
    """
    if os.geteuid() != 0:
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        return str(caught.value)
    Store.memory().close()  # load sqlite-utils' plugins before losing access to them
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        message = "opened without error"
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            Store.open(path).close()
        except StoreError as exc:
            message = "StoreError: " + str(exc)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message.startswith("StoreError: "), message
    return message.removeprefix("StoreError: ")


def _one_line_naming(message: str, path: Path) -> str:
    assert "\n" not in message and str(path) in message, message
    return message


def test_open_in_a_missing_directory_fails_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "m.db"
    message = _one_line_naming(str(pytest.raises(StoreError, Store.open, path).value), path)
    assert "does not exist" in message
    assert not path.parent.exists()


def test_open_on_a_directory_says_so(tmp_path: Path) -> None:
    message = _one_line_naming(str(pytest.raises(StoreError, Store.open, tmp_path).value), tmp_path)
    assert f"it is a directory; give a file in it, e.g. {tmp_path / 'release-monitor.db'}" in message
    assert list(tmp_path.iterdir()) == []


def test_open_on_a_garbage_file_fails_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    garbage = b"this is not a database, just text\n" * 200
    path.write_bytes(garbage)
    message = _one_line_naming(str(pytest.raises(StoreError, Store.open, path).value), path)
    assert "not an SQLite database" in message
    assert path.read_bytes() == garbage


def test_open_on_a_directory_fails(tmp_path: Path) -> None:
    _one_line_naming(str(pytest.raises(StoreError, Store.open, tmp_path).value), tmp_path)


def test_open_in_a_read_only_directory_fails(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    path = locked / "m.db"
    message = _one_line_naming(open_failure(path), path)
    assert "writable" in message or "read-only" in message
    assert not path.exists()


def test_open_of_an_existing_database_in_a_read_only_directory_fails(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir()
    path = locked / "m.db"
    Store.open(path).close()
    locked.chmod(0o555)
    message = _one_line_naming(open_failure(path), path)
    assert "writable" in message or "read-only" in message


def test_open_of_a_read_only_file_fails(shared_dir: Path) -> None:
    open_dir = shared_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    path = open_dir / "m.db"
    with Store.open(path) as store:
        _release(store)
    path.chmod(0o444)
    message = _one_line_naming(open_failure(path), path)
    assert "read-only" in message


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(store_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


def test_the_verdict_history_keeps_changes_not_every_pending_evaluation() -> None:
    store = Store.memory()
    release = store.start_release("demo", "v9", at=0.0, change_class="minor", period=600.0,
                                  baselines=())
    for minute, verdict in enumerate(["pending"] * 8 + ["hotfix", "hotfix", "rollback"]):
        store.add_verdict(release.id, at=60.0 * minute, verdict=verdict, reason=str(minute),
                          findings=[], first_alarm_at=None, decided_at=None, state="watching",
                          judge_state="{}")
    history = [(v.at, v.verdict, v.reason) for v in store.verdicts(release.id)]
    assert history == [(420.0, "pending", "7"), (540.0, "hotfix", "9"), (600.0, "rollback", "10")]


def test_a_verdict_reached_on_a_period_the_release_no_longer_has_is_not_stored(
        store: Store) -> None:
    release = _release(store)                                  # minor: 600 s
    store.reclassify(release.id, change_class="major", period=7200.0, judge_state="{}")
    kept = store.add_verdict(release.id, at=T0 + 600, verdict="pass", reason="", findings=[],
                             first_alarm_at=None, decided_at=T0 + 600, state="done",
                             judge_state="{}", period=600.0)
    assert (kept.verdict, kept.state, kept.period) == ("pending", "smoke", 7200.0)
    assert store.verdicts(release.id) == []


def test_series_no_longer_scraped_are_forgotten_after_their_samples(store: Store) -> None:
    # A label that comes and goes (a pod's name) must not grow the series table for ever.
    old_pod, kept = store.series_ids("demo", ['up{pod="a"}', "up"])
    store.write_scrape("demo", "t", "v1", 0.0, [old_pod, kept], [1.0, 1.0])
    store.prune(-1.0)                                    # marks both as seen at 0
    assert sorted(store.series_keys("demo").values()) == ["up", 'up{pod="a"}']
    store.write_scrape("demo", "t", "v1", 20_000.0, [kept], [1.0])
    store.prune(10_000.0)        # the pod's scrape is gone; it was last seen 10,000 s before
    assert list(store.series_keys("demo").values()) == ["up"]
    assert store.read_window("demo", 0.0, 30_000.0).values.tolist() == [[1.0]]
    # The same key again is a new series, not the forgotten id.
    [again] = store.series_ids("demo", ['up{pod="a"}'])
    assert again != old_pod and store.series_keys("demo")[int(again)] == 'up{pod="a"}'


def test_a_series_seen_within_the_grace_is_kept(store: Store) -> None:
    [series] = store.series_ids("demo", ["up"])
    store.write_scrape("demo", "t", "v1", 0.0, [series], [1.0])
    store.prune(-1.0)
    store.prune(SERIES_GRACE - 1.0)    # last seen at 0: not yet more than the grace before
    assert list(store.series_keys("demo").values()) == ["up"]
    store.prune(SERIES_GRACE + 1.0)
    assert store.series_keys("demo") == {}


def test_migration_4_counts_older_series_as_seen_at_their_service_s_latest_scrape(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        a, b = store.series_ids("demo", ["a", "b"])
        store.write_scrape("demo", "t", "v1", 100.0, [a], [1.0])
        store.write_scrape("demo", "t", "v1", 500.0, [a, b], [1.0, 2.0])
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE series DROP COLUMN last_at")   # as migration 3 left it
        conn.execute("PRAGMA user_version = 3")
    with Store.open(path) as store:
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT DISTINCT last_at FROM series").fetchall() == [(500.0,)]
        store.prune(500.0 + SERIES_GRACE - 1.0)
        assert sorted(store.series_keys("demo").values()) == ["a", "b"]


def test_a_reason_longer_than_the_limit_is_cut() -> None:
    store = Store.memory()
    release = store.start_release("shop", "v2", at=0.0, change_class="minor", period=60.0,
                                  baselines=())
    long = "errors: 0.5% -> 6% " + "x" * 200_000 + "; the targets report version 'v1'"
    store.add_verdict(release.id, at=60.0, verdict="inconclusive", reason=long, findings=[],
                      first_alarm_at=None, decided_at=60.0, state="done", judge_state="{}")
    stored = store.release("shop", "v2").reason
    head, cut, tail = re.fullmatch(r"(.*) \[\.\.\. (\d+) characters cut \.\.\.\] (.*)", stored).groups()
    assert len(stored) <= REASON_LIMIT and len(head) + int(cut) + len(tail) == len(long)
    assert long.startswith(head) and long.endswith(tail) and len(head) > 2000
    assert tail.endswith("; the targets report version 'v1'")   # the hint at the end stays
    assert store.verdicts(release.id)[-1].reason == stored


@pytest.mark.parametrize("read_only", [False, True])
def test_a_database_missing_a_table_is_refused_as_damaged(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        store.start_release("shop", "v1", at=T0, change_class="minor", period=60.0, baselines=())
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE verdicts")
        conn.commit()
    with pytest.raises(StoreError) as caught:
        Store.open(path, read_only=read_only)
    assert str(caught.value) == (f"database {path} lacks its table verdicts: it is damaged; "
                                 "restore it from a backup, or move it away to start afresh")
    with closing(sqlite3.connect(path)) as conn:   # and nothing else changed
        assert conn.execute("SELECT version FROM releases").fetchall() == [("v1",)]


def test_the_series_count_follows_creation_prune_and_a_refused_write() -> None:
    store = Store.memory()
    ids = store.series_ids("shop", ["up", "rss_bytes"])
    assert store.series_count("shop") == 2
    store._conn.execute("PRAGMA query_only = ON")   # every write refused, as by a full disk
    with pytest.raises(StoreError):
        store.series_ids("shop", ["errors_total"])
    store._conn.execute("PRAGMA query_only = OFF")
    assert store.series_count("shop") == 2
    store.write_scrape("shop", "t", "v1", T0, ids[:1], [1.0])
    store.write_scrape("shop", "t", "v1", T0 + 600, ids, [1.0, 2.0])
    store.prune(T0 - 1)                  # marks what was scraped as seen
    store.prune(T0 + SERIES_GRACE + 1)   # up was last seen at T0 + 600: both stay
    assert store.series_count("shop") == 2
    store.write_scrape("shop", "t", "v1", T0 + 1200, ids[1:], [2.0])
    store.prune(T0 + 600 + SERIES_GRACE + 1)   # up last seen at T0 + 600: forgotten
    assert store.series_count("shop") == 1
    assert store.new_series("shop", ["up", "rss_bytes"]) == ["up"]
