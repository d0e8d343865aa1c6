"""The SQLite store: releases, packed samples, baselines, checks, verdicts and hook actions.

This is the only module that speaks SQL. Every value travels as a query parameter.
The daemon and the CLI open the same file from separate processes, so the file runs
in WAL mode (readers never block the writer), waits up to 5 s for a busy lock, and
every write is one short `BEGIN IMMEDIATE` transaction.

Samples are packed: one `batches` row per scrape holds the series ids (int64) and the
values (float64) as two BLOBs, so a scrape is stored atomically by one insert.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from monitor.errors import AmbiguousRelease, NotABaseline, StoreError, UnknownRelease

# A verdict's reason is read in terminals, kept with every evaluation and handed to hooks
# as one environment value (Linux refuses one over 128 KiB): past this it is cut.
REASON_LIMIT = 4096

CHANGE_CLASSES = ("minor", "major")
STATES = ("smoke", "verification", "watching", "done")
VERDICTS = ("pending", "pass", "hotfix", "rollback", "inconclusive")

BUSY_TIMEOUT_MS = 5000
_PRUNE_CHUNK = 256  # batches deleted per transaction, so a big prune never holds the lock long
# A series is forgotten once it was last scraped this long before the prune's cut: its
# samples are gone by then, even those of the hour the last mark did not see (a restart).
SERIES_GRACE = 2 * 3600.0
_IDS = np.dtype("<i8")
_VALS = np.dtype("<f8")


@dataclass(frozen=True)
class Release:
    """One release of a service and its current verdict."""

    id: int
    service: str
    version: str
    started_at: float
    change_class: str  # "minor" | "major"
    period: float  # checking period, seconds
    state: str  # "smoke" | "verification" | "watching" | "done"
    baselines: tuple[str, ...]  # versions of the release(s) it is compared with
    verdict: str  # "pending" | "pass" | "hotfix" | "rollback" | "inconclusive"
    reason: str  # one line, "" when none
    decided_at: float | None
    first_alarm_at: float | None
    ended_at: float | None
    judge_state: str  # opaque JSON text owned by the judge, "{}" initially
    invalidated: bool

    @property
    def baseline(self) -> str | None:
        """The baseline release(s) as people read them: `v2.2`, or `v2.1+v2.2` for several."""
        return "+".join(self.baselines) or None

    def why_not_pinnable(self) -> str | None:
        """None when a person may pin this release as the baseline, else why not.

        One that passed, or one too quiet to judge (inconclusive) that they vouch for;
        never one that rolled back or needed a hotfix, one still pending, or one
        invalidated since.
        """
        if self.invalidated:
            return "it was invalidated"
        if self.verdict in ("pass", "inconclusive"):
            return None
        return "it has no verdict yet" if self.verdict == "pending" else f"its verdict is {self.verdict}"


# eq=False: comparing arrays element-wise inside a generated __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Window:
    """Samples of one service over [start, end): series as rows, scrapes as columns."""

    times: npt.NDArray[np.float64]  # (C,) one column per stored scrape, sorted
    targets: tuple[str, ...]  # (C,) target of each column
    versions: tuple[str | None, ...]  # (C,)
    series_ids: npt.NDArray[np.int64]  # (S,) sorted
    values: npt.NDArray[np.float64]  # (S, C), NaN where a scrape lacked the series


@dataclass(frozen=True)
class Check:
    """One smoke or verification result."""

    stage: str
    name: str
    ok: bool
    detail: str
    at: float


@dataclass(frozen=True)
class VerdictRecord:
    """One entry of a release's append-only verdict history."""

    at: float
    verdict: str
    reason: str
    findings: list[dict[str, Any]]
    signals: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    """A hook claimed for a (release, verdict), and its outcome once finished."""

    verdict: str
    hook: str
    key: str
    state: str
    attempts: int
    outcome: str
    at: float


