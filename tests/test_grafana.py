"""Grafana dashboards, provisioning, alert rules and their runbook.

Dashboards are validated against Grafana's dashboard JSON schema (kept as data in
grafana/schema/), every PromQL query is parsed by promtool, and the alert rules run their
promtool unit tests.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "alerts" / "release-monitor.rules.yml"
RULE_TESTS = GRAFANA / "alerts" / "release-monitor.rules.test.yml"
RUNBOOK = GRAFANA / "RUNBOOK.md"
SCHEMA = GRAFANA / "schema" / "dashboard.jsonschema.json"
RUNBOOK_URL = "https://github.com/release-monitor/release-monitor/blob/main/grafana/RUNBOOK.md#"

EXPECTED_ALERTS = {
    "ReleaseRollbackRequired", "ReleaseHotfixNeeded", "ReleaseVerdictInconclusive",
    "ReleaseMonitorDown", "ReleaseMonitorScrapeFailing", "ReleaseMonitorStale",
    "ReleaseMonitorHookFailed",
}
VERDICT_ALERTS = {"ReleaseRollbackRequired", "ReleaseHotfixNeeded", "ReleaseVerdictInconclusive"}
# Grafana's CUE model types these `_` (any value); the JSON-schema export made them objects,
# which would reject `"matcher": {"id": "byName", "options": "p95"}` and `"value": "s"`.
ANY_TYPED = (("MatcherConfig", "options"), ("DynamicConfigValue", "value"))
# Interval macros Grafana fills in before a query reaches Prometheus.
INTERVAL_MACROS = ("$__rate_interval", "$__interval", "$__range")
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                     "__range_ms", "__dashboard", "__from", "__to", "__name", "__org", "__user"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not on PATH (Debian: apt-get install prometheus)",
)

Json = dict[str, Any]


# ------------------------------------------------------------------ helpers
def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def grafana_schema() -> Json:
    """The dashboard schema with its any-typed fields (see ANY_TYPED) accepting any value."""
    schema: Json = copy.deepcopy(load_json(SCHEMA))
    for definition, field in ANY_TYPED:
        schema["definitions"][definition]["properties"][field] = {}
    return schema


def all_panels(board: Json) -> Iterator[Json]:
    """Every panel, including those nested in collapsed rows."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def alert_rules() -> list[Json]:
    groups = load_yaml(RULES)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries(board: Json) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and query variable."""
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel.get('id')} {panel.get('title')!r} ({target.get('refId')})"
                yield where, target["expr"]
    for annotation in board["annotations"]["list"]:
        if annotation.get("expr"):
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable_promql(variable["query"])
            if query is not None:
                yield f"variable {variable['name']!r}", query


def variable_promql(query: str) -> str | None:
    """The PromQL inside a Prometheus variable query, or None when it holds none.

    >>> variable_promql('label_values(up{job="x"}, instance)')
    'up{job="x"}'
    >>> variable_promql("label_values(instance)") is None
    True
    """
    query = query.strip()
    labels = re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", query, re.DOTALL)
    if labels:
        return labels.group(1).strip()
    if re.fullmatch(r"label_values\(\s*\w+\s*\)|label_names\(.*\)|metrics\(.*\)", query, re.DOTALL):
        return None
    result = re.fullmatch(r"query_result\((.*)\)", query, re.DOTALL)
    return result.group(1).strip() if result else query


def substitute_variables(query: str) -> str:
    """Dashboard variables replaced the way Grafana would before Prometheus sees the query.

    >>> substitute_variables('rate(x{a=~"$a", b="${b}"}[$__rate_interval])')
    'rate(x{a=~".*", b=".*"}[5m])'
    """
    for macro in INTERVAL_MACROS:
        query = query.replace(macro, "5m")
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", ".*", query)


def referenced_variables(text: str) -> set[str]:
    """Names of the `$name` and `${name}` variables in a text."""
    return {braced or bare for braced, bare in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)}


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading.

    >>> github_anchor("Release monitor down (`up == 0`)")
    'release-monitor-down-up--0'
    """
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    return {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def overlaps(a: Json, b: Json) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


# ------------------------------------------------------------------ dashboards
def test_both_dashboards_exist() -> None:
    assert [p.name for p in DASHBOARDS] == ["monitor-health.json", "release-overview.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafana_schema(path: Path) -> None:
    board = load_json(path)
    errors = sorted(jsonschema.Draft7Validator(grafana_schema()).iter_errors(board), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_current_schema_version(path: Path) -> None:
    current = load_json(SCHEMA)["definitions"]["Dashboard"]["properties"]["schemaVersion"]["default"]
    assert load_json(path)["schemaVersion"] == current


def test_schema_validation_catches_broken_dashboards() -> None:
    board = load_json(GRAFANA / "dashboards" / "release-overview.json")
    validator = jsonschema.Draft7Validator(grafana_schema())
    wide = copy.deepcopy(board)
    next(p for p in wide["panels"] if p["type"] != "row")["gridPos"]["w"] = 30
    unknown = copy.deepcopy(board)
    unknown["panels"][1]["colour"] = "red"
    no_version = {k: v for k, v in board.items() if k != "schemaVersion"}
    for broken in (wide, unknown, no_version):
        assert not validator.is_valid(broken)


def test_only_any_typed_fields_are_relaxed() -> None:
    """The relaxation touches the two any-typed fields and nothing else in the copied schema."""
    original = load_json(SCHEMA)
    for definition, field in ANY_TYPED:
        assert original["definitions"][definition]["properties"][field]["type"] == "object"
        original["definitions"][definition]["properties"][field] = {}
    assert original == grafana_schema()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_the_datasource_variable(path: Path) -> None:
    board = load_json(path)
    datasource = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert datasource and datasource[0]["type"] == "datasource"
    assert datasource[0]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in all_panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == expected, annotation["name"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_do_not_overlap(path: Path) -> None:
    board = load_json(path)
    panels = list(all_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    top = board["panels"]
    for i, a in enumerate(top):
        for b in top[i + 1:]:
            assert not overlaps(a["gridPos"], b["gridPos"]), (a.get("title"), b.get("title"))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_only_use_defined_variables(path: Path) -> None:
    board = load_json(path)
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_VARIABLES
    for where, query in dashboard_queries(board):
        assert referenced_variables(query) <= defined, where
    for panel in all_panels(board):
        assert referenced_variables(panel.get("title", "")) <= defined, panel.get("title")
        if "repeat" in panel:
            assert panel["repeat"] in defined, panel.get("title")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_variables_of_several_values_are_matched_as_regexes(path: Path) -> None:
    # Grafana regex-escapes such a variable's values (v2.3 -> v2\\.3, two -> (a|b)), so an
    # equality matcher finds nothing even when one value is chosen.
    board = load_json(path)
    several = {v["name"] for v in board["templating"]["list"]
               if v.get("multi") or v.get("includeAll")}
    for where, query in dashboard_queries(board):
        for name in several:
            assert not re.search(r'\w+\s*=\s*"\$\{?' + name + r'\b', query), (where, query)


def test_release_overview_has_the_promised_views() -> None:
    board = load_json(GRAFANA / "dashboards" / "release-overview.json")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["service"]["query"].startswith("label_values(")
    assert variables["release"]["query"].startswith("label_values(")
    queries = "\n".join(query for _, query in dashboard_queries(board))
    for metric in ("release_monitor_verdict", "release_monitor_signal_baseline{",
                   "release_monitor_signal_baseline_level",
                   "release_monitor_signal_candidate", "release_monitor_finding_effect_ratio",
                   "release_monitor_finding_lower_ratio", "release_monitor_finding_upper_ratio",
                   "release_monitor_finding_tolerance_ratio", "release_monitor_finding_baseline_samples",
                   "release_monitor_finding_candidate_samples", "release_monitor_leak_exhaustion_seconds"):
        assert metric in queries, metric
    deploys = [a for a in board["annotations"]["list"]
               if "release_monitor_release_start_timestamp_seconds" in a.get("expr", "")]
    # Grafana reads the value as a time in milliseconds.
    assert deploys and deploys[0]["useValueForTime"] and "* 1000" in deploys[0]["expr"]
    band = next(p for p in all_panels(board) if p.get("repeat") == "signal")
    fills = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
             for o in band["fieldConfig"]["overrides"]}
    legends = {t["legendFormat"] for t in band["targets"]}
    assert fills["baseline p95"]["custom.fillBelowTo"] == "baseline p05"
    assert {"baseline p05", "baseline p95", "candidate"} <= legends


def test_monitor_health_covers_every_self_health_metric() -> None:
    board = load_json(GRAFANA / "dashboards" / "monitor-health.json")
    queries = "\n".join(query for _, query in dashboard_queries(board))
    for metric in ("up{", "release_monitor_target_up", "release_monitor_scrape_duration_seconds",
                   "release_monitor_scrapes_total", "release_monitor_scrape_errors_total",
                   "release_monitor_scrape_samples", "release_monitor_evaluation_duration_seconds",
                   "release_monitor_evaluations_total", "release_monitor_last_evaluation_timestamp_seconds",
                   "release_monitor_store_errors_total", "release_monitor_http_requests_total",
                   "release_monitor_hook_failures_total"):
        assert metric in queries, metric


@needs_promtool
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse(path: Path, tmp_path: Path) -> None:
    queries = list(dashboard_queries(load_json(path)))
    assert len(queries) > 5
    # One group per query, named after its place, so promtool's error says where it is.
    groups = [{"name": f"{path.name}: {where}", "rules": [{"record": "dashboard_query",
                                                            "expr": substitute_variables(query)}]}
              for where, query in queries]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(json.dumps({"groups": groups}, indent=1), encoding="utf-8")
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_malformed_dashboard_query_is_reported(tmp_path: Path) -> None:
    rules = tmp_path / "broken.yml"
    expr = substitute_variables("sum(rate(x[$__interval])")
    group = {"name": "board: panel 'x' (A)", "rules": [{"record": "dashboard_query", "expr": expr}]}
    rules.write_text(json.dumps({"groups": [group]}), encoding="utf-8")
    result = promtool("check", "rules", str(rules))
    assert result.returncode != 0
    assert "panel 'x' (A)" in result.stdout + result.stderr


def test_variable_queries_are_reduced_to_promql() -> None:
    assert variable_promql('label_values(release_monitor_verdict{service="$service"}, release)') == \
        'release_monitor_verdict{service="$service"}'
    assert variable_promql("query_result(max by (a) (x))") == "max by (a) (x)"
    assert variable_promql("label_names()") is None
    assert substitute_variables('x{a="$a"}[$__range]') == 'x{a=".*"}[5m]'


# ------------------------------------------------------------------ provisioning
def test_datasource_provisioning() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources.yml")
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"].startswith("http")


def test_dashboard_provisioning() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "dashboards.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


# ------------------------------------------------------------------ alert rules and runbook
def test_rule_file_has_the_expected_alerts() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(names) == sorted(EXPECTED_ALERTS)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_complete(rule: Json) -> None:
    assert re.fullmatch(r"\d+[smh]", rule["for"]), rule.get("for")
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), key
    assert annotations["runbook_url"].startswith(RUNBOOK_URL)
    if rule["alert"] in VERDICT_ALERTS:
        for label in ("$labels.service", "$labels.release"):
            assert label in annotations["description"], label


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_runbook_has_the_alerts_section(rule: Json) -> None:
    anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_URL)
    assert anchor in runbook_anchors()
    section = RUNBOOK.read_text(encoding="utf-8").split(f"Alert `{rule['alert']}`")
    assert len(section) == 2, f"the runbook names {rule['alert']} in exactly one section"
    body = section[1].split("\n## ")[0]
    for part in ("**What it means.**", "**What to check.**", "**What to do.**"):
        assert part in body, part


def test_runbook_anchors_follow_github_rules() -> None:
    assert github_anchor("Release rollback required") == "release-rollback-required"
    assert "release-rollback-required" in runbook_anchors()
    assert "no-such-section" not in runbook_anchors()


def test_runbook_names_only_existing_panels() -> None:
    """Bold names in the runbook are dashboard or panel titles, so readers find them."""
    titles = set()
    for path in DASHBOARDS:
        board = load_json(path)
        titles |= {board["title"]} | {p.get("title", "") for p in all_panels(board)}
    named = set(re.findall(r"\*\*([A-Z][^*]*?)\*\*", RUNBOOK.read_text(encoding="utf-8")))
    named -= {"What it means.", "What to check.", "What to do."}
    assert named and named <= titles, named - titles


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    cases = [case for test in load_yaml(RULE_TESTS)["tests"] for case in test.get("alert_rule_test", [])]
    for name in EXPECTED_ALERTS:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name} never expected to fire"
        assert any(not case.get("exp_alerts") for case in mine), f"{name} never expected silent"


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(EXPECTED_ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
