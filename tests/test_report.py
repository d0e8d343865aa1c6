"""Tests of the HTML verdict report: escaping, tables, plot geometry, and a real browser."""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from monitor import report as report_module
from monitor.cli.report import report as report_command
from monitor.demo import run_demo
from monitor.figures import Scale, finding_figures, format_value, unit_of
from monitor.report import (
    embed_json,
    plot_spec,
    render_report,
    time_ticks,
    value_ticks,
)
from monitor.store import Store
from monitor.verdicts import document

HOSTILE = '</script><img src=x onerror=alert(1)>"\'&<!--'
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not on PATH (Debian: apt-get install -y chromium)")
CHROMIUM_SECONDS = 30
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "demo.db"
    run_demo(path, echo=lambda _line: None)
    return path


@pytest.fixture(scope="module")
def docs(demo_db: Path) -> dict[str, dict[str, Any]]:
    """The demo's verdict documents by release: v2.3 leak rollback, v2.4 hotfix, v2.5 smoke."""
    store = Store.open(demo_db)
    try:
        return {r.version: document(store, r) for r in store.releases("demo")}
    finally:
        store.close()


class Page(HTMLParser):
    """A parsed page: balance errors, elements with attributes, table cells, script bodies."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.texts: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append((tag, values))
        if tag == "table":
            self._table = values.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []
        elif tag == "script":
            self.scripts.append((values, ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self.stack and self.stack[-1] == "script":
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.elements if name == tag]

    def data(self) -> dict[str, Any]:
        body = next(b for a, b in self.scripts if a.get("type") == "application/json")
        return json.loads(body)


def hostile_doc() -> dict[str, Any]:
    """A verdict document with markup-breaking text in every field a person could name."""
    view = {"signal": HOSTILE, "kind": "gauge", "bad": "increase", "critical": False, "limit": None,
            "baseline": {"p05": 1.0, "p50": 2.0, "p95": 3.0}, "baseline_series": [1.0, 2.0, 3.0],
            "candidate": 4.0, "latest": 5.0, "times": [0.0, 15.0, 30.0], "values": [3.0, 4.0, 5.0]}
    finding = {"signal": HOSTILE, "detector": HOSTILE, "severity": "major", "baseline": 2.0,
               "candidate": 4.0, "effect": 1.0, "lower": 0.5, "upper": None, "tolerance": 0.25,
               "n_baseline": 100, "n_candidate": 3, "detail": HOSTILE, "exhaustion": None,
               "at": 1030.0, "change_at": 1015.0}
    return {
        "service": HOSTILE, "release": HOSTILE, "baseline_release": HOSTILE, "verdict": HOSTILE,
        "reason": HOSTILE, "state": HOSTILE, "change_class": HOSTILE, "started_at": 1000.0,
        "period_seconds": 60.0, "decided_at": 1030.0, "first_alarm_at": 1030.0,
        "evaluated_at": 1030.0, "invalidated": False,
        "checks": [{"stage": HOSTILE, "name": HOSTILE, "ok": False, "detail": HOSTILE, "at": 1000.0}],
        "findings": [finding], "signals": [view],
    }


def view_of(doc: Mapping[str, Any], signal: str) -> dict[str, Any]:
    return next(v for v in doc["signals"] if v["signal"] == signal)


def path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]\s*(-?[\d.]+),(-?[\d.]+)", d)]


# ---------------------------------------------------------------- escaping and structure


def test_hostile_text_cannot_leave_its_element() -> None:
    page_text = render_report(hostile_doc())
    page = Page(page_text)
    assert page.errors == []
    assert page.all("img") == [], "a hostile name became markup"
    assert len(page.scripts) == 2 and page_text.count("</script") == 2
    assert "<!--" not in page_text
    assert page.data()["plots"][0]["signal"] == HOSTILE  # the JSON carries the name intact
    svg = page.all("svg")
    assert [s["data-signal"] for s in svg] == [HOSTILE]
    assert page.texts.count(HOSTILE) >= 10  # as text: title, header, tables, caption
    assert [r[-1] for r in page.tables["findings"][1:]] == [HOSTILE]
    assert page.all("header")[0]["class"] == "verdict-unknown"  # never a verdict as a class name


def test_the_script_inserts_text_only_through_textcontent() -> None:
    assert "innerHTML" not in report_module.SCRIPT
    assert "insertAdjacentHTML" not in report_module.SCRIPT and "document.write" not in report_module.SCRIPT


def test_embedded_json_has_no_markup_and_no_nan() -> None:
    text = embed_json({"a": "</script><!--", "b": [float("nan"), float("inf"), 1.5]})
    assert "<" not in text and ">" not in text
    assert json.loads(text) == {"a": "</script><!--", "b": [None, None, 1.5]}


@pytest.mark.parametrize("version", ["v2.3", "v2.4", "v2.5"])
def test_every_check_and_finding_is_in_the_tables(docs: dict[str, dict[str, Any]], version: str) -> None:
    doc = docs[version]
    page = Page(render_report(doc))
    assert page.errors == []
    assert len(page.all("html")) == len(page.all("head")) == len(page.all("body")) == 1
    checks, findings = page.tables["checks"][1:], page.tables["findings"][1:]  # row 0: headings
    assert len(checks) == len(doc["checks"]) > 0
    for check, row in zip(doc["checks"], checks, strict=True):
        assert row[:4] == [check["stage"], check["name"], "ok" if check["ok"] else "FAIL", check["detail"]]
    assert len(findings) == len(doc["findings"]) > 0
    for finding, row in zip(doc["findings"], findings, strict=True):
        assert row[:3] == [finding["signal"], finding["detector"], finding["severity"]]
        assert row[-1] == finding["detail"]
    assert [s["data-signal"] for s in page.all("svg")] == [v["signal"] for v in doc["signals"]]
    text = " ".join(page.texts)
    assert doc["verdict"].upper() in text and doc["reason"] in text


def test_header_says_verdict_and_times_after_the_release(docs: dict[str, dict[str, Any]]) -> None:
    text = render_report(docs["v2.3"])
    assert Page(text).all("header")[0]["class"] == "verdict-rollback"
    facts = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", text))
    decided = docs["v2.3"]["decided_at"] - docs["v2.3"]["started_at"]
    assert decided == 180.0 and facts["decided"] == facts["first alarm"] == "+3m"
    assert facts["baseline"] == "v2.2" and facts["checking period"] == "30m"


def test_a_release_without_signals_says_so(docs: dict[str, dict[str, Any]]) -> None:
    page = Page(render_report(docs["v2.5"]))
    assert page.all("svg") == []
    assert "No health signals were judged." in page.texts


def test_doctests() -> None:
    assert doctest.testmod(report_module).failed == 0


# ---------------------------------------------------------------- numbers and geometry


@pytest.mark.parametrize(("unit", "value", "expected"), [
    ("bytes", 3 * 2**30, "3 GiB"), ("bytes", 283607447.0, "270 MiB"), ("bytes", 512, "512 B"),
    ("percent", 0.0552, "5.52%"), ("seconds", 0.228, "228 ms"), ("seconds", 2.5, "2.5 s"),
    ("rate", 40.0, "40/s"), ("rate", 1500.0, "1.5k/s"), ("plain", 6.0, "6"), ("plain", None, "-"),
    ("plain", float("nan"), "-"),
])
def test_values_read_in_their_unit(unit: str, value: Any, expected: str) -> None:
    assert format_value(unit, value) == expected


def test_a_number_too_large_for_a_float_reads_as_a_gap() -> None:
    assert format_value("plain", 10**400) == "-"    # JSON from an API can hold one


@pytest.mark.parametrize(("view", "unit"), [
    ({"signal": "http_request_duration_seconds_p95", "kind": "quantile"}, "seconds"),
    ({"signal": "http_request_duration_seconds_count", "kind": "rate"}, "rate"),
    ({"signal": "process_cpu_seconds_total", "kind": "rate"}, "seconds"),
    ({"signal": "error_ratio", "kind": "ratio"}, "percent"),
    ({"signal": "rss", "kind": "gauge", "limit": 2.0**30}, "bytes"),
    ({"signal": "queue_depth", "kind": "gauge"}, "plain"),
])
def test_a_signal_s_unit_comes_from_its_kind_and_name(view: dict[str, Any], unit: str) -> None:
    assert unit_of(view) == unit


def test_tick_labels_have_the_digits_to_tell_ticks_apart() -> None:
    mib = Scale(2.0**20, " MiB")
    ticks = value_ticks(191.1 * 2**20, 191.9 * 2**20, mib.factor)
    assert mib.tick_labels(ticks) == ["191.2 MiB", "191.4 MiB", "191.6 MiB", "191.8 MiB"]
    per_second = Scale(1.0, "/s")
    assert per_second.tick_labels([49.9, 50.0, 50.1]) == ["49.9/s", "50/s", "50.1/s"]
    assert per_second.tick_labels([0.0, 20.0, 40.0]) == ["0/s", "20/s", "40/s"]


def test_ticks_are_round_and_cover_the_range() -> None:
    assert value_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert value_ticks(0.3 * 2**30, 1.07 * 2**30, 2.0**30) == [g * 2**30 for g in (0.4, 0.6, 0.8, 1.0)]
    assert time_ticks(0.0, 180.0) == [0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0]
    assert time_ticks(0.0, 436.35) == [0.0, 120.0, 240.0, 360.0]
    assert time_ticks(0.0, 5400.0) == [0.0, 900.0, 1800.0, 2700.0, 3600.0, 4500.0, 5400.0]


def test_finding_figures_for_shift_and_leak() -> None:
    shift = {"detector": "compare", "baseline": 0.35, "candidate": 0.413, "effect": 0.179,
             "lower": 0.1507, "upper": None, "tolerance": 0.05}
    assert finding_figures(shift, "rate") == ("0.35/s", "0.413/s", "+17.9% (≥ +15.1%)", "5%")
    # Every shift detector's effect is a share of the baseline, the step's and final look's too.
    for detector in ("step", "final"):
        assert finding_figures({**shift, "detector": detector}, "rate")[2:] == (
            "+17.9% (≥ +15.1%)", "5%")
    leak = {"detector": "leak", "baseline": 1.0, "candidate": 1024.0, "effect": 1023.0,
            "lower": 512.0, "upper": 2048.0, "tolerance": 10.0}
    assert finding_figures(leak, "bytes") == (
        "60 B/min", "60 KiB/min", "+59.9 KiB/min [+29.9 KiB/min, +120 KiB/min]", "600 B/min")


@pytest.mark.parametrize(("times", "values", "baseline"), [
    ([], [], None),
    ([30.0], [5.0], {"p05": 1.0, "p50": 2.0, "p95": 3.0}),
    ([0.0, 15.0, 30.0], [4.0, 4.0, 4.0], None),
    ([0.0, 15.0, 30.0], [0.0, 0.0, 0.0], {"p05": 0.0, "p50": 0.0, "p95": 0.0}),
    ([0.0, 15.0, 30.0], [1.0, float("nan"), None], {"p05": None, "p50": 2.0, "p95": 3.0}),
    ([0.0, 3600.0, 7200.0], [-5.0, 1e12, 3.0], {"p05": -1.0, "p50": 0.0, "p95": 1.0}),
])
def test_plots_of_sparse_flat_or_odd_series_have_sound_axes(times: list[float], values: list[Any],
                                                            baseline: dict[str, Any] | None) -> None:
    view = {"signal": "s", "kind": "gauge", "limit": None, "baseline": baseline, "latest": None,
            "times": times, "values": values}
    spec = plot_spec(view, [], {"started_at": 0.0})
    (x0, x1), (y0, y1) = spec["x"], spec["y"]
    assert x0 < x1 and y0 < y1
    assert spec["candidate"] == [[t, v] for t, v in zip(times, values, strict=True)
                                 if isinstance(v, float) and np.isfinite(v)]
    assert all(x0 <= t <= x1 for t, _ in spec["x_ticks"]) and len(spec["x_ticks"]) >= 2
    assert all(y0 <= v <= y1 for v, _ in spec["y_ticks"]) and len(spec["y_ticks"]) >= 2
    assert all(y0 <= v <= y1 for _, v in spec["candidate"])
    json.loads(embed_json(spec))


def test_leak_projection_reaches_the_limit_at_exhaustion(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["v2.3"]
    view = view_of(doc, "memory")
    leak = next(f for f in doc["findings"] if f["detector"] == "leak")
    spec = plot_spec(view, doc["findings"], doc)
    reach = leak["at"] - doc["started_at"] + leak["exhaustion"]
    assert 400 < reach < 480  # demo: limit 1 GiB about 4m16s after the +3m evaluation
    projection = spec["projection"]
    assert projection["from"] == [view["times"][-1], view["latest"]]
    assert projection["to"] == pytest.approx([reach, 2.0**30])
    assert not projection["clipped"] and spec["x"][1] == pytest.approx(reach)
    assert spec["y"][0] < view["values"][0] and spec["y"][1] > 2.0**30
    assert all(label.endswith(" GiB") for _, label in spec["y_ticks"])
    assert spec["y_label"] == "memory (GiB)"


def test_a_slow_leak_projection_stops_at_the_chart_edge_on_its_line(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["v2.4"]
    view = view_of(doc, "memory")
    leak = next(f for f in doc["findings"] if f["detector"] == "leak")
    projection = plot_spec(view, doc["findings"], doc)["projection"]
    (t0, v0), (t1, v1) = projection["from"], projection["to"]
    reach = leak["at"] - doc["started_at"] + leak["exhaustion"]
    assert projection["clipped"] and projection["reach"] == pytest.approx(reach)
    assert t1 == max(3 * t0, t0 + 300) < reach
    assert (v1 - v0) / (2.0**30 - v0) == pytest.approx((t1 - t0) / (reach - t0))
    assert "beyond the chart" in projection["label"]


def test_change_markers_sit_where_shifts_began(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["v2.3"]
    spec = plot_spec(view_of(doc, "cpu"), doc["findings"], doc)
    cpu = next(f for f in doc["findings"] if f["signal"] == "cpu")
    assert [m["t"] for m in spec["markers"]] == [cpu["change_at"] - doc["started_at"]] == [15.0]
    assert spec["projection"] is None
    band = spec["band"]
    base = view_of(doc, "cpu")["baseline"]
    assert (band["p05"], band["p50"], band["p95"]) == (base["p05"], base["p50"], base["p95"])
    assert (band["x0"], band["x1"]) == (view_of(doc, "cpu")["times"][0], view_of(doc, "cpu")["times"][-1])


# ---------------------------------------------------------------- the command


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="report")(report_command)

    @app.callback()
    def root() -> None:
        """Test root, so that `report` is a subcommand as in `monitor`."""

    return app


runner = CliRunner(env={"RELEASE_MONITOR_DB": None, "RELEASE_MONITOR_CONFIG": None})


def test_command_writes_the_page_and_prints_its_path(demo_db: Path, tmp_path: Path,
                                                      docs: dict[str, dict[str, Any]]) -> None:
    out = tmp_path / "v2.3.html"
    result = runner.invoke(cli(), ["report", "--release", "v2.3", "--out", str(out), "--db", str(demo_db)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.read_text(encoding="utf-8") == render_report(docs["v2.3"])


@pytest.mark.parametrize(("args", "message"), [
    (["--release", "v9.9"], "no release 'v9.9'"),
    (["--release", "v2.3", "--service", "other"], "no release 'v2.3' of service 'other'"),
])
def test_command_unknown_release_exits_2(demo_db: Path, tmp_path: Path, args: list[str],
                                         message: str) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(cli(), ["report", *args, "--out", str(out), "--db", str(demo_db)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not out.exists()


def test_command_unwritable_out_exits_2(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "r.html"
    result = runner.invoke(cli(), ["report", "--release", "v2.3", "--out", str(out), "--db", str(demo_db)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: --out: cannot write {out}")


# ---------------------------------------------------------------- a real browser


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Headless Chromium on a file: URL, with nothing that reaches the network; its stdout."""
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *extra, url]
    # Its own process group, so that a hung browser is stopped with all its helpers.
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = browser.communicate(timeout=CHROMIUM_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        pytest.fail(f"Chromium did not finish in {CHROMIUM_SECONDS}s: a dialog such as alert() "
                    "blocks headless Chromium, so the page may have run injected script")
    assert browser.returncode == 0, err[-2000:]
    return out


@pytest.fixture(scope="module")
def v23_browser(docs: dict[str, dict[str, Any]],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """v2.3's page as Chromium leaves it: the DOM after the script ran, and a screenshot."""
    folder = tmp_path_factory.mktemp("browser")
    page, shot = folder / "v2.3.html", folder / "v2.3.png"
    page.write_text(render_report(docs["v2.3"]), encoding="utf-8")
    # Half scale: the whole page in a small image that decodes quickly.
    screenshot = ("--window-size=1280,2000", "--force-device-scale-factor=0.5", f"--screenshot={shot}")
    dom = chromium(page.as_uri(), folder / "profile", *screenshot, "--dump-dom")
    if not shot.exists():  # a Chromium that does one thing per run
        chromium(page.as_uri(), folder / "profile", *screenshot)
    return dom, shot


class Svgs(HTMLParser):
    """Each svg of a dumped DOM: its attributes and its children's (tag, attributes)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.svgs: list[tuple[dict[str, str], list[tuple[str, dict[str, str]]]]] = []
        self.tags: list[str] = []
        self.inside = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "svg":
            self.svgs.append((values, []))
            self.inside = True
        elif self.inside:
            self.svgs[-1][1].append((tag, values))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.inside = False

    def children(self, signal: str, tag: str, css: str) -> list[dict[str, str]]:
        kids = next(k for a, k in self.svgs if a["data-signal"] == signal)
        return [a for t, a in kids if t == tag and a.get("class") == css]


@needs_chromium
def test_chromium_draws_every_signal(v23_browser: tuple[str, Path], docs: dict[str, dict[str, Any]]) -> None:
    dom = Svgs(v23_browser[0])
    doc = docs["v2.3"]
    assert [a["data-signal"] for a, _ in dom.svgs] == [v["signal"] for v in doc["signals"]]
    for attrs, _ in dom.svgs:
        assert attrs.get("data-rendered") == "1", attrs
        signal = attrs["data-signal"]
        (path,) = dom.children(signal, "path", "candidate")
        points = path_points(path["d"])
        assert len(points) == len(view_of(doc, signal)["values"]) >= 2
        xs = [x for x, _ in points]
        assert xs == sorted(xs) and xs[0] < xs[-1]
        assert all(0 <= x <= report_module.PLOT_WIDTH and 0 <= y <= report_module.PLOT_HEIGHT
                   for x, y in points)
        assert dom.children(signal, "rect", "band"), signal
    (limit,) = dom.children("memory", "line", "limit")
    (projection,) = dom.children("memory", "path", "projection")
    start, end = path_points(projection["d"])
    assert start == path_points(dom.children("memory", "path", "candidate")[0]["d"])[-1]
    assert end[1] == float(limit["y1"]) == float(limit["y2"])  # reaches the limit line
    assert end[0] > start[0]
    assert len(dom.children("cpu", "line", "marker")) == 1
    assert dom.children("cpu", "path", "projection") == []


@needs_chromium
def test_without_the_drawing_script_the_tables_still_show(docs: dict[str, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    # Headless Chromium dumps nothing with scripts disabled, so the page loses its script instead.
    text = render_report(docs["v2.3"])
    drawing = f"<script>{report_module.SCRIPT}</script>"
    assert drawing in text
    path = tmp_path / "static.html"
    path.write_text(text.replace(drawing, ""), encoding="utf-8")
    page = Page(chromium(path.as_uri(), tmp_path / "profile", "--dump-dom"))
    assert len(page.tables["findings"]) == len(docs["v2.3"]["findings"]) + 1
    assert len(page.tables["checks"]) == len(docs["v2.3"]["checks"]) + 1
    assert all("data-rendered" not in a for a in page.all("svg"))
    assert "js" not in page.all("html")[0].get("class", "")  # so the no-script note shows


@needs_chromium
def test_chromium_runs_no_hostile_markup(tmp_path: Path) -> None:
    path = tmp_path / "hostile.html"
    path.write_text(render_report(hostile_doc()), encoding="utf-8")
    text = chromium(path.as_uri(), tmp_path / "profile", "--dump-dom")
    dom = Svgs(text)
    assert "img" not in dom.tags
    (attrs, _), = dom.svgs
    assert attrs["data-rendered"] == "1"
    assert len(path_points(dom.children(HOSTILE, "path", "candidate")[0]["d"])) == 3


def png_pixels(data: bytes) -> np.ndarray:
    """RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = dict[bytes, list[bytes]]()
    for kind, body in _png_chunks(data):
        chunks.setdefault(kind, []).append(body)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous, bpp)
        rows.append(bytes(line))
        previous = line
    pixels = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, bpp)
    return pixels[:, :, :3].astype(int)


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 8
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        yield data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        pos += 12 + size


