"""Tests of monitor.policy: a complete policy parses, and every mistake names its file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.policy import (
    Hook,
    MonitorConfig,
    Probe,
    ServicePolicy,
    SignalRule,
    Target,
    VerifyCommand,
    default_direction,
    load_policy,
    parse_policy,
)

# Every key the loader knows, each set to something other than its default.
COMPLETE = """\
[monitor]
database = "state/monitor.db"
listen = "0.0.0.0:9900"
retention = "3d"
api_token_env = "MONITOR_TOKEN"

[services.shop]
version_metric = "shop_build_info"
version_label = "release"
evaluation_interval = "30s"
persistence = 4
baselines = 2
baseline_window = "12h"
leak_horizon = "6h"
leak_block = "2m"

[services.shop.period]
minor = "20m"
major = "3h"

[[services.shop.targets]]
url = "http://10.0.0.5:8080/metrics"
interval = "10s"
timeout = "3s"
max_bytes = 2048

[[services.shop.targets]]
url = "https://shop.internal/metrics"

[[services.shop.smoke]]
name = "home page"
url = "https://shop.internal/"
expect_status = 204
expect_body = "welcome"
max_latency = "500ms"

[[services.shop.verify]]
name = "checkout"
argv = ["pytest", "-q", "tests/smoke"]
timeout = "10m"

[services.shop.signals.error_ratio]
kind = "ratio"
numerator = 'http_request_errors_total{job="shop"}'
denominator = "http_requests_total"
tolerance = 0.5
absolute = 0.002
critical = true
min_events = 20
min_trials = 500
must_have_data = true

[services.shop.signals.latency_p99]
kind = "quantile"
metric = "http_request_duration_seconds"
quantile = 0.99
aggregate = "max"
bad = "increase"
ignore_below = 0.1
tolerance = 0.3
min_samples = 5

[services.shop.signals.request_rate]
kind = "rate"
metric = 'http_requests_total{job="shop"}'

[services.shop.signals.memory]
kind = "gauge"
metric = "process_resident_memory_bytes"
leak = true
limit_metric = "container_spec_memory_limit_bytes"

[[services.shop.hooks]]
name = "argo rollback"
on = ["rollback", "hotfix"]
url = "https://argo.internal/hook"
timeout = "5s"
budget = "1m"

[[services.shop.hooks]]
name = "page on-call"
on = ["inconclusive"]
command = ["/usr/local/bin/page", "--team", "shop"]
dry_run = true
"""

EXPECTED_SHOP = ServicePolicy(
    name="shop",
    targets=(
        Target(url="http://10.0.0.5:8080/metrics", interval=10.0, timeout=3.0, max_bytes=2048),
        Target(url="https://shop.internal/metrics"),
    ),
    version_metric="shop_build_info",
    version_label="release",
    periods={"minor": 1200.0, "major": 10800.0},
    evaluation_interval=30.0,
    persistence=4,
    baselines=2,
    baseline_window=43200.0,
    leak_horizon=21600.0,
    leak_block=120.0,
    smoke=(Probe(name="home page", url="https://shop.internal/", expect_status=204,
                 expect_body="welcome", max_latency=0.5),),
    verify=(VerifyCommand(name="checkout", argv=("pytest", "-q", "tests/smoke"), timeout=600.0),),
    signals=(
        SignalRule(name="error_ratio", kind="ratio", numerator='http_request_errors_total{job="shop"}',
                   denominator="http_requests_total", aggregate="sum", bad="increase",
                   tolerance=0.5, absolute=0.002, critical=True, min_events=20.0,
                   min_trials=500.0, must_have_data=True),
        SignalRule(name="latency_p99", kind="quantile", metric="http_request_duration_seconds",
                   quantile=0.99, aggregate="max", bad="increase", ignore_below=0.1,
                   tolerance=0.3, min_samples=5),
        SignalRule(name="request_rate", kind="rate", aggregate="sum", bad="both",
                   metric='http_requests_total{job="shop"}'),
        SignalRule(name="memory", kind="gauge", metric="process_resident_memory_bytes",
                   aggregate="mean", bad="increase", leak=True,
                   limit_metric="container_spec_memory_limit_bytes"),
    ),
    hooks=(
        Hook(name="argo rollback", on=("rollback", "hotfix"), url="https://argo.internal/hook",
             timeout=5.0, budget=60.0),
        Hook(name="page on-call", on=("inconclusive",),
             command=("/usr/local/bin/page", "--team", "shop"), dry_run=True),
    ),
)

# A small valid policy that each mistake below is added to.
MINIMAL = """\
[services.shop]

