"""The release policy: a TOML file written before the release, validated up front.

Every mistake is reported as one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from monitor.durations import format_duration, parse_duration
from monitor.errors import ConfigError
from monitor.names import name_problem, service_name_problem
from monitor.redact import redact_url
from monitor.urls import url_problem

SIGNAL_KINDS = ("gauge", "rate", "ratio", "quantile")
DIRECTIONS = ("increase", "decrease", "both")
CHANGE_CLASSES = ("minor", "major")
VERDICTS_FOR_HOOKS = ("pass", "hotfix", "rollback", "inconclusive")
AGGREGATIONS = ("sum", "mean", "max")

LABEL_MATCHER = r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"'   # a label and its value
# A name, and label matchers separated by commas (a trailing one allowed), as in PromQL.
_SELECTOR = re.compile(
    rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{\s*(?:{LABEL_MATCHER}(?:\s*,\s*{LABEL_MATCHER})*\s*,?\s*)?\}})?$")

T = TypeVar("T")


@dataclass(frozen=True)
class SignalRule:
    """How one health signal is read, which way is worse, and how much worse matters."""

    name: str
    kind: str = "gauge"
    metric: str = ""
    numerator: str = ""
    denominator: str = ""
    quantile: float = 0.95
    aggregate: str = "sum"
    query: str = ""
    numerator_query: str = ""
    denominator_query: str = ""
    bad: str = "both"
    ignore_below: float = 0.05
    tolerance: float = 0.25
    absolute: float = 0.0
    critical: bool = False
    min_samples: int = 10
    min_events: float = 10.0
    min_trials: float = 200.0
    must_have_data: bool = False
    leak: bool = False
    limit: float | None = None
    limit_metric: str = ""

    def definition(self) -> str:
        """What the signal's values are read from, and how: a baseline summarized under
        another definition summarized other data."""
        return json.dumps({field: getattr(self, field) for field in _DEFINING}, sort_keys=True)


# The fields of a rule that decide its values (the others decide how they are judged).
_DEFINING = ("kind", "metric", "numerator", "denominator", "quantile", "aggregate", "query",
             "numerator_query", "denominator_query")


@dataclass(frozen=True)
class PromSource:
    """A Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics).

    Credentials are never written in the policy: they are read from the environment or a
    file named here.
    """

    url: str
    tenant: str = ""
    bearer_token_env: str = ""
    bearer_token_file: str = ""
    basic_user: str = ""
    basic_password_env: str = ""
    basic_password_file: str = ""
    timeout: float = 30.0
    step: float = 15.0
    retries: int = 3


@dataclass(frozen=True)
class Target:
    url: str
    interval: float = 15.0
    timeout: float = 5.0
    max_bytes: int = 10 * 1024 * 1024
    max_series: int = 20_000
    name: str = ""

    @property
    def label(self) -> str:
        """What the target is called in the store, logs and metrics: its name, else its URL
        without credentials and query values."""
        return self.name or redact_url(self.url)


@dataclass(frozen=True)
class Probe:
    """A smoke probe: one HTTP request with an expected status, body text and latency budget."""

    name: str
    url: str
    expect_status: int = 200
    expect_body: str = ""
    max_latency: float = 2.0


@dataclass(frozen=True)
class VerifyCommand:
    """One verification test, run as an argument list without a shell."""

    name: str
    argv: tuple[str, ...]
    timeout: float = 300.0


@dataclass(frozen=True)
class Hook:
    """What to call when a release's verdict changes: a webhook or a command."""

    name: str
    on: tuple[str, ...]
    url: str = ""
    command: tuple[str, ...] = ()
    timeout: float = 30.0
    budget: float = 300.0
    dry_run: bool = False


@dataclass(frozen=True)
class ServicePolicy:
    name: str
    targets: tuple[Target, ...] = ()
    version_metric: str = ""
    version_label: str = "version"
    periods: Mapping[str, float] = field(default_factory=lambda: {"minor": 900.0, "major": 7200.0})
    evaluation_interval: float = 60.0
    persistence: int = 3
    baselines: int = 1
    baseline_window: float = 86400.0
    leak_horizon: float = 86400.0
    leak_block: float = 300.0
    smoke: tuple[Probe, ...] = ()
    # A failing probe is tried again (a pod still starting, one passing 503), this many
    # times in all, this long apart, before the smoke test fails.
    smoke_attempts: int = 3
    smoke_retry_wait: float = 5.0
    verify: tuple[VerifyCommand, ...] = ()
    signals: tuple[SignalRule, ...] = ()
    hooks: tuple[Hook, ...] = ()
    prometheus: PromSource | None = None

    def period(self, change_class: str) -> float:
        return self.periods[change_class]