def _unfilter(kind: int, line: bytearray, up: bytearray, bpp: int) -> bytearray:
    """Undo one scanline's PNG filter (RFC 2083, section 6)."""
    if kind == 2:
        return bytearray((a + b) & 255 for a, b in zip(line, up, strict=True))
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 3:
            line[i] = (line[i] + ((left + up[i]) >> 1)) & 255
        elif kind == 4:
            guess = left + up[i] - corner
            da, db, dc = abs(guess - left), abs(guess - up[i]), abs(guess - corner)
            line[i] = (line[i] + (left if da <= db and da <= dc else up[i] if db <= dc else corner)) & 255
    return line


def test_png_decoder_against_a_known_image() -> None:
    # 2 x 2 RGB: rows filtered with Sub and Paeth, decoded by hand.
    raw = bytes([1, 10, 20, 30, 5, 5, 5, 4, 1, 1, 1, 2, 2, 2])
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
           + chunk(b"IEND", b""))
    assert png_pixels(png).tolist() == [[[10, 20, 30], [15, 25, 35]], [[11, 21, 31], [17, 27, 37]]]


@needs_chromium
def test_screenshot_shows_the_verdict_and_the_lines(v23_browser: tuple[str, Path]) -> None:
    shot = v23_browser[1]
    pixels = png_pixels(shot.read_bytes())
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    inked = float(np.mean(pixels.sum(axis=2) < 720))
    candidate_blue = int(np.sum((blue > red + 60) & (blue > green + 40)))
    rollback_red = int(np.sum((red > green + 80) & (red > blue + 60)))
    assert inked > 0.05, f"page looks blank: {inked:.1%} of pixels are not white"
    assert candidate_blue > 100 * 7, f"candidate lines not drawn: {candidate_blue} blue pixels"
    assert rollback_red > 500, f"rollback badge not shown: {rollback_red} red pixels"