def _bounded_reason(reason: str) -> str:
    """`reason`, its middle cut past REASON_LIMIT: the judge's findings come first and the
    hints on what ran (versions reported, sources failing) last."""
    if len(reason) <= REASON_LIMIT:
        return reason
    # Room for the longest marker the count could need; what is cut is then exact.
    keep = REASON_LIMIT - len(f" [... {len(reason)} characters cut ...] ")
    marker = f" [... {len(reason) - keep} characters cut ...] "
    return reason[: keep // 2] + marker + reason[len(reason) - (keep - keep // 2):]


# ---------------------------------------------------------------- migrations


def _create_schema(db: sqlite_utils.Database) -> None:
    """Migration 1: every table and index."""
    releases = db.table("releases")
    releases.create(
        {
            "id": int, "service": str, "version": str, "started_at": float,
            "change_class": str, "period": float, "state": str, "baseline": str,
            "verdict": str, "reason": str, "decided_at": float, "first_alarm_at": float,
            "ended_at": float, "judge_state": str, "invalidated": int,
        },
        pk="id",
        not_null=["service", "version", "started_at", "change_class", "period", "state",
                  "verdict", "reason", "judge_state", "invalidated"],
        defaults={"state": "smoke", "verdict": "pending", "reason": "", "judge_state": "{}",
                  "invalidated": 0},
    )
    releases.create_index(["service", "version"], "releases_service_version", unique=True)
    releases.create_index(["service", "started_at"], "releases_service_started")

    series = db.table("series")
    series.create({"id": int, "service": str, "key": str}, pk="id", not_null=["service", "key"])
    series.create_index(["service", "key"], "series_service_key", unique=True)

    batches = db.table("batches")
    # `at` before the BLOBs: scanning times never reads the BLOBs' overflow pages.
    batches.create(
        {"id": int, "service": str, "target": str, "version": str, "at": float,
         "ids": bytes, "vals": bytes},
        pk="id", not_null=["service", "target", "at", "ids", "vals"],
    )
    batches.create_index(["service", "at"], "batches_service_at")
    batches.create_index(["at"], "batches_at")  # for prune()

    release_fk = [("release_id", "releases", "id")]
    db.table("baselines").create(
        {"release_id": int, "signal": str, "summary": str, "shape": str, "reservoir": bytes},
        pk=("release_id", "signal"), foreign_keys=release_fk,
        not_null=["summary", "shape", "reservoir"],
    )
    checks = db.table("checks")
    checks.create(
        {"id": int, "release_id": int, "stage": str, "name": str, "ok": int, "detail": str,
         "at": float},
        pk="id", foreign_keys=release_fk,
        not_null=["release_id", "stage", "name", "ok", "detail", "at"],
    )
    checks.create_index(["release_id"], "checks_release")
    verdicts = db.table("verdicts")
    verdicts.create(
        {"id": int, "release_id": int, "at": float, "verdict": str, "reason": str,
         "findings": str},
        pk="id", foreign_keys=release_fk,
        not_null=["release_id", "at", "verdict", "reason", "findings"],
    )
    verdicts.create_index(["release_id", "at"], "verdicts_release_at")
    db.table("actions").create(
        {"release_id": int, "verdict": str, "hook": str, "key": str, "state": str,
         "attempts": int, "outcome": str, "at": float},
        pk=("release_id", "verdict", "hook"), foreign_keys=release_fk,
        not_null=["key", "state", "attempts", "outcome", "at"],
    )
    db.table("pins").create({"service": str, "version": str}, pk="service", not_null=["version"])


# Applied in order at start-up; PRAGMA user_version counts how many already ran.
# Append new migrations; never edit one that has shipped.
def _add_verdict_signals(db: sqlite_utils.Database) -> None:
    """Migration 2: what each judged signal looked like, for sparklines and reports."""
    db.table("verdicts").add_column("signals", str, not_null_default="[]")


def _add_baseline_list(db: sqlite_utils.Database) -> None:
    """Migration 3: a release's baseline versions as a JSON list; `baseline` joined them with
    "+", which a version may have in it (`1.4.0+build.7`)."""
    db.table("releases").add_column("baselines", str, not_null_default="[]")
    conn = db.conn
    known = set(conn.execute("SELECT service, version FROM releases").fetchall())
    rows = conn.execute("SELECT id, service, baseline FROM releases WHERE baseline IS NOT NULL")
    for release_id, service, text in rows.fetchall():
        versions = _known_parts(text.split("+"), {v for s, v in known if s == service})
        conn.execute("UPDATE releases SET baselines = ? WHERE id = ?",
                     (json.dumps(versions or text.split("+")), release_id))


def _known_parts(pieces: list[str], versions: set[str]) -> list[str] | None:
    """`pieces` joined back with "+" into known versions, the fewest splits first
    (["1.5.0", "b.8", "1.4.0", "b.7"] -> ["1.5.0+b.8", "1.4.0+b.7"]), or None.

    >>> _known_parts(["v1", "b", "v2"], {"v1+b", "v2", "v1"})
    ['v1+b', 'v2']
    """
    for cut in range(len(pieces), 0, -1):
        head = "+".join(pieces[:cut])
        if head not in versions:
            continue
        if cut == len(pieces):
            return [head]
        rest = _known_parts(pieces[cut:], versions)
        if rest is not None:
            return [head, *rest]
    return None


def _add_series_last_seen(db: sqlite_utils.Database) -> None:
    """Migration 4: when each series was last scraped, so that the series of labels that
    come and go (a pod's name) are forgotten once their samples are pruned. A series stored
    before counts as seen at its service's latest scrape."""
    db.table("series").add_column("last_at", float)
    db.conn.execute("UPDATE series SET last_at = "
                    "(SELECT MAX(at) FROM batches WHERE batches.service = series.service)")


# The tables the migrations make.
TABLES = ("releases", "series", "batches", "baselines", "checks", "verdicts", "actions", "pins")
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _create_schema,
    _add_verdict_signals,
    _add_baseline_list,
    _add_series_last_seen,
)


# ---------------------------------------------------------------- SQL

_RELEASE_FIELDS = tuple(Release.__dataclass_fields__)  # the releases columns, same names
_SELECT_RELEASES = "SELECT " + ", ".join(_RELEASE_FIELDS) + " FROM releases "
# The baseline is chosen once, at registration.
_UPDATABLE = frozenset(_RELEASE_FIELDS) - {"id", "service", "version", "baselines"}
_UPDATE_RELEASE = (
    "UPDATE releases SET started_at = :started_at, change_class = :change_class, "
    "period = :period, state = :state, verdict = :verdict, "
    "reason = :reason, decided_at = :decided_at, first_alarm_at = :first_alarm_at, "
    "ended_at = :ended_at, judge_state = :judge_state, invalidated = :invalidated "
    "WHERE id = :id"
)