@dataclass(frozen=True)
class MonitorConfig:
    path: str
    database: str = "release-monitor.db"
    listen_host: str = "127.0.0.1"
    listen_port: int = 9847
    retention: float = 7 * 86400.0
    api_token_env: str = ""
    services: Mapping[str, ServicePolicy] = field(default_factory=dict)

    def service(self, name: str) -> ServicePolicy:
        """The policy of service `name`; a ConfigError naming the known ones if none."""
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError(
                f"{self.path}: services.{name}: not in the policy (services: {known})"
            ) from None


class _Reader:
    """Reads typed values from a TOML table, naming file and key in every error."""

    def __init__(self, path: str, table: Mapping[str, Any], prefix: str) -> None:
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        where = f"{self.prefix}.{key}" if self.prefix else key
        # Quoted TOML keys may hold newlines; the message stays one line.
        where = where if where.isprintable() else repr(where)[1:-1]
        return ConfigError(f"{self.path}: {where}: {message}")

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_names(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_names(kinds)}, got {value!r}")
        return value

    def require(self, key: str, kind: type[T] | tuple[type, ...]) -> Any:
        if key not in self.table:
            self.used.add(key)
            raise self.fail(key, "is required")
        return self.get(key, kind)

    def number(self, key: str, default: float | None, *, low: float = 0.0) -> Any:
        value = self.get(key, (int, float), default)
        if value is None:
            return None
        if not _is_finite(value):
            raise self.fail(key, f"must be a finite number, got {_brief(value)}")
        if not value >= low:
            raise self.fail(key, f"must be at least {low:g}, got {value!r}")
        return float(value)

    def count(self, key: str, default: int, *, low: int) -> int:
        """A whole number, at least `low` (2048.5 bytes is a mistake, not 2048)."""
        value: int = self.get(key, int, default)
        if value < low:
            raise self.fail(key, f"must be at least {low}, got {value!r}")
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.get(key, (str, int, float), None)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
        if not math.isfinite(seconds):
            raise self.fail(key, f"must be a finite duration, got {_brief(value)}")
        if seconds <= 0:
            raise self.fail(key, "must be longer than zero")
        return seconds

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def argv(self, key: str) -> tuple[str, ...]:
        """An argument list; a program given by a relative path (`./verify.sh`) is found
        relative to the policy file, as its other paths are, wherever the daemon runs."""
        value = self.get(key, list, None)
        if value is None:
            return ()
        if not value or not all(isinstance(part, str) for part in value):
            raise self.fail(key, "must be a non-empty list of strings (an argument list)")
        program = self._beside(value[0]) if "/" in value[0] else value[0]
        # A bare name is looked up on PATH, where no program's name has spaces; a path
        # with spaces may be a real file.
        if len(value) == 1 and len(value[0].split()) > 1 and (
                "/" not in value[0] or not os.path.exists(program)):
            # Never run through a shell: "kubectl rollout undo" is one program's name.
            raise self.fail(key, f"{_brief(value[0])} is a whole command line in one string: "
                                 f"give each argument its own, {json.dumps(value[0].split())}")
        return (program, *value[1:])

    def path_beside(self, key: str) -> str:
        """A file's path, relative ones found beside the policy file ("" when not given)."""
        value = str(self.get(key, str, ""))
        return self._beside(value) if value else value

    def _beside(self, path: str) -> str:
        """A relative path as relative to the policy file, as its other paths are,
        wherever the daemon runs (a policy made in code has no file to be beside)."""
        if os.path.isabs(path) or self.path.startswith("<"):
            return path
        return os.path.abspath(os.path.join(os.path.dirname(self.path), path))

    def tables(self, key: str) -> list[tuple[str, Mapping[str, Any]]]:
        """An array of tables, each with its own key path for errors."""
        value = self.get(key, list, [])
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{index}]", "expected a table")
        return [(f"{key}[{index}]", item) for index, item in enumerate(value)]

    def child(self, key: str, table: Mapping[str, Any]) -> _Reader:
        prefix = f"{self.prefix}.{key}" if self.prefix else key
        return _Reader(self.path, table, prefix)

    def done(self) -> None:
        for key in self.table:
            if key not in self.used:
                known = sorted(self.used - set(self.table))   # not one already given
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
                raise self.fail(key, "unknown key" + (f" (did you mean {close[0]}?)" if close else ""))