[[services.shop.targets]]
url = "http://127.0.0.1:8080/metrics"

[services.shop.signals.latency]
metric = "http_request_duration_seconds"

[services.shop.signals.errors]
kind = "ratio"
numerator = "http_request_errors_total"
denominator = "http_requests_total"

[[services.shop.hooks]]
name = "rollback"
url = "https://deploy.internal/rollback"
"""


def write(tmp_path: Path, text: str | bytes, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def with_line(after: str, line: str) -> str:
    """MINIMAL with `line` inserted right after the line `after` (so it lands in that table)."""
    assert after in MINIMAL.splitlines(), after
    return MINIMAL.replace(after + "\n", f"{after}\n{line}\n", 1)


def replaced(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, 1)


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_complete_policy_parses_into_the_expected_dataclasses(tmp_path: Path) -> None:
    path = write(tmp_path, COMPLETE)
    config = load_policy(path)
    assert config == MonitorConfig(
        path=str(path), database="state/monitor.db", listen_host="0.0.0.0", listen_port=9900,
        retention=3 * 86400.0, api_token_env="MONITOR_TOKEN", services={"shop": EXPECTED_SHOP},
    )
    assert config.services["shop"].period("major") == 10800.0


def test_persistence_may_watch_past_the_period_as_long_as_the_period_itself() -> None:
    # 15-minute evaluations of a 30-minute check: a finding seen at its end counts 30
    # minutes later (a rollback at +45m). One more evaluation would outlast the check.
    period = '[services.shop.period]\nminor = "30m"\nmajor = "30m"\n'
    fits = with_line("[services.shop]", 'evaluation_interval = "15m"\npersistence = 3') + period
    assert parse_policy(fits, "fits.toml").services["shop"].persistence == 3
    longer = with_line("[services.shop]", 'evaluation_interval = "15m"\npersistence = 4') + period
    with pytest.raises(ConfigError, match="4 evaluations 15m apart would watch"):
        parse_policy(longer, "longer.toml")


def test_defaults_of_a_minimal_policy() -> None:
    config = parse_policy(MINIMAL, "minimal.toml")
    assert (config.database, config.listen_host, config.listen_port) == (
        "release-monitor.db", "127.0.0.1", 9847)
    shop = config.services["shop"]
    assert shop.periods == {"minor": 900.0, "major": 7200.0}
    assert (shop.evaluation_interval, shop.persistence, shop.baselines) == (60.0, 3, 1)
    latency, errors = shop.signals
    assert (latency.kind, latency.aggregate, latency.bad) == ("gauge", "mean", "increase")
    assert (errors.kind, errors.aggregate, errors.bad) == ("ratio", "sum", "increase")
    assert shop.hooks == (Hook(name="rollback", on=("rollback",),
                               url="https://deploy.internal/rollback"),)


MISTAKES = [
    pytest.param("", "services", "nothing to monitor", id="empty-file"),
    pytest.param('[monitor]\ndatabase = "m.db"\n', "services", "nothing to monitor",
                 id="no-services"),
    pytest.param('[service.shop]\npersistence = 3\n', "service", "unknown key",
                 id="services-misspelt"),
    pytest.param("colour = \"red\"\n" + MINIMAL, "colour", "unknown key", id="unknown-top-level"),
    pytest.param(with_line("[services.shop]", 'colour = "red"'), "services.shop.colour",
                 "unknown key", id="unknown-in-service"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "colour = 1"),
                 "services.shop.signals.latency.colour", "unknown key", id="unknown-in-signal"),
    pytest.param(with_line('url = "http://127.0.0.1:8080/metrics"', "colour = 1"),
                 "services.shop.targets[0].colour", "unknown key", id="unknown-in-target"),
    pytest.param(MINIMAL + '[monitor]\ncolour = "red"\n', "monitor.colour", "unknown key",
                 id="unknown-in-monitor"),
    pytest.param(with_line("[services.shop]", "persistance = 3"), "services.shop.persistance",
                 "unknown key (did you mean persistence?)", id="misspelt-in-service"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "tolerence = 0.5"),
                 "services.shop.signals.latency.tolerence", "unknown key (did you mean tolerance?)",
                 id="misspelt-in-signal"),
    pytest.param(MINIMAL + "[services.shop.period]\nminor = \"5m\"\nmedium = \"1h\"\n",
                 "services.shop.period.medium", "unknown key", id="unknown-in-period"),
    pytest.param(with_line("[services.shop]", 'persistence = "3"'), "services.shop.persistence",
                 "expected a whole number, got '3'", id="string-for-integer"),
    pytest.param(with_line("[services.shop]", "persistence = true"), "services.shop.persistence",
                 "expected a whole number, got True", id="bool-for-integer"),
    pytest.param(with_line("[services.shop]", "persistence = 2.5"), "services.shop.persistence",
                 "expected a whole number, got 2.5", id="fraction-for-integer"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', 'tolerance = "10%"'),
                 "services.shop.signals.latency.tolerance", "expected a number, got '10%'",
                 id="string-for-number"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "critical = 1"),
                 "services.shop.signals.latency.critical", "expected true or false, got 1",
                 id="number-for-bool"),
    pytest.param(with_line('url = "https://deploy.internal/rollback"', 'on = "rollback"'),
                 "services.shop.hooks[0].on", "expected a list", id="string-for-list"),
    pytest.param(with_line("[services.shop]", 'evaluation_interval = "15 minutes"'),
                 "services.shop.evaluation_interval", "not a duration: '15 minutes'",
                 id="bad-duration"),
    pytest.param(MINIMAL + '[services.shop.period]\nmajor = "2 hours"\n', "services.shop.period.major",
                 "not a duration", id="bad-duration-in-period"),
    pytest.param(MINIMAL + '[monitor]\nretention = "0s"\n', "monitor.retention",
                 "must be longer than zero", id="zero-duration"),
    pytest.param(with_line("[services.shop]", "evaluation_interval = -5"),
                 "services.shop.evaluation_interval", "negative duration", id="negative-duration"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "tolerance = -0.1"),
                 "services.shop.signals.latency.tolerance", "must be at least 0, got -0.1",
                 id="negative-tolerance"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "min_trials = -1"),
                 "services.shop.signals.latency.min_trials", "must be at least 0, got -1",
                 id="negative-count"),
    pytest.param(with_line("[services.shop]", "persistence = 0"), "services.shop.persistence",
                 "must be at least 1, got 0", id="zero-persistence"),
    pytest.param(with_line("[services.shop]", "persistence = 99999999999999999999"),
                 "services.shop.persistence", "99999999999999999999 evaluations 1m apart would "
                 "watch a finding seen at the end longer than the longest checking period (2h00m)",
                 id="persistence-beyond-the-period"),
    pytest.param(with_line("[services.shop]", "baselines = 99999999999999999999"),
                 "services.shop.baselines", "must be 1 to 100, got 99999999999999999999",
                 id="baselines-beyond-any-use"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "quantile = 1.5"),
                 "services.shop.signals.latency.quantile", "between 0 and 1", id="quantile-above-1"),
    pytest.param(replaced('url = "http://127.0.0.1:8080/metrics"', 'interval = "10s"'),
                 "services.shop.targets[0].url", "is required", id="target-without-url"),
    pytest.param(replaced('url = "http://127.0.0.1:8080/metrics"', 'url = "ftp://host/metrics"'),
                 "services.shop.targets[0].url", "expected an http:// or https:// URL",
                 id="target-url-not-http"),
    pytest.param(with_line("[services.shop]", 'evaluation_interval = "10m"\nperiod = { minor = "1m" }'),
                 "services.shop.evaluation_interval",
                 "longer than the shortest checking period (10m > 1m)", id="evaluation-over-period"),
    pytest.param('[monitor]\nretention = "20s"\n\n' + MINIMAL, "monitor.retention",
                 "shorter than services.shop's longest checking period (20s < 2h00m)",
                 id="retention-under-period"),
    pytest.param(COMPLETE.replace("expect_status = 204", "expect_status = 999", 1),
                 "services.shop.smoke[0].expect_status",
                 "must be an HTTP status (100 to 599), got 999", id="not-an-http-status"),
    pytest.param(replaced('numerator = "http_request_errors_total"\n', ""),
                 "services.shop.signals.errors.numerator", "is required", id="ratio-without-numerator"),
    pytest.param(replaced('metric = "http_request_duration_seconds"', 'metric = "http request duration"'),
                 "services.shop.signals.latency.metric", "not a metric selector", id="bad-selector"),
    pytest.param(replaced('metric = "http_request_duration_seconds"',
                          'metric = "http_request_duration_seconds{job=shop}"'),
                 "services.shop.signals.latency.metric", "not a metric selector",
                 id="selector-with-unquoted-label"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', 'kind = "histogram"'),
                 "services.shop.signals.latency.kind", "must be one of gauge, rate, ratio, quantile",
                 id="unknown-signal-kind"),
    pytest.param(with_line('url = "https://deploy.internal/rollback"', 'command = ["rollback.sh"]'),
                 "services.shop.hooks[0].url", "exactly one of url or command", id="hook-url-and-command"),
    pytest.param(replaced('url = "https://deploy.internal/rollback"', "dry_run = true"),
                 "services.shop.hooks[0].url", "exactly one of url or command",
                 id="hook-neither-url-nor-command"),
    pytest.param(with_line('url = "https://deploy.internal/rollback"', 'on = ["rollback", "pending"]'),
                 "services.shop.hooks[0].on", "got 'pending'", id="hook-on-pending"),
    pytest.param(MINIMAL.replace('url = "http://127.0.0.1:8080/metrics"\n',
                                 'url = "http://127.0.0.1:8080/metrics?shard=a"\n', 1)
                 + '[[services.shop.targets]]\nurl = "http://127.0.0.1:8080/metrics?shard=b"\n',
                 "services.shop.targets[1].url",
                 "'http://127.0.0.1:8080/metrics?shard=***' is what targets[0] is called too; "
                 "give each a `name`", id="two-targets-one-label"),
    pytest.param(MINIMAL + '[[services.shop.targets]]\nurl = "http://10.0.0.2/m"\nname = " x"\n',
                 "services.shop.targets[1].name", "must be printable", id="target-name-spaces"),
    pytest.param(MINIMAL + '[services.shop.period]\nminor = "3h"\n',
                 "services.shop.period.major", "shorter than minor (2h00m, the default < 3h00m)",
                 id="default-major-below-minor"),
    pytest.param(MINIMAL.replace('url = "http://127.0.0.1:8080/metrics"\n',
                                 'url = "http://127.0.0.1:8080/metrics"\nname = "x"\n', 1)
                 + '[[services.shop.targets]]\nurl = "http://10.0.0.2/m"\nname = "x"\n',
                 "services.shop.targets[1].name", "give each its own `name`", id="target-name-twice"),
    pytest.param('[services.p.prometheus]\nurl = "http://127.0.0.1:9090"\nstep = "20m"\n'
                 '[services.p.signals.lat]\nquery = "up"\n',
                 "services.p.prometheus.step", "longer than the shortest checking period (20m > 15m)",
                 id="promql-step-past-period"),
    pytest.param(MINIMAL + '[services.shop.period]\nminor = "1m"\nmajor = "30s"\n',
                 "services.shop.period.major", "shorter than minor (30s < 1m)", id="major-below-minor"),
    pytest.param(MINIMAL.replace('url = "http://127.0.0.1:8080/metrics"\n',
                                 'url = "http://127.0.0.1:8080/metrics"\ninterval = "20m"\n', 1),
                 "services.shop.targets[0].interval",
                 "longer than the shortest checking period (20m > 15m)", id="interval-past-period"),
    pytest.param(MINIMAL + '[[services.shop.hooks]]\nname = "rollback"\ncommand = ["page.sh"]\n',
                 "services.shop.hooks[1].name", "'rollback' names an earlier one too",
                 id="hook-name-twice"),
    pytest.param(MINIMAL + '[[services.shop.smoke]]\nname = "home"\nurl = "http://a/"\n'
                 '[[services.shop.smoke]]\nname = "home"\nurl = "http://b/"\n',
                 "services.shop.smoke[1].name", "'home' names an earlier one too",
                 id="smoke-name-twice"),
    pytest.param(MINIMAL + '[[services.shop.verify]]\nname = "tests"\nargv = "pytest -q"\n',
                 "services.shop.verify[0].argv", "expected a list", id="verify-argv-as-string"),
    pytest.param(MINIMAL + '[[services.shop.verify]]\nname = "tests"\nargv = []\n',
                 "services.shop.verify[0].argv", "non-empty list of strings", id="verify-argv-empty"),
    pytest.param(MINIMAL + '[[services.shop.hooks]]\nname = "undo"\n'
                 'command = ["kubectl rollout undo deployment/shop"]\ndry_run = true\n',
                 "services.shop.hooks[1].command", "'kubectl rollout undo deployment/shop' is a "
                 'whole command line in one string: give each argument its own, '
                 '["kubectl", "rollout", "undo", "deployment/shop"]', id="command-line-in-one-string"),
    pytest.param(MINIMAL + '[monitor]\nlisten = "http://127.0.0.1:9847"\n', "monitor.listen",
                 "expected HOST:PORT such as 127.0.0.1:9847, not a URL: 'http://127.0.0.1:9847'",
                 id="listen-as-a-url"),
    pytest.param(with_line('metric = "http_request_duration_seconds"',
                           'numerator = \'errors_total{code=~"5.."}\''),
                 "services.shop.signals.latency.numerator", "only label=\"value\" matchers are "
                 "supported, not =~: 'errors_total{code=~\"5..\"}'", id="regex-matcher"),
    pytest.param(MINIMAL + '[monitor]\nlisten = "https://monitor.example"\n', "monitor.listen",
                 "not a URL: 'https://monitor.example'", id="listen-as-a-url-without-port"),
    pytest.param(MINIMAL + '[monitor]\nlisten = "9847"\n', "monitor.listen", "expected HOST:PORT",
                 id="listen-without-host"),
    pytest.param(MINIMAL + '[services."shop front"]\n', "services.shop front",
                 "service names use", id="bad-service-name"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', 'numerator = "x_total"'),
                 "services.shop.signals.latency.numerator",
                 "not for a signal of kind 'gauge' (only 'ratio')", id="numerator-on-a-gauge"),
    pytest.param(with_line('denominator = "http_requests_total"', 'metric = "x_total"'),
                 "services.shop.signals.errors.metric",
                 "not for a signal of kind 'ratio' (only 'gauge' or 'rate' or 'quantile')",
                 id="metric-on-a-ratio"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "quantile = 0.99"),
                 "services.shop.signals.latency.quantile",
                 "not for a signal of kind 'gauge' (only 'quantile')", id="quantile-on-a-gauge"),
    pytest.param(with_line('metric = "http_request_duration_seconds"',
                           'leak = true\nlimit = 1e9\nlimit_metric = "mem_limit_bytes"'),
                 "services.shop.signals.latency.limit_metric", "give limit or limit_metric, not both",
                 id="limit-twice"),
    pytest.param('[services.p.prometheus]\nurl = "http://127.0.0.1:9090"\n'
                 '[services.p.signals.e]\nnumerator_query = "a"\ndenominator_query = "b"\n',
                 "services.p.signals.e.numerator_query",
                 "not for a signal of kind 'gauge' (only 'ratio')", id="ratio-queries-on-a-gauge"),
    pytest.param('[services.p.prometheus]\nurl = "http://127.0.0.1:9090"\n'
                 '[services.p.signals.e]\nkind = "ratio"\nquery = "a"\n',
                 "services.p.signals.e.query",
                 "not for a signal of kind 'ratio' (only 'gauge' or 'rate' or 'quantile')",
                 id="query-on-a-ratio"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "limit = 1e9"),
                 "services.shop.signals.latency.limit",
                 "a memory limit is for the leak check: set leak = true", id="limit-without-leak"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "leak = true\nlimit = 0"),
                 "services.shop.signals.latency.limit", "must be above 0 (leave it out for no limit)",
                 id="limit-zero"),
    pytest.param(with_line('metric = "http_request_duration_seconds"',
                           'leak = true\naggregate = "sum"\nlimit_metric = "mem_limit_bytes"'),
                 "services.shop.signals.latency.limit_metric",
                 "one target's limit does not bound the targets' memory added up",
                 id="limit-metric-on-a-sum"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', 'query = "up"'),
                 "services.shop.signals.latency.query",
                 "queries are for a service read by PromQL ([prometheus])", id="query-when-scraped"),
    pytest.param(with_line('metric = "http_request_duration_seconds"', "min_samples = 2.9"),
                 "services.shop.signals.latency.min_samples", "must be a whole number, got 2.9",
                 id="min-samples-fraction"),
    pytest.param(MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:430610"),
                 "services.shop.targets[0].url",
                 "port out of range (1-65535), got 'http://127.0.0.1:430610/metrics'", id="url-port"),
    pytest.param(MINIMAL.replace("127.0.0.1:8080", "u:s3cret@127.0.0.1:430610"),
                 "services.shop.targets[0].url",
                 "port out of range (1-65535), got 'http://*** (credentials hidden)'",
                 id="url-port-with-password"),
    pytest.param(MINIMAL.replace("127.0.0.1:8080", "u:s3cret@"),
                 "services.shop.targets[0].url", "no host, got 'http:///metrics'", id="url-no-host"),
    pytest.param(MINIMAL.replace("127.0.0.1:8080", "shop internal"),
                 "services.shop.targets[0].url", "spaces or control characters",
                 id="url-space"),
    pytest.param(MINIMAL.replace('"http_request_duration_seconds"',
                                 "'latency{a=\"b\" c=\"d\"}'"),
                 "services.shop.signals.latency.metric", "not a metric selector",
                 id="selector-without-comma"),
    pytest.param(MINIMAL.replace('"http_request_duration_seconds"',
                                 "'latency{a=\"b\",a=\"c\"}'"),
                 "services.shop.signals.latency.metric", "label 'a' is matched to two values",
                 id="selector-label-twice"),
    pytest.param(MINIMAL + '[monitor]\ndatabase = "a\\u0000b"\n', "monitor.database",
                 "must be a file name, without NUL characters", id="database-nul"),
    pytest.param(with_line('url = "http://127.0.0.1:8080/metrics"', "max_bytes = 2048.5"),
                 "services.shop.targets[0].max_bytes", "expected a whole number, got 2048.5",
                 id="max-bytes-fraction"),
    pytest.param(with_line('url = "http://127.0.0.1:8080/metrics"', "max_series = 0"),
                 "services.shop.targets[0].max_series", "must be at least 1, got 0",
                 id="max-series-zero"),
]


@pytest.mark.parametrize(("text", "key", "what"), MISTAKES)
def test_each_mistake_names_the_file_and_the_key_path(
    tmp_path: Path, text: str, key: str, what: str
) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert what in message, message


def test_a_token_file_is_found_beside_the_policy_and_goes_with_no_basic_auth(
        tmp_path: Path) -> None:
    source = ('[services.shop.prometheus]\nurl = "http://127.0.0.1:9090"\n'
              'bearer_token_file = "secrets/token"\n')
    policy = load_policy(write(tmp_path, "[services.shop]\n" + source))
    prometheus = policy.services["shop"].prometheus
    assert prometheus is not None
    assert prometheus.bearer_token_file == str(tmp_path / "secrets" / "token")
    both = write(tmp_path, "[services.shop]\n" + source + 'basic_user = "u"\n')
    assert config_error(both) == (f"{both}: services.shop.prometheus.basic_user: a server "
                                  "takes a bearer token or basic auth, not both")
    alone = write(tmp_path, "[services.shop]\n" + source.replace("bearer_token_file",
                                                                   "basic_password_file"))
    assert config_error(alone) == (f"{alone}: services.shop.prometheus.basic_password_file: a "
                                   "password without basic_user is never sent: set basic_user")


def test_an_unknown_key_like_no_known_one_suggests_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, with_line("[services.shop]", 'colour = "red"'))
    assert config_error(path) == f"{path}: services.shop.colour: unknown key"
    # Nor one given already: the misspelling beside it is something else.
    path = write(tmp_path, with_line("[services.shop]", "persistence = 3\npersistance = 3"))
    assert config_error(path) == f"{path}: services.shop.persistance: unknown key"


def test_a_program_path_with_spaces_is_one_program_where_it_exists(tmp_path: Path) -> None:
    tools = tmp_path / "My Tools"
    tools.mkdir()
    (tools / "undo").write_text("#!/bin/sh\n", encoding="utf-8")
    hook = '[[services.shop.hooks]]\nname = "undo"\ncommand = ["./My Tools/undo"]\n'
    policy = load_policy(write(tmp_path, MINIMAL + hook))
    assert policy.services["shop"].hooks[-1].command == (str(tools / "undo"),)
    # A bare name is never a program with spaces, whatever the folder holds.
    (tmp_path / "kubectl rollout undo").write_text("", encoding="utf-8")
    bare = write(tmp_path, MINIMAL + hook.replace("./My Tools/undo", "kubectl rollout undo"))
    assert "is a whole command line in one string" in config_error(bare)


def test_a_url_scheme_in_capitals_is_a_url(tmp_path: Path) -> None:
    text = MINIMAL.replace('url = "http://127.0.0.1:8080/metrics"', 'url = "HTTP://127.0.0.1:8080/m"')
    [target] = load_policy(write(tmp_path, text)).services["shop"].targets
    assert target.url == "HTTP://127.0.0.1:8080/m"


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[services.shop]\npersistence = 3\nversion_label = "release\n')
    message = config_error(path)
    assert message.startswith(f"{path}: invalid TOML"), message
    assert re.search(r"\bline 3\b", message), message


def test_a_missing_file_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = config_error(path)
    assert message.startswith(f"{path}: cannot read"), message


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert message.startswith(f"{tmp_path}: cannot read"), message


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[monitor]\ndatabase = "caf\xe9.db"\n'.encode("latin-1"))
    assert config_error(path) == f"{path}: not UTF-8 text"


def test_parse_policy_names_the_given_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline: services\.shop\.colour: unknown key$"):
        parse_policy(with_line("[services.shop]", "colour = 1"), "inline")


@pytest.mark.parametrize(
    ("signal", "direction"),
    [
        ("error_ratio", "increase"),
        ("http_request_errors_total", "increase"),
        ("latency_p95", "increase"),
        ("http_request_duration_seconds", "increase"),
        ("memory", "increase"),
        ("process_resident_memory_bytes", "increase"),
        ("success_ratio", "decrease"),
        ("checkout_success_total", "decrease"),
        ("throughput", "decrease"),
        ("request_rate", "both"),
        ("http_requests_total", "both"),
        ("cache_hit_ratio", "decrease"),
        ("availability", "decrease"),
        # Bad events outrank the words for good ones.
        ("cache_hit_errors_total", "increase"),
        ("http_unavailable_errors_total", "increase"),
        ("db_unavailable_total", "increase"),
        ("unsuccessful_requests_total", "increase"),
        ("cache_miss_ratio", "increase"),
        ("cache_misses_total", "increase"),
        ("form_submission_success_total", "decrease"),
        ("payment_submissions_total", "both"),
    ],
)
def test_default_direction_follows_the_signal_name(signal: str, direction: str) -> None:
    assert default_direction(signal) == direction


def test_a_signal_without_bad_gets_the_default_direction() -> None:
    text = MINIMAL + '[services.shop.signals.checkout_success]\nmetric = "checkout_success_total"\n'
    rules = {rule.name: rule for rule in parse_policy(text).services["shop"].signals}
    assert rules["checkout_success"].bad == "decrease"
    assert rules["errors"].bad == "increase"


@pytest.mark.parametrize("selector", ['errs_total{path="/api?path=",code="500"}',
                                      'errs_total{job="a", route="/x?job="}',
                                      'errs_total{code="500",code="500"}'])
def test_selectors_that_look_like_a_label_twice_but_are_not_are_read(
        tmp_path: Path, selector: str) -> None:
    text = MINIMAL.replace('"http_request_duration_seconds"', repr(selector))
    config = load_policy(write(tmp_path, text))
    assert config.services["shop"].signals[0].metric == selector