class Store:
    """The monitor's database: one object per process (or per thread group), one file.

    Example:
        >>> store = Store.memory()
        >>> r = store.start_release("demo", "v2", at=100.0, change_class="minor",
        ...                         period=600.0, baselines=("v1",))
        >>> ids = store.series_ids("demo", ['up', 'http_requests_total{code="500"}'])
        >>> store.write_scrape("demo", "10.0.0.1:8080", "v2", 105.0, ids, np.array([1.0, 3.0]))
        >>> store.read_window("demo", 100.0, 200.0).values.tolist()
        [[1.0], [3.0]]
        >>> store.add_verdict(r.id, at=110.0, verdict="hotfix", reason="latency up 20%",
        ...                   findings=[], first_alarm_at=105.0, decided_at=110.0,
        ...                   state="watching", judge_state="{}").verdict
        'hotfix'
    """

    def __init__(self, db: sqlite_utils.Database, *, read_only: bool = False) -> None:
        self._db = db
        self._conn = db.conn
        # One connection, possibly shared by threads: a lock keeps transactions whole.
        self._lock = threading.RLock()
        self._joined = 0   # depth of `transaction()` blocks, in the thread holding the lock
        self._series: dict[str, dict[str, int]] = {}
        self._series_counts: dict[str, int] = {}   # per service, counted once, then kept
        # Series scraped since the last prune, and the latest scrape's time: what `prune`
        # marks as seen (kept in memory, so a scrape writes no series row).
        self._seen: set[int] = set()
        self._seen_until = float("-inf")
        # Writes committed and refused so far, and the last refusal: how the daemon tells
        # a store that works from one that fails (a full disk refuses writes, not reads).
        self.writes_ok = 0
        self.writes_failed = 0
        self.write_error = ""
        self.path: str | None = _file_of(self._conn)
        with self._failures("open"):
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            self._refuse_foreign()
            if read_only:
                self._check_schema()
                self._check_tables()
                return
            self._enable_wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        with self._failures("open"):
            self._check_tables()

    def _refuse_foreign(self) -> None:
        """Never write into another program's database: one with tables but not ours is
        refused before anything (WAL mode included) is changed. Ours always has `releases`:
        the first migration makes it with the rest, in one transaction."""
        tables = {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "releases" not in tables:
            raise StoreError(f"{self.path or ':memory:'} is not a release-monitor database "
                             "(another program's tables are in it): give another --db")

    def _check_tables(self) -> None:
        """Every table of the schema is there: a file with one dropped is damaged, and
        would fail the daemon's every step while its health said it was well."""
        tables = {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [name for name in TABLES if name not in tables]
        if missing:
            raise StoreError(f"database {self.path or ':memory:'} lacks its table"
                             f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}: it is "
                             "damaged; restore it from a backup, or move it away to start afresh")

    def _enable_wal(self) -> None:
        """Switch to WAL, waiting out others doing the same on a new file.

        Changing the journal mode needs the file to itself and answers "locked" at once,
        without SQLite's busy timeout, while another process opens the same new file.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False) -> Store:
        """Open (creating when absent) the database file at `path`; with `read_only`, an
        existing one only for reading (a user who may read the daemon's files but not
        write them), changing nothing in it, migrations included.

        Raises StoreError, one line naming the path, when the file cannot be created,
        opened or written: missing directory, read-only directory or file, not a database.

        Example:
            >>> Store.open("/nonexistent/monitor.db")
            Traceback (most recent call last):
            monitor.errors.StoreError: cannot open database /nonexistent/monitor.db: ...
        """
        path = Path(path)
        if not read_only:
            return cls._opened(path, str(path), uri=False, read_only=False)
        try:
            return cls._opened(path, f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               read_only=True)
        except StoreError:
            # Reading a WAL database needs its -shm file, which SQLite makes in the folder;
            # without the right to, and with no daemon running (which removes -wal and -shm
            # as it stops), every page is in the file itself and cannot change under us.
            if Path(f"{path}-wal").exists():
                raise
            return cls._opened(path, f"{path.resolve().as_uri()}?mode=ro&immutable=1",
                               uri=True, read_only=True)

    @classmethod
    def _opened(cls, path: Path, target: str, *, uri: bool, read_only: bool) -> Store:
        try:
            # check_same_thread off: the lock in each Store serialises its threads.
            conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, uri=uri
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {_explain(path, exc)}") from exc
        try:
            return cls(sqlite_utils.Database(conn), read_only=read_only)
        except (sqlite3.Error, StoreError) as exc:
            conn.close()
            cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
            if not isinstance(cause, sqlite3.Error):
                raise  # already a complete message, such as a too-new schema
            raise StoreError(f"cannot open database {path}: {_explain(path, cause)}") from cause

    @classmethod
    def memory(cls) -> Store:
        """A private in-memory database, for tests."""
        return cls(sqlite_utils.Database(memory=True))

    def close(self) -> None:
        """Close the connection; the object is unusable afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """Turn any sqlite3 error into a one-line StoreError naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            where = self.path or "in-memory database"
            raise StoreError(f"cannot {doing} {where}: {_one_line(exc)}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes as one: all of them are stored, or none (a crash, an error).

        Example:
            >>> store = Store.memory()
            >>> r = store.start_release("demo", "v2", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=())
            >>> with store.transaction():
            ...     store.add_check(r.id, stage="smoke", name="/", ok=True, detail="200", at=1.0)
            ...     store.update_release(r.id, state="verification").state
            'verification'
        """
        with self._writing():
            self._joined += 1
            try:
                yield
            finally:
                self._joined -= 1

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, holding the write lock from its first statement;
        inside `transaction()`, a part of that one.

        IMMEDIATE, not DEFERRED: a transaction that reads before writing could
        otherwise fail at once with SQLITE_BUSY instead of waiting for the lock.
        """
        with self._lock:
            if self._joined:   # only the thread in `transaction()` gets past the lock now
                yield self._conn
                return
            try:
                with self._failures("write to"), self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    yield self._conn
            except StoreError as exc:
                self.writes_failed += 1
                self.write_error = str(exc)
                raise
            self.writes_ok += 1

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Reads outside any transaction: each statement sees the latest commit."""
        with self._lock, self._failures("read"):
            yield self._conn

    def _check_schema(self) -> None:
        """For reading only: the schema must be this program's, since nothing may change."""
        done = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if done != len(MIGRATIONS):
            which = "newer" if done > len(MIGRATIONS) else "older"
            fix = ("upgrade release-monitor" if done > len(MIGRATIONS)
                   else "this version's `monitor run` upgrades it")
            raise StoreError(f"database {self.path} has schema version {done}, {which} than "
                             f"this program's {len(MIGRATIONS)}: {fix}")

    def _migrate(self) -> None:
        """Apply the migrations this file has not seen, in one transaction.

        The version is written even when nothing is pending: that write is what
        proves, at start-up, that the file is writable.
        """
        with self._writing() as conn:
            done = conn.execute("PRAGMA user_version").fetchone()[0]
            if done > len(MIGRATIONS):
                raise StoreError(
                    f"database {self.path or ':memory:'} has schema version {done}, newer than "
                    f"this program's {len(MIGRATIONS)}: upgrade release-monitor"
                )
            for migration in MIGRATIONS[done:]:
                migration(self._db)
            # PRAGMA takes no parameters; the number is our own integer.
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS):d}")

    # ------------------------------------------------------------ series

    def series_ids(self, service: str, keys: Sequence[str]) -> npt.NDArray[np.int64]:
        """Ids of the canonical series `keys` of `service`, created when new.

        Ids never change once given, so they are cached for the life of the object.

        Example:
            >>> store = Store.memory()
            >>> store.series_ids("demo", ["up", 'errors_total{code="500"}']).tolist()
            [1, 2]
            >>> store.series_ids("demo", ["up"]).tolist()
            [1]
        """
        known = self._series.setdefault(service, {})
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        if missing:
            known.update(self._get_or_create_series(service, missing))
        return np.fromiter((known[key] for key in keys), dtype=np.int64, count=len(keys))

    def new_series(self, service: str, keys: Sequence[str]) -> list[str]:
        """The keys among `keys` that `service` has no series for yet (in their order).

        Example:
            >>> store = Store.memory()
            >>> _ = store.series_ids("demo", ["up"])
            >>> store.new_series("demo", ["up", "rss_bytes"])
            ['rss_bytes']
        """
        known = self._series.setdefault(service, {})
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        if missing:
            with self._reading() as conn:
                for key in missing:
                    row = conn.execute("SELECT id FROM series WHERE service = ? AND key = ?",
                                       (service, key)).fetchone()
                    if row is not None:
                        known[key] = int(row[0])
        return [key for key in missing if key not in known]

    def series_count(self, service: str) -> int:
        """How many series of `service` the store holds."""
        if service not in self._series_counts:
            with self._reading() as conn:
                self._series_counts[service] = int(conn.execute(
                    "SELECT COUNT(*) FROM series WHERE service = ?", (service,)).fetchone()[0])
        return self._series_counts[service]

    def _get_or_create_series(self, service: str, keys: list[str]) -> dict[str, int]:
        """Look up `keys`, inserting the absent ones, under the write lock."""
        found: dict[str, int] = {}
        created = 0
        with self._writing() as conn:
            for key in keys:
                row = conn.execute(
                    "SELECT id FROM series WHERE service = ? AND key = ?", (service, key)
                ).fetchone()
                if row is None:
                    cursor = conn.execute(
                        "INSERT INTO series (service, key) VALUES (?, ?)", (service, key)
                    )
                    assert cursor.lastrowid is not None  # always set after an INSERT
                    found[key] = cursor.lastrowid
                    created += 1
                else:
                    found[key] = int(row[0])
        # Counted once committed: a refused write (a full disk) created nothing.
        if service in self._series_counts:
            self._series_counts[service] += created
        return found

    def series_keys(self, service: str) -> dict[int, str]:
        """Every series of `service`: id -> canonical key."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id, key FROM series WHERE service = ? ORDER BY id", (service,)
            ).fetchall()
        return {int(series_id): key for series_id, key in rows}

    # ------------------------------------------------------------ samples

    def write_scrape(
        self,
        service: str,
        target: str,
        version: str | None,
        at: float,
        ids: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> None:
        """Store one scrape of `target` atomically: series `ids` had `values` at time `at`.

        Example:
            >>> store = Store.memory()
            >>> ids = store.series_ids("demo", ["up", "rss_bytes"])
            >>> store.write_scrape("demo", "10.0.0.1:8080", "v2", 60.0, ids, [1.0, 2.5e8])
            >>> store.sample_count("demo")
            2
        """
        id_array = np.ascontiguousarray(ids, dtype=_IDS)
        value_array = np.ascontiguousarray(values, dtype=_VALS)
        if id_array.ndim != 1 or id_array.shape != value_array.shape:
            raise ValueError(
                f"ids and values must be 1-D and equal in length, got shapes "
                f"{id_array.shape} and {value_array.shape}"
            )
        if np.unique(id_array).size != id_array.size:
            raise ValueError("ids must not repeat within one scrape")
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO batches (service, target, version, at, ids, vals) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (service, target, version, float(at), id_array.tobytes(), value_array.tobytes()),
            )
            self._seen.update(id_array.tolist())
            self._seen_until = max(self._seen_until, float(at))

    def read_window(
        self,
        service: str,
        start: float,
        end: float,
        *,
        version: str | None = None,
        series: Sequence[int] | npt.NDArray[np.int64] | None = None,
    ) -> Window:
        """The samples of `service` scraped in [start, end), as a series x scrape matrix.

        `version` keeps only scrapes of that version. `series` asks for exactly those
        rows (sorted, without repeats), all-NaN when never scraped; without it the rows
        are every series seen in the window.

        Example:
            >>> store = Store.memory()
            >>> a, b = store.series_ids("demo", ["a", "b"])
            >>> store.write_scrape("demo", "t1", "v1", 10.0, [a, b], [1.0, 2.0])
            >>> store.write_scrape("demo", "t1", "v1", 20.0, [b], [4.0])
            >>> store.read_window("demo", 0.0, 30.0).values.tolist()
            [[1.0, nan], [2.0, 4.0]]
        """
        sql = (
            "SELECT at, target, version, ids, vals FROM batches "
            "WHERE service = ? AND at >= ? AND at < ?"
        )
        params: tuple[Any, ...] = (service, float(start), float(end))
        if version is not None:
            sql += " AND version = ?"
            params += (version,)
        with self._reading() as conn:
            rows = conn.execute(sql + " ORDER BY at, id", params).fetchall()
        wanted = None if series is None else np.unique(np.asarray(series, dtype=np.int64))
        return _unpack(rows, wanted)

    def version_scraped_since(self, service: str, version: str, since: float) -> bool:
        """Whether the service's targets have reported `version` at or after `since`: the
        first such scrape ends the search (a version that runs is found at its start)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM batches WHERE service = ? AND at >= ? AND version = ? LIMIT 1",
                (service, float(since), version),
            ).fetchone()
        return row is not None

    def versions_scraped(self, service: str, start: float, end: float) -> list[str]:
        """The versions the service's targets reported in [start, end), sorted.

        Example:
            >>> store = Store.memory()
            >>> [a] = store.series_ids("demo", ["a"])
            >>> store.write_scrape("demo", "t1", "v1", 10.0, [a], [1.0])
            >>> store.versions_scraped("demo", 0.0, 30.0)
            ['v1']
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT DISTINCT version FROM batches WHERE service = ? AND at >= ? AND at < ?",
                (service, float(start), float(end)),
            ).fetchall()
        return sorted(str(row[0]) for row in rows)

    def prune(self, before: float, *, forget: bool = True) -> int:
        """Delete the scrapes taken before `before`, and (with `forget`) the series last
        scraped more than SERIES_GRACE before it; returns how many scrapes went.

        Deletes in small transactions so readers and the daemon's writes interleave.
        """
        removed = 0
        while True:
            with self._writing() as conn:
                deleted = conn.execute(
                    "DELETE FROM batches WHERE id IN "
                    "(SELECT id FROM batches WHERE at < ? LIMIT ?)",
                    (float(before), _PRUNE_CHUNK),
                ).rowcount
            removed += deleted
            if deleted < _PRUNE_CHUNK:
                break
        if forget:
            self._forget_series(before - SERIES_GRACE)
        return removed

    def _forget_series(self, before: float) -> None:
        """Mark the series scraped since the last prune as seen, then delete those last
        seen before `before` (their samples went with the scrapes). A series never marked
        yet (new since) is kept."""
        with self._writing() as conn:
            seen, self._seen = sorted(self._seen), set()
            for start in range(0, len(seen), _PRUNE_CHUNK):
                chunk = seen[start : start + _PRUNE_CHUNK]
                marks = ", ".join("?" * len(chunk))
                conn.execute(f"UPDATE series SET last_at = ? WHERE id IN ({marks})",
                             (self._seen_until, *chunk))
            gone = conn.execute("SELECT service, key FROM series WHERE last_at < ?",
                                (float(before),)).fetchall()
            conn.execute("DELETE FROM series WHERE last_at < ?", (float(before),))
        for service, key in gone:
            self._series.get(service, {}).pop(key, None)
            self._series_counts.pop(service, None)   # counted again when next asked

    def sample_count(self, service: str | None = None) -> int:
        """How many samples are stored, for one service or all."""
        sql = "SELECT COALESCE(SUM(length(ids)), 0) FROM batches"
        params: tuple[str, ...] = ()
        if service is not None:
            sql += " WHERE service = ?"
            params = (service,)
        with self._reading() as conn:
            total_bytes = conn.execute(sql, params).fetchone()[0]
        return int(total_bytes) // _IDS.itemsize

    # ------------------------------------------------------------ releases

    def start_release(
        self,
        service: str,
        version: str,
        *,
        at: float,
        change_class: str,
        period: float,
        baselines: Sequence[str],
    ) -> Release:
        """Register a release; registering the same service and version again returns
        the stored release unchanged.

        Example:
            >>> store = Store.memory()
            >>> store.start_release("demo", "v2", at=0.0, change_class="major",
            ...                     period=3600.0, baselines=("v1",)).state
            'smoke'
        """
        return self.add_release(service, version, at=at, change_class=change_class,
                                period=period, baselines=baselines)[0]

    def add_release(
        self,
        service: str,
        version: str,
        *,
        at: float,
        change_class: str,
        period: float,
        baselines: Sequence[str],
    ) -> tuple[Release, bool]:
        """As start_release, and whether this call stored it: in one transaction, so a
        daemon and a pipeline registering the same version at once agree on who did."""
        _check_choice("change_class", change_class, CHANGE_CLASSES)
        with self._writing() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO releases "
                "(service, version, started_at, change_class, period, baseline, baselines) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (service, version, float(at), change_class, float(period),
                 "+".join(baselines) or None, json.dumps(list(baselines))),
            ).rowcount == 1
        return self.release(service, version), inserted

    def reclassify(self, release_id: int, *, change_class: str, period: float,
                   judge_state: str) -> Release:
        """Give a release still being judged another change class, checking period and
        judge state (one transaction; a release judged meanwhile is left as it is)."""
        _check_choice("change_class", change_class, CHANGE_CLASSES)
        with self._writing() as conn:
            conn.execute("UPDATE releases SET change_class = ?, period = ?, judge_state = ? "
                         "WHERE id = ? AND state != 'done'",
                         (change_class, float(period), judge_state, int(release_id)))
            return self._release_by_id(conn, release_id)

    def rebase(self, release_id: int, baselines: Sequence[str]) -> Release:
        """Give a release not yet judged against its baselines (still in smoke or
        verification) other ones; a release further along is left as it is."""
        with self._writing() as conn:
            conn.execute("UPDATE releases SET baseline = ?, baselines = ? "
                         "WHERE id = ? AND state IN ('smoke', 'verification')",
                         ("+".join(baselines) or None, json.dumps(list(baselines)),
                          int(release_id)))
            return self._release_by_id(conn, release_id)

    def release(self, service: str, version: str) -> Release:
        """The release `version` of `service`; UnknownRelease when there is none."""
        with self._reading() as conn:
            row = conn.execute(
                _SELECT_RELEASES + "WHERE service = ? AND version = ?", (service, version)
            ).fetchone()
        if row is None:
            raise UnknownRelease(f"no release {version!r} of service {service!r}")
        return _release(row)

    def find_release(self, version: str, service: str | None = None) -> Release:
        """The release `version`, of `service` when given, else of the one service having it.

        Raises UnknownRelease when none has it, AmbiguousRelease when several do.

        Example:
            >>> store = Store.memory()
            >>> _ = store.start_release("api", "v9", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=())
            >>> store.find_release("v9").service
            'api'
        """
        if service is not None:
            return self.release(service, version)
        with self._reading() as conn:
            rows = conn.execute(
                _SELECT_RELEASES + "WHERE version = ? ORDER BY service", (version,)
            ).fetchall()
        if len(rows) == 1:
            return _release(rows[0])
        if rows:
            having = ", ".join(row[1] for row in rows)
            raise AmbiguousRelease(
                f"release {version} exists for several services ({having}): name the service"
            )
        known = ", ".join(self.services()) or "none"
        raise UnknownRelease(f"no release {version!r} (services: {known})")

    def releases(self, service: str | None = None, *, limit: int | None = None) -> list[Release]:
        """Releases, newest first, of one service or all."""
        sql = _SELECT_RELEASES
        params: tuple[Any, ...] = ()
        if service is not None:
            sql += "WHERE service = ? "
            params += (service,)
        sql += "ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params += (int(limit),)
        with self._reading() as conn:
            return [_release(row) for row in conn.execute(sql, params).fetchall()]

    def versions(self, service: str, *, skip: int = 0) -> dict[str, str]:
        """The versions of a service's releases, newest first, without the `skip` newest,
        each with its verdict once judged ("" while it is being judged)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT version, state, verdict FROM releases WHERE service = ? "
                "ORDER BY started_at DESC, id DESC LIMIT -1 OFFSET ?", (service, int(skip)),
            ).fetchall()
        return {version: verdict if state == "done" else "" for version, state, verdict in rows}

    def active_releases(self) -> list[Release]:
        """Releases still being checked (state other than "done"), newest first."""
        with self._reading() as conn:
            rows = conn.execute(
                _SELECT_RELEASES + "WHERE state != ? ORDER BY started_at DESC, id DESC", ("done",)
            ).fetchall()
        return [_release(row) for row in rows]

    def services(self) -> list[str]:
        """Every service with a release or a scraped series, sorted."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT service FROM releases UNION SELECT service FROM series ORDER BY service"
            ).fetchall()
        return [row[0] for row in rows]

    def update_release(self, release_id: int, **fields: Any) -> Release:
        """Change some columns of a release and return it; unknown names raise ValueError.

        Example:
            >>> store = Store.memory()
            >>> r = store.start_release("demo", "v2", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=())
            >>> store.update_release(r.id, state="done", ended_at=60.0).state
            'done'
        """
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise ValueError(
                f"cannot update release field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_UPDATABLE))}"
            )
        _check_release_values(fields)
        with self._writing() as conn:
            updated = replace(self._release_by_id(conn, release_id), **fields)
            row = asdict(updated)
            row["invalidated"] = int(bool(updated.invalidated))
            del row["baselines"]
            conn.execute(_UPDATE_RELEASE, row)
            return self._release_by_id(conn, release_id)

    def invalidate(self, service: str, version: str) -> Release:
        """Mark a release as never to be used as a baseline (for example a bad pass); a pin
        of it goes too."""
        with self._writing() as conn:
            changed = conn.execute(
                "UPDATE releases SET invalidated = 1 WHERE service = ? AND version = ?",
                (service, version),
            ).rowcount
            conn.execute("DELETE FROM pins WHERE service = ? AND version = ?", (service, version))
        if not changed:
            raise UnknownRelease(f"no release {version!r} of service {service!r}")
        return self.release(service, version)

    def pin(self, service: str, version: str) -> None:
        """Make `version` the baseline of every new release of `service` until unpinned
        (see `Release.why_not_pinnable`)."""
        release = self.release(service, version)  # UnknownRelease for a typo, not a silent pin
        why = release.why_not_pinnable()
        if why is not None:
            raise NotABaseline(f"{service} {version} cannot be pinned: {why}; only a release "
                               "that passed (or was inconclusive) can be a baseline")
        with self._writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO pins (service, version) VALUES (?, ?)", (service, version)
            )

    def unpin(self, service: str) -> None:
        """Forget the pinned baseline of `service` (nothing happens when none is pinned)."""
        with self._writing() as conn:
            conn.execute("DELETE FROM pins WHERE service = ?", (service,))

    def pinned(self, service: str) -> str | None:
        """The pinned baseline version of `service`, or None."""
        with self._reading() as conn:
            row = conn.execute("SELECT version FROM pins WHERE service = ?", (service,)).fetchone()
        return None if row is None else str(row[0])

    def healthy_releases(self, service: str, *, before: float, limit: int) -> list[Release]:
        """Up to `limit` passed, not invalidated releases started before `before`, newest first."""
        with self._reading() as conn:
            rows = conn.execute(
                _SELECT_RELEASES + "WHERE service = ? AND verdict = ? AND invalidated = 0 "
                "AND started_at < ? ORDER BY started_at DESC, id DESC LIMIT ?",
                (service, "pass", float(before), int(limit)),
            ).fetchall()
        return [_release(row) for row in rows]

    @staticmethod
    def _release_by_id(conn: sqlite3.Connection, release_id: int) -> Release:
        """The release with this id, read through `conn` (inside its transaction)."""
        row = conn.execute(_SELECT_RELEASES + "WHERE id = ?", (int(release_id),)).fetchone()
        if row is None:
            raise UnknownRelease(f"no release with id {release_id}")
        return _release(row)

    # ------------------------------------------------------------ stage results

    def add_check(
        self, release_id: int, *, stage: str, name: str, ok: bool, detail: str, at: float
    ) -> None:
        """Record one smoke or verification result of a release."""
        with self._writing() as conn:
            self._release_by_id(conn, release_id)
            conn.execute(
                "INSERT INTO checks (release_id, stage, name, ok, detail, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (int(release_id), stage, name, int(bool(ok)), detail, float(at)),
            )

    def checks(self, release_id: int) -> list[Check]:
        """A release's smoke and verification results, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT stage, name, ok, detail, at FROM checks WHERE release_id = ? "
                "ORDER BY at, id",
                (int(release_id),),
            ).fetchall()
        return [Check(stage, name, bool(ok), detail, at) for stage, name, ok, detail, at in rows]

    # ------------------------------------------------------------ verdicts

    def add_verdict(
        self,
        release_id: int,
        *,
        at: float,
        verdict: str,
        reason: str,
        findings: list[dict[str, Any]],
        first_alarm_at: float | None,
        decided_at: float | None,
        state: str,
        judge_state: str,
        signals: list[dict[str, Any]] | None = None,
        claims: Sequence[tuple[str, str]] = (),
        period: float | None = None,
    ) -> Release:
        """Append to the verdict history and set the release's current verdict, atomically.

        `claims` are (hook, idempotency key) pairs claimed for this verdict in the same
        transaction (see `claim_action`), so no crash can leave a verdict stored whose hooks
        were never recorded, and so never fired. `period` is the checking period the
        verdict was reached on: when the release has another by now (a pipeline gave its
        change class meanwhile), nothing is stored and the release is returned as it is.

        Example:
            >>> store = Store.memory()
            >>> r = store.start_release("demo", "v2", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=("v1",))
            >>> _ = store.add_verdict(r.id, at=60.0, verdict="pass", reason="", findings=[],
            ...                       first_alarm_at=None, decided_at=60.0, state="done",
            ...                       judge_state="{}")
            >>> [v.verdict for v in store.verdicts(r.id)]
            ['pass']
        """
        fields = {"verdict": verdict, "state": state, "judge_state": judge_state}
        _check_release_values(fields)
        reason = _bounded_reason(reason)
        findings_json = _to_json(findings)
        with self._writing() as conn:
            current = self._release_by_id(conn, release_id)
            if period is not None and current.period != period:
                return current
            conn.execute(
                "UPDATE releases SET verdict = ?, reason = ?, first_alarm_at = ?, "
                "decided_at = ?, state = ?, judge_state = ? WHERE id = ?",
                (verdict, reason, _opt_float(first_alarm_at), _opt_float(decided_at), state,
                 judge_state, int(release_id)),
            )
            latest = conn.execute(
                "SELECT id, verdict FROM verdicts WHERE release_id = ? ORDER BY at DESC, id DESC "
                "LIMIT 1", (int(release_id),),
            ).fetchone()
            row = (float(at), verdict, reason, findings_json, _to_json(signals or []))
            if latest is not None and latest[1] == verdict:
                # The same verdict again only refreshes the evidence: the history holds every
                # change of verdict, not every evaluation of a release still being watched.
                conn.execute(
                    "UPDATE verdicts SET at = ?, verdict = ?, reason = ?, findings = ?, "
                    "signals = ? WHERE id = ?", (*row, latest[0]),
                )
            else:
                conn.execute(
                    "INSERT INTO verdicts (release_id, at, verdict, reason, findings, signals) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (int(release_id), *row),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO actions "
                "(release_id, verdict, hook, key, state, attempts, outcome, at) "
                "VALUES (?, ?, ?, ?, 'claimed', 0, '', ?)",
                [(int(release_id), verdict, hook, key, float(at)) for hook, key in claims],
            )
            return self._release_by_id(conn, release_id)

    def verdicts(self, release_id: int) -> list[VerdictRecord]:
        """A release's verdict history, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT at, verdict, reason, findings, signals FROM verdicts "
                "WHERE release_id = ? ORDER BY at, id",
                (int(release_id),),
            ).fetchall()
        return [VerdictRecord(at, verdict, reason, json.loads(found), json.loads(signals))
                for at, verdict, reason, found, signals in rows]

    def latest_verdict(self, release_id: int) -> VerdictRecord | None:
        """The newest entry of a release's verdict history."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT at, verdict, reason, findings, signals FROM verdicts "
                "WHERE release_id = ? ORDER BY at DESC, id DESC LIMIT 1",
                (int(release_id),),
            ).fetchone()
        if row is None:
            return None
        at, verdict, reason, found, signals = row
        return VerdictRecord(at, verdict, reason, json.loads(found), json.loads(signals))

    # ------------------------------------------------------------ baselines

    def save_baselines(
        self,
        release_id: int,
        signals: Mapping[str, tuple[dict[str, Any], npt.ArrayLike]],
    ) -> None:
        """Store (replacing) the baselines of signals: per signal a JSON-able summary and
        samples, all in one transaction, so no reader sees some signals without the rest.

        Example:
            >>> store = Store.memory()
            >>> r = store.start_release("demo", "v1", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=())
            >>> store.save_baselines(r.id, {"latency_p99": ({"median": 0.2}, [0.1, 0.3])})
            >>> store.load_baseline(r.id)["latency_p99"][0]
            {'median': 0.2}
        """
        rows = []
        for signal, (summary, reservoir) in signals.items():
            samples = np.ascontiguousarray(reservoir, dtype=_VALS)
            rows.append((int(release_id), signal, _to_json(summary), json.dumps(samples.shape),
                         samples.tobytes()))
        with self._writing() as conn:
            self._release_by_id(conn, release_id)
            conn.executemany(
                "INSERT OR REPLACE INTO baselines (release_id, signal, summary, shape, reservoir) "
                "VALUES (?, ?, ?, ?, ?)", rows)

    def load_baseline(self, release_id: int) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        """Every stored signal baseline of a release: signal -> (summary, reservoir)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT signal, summary, shape, reservoir FROM baselines WHERE release_id = ? "
                "ORDER BY signal",
                (int(release_id),),
            ).fetchall()
        return {
            signal: (json.loads(summary),
                     np.frombuffer(blob, dtype=_VALS).reshape(json.loads(shape)).copy())
            for signal, summary, shape, blob in rows
        }

    # ------------------------------------------------------------ hook actions

    def claim_action(
        self, release_id: int, *, verdict: str, hook: str, key: str, at: float
    ) -> bool:
        """Record, before firing, that `hook` acts on `verdict` of a release.

        True when newly recorded (the caller fires the hook), False when it was already
        claimed, by this process or another, before or after a crash: a hook never
        fires twice for the same release and verdict.

        Example:
            >>> store = Store.memory()
            >>> r = store.start_release("demo", "v2", at=0.0, change_class="minor",
            ...                         period=60.0, baselines=("v1",))
            >>> store.claim_action(r.id, verdict="rollback", hook="argo", key="k1", at=5.0)
            True
            >>> store.claim_action(r.id, verdict="rollback", hook="argo", key="k1", at=6.0)
            False
        """
        with self._writing() as conn:
            self._release_by_id(conn, release_id)
            inserted = conn.execute(
                "INSERT OR IGNORE INTO actions "
                "(release_id, verdict, hook, key, state, attempts, outcome, at) "
                "VALUES (?, ?, ?, ?, ?, 0, '', ?)",
                (int(release_id), verdict, hook, key, "claimed", float(at)),
            ).rowcount
        return inserted == 1

    def finish_action(
        self,
        release_id: int,
        *,
        verdict: str,
        hook: str,
        state: str,
        attempts: int,
        outcome: str,
        at: float,
    ) -> None:
        """Record how a claimed hook ended; ValueError when it was never claimed."""
        with self._writing() as conn:
            changed = conn.execute(
                "UPDATE actions SET state = ?, attempts = ?, outcome = ?, at = ? "
                "WHERE release_id = ? AND verdict = ? AND hook = ?",
                (state, int(attempts), outcome, float(at), int(release_id), verdict, hook),
            ).rowcount
        if not changed:
            raise ValueError(
                f"hook {hook} was never claimed for verdict {verdict} of release {release_id}"
            )

    def unfinished_actions(self) -> list[tuple[int, Action]]:
        """Hooks claimed but never finished (the process died mid-delivery), with releases."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT release_id, verdict, hook, key, state, attempts, outcome, at "
                "FROM actions WHERE state = 'claimed' ORDER BY rowid"
            ).fetchall()
        return [(int(row[0]), Action(*row[1:])) for row in rows]

    def actions(self, release_id: int) -> list[Action]:
        """A release's hook actions, in the order they were claimed."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT verdict, hook, key, state, attempts, outcome, at FROM actions "
                "WHERE release_id = ? ORDER BY rowid",
                (int(release_id),),
            ).fetchall()
        return [Action(*row) for row in rows]


# ---------------------------------------------------------------- helpers


def _unpack(rows: list[tuple[Any, ...]], wanted: npt.NDArray[np.int64] | None) -> Window:
    """Scatter packed scrapes into a series x scrape matrix.

    Scrapes of one target usually carry the same ids in the same order, so columns
    are grouped by their id BLOB and each group is placed with one fancy assignment.
    """
    layouts: dict[bytes, list[int]] = {}
    for column, row in enumerate(rows):
        layouts.setdefault(row[3], []).append(column)
    if wanted is None:
        parts = [np.frombuffer(blob, dtype=_IDS) for blob in layouts]
        wanted = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    values = np.full((wanted.size, len(rows)), np.nan)
    for blob, columns in layouts.items():
        ids = np.frombuffer(blob, dtype=_IDS)
        place = np.searchsorted(wanted, ids)
        kept = place < wanted.size
        kept[kept] = wanted[place[kept]] == ids[kept]
        if not kept.any():
            continue
        block = np.frombuffer(b"".join(rows[c][4] for c in columns), dtype=_VALS)
        block = block.reshape(len(columns), ids.size)
        values[place[kept][:, None], np.asarray(columns)[None, :]] = block[:, kept].T
    return Window(
        times=np.array([row[0] for row in rows], dtype=np.float64),
        targets=tuple(row[1] for row in rows),
        versions=tuple(row[2] for row in rows),
        series_ids=wanted.astype(np.int64, copy=False),
        values=values,
    )


def _release(row: tuple[Any, ...]) -> Release:
    """A row of _SELECT_RELEASES as a Release."""
    fields = dict(zip(_RELEASE_FIELDS, row, strict=True))
    fields["invalidated"] = bool(fields["invalidated"])
    fields["baselines"] = tuple(json.loads(fields["baselines"]))
    return Release(**fields)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """ValueError naming the parameter and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_release_values(fields: dict[str, Any]) -> None:
    """Reject state, verdict or change-class values outside their vocabularies."""
    for name, allowed in (("state", STATES), ("verdict", VERDICTS),
                          ("change_class", CHANGE_CLASSES)):
        if name in fields:
            _check_choice(name, fields[name], allowed)
    if "judge_state" in fields and not isinstance(fields["judge_state"], str):
        raise ValueError("judge_state must be JSON text (str)")


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays inside findings and summaries serialize."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _file_of(conn: sqlite3.Connection) -> str | None:
    """The main database's file name, None for an in-memory database."""
    for _, name, filename in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(filename) or None
    return None


_OPEN_FAILURES = {
    sqlite3.SQLITE_NOTADB: "not an SQLite database",
    sqlite3.SQLITE_READONLY: "the file or its directory is read-only",
    sqlite3.SQLITE_CANTOPEN: "cannot create or open the file (is the directory writable?)",
    sqlite3.SQLITE_PERM: "permission denied",
}


def _explain(path: Path, exc: sqlite3.Error) -> str:
    """Why a database could not be opened, in words an operator can act on."""
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    if path.is_dir():
        return "it is a directory; give a file in it, e.g. " + str(path / "release-monitor.db")
    # The extended code (SQLITE_READONLY_DIRECTORY, ...) carries the primary one in its low byte.
    primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    hint = _OPEN_FAILURES.get(primary)
    return f"{hint} ({_one_line(exc)})" if hint else _one_line(exc)