def _is_finite(value: int | float) -> bool:
    """True for a number a float holds exactly enough: not NaN, infinite or too large."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond the float range
        return False


def _brief(value: object) -> str:
    """The value for an error message, cut short: TOML integers can have any length."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_names(kinds: tuple[type, ...]) -> str:
    # An integer-only key must not answer "expected a number" to 2.0.
    names = {int: "a number" if float in kinds else "a whole number", float: "a number",
             str: "a string", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(dict.fromkeys(names.get(kind, kind.__name__) for kind in kinds))


def load_policy(path: str | Path) -> MonitorConfig:
    """Read and validate a policy file; raise ConfigError naming file and key on any mistake."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text") from None
    return parse_policy(text, name)


def parse_policy(text: str, name: str = "<policy>") -> MonitorConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested deeper than the parser goes
        raise ConfigError(f"{name}: invalid TOML: nested too deeply") from None
    root = _Reader(name, data, "")
    monitor = root.child("monitor", root.get("monitor", dict, {}))
    listen = monitor.get("listen", str, "127.0.0.1:9847")
    host, port = _listen_address(monitor, listen)
    services_table = root.get("services", dict, {})
    services = {
        service: _service(root.child(f"services.{service}", _as_table(root, service, body)), service)
        for service, body in services_table.items()
    }
    database = monitor.get("database", str, "release-monitor.db")
    if not database or "\x00" in database:
        raise monitor.fail("database", "must be a file name, without NUL characters")
    config = MonitorConfig(
        path=name,
        database=database,
        listen_host=host,
        listen_port=port,
        retention=monitor.duration("retention", 7 * 86400.0),
        api_token_env=monitor.get("api_token_env", str, ""),
        services=services,
    )
    longest = max((max(s.periods.values()), name) for name, s in services.items()) if services else None
    if longest is not None and config.retention < longest[0]:
        raise monitor.fail("retention", f"shorter than services.{longest[1]}'s longest checking "
                                        f"period ({format_duration(config.retention)} < "
                                        f"{format_duration(longest[0])}): its samples would be "
                                        "pruned before it is judged")
    monitor.done()
    root.done()
    # Last, so that a misspelt [service.shop] is named as the unknown key it is.
    if not services:
        raise root.fail("services", "no [services.NAME] table: nothing to monitor")
    return config


def _as_table(root: _Reader, service: str, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise root.fail(f"services.{service}", "expected a table")
    problem = service_name_problem(service)
    if problem:
        raise root.fail(f"services.{service}", problem)
    return body


def _listen_address(reader: _Reader, listen: str) -> tuple[str, int]:
    try:
        return parse_listen(listen)
    except ValueError as exc:
        raise reader.fail("listen", str(exc)) from None


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) -> (host, port); ValueError naming what is wrong."""
    if "/" in listen:   # a URL's scheme or path: "http://127.0.0.1:9847" is no host
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9847, not a URL: {listen!r}")
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    # ASCII digits only: isdigit() also accepts "²", which int() refuses. An empty host
    # would listen on every interface.
    if not sep or not (port.isascii() and port.isdigit()) or not host or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9847, got {listen!r}")
    return host, int(port)


# More earlier releases than any candidate is sensibly compared with at once.
MAX_BASELINES = 100


def _service(reader: _Reader, name: str) -> ServicePolicy:
    period_reader = reader.child("period", reader.get("period", dict, {}))
    periods = {
        "minor": period_reader.duration("minor", 900.0),
        "major": period_reader.duration("major", 7200.0),
    }
    if periods["major"] < periods["minor"]:
        given = "" if "major" in period_reader.table else ", the default"
        raise period_reader.fail("major", f"shorter than minor ({format_duration(periods['major'])}"
                                          f"{given} < {format_duration(periods['minor'])}): a major "
                                          "change is watched at least as long as a minor one")
    period_reader.done()
    signals_table = reader.get("signals", dict, {})
    signals = tuple(
        _signal(reader.child(f"signals.{signal}", _signal_table(reader, signal, body)), signal)
        for signal, body in signals_table.items()
    )
    persistence = reader.get("persistence", int, 3)
    if persistence < 1:
        raise reader.fail("persistence", f"must be at least 1, got {persistence}")
    baselines = reader.get("baselines", int, 1)
    if not 1 <= baselines <= MAX_BASELINES:
        raise reader.fail("baselines", f"must be 1 to {MAX_BASELINES}, got {baselines}")
    smoke_attempts = reader.get("smoke_attempts", int, 3)
    if smoke_attempts < 1:
        raise reader.fail("smoke_attempts", f"must be at least 1, got {smoke_attempts}")
    policy = ServicePolicy(
        name=name,
        targets=tuple(_target(reader.child(k, t)) for k, t in reader.tables("targets")),
        version_metric=reader.get("version_metric", str, ""),
        version_label=reader.get("version_label", str, "version"),
        periods=periods,
        evaluation_interval=reader.duration("evaluation_interval", 60.0),
        persistence=persistence,
        baselines=baselines,
        baseline_window=reader.duration("baseline_window", 86400.0),
        leak_horizon=reader.duration("leak_horizon", 86400.0),
        leak_block=reader.duration("leak_block", 300.0),
        smoke=tuple(_probe(reader.child(k, t)) for k, t in reader.tables("smoke")),
        smoke_attempts=smoke_attempts,
        smoke_retry_wait=reader.duration("smoke_retry_wait", 5.0),
        verify=tuple(_verify(reader.child(k, t)) for k, t in reader.tables("verify")),
        signals=signals,
        hooks=tuple(_hook(reader.child(k, t)) for k, t in reader.tables("hooks")),
        prometheus=_prometheus(reader),
    )
    labels: dict[str, int] = {}
    for index, target in enumerate(policy.targets):
        if target.interval > min(policy.periods.values()):
            raise reader.fail(f"targets[{index}].interval", "longer than the shortest checking "
                              f"period ({format_duration(target.interval)} > "
                              f"{format_duration(min(policy.periods.values()))}): a release could "
                              "end without a single scrape")
        # Samples are stored under the label: two targets under one would be mixed up.
        if target.label in labels:
            key, hint = ("name", "its own") if target.name else ("url", "a")
            raise reader.fail(f"targets[{index}].{key}", f"{target.label!r} is what "
                              f"targets[{labels[target.label]}] is called too; give each {hint} "
                              "`name`")
        labels[target.label] = index
    # A hook's name keys its deliveries and its failure counter; a check's, its result.
    _unique_names(reader, "smoke", [p.name for p in policy.smoke])
    _unique_names(reader, "verify", [c.name for c in policy.verify])
    _unique_names(reader, "hooks", [h.name for h in policy.hooks])
    shortest = min(policy.periods.values())
    if policy.prometheus is not None and policy.prometheus.step > shortest:
        raise reader.fail("prometheus.step", f"longer than the shortest checking period "
                                             f"({format_duration(policy.prometheus.step)} > "
                                             f"{format_duration(shortest)})")
    if policy.evaluation_interval > shortest:
        raise reader.fail("evaluation_interval", f"longer than the shortest checking period "
                                                 f"({format_duration(policy.evaluation_interval)} > "
                                                 f"{format_duration(shortest)})")
    # A finding seen at the period's end is watched that many evaluations more: past
    # the period's own length, a verdict would wait longer than the check it ends.
    longest = max(policy.periods.values())
    if (policy.persistence - 1) * policy.evaluation_interval > longest:
        raise reader.fail("persistence", f"{policy.persistence} evaluations "
                                         f"{format_duration(policy.evaluation_interval)} apart "
                                         "would watch a finding seen at the end longer than the "
                                         f"longest checking period ({format_duration(longest)})")
    if policy.prometheus is not None:
        for rule in policy.signals:
            if not (rule.query or rule.numerator_query):
                raise reader.fail(f"signals.{rule.name}.query",
                                  "signals of a service read by PromQL need a query")
            if rule.limit_metric:
                raise reader.fail(f"signals.{rule.name}.limit_metric",
                                  "a service read by PromQL gives its memory limit as `limit`")
    else:
        for rule in policy.signals:
            if rule.query or rule.numerator_query:
                key = "query" if rule.query else "numerator_query"
                raise reader.fail(f"signals.{rule.name}.{key}",
                                  "queries are for a service read by PromQL ([prometheus]); a "
                                  "scraped one names its series with metric, or numerator "
                                  "and denominator")
    reader.done()
    return policy


def _prometheus(parent: _Reader) -> PromSource | None:
    table = parent.get("prometheus", dict, None)
    if table is None:
        return None
    reader = parent.child("prometheus", table)
    retries = reader.get("retries", int, 3)
    if retries < 0:
        raise reader.fail("retries", f"must be at least 0, got {retries}")
    source = PromSource(
        url=_url(reader, "url"),
        tenant=reader.get("tenant", str, ""),
        bearer_token_env=reader.get("bearer_token_env", str, ""),
        bearer_token_file=reader.path_beside("bearer_token_file"),
        basic_user=reader.get("basic_user", str, ""),
        basic_password_env=reader.get("basic_password_env", str, ""),
        basic_password_file=reader.path_beside("basic_password_file"),
        timeout=reader.duration("timeout", 30.0),
        step=reader.duration("step", 15.0),
        retries=retries,
    )
    if source.bearer_token_env and source.bearer_token_file:
        raise reader.fail("bearer_token_file", "use bearer_token_env or bearer_token_file, not both")
    if (source.bearer_token_env or source.bearer_token_file) and source.basic_user:
        raise reader.fail("basic_user", "a server takes a bearer token or basic auth, not both")
    if source.basic_password_env and source.basic_password_file:
        raise reader.fail("basic_password_file",
                          "use basic_password_env or basic_password_file, not both")
    if (source.basic_password_env or source.basic_password_file) and not source.basic_user:
        key = "basic_password_env" if source.basic_password_env else "basic_password_file"
        raise reader.fail(key, "a password without basic_user is never sent: set basic_user")
    reader.done()
    return source


def _signal_table(reader: _Reader, signal: str, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise reader.fail(f"signals.{signal}", "expected a table")
    return body


def _selector(reader: _Reader, key: str, required: bool) -> str:
    value = reader.require(key, str) if required else reader.get(key, str, "")
    if value and not _SELECTOR.match(value):
        # A selector here is matched on scraped series: equality only, no PromQL.
        other = re.search(r"!=|=~|!~", value)
        why = (f"only label=\"value\" matchers are supported, not {other.group()}" if other
               else "not a metric selector such as name{label=\"value\"}")
        raise reader.fail(key, f"{why}: {value!r}")
    # Two values for one label match nothing; the same value twice matches as once.
    matched: dict[str, str] = {}
    for label, wanted in re.findall(LABEL_MATCHER, value):
        if matched.setdefault(label, wanted) != wanted:
            raise reader.fail(key, f"label {label!r} is matched to two values: {value!r}")
    return str(value)


def _signal(reader: _Reader, name: str) -> SignalRule:
    kind = reader.choice("kind", SIGNAL_KINDS, "gauge")
    query = reader.get("query", str, "")
    numerator_query = reader.get("numerator_query", str, "")
    denominator_query = reader.get("denominator_query", str, "")
    if bool(numerator_query) != bool(denominator_query):
        raise reader.fail("denominator_query", "numerator_query and denominator_query go together")
    needs_metric = not (query or numerator_query)
    rule = SignalRule(
        name=name,
        kind=kind,
        metric=_selector(reader, "metric", needs_metric and kind != "ratio"),
        numerator=_selector(reader, "numerator", needs_metric and kind == "ratio"),
        denominator=_selector(reader, "denominator", needs_metric and kind == "ratio"),
        quantile=_fraction(reader, "quantile", 0.95),
        aggregate=reader.choice("aggregate", AGGREGATIONS,
                            "mean" if kind in ("gauge", "quantile") else "sum"),
        query=query,
        numerator_query=numerator_query,
        denominator_query=denominator_query,
        bad=reader.choice("bad", DIRECTIONS, default_direction(name)),
        ignore_below=reader.number("ignore_below", 0.05),
        tolerance=reader.number("tolerance", 0.25),
        absolute=reader.number("absolute", 0.0),
        critical=reader.get("critical", bool, False),
        min_samples=_whole(reader, "min_samples", 10, low=2),
        min_events=reader.number("min_events", 10.0),
        min_trials=reader.number("min_trials", 200.0),
        must_have_data=reader.get("must_have_data", bool, False),
        leak=reader.get("leak", bool, False),
        limit=reader.number("limit", None),
        limit_metric=_selector(reader, "limit_metric", False),
    )
    if rule.tolerance < rule.ignore_below:
        raise reader.fail("tolerance", f"must not be below ignore_below ({rule.ignore_below})")
    _meaningful_keys(reader, rule)
    reader.done()
    return rule


# Keys that mean something for some kinds of signal only: given for another, they would be
# ignored without a word.
_KIND_KEYS = {"metric": ("gauge", "rate", "quantile"), "query": ("gauge", "rate", "quantile"),
              "numerator": ("ratio",), "denominator": ("ratio",),
              "numerator_query": ("ratio",), "denominator_query": ("ratio",),
              "quantile": ("quantile",)}


def _whole(reader: _Reader, key: str, default: int, *, low: int) -> int:
    value = reader.number(key, default, low=low)
    if value != int(value):
        raise reader.fail(key, f"must be a whole number, got {value:g}")
    return int(value)


def _meaningful_keys(reader: _Reader, rule: SignalRule) -> None:
    for key, kinds in _KIND_KEYS.items():
        if key in reader.table and rule.kind not in kinds:
            raise reader.fail(key, f"not for a signal of kind {rule.kind!r} "
                                   f"(only {' or '.join(repr(k) for k in kinds)})")
    if rule.limit is not None and rule.limit_metric:
        raise reader.fail("limit_metric", "give limit or limit_metric, not both")
    for key in ("limit", "limit_metric"):
        if key in reader.table and not rule.leak:
            raise reader.fail(key, "a memory limit is for the leak check: set leak = true")
    if rule.limit is not None and rule.limit <= 0:
        raise reader.fail("limit", "must be above 0 (leave it out for no limit)")
    if rule.limit_metric and rule.aggregate == "sum":
        raise reader.fail("limit_metric", "one target's limit does not bound the targets' "
                                          'memory added up: use aggregate = "max" (the fullest)')


def _fraction(reader: _Reader, key: str, default: float) -> float:
    value = reader.number(key, default)
    if not 0.0 < value < 1.0:
        raise reader.fail(key, f"must be between 0 and 1, got {value}")
    return float(value)


def _url(reader: _Reader, key: str, *, required: bool = True) -> str:
    url = str(reader.require(key, str) if required else reader.get(key, str, ""))
    problem = url_problem(url) if url else None
    if problem:
        # Shown without credentials or query: a URL may carry a password or a token.
        raise reader.fail(key, f"{problem}, got {redact_url(url)!r}")
    return url


def _target(reader: _Reader) -> Target:
    target = Target(
        url=_url(reader, "url"),
        interval=reader.duration("interval", 15.0),
        timeout=reader.duration("timeout", 5.0),
        max_bytes=reader.count("max_bytes", 10 * 1024 * 1024, low=1024),
        max_series=reader.count("max_series", 20_000, low=1),
        name=reader.get("name", str, ""),
    )
    problem = name_problem(target.name) if "name" in reader.table else None
    if problem:
        raise reader.fail("name", problem)
    reader.done()
    return target


def _probe(reader: _Reader) -> Probe:
    probe = Probe(
        name=reader.require("name", str),
        url=_url(reader, "url"),
        expect_status=_http_status(reader, "expect_status", 200),
        expect_body=reader.get("expect_body", str, ""),
        max_latency=reader.duration("max_latency", 2.0),
    )
    reader.done()
    return probe


def _http_status(reader: _Reader, key: str, default: int) -> int:
    status = int(reader.get(key, int, default))
    if not 100 <= status <= 599:
        raise reader.fail(key, f"must be an HTTP status (100 to 599), got {status}")
    return status


def _verify(reader: _Reader) -> VerifyCommand:
    argv = reader.argv("argv")
    if not argv:
        raise reader.fail("argv", "is required")
    command = VerifyCommand(
        name=reader.require("name", str), argv=argv, timeout=reader.duration("timeout", 300.0)
    )
    reader.done()
    return command


def _unique_names(reader: _Reader, key: str, names: list[str]) -> None:
    for index, name in enumerate(names):
        if name in names[:index]:
            raise reader.fail(f"{key}[{index}].name", f"{name!r} names an earlier one too")


def _hook(reader: _Reader) -> Hook:
    on = reader.get("on", list, ["rollback"])
    if not on:
        raise reader.fail("on", "a hook listens for at least one verdict")
    for verdict in on:
        if verdict not in VERDICTS_FOR_HOOKS:
            raise reader.fail("on", f"verdicts are {', '.join(VERDICTS_FOR_HOOKS)}, got {verdict!r}")
    url = _url(reader, "url", required=False)
    command = reader.argv("command")
    if bool(url) == bool(command):
        raise reader.fail("url", "a hook has exactly one of url or command")
    hook = Hook(
        name=reader.require("name", str),
        on=tuple(on),
        url=url,
        command=command,
        timeout=reader.duration("timeout", 30.0),
        budget=reader.duration("budget", 300.0),
        dry_run=reader.get("dry_run", bool, False),
    )
    reader.done()
    return hook


# Bad events outrank the words for good ones: `cache_hit_errors_total` counts errors and
# `http_unavailable_total` unavailability, whatever else their names say.
_BAD_EVENTS = re.compile(
    r"error|fail|unavailab|unsuccess|reject|denied|5xx|timeout|crash"
    r"|(?:^|[_:.{])miss(?:es|ed)?(?:$|[_:.{])",   # a cache miss; not submission or permission
    re.IGNORECASE,
)
_WORSE_WHEN_LOWER = re.compile(r"success|throughput|availab|hit|ok\b|apdex", re.IGNORECASE)
_WORSE_WHEN_HIGHER = re.compile(
    r"latency|duration|seconds|memory|bytes|queue|cpu|wait|pending|restart|drop|saturation"
    r"|pool|lag",
    re.IGNORECASE,
)


def default_direction(signal: str) -> str:
    """Which way is worse for a signal, from its name as Prometheus conventions spell it."""
    if _BAD_EVENTS.search(signal):
        return "increase"
    if _WORSE_WHEN_LOWER.search(signal):
        return "decrease"
    if _WORSE_WHEN_HIGHER.search(signal):
        return "increase"
    return "both"


# Counters by the suffixes Prometheus gives them: judged by their rate, never their total.
_COUNTER_SUFFIXES = ("_total", "_count")


def default_rule(signal: str) -> SignalRule:
    """The documented rule for a signal the policy does not name (replay without a policy)."""
    kind = "rate" if signal.split("{", 1)[0].endswith(_COUNTER_SUFFIXES) else "gauge"
    critical = bool(re.search(r"error|fail|latency|duration|5xx", signal, re.IGNORECASE))
    return SignalRule(
        name=signal, kind=kind, metric=signal, bad=default_direction(signal), critical=critical,
        aggregate="sum" if kind == "rate" else "mean",
    )


# What client libraries export of the runtime that says nothing of a release's health:
# a start time (new at each deploy), address space reserved, limits, the collector's own
# bookkeeping, build information.
_NO_HEALTH_SIGNAL = re.compile(
    r"process_start_time_seconds|process_virtual_memory(_max)?_bytes|process_max_fds"
    r"|python_gc_\w+|python_info|go_info|go_gc_duration_seconds\w*")


def default_rules(names: Sequence[str]) -> tuple[SignalRule, ...]:
    """The default rule of each metric name, a histogram's (`X_bucket`) as its p95 signal
    `X_p95`; its `X_sum`, every `X_created` (a process's start time, new at each deploy)
    and the runtime's own bookkeeping (`_NO_HEALTH_SIGNAL`) are no health signals."""
    histograms = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")}
    rules = []
    for name in sorted(names):
        family, _, suffix = name.rpartition("_")
        if (suffix == "created" or family in histograms and suffix == "sum"
                or _NO_HEALTH_SIGNAL.fullmatch(name)):
            continue
        if family in histograms and suffix == "bucket":
            rules.append(replace(default_rule(family), name=f"{family}_p95", kind="quantile",
                                 quantile=0.95))
        else:
            rules.append(default_rule(name))
    return tuple(rules)


def default_service(name: str, signals: list[str], **overrides: Any) -> ServicePolicy:
    """A policy with the default rule for every metric name, for replay without a policy."""
    return ServicePolicy(name=name, signals=default_rules(signals), **overrides)
