"""A release's verdict as one self-contained HTML page: header, checks, findings, plots.

The page needs no network: styles and the drawing script are inline, and the plot data
travels in a `<script type="application/json">` block. Scales, ticks and labels are worked
out here, so the script only maps numbers to pixels, and every text it adds goes through
`textContent`. Without the script the page still shows the header and both tables.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from monitor.durations import format_duration
from monitor.figures import (
    Scale,
    finding_figures,
    finding_unit,
    finite_number,
    format_value,
    scale_for,
    signal_units,
    unit_of,
)
from monitor.findings import VERDICTS, json_safe
from monitor.render import after, when

Point = tuple[float, float]
# The leak projection is drawn to the limit unless that lies beyond this many times the
# candidate's time range: a 10-hour projection would flatten a 5-minute window to a dot.
PROJECTION_REACH = 3.0
PROJECTION_MIN_SECONDS = 300.0
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)
VALUE_TICKS = 5


def render_report(doc: Mapping[str, Any]) -> str:
    """One HTML page telling a release's verdict and its evidence.

    `doc` is a verdict document (`monitor.verdicts.document`).

    Example:
        >>> from monitor.verdicts import document
        >>> page = render_report(document(store, store.find_release("v2.3")))  # doctest: +SKIP
        >>> Path("v2.3.html").write_text(page, encoding="utf-8")  # doctest: +SKIP
    """
    views: Sequence[Mapping[str, Any]] = doc.get("signals") or []
    findings: Sequence[Mapping[str, Any]] = doc.get("findings") or []
    units = signal_units(doc)
    plots = [plot_spec(view, findings, doc) for view in views]
    title = f"{doc.get('service')} {doc.get('release')}: {doc.get('verdict')}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        _header(doc),
        _checks_table(doc.get("checks") or [], doc),
        _findings_table(findings, units),
        _plots_section(plots),
        f'<script type="application/json" id="report-data">{embed_json({"plots": plots})}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
        "",
    ])


def embed_json(data: Any) -> str:
    """JSON safe inside a script element: no `</script>`, no `<!--`, no NaN.

    >>> embed_json({"signal": "</script>"})
    '{"signal": "\\\\u003c/script\\\\u003e"}'
    """
    text = json.dumps(json_safe(data), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# ---------------------------------------------------------------- units


def format_offset(seconds: float) -> str:
    """Time after the release started: '+0s', '+4m30s', '-15s'."""
    sign = "-" if seconds < 0 else "+"
    return sign + format_duration(abs(seconds))


# ---------------------------------------------------------------- header and tables


def _header(doc: Mapping[str, Any]) -> str:
    verdict = str(doc.get("verdict") or "unknown")
    css = verdict if verdict in VERDICTS else "unknown"
    facts = [
        ("baseline", doc.get("baseline_release") or "none"),
        ("started", when(doc.get("started_at"))),
        ("change", doc.get("change_class") or "-"),
        ("checking period", _duration(doc.get("period_seconds"))),
        ("state", doc.get("state") or "-"),
        ("decided", after(doc, "decided_at")),
        ("first alarm", after(doc, "first_alarm_at")),
        ("last evaluation", after(doc, "evaluated_at")),
    ]
    items = "".join(f"<div><dt>{_esc(k)}</dt><dd>{_esc(v)}</dd></div>" for k, v in facts)
    reason = doc.get("reason")
    notes = [f'<p class="reason"><b>Reason:</b> {_esc(reason)}</p>' if reason else ""]
    if doc.get("invalidated"):
        notes.append('<p class="note">This release was invalidated as a baseline.</p>')
    return (
        f'<header class="verdict-{css}">'
        f'<p class="service">{_esc(doc.get("service"))}</p>'
        f'<h1><span class="release">{_esc(doc.get("release"))}</span> '
        f'<span class="badge" id="verdict">{_esc(verdict.upper())}</span></h1>'
        f'<dl class="facts">{items}</dl>{"".join(notes)}</header>'
    )


def _duration(seconds: Any) -> str:
    number = finite_number(seconds)
    return format_duration(number) if number is not None else "-"


def _table(caption: str, css: str, headings: Sequence[str], rows: Sequence[str], empty: str) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headings)
    body = "".join(rows) or f'<tr><td colspan="{len(headings)}" class="empty">{_esc(empty)}</td></tr>'
    return (f'<section><h2>{_esc(caption)}</h2><table class="{css}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def _row(cells: Sequence[tuple[str, str]], css: str = "") -> str:
    """A table row from (class, already escaped HTML) cells."""
    tds = "".join(f'<td class="{c}">{content}</td>' if c else f"<td>{content}</td>"
                  for c, content in cells)
    return f'<tr class="{css}">{tds}</tr>' if css else f"<tr>{tds}</tr>"


def _checks_table(checks: Sequence[Mapping[str, Any]], doc: Mapping[str, Any]) -> str:
    rows = []
    for check in checks:
        ok = bool(check.get("ok"))
        at = finite_number(check.get("at"))
        started = finite_number(doc.get("started_at"))
        rows.append(_row([
            ("", _esc(check.get("stage"))), ("", _esc(check.get("name"))),
            ("ok" if ok else "fail", "ok" if ok else "FAIL"), ("", _esc(check.get("detail"))),
            ("num", _esc(format_offset(at - started) if at is not None and started is not None
                         else "-")),
        ], css="check"))
    return _table("Checks", "checks", ("stage", "check", "result", "detail", "at"), rows,
                  "No smoke or verification checks were recorded.")


def _findings_table(findings: Sequence[Mapping[str, Any]], units: Mapping[str, str]) -> str:
    rows = [_finding_row(f, finding_unit(units, f.get("signal"))) for f in findings]
    return _table("Findings", "findings",
                  ("signal", "detector", "severity", "baseline", "candidate", "effect [interval]",
                   "tolerance", "samples", "detail"),
                  rows, "No findings: nothing was worse than the baseline.")


def _finding_row(finding: Mapping[str, Any], unit: str) -> str:
    severity = str(finding.get("severity") or "")
    baseline, candidate, effect, tolerance = finding_figures(finding, unit)
    counts = (_count(finding.get("n_baseline")), _count(finding.get("n_candidate")))
    samples = "-" if counts == ("-", "-") else " / ".join(counts)
    return _row([
        ("", _esc(finding.get("signal"))), ("", _esc(finding.get("detector"))),
        (f"sev-{severity}" if severity in ("minor", "major") else "", _esc(severity)),
        ("num", _esc(baseline)), ("num", _esc(candidate)), ("num", _esc(effect)),
        ("num", _esc(tolerance)), ("num", _esc(samples)), ("detail", _esc(finding.get("detail"))),
    ], css="finding")


def _count(value: Any) -> str:
    number = finite_number(value)
    return "-" if number is None else f"{number:.0f}"


# ---------------------------------------------------------------- plots


def plot_spec(view: Mapping[str, Any], findings: Sequence[Mapping[str, Any]],
              doc: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the page's script needs to draw one signal, in data units, with labels.

    Times are seconds after the release started. Keys: signal, x and y (domains),
    x_ticks and y_ticks ([value, label] pairs), y_label, band (baseline p05/p50/p95 over
    the candidate's time range, or None), candidate ([t, v] points), markers (where shifts
    began), projection (leak: from the latest value to the memory limit, or None).
    """
    unit = unit_of(view)
    points = _points(view.get("times") or [], view.get("values") or [])
    mine = [f for f in findings if f.get("signal") == view.get("signal")]
    band = _band(view.get("baseline"), points)
    projection = _projection(view, mine, doc, points, unit)
    markers = _markers(mine, doc)
    xs = [t for t, _ in points] + [m["t"] for m in markers]
    if projection is not None:
        xs.append(projection["to"][0])
    x_domain = _time_domain(xs)
    ys = [v for _, v in points]
    if band is not None:
        ys += [band["p05"], band["p95"], band["p50"]]
    if projection is not None:
        ys += [projection["limit"], projection["to"][1]]
    y_domain = _value_domain(ys)
    scale = scale_for(unit, max(abs(y_domain[0]), abs(y_domain[1])))
    ticks = value_ticks(*y_domain, scale.factor)
    return {
        "signal": str(view.get("signal", "")),
        "x": list(x_domain), "y": list(y_domain),
        "x_ticks": [[t, format_offset(t)] for t in time_ticks(*x_domain)],
        "y_ticks": [[v, label] for v, label in zip(ticks, scale.tick_labels(ticks), strict=True)],
        "x_label": "time after the release",
        "y_label": f"{view.get('signal', '')}{_unit_name(scale)}",
        "band": band, "candidate": [list(p) for p in points],
        "markers": markers, "projection": projection,
    }


def _unit_name(scale: Scale) -> str:
    suffix = scale.suffix.strip()
    return f" ({suffix})" if suffix else ""


def _points(times: Sequence[Any], values: Sequence[Any]) -> list[Point]:
    pairs = ((finite_number(t), finite_number(v)) for t, v in zip(times, values, strict=False))
    return [(t, v) for t, v in pairs if t is not None and v is not None]


def _band(baseline: Any, points: Sequence[Point]) -> dict[str, float] | None:
    if not isinstance(baseline, Mapping) or not points:
        return None
    p05, p50, p95 = (finite_number(baseline.get(q)) for q in ("p05", "p50", "p95"))
    if p05 is None or p50 is None or p95 is None:
        return None
    return {"x0": points[0][0], "x1": points[-1][0], "p05": p05, "p50": p50, "p95": p95}


def _markers(findings: Sequence[Mapping[str, Any]], doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    started = finite_number(doc.get("started_at"))
    if started is None:
        return []
    marks = []
    for finding in findings:
        change = finite_number(finding.get("change_at"))
        if change is not None:
            offset = change - started
            marks.append({"t": offset, "label": f"{finding.get('detector')}: shift began "
                                                f"{format_offset(offset)}"})
    return marks


def _projection(view: Mapping[str, Any], findings: Sequence[Mapping[str, Any]],
                doc: Mapping[str, Any], points: Sequence[Point], unit: str) -> dict[str, Any] | None:
    """The leak's straight line from the latest value to the limit, reached at exhaustion."""
    limit, latest = finite_number(view.get("limit")), finite_number(view.get("latest"))
    leak = next((f for f in findings if f.get("detector") == "leak"
                 and finite_number(f.get("exhaustion")) is not None), None)
    if leak is None or limit is None or latest is None or not points:
        return None
    start = points[-1][0]
    evaluated = finite_number(leak.get("at"))
    started = finite_number(doc.get("started_at"))
    origin = evaluated - started if evaluated is not None and started is not None else start
    reach = max(start, origin + float(leak["exhaustion"]))
    label = f"limit {format_value(unit, limit)} reached {format_offset(reach)}"
    horizon = max(start * PROJECTION_REACH, start + PROJECTION_MIN_SECONDS)
    end: Point = (reach, limit)
    if reach > horizon:
        # Stop the line at the chart's edge, at the height the straight line has there.
        end = (horizon, latest + (limit - latest) * (horizon - start) / (reach - start))
        label += " (beyond the chart)"
    return {"from": [start, latest], "to": list(end), "limit": limit, "reach": reach,
            "label": label, "clipped": reach > horizon}


def _time_domain(times: Sequence[float]) -> tuple[float, float]:
    low = min([0.0, *times])
    high = max([low + 60.0, *times])
    return low, high


def _value_domain(values: Sequence[float]) -> tuple[float, float]:
    """The values' range with a margin; a flat or empty series gets a visible one."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    span = high - low
    pad = span * 0.06 if span > 0 else (abs(high) * 0.1 or 1.0)
    low, high = low - pad, high + pad
    if min(values) >= 0 > low:
        low = 0.0  # counts, bytes and ratios never go below zero
    return low, high


def time_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Round offsets (15s, 1m, 5m, 1h...) across [low, high], at most `most` of them."""
    step = next((s for s in TIME_STEPS if (high - low) / s <= most - 1), TIME_STEPS[-1])
    first = math.ceil(low / step) * step
    return [float(first + i * step) for i in range(int((high - first) // step) + 1)]


def value_ticks(low: float, high: float, factor: float = 1.0) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten, in the display unit) across [low, high]."""
    span = (high - low) / factor
    if not span > 0:
        return [low]
    raw = span / VALUE_TICKS
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw) * factor
    first = math.ceil(low / step - 1e-9) * step
    count = int(math.floor((high - first) / step + 1e-9)) + 1
    return [float(f"{first + i * step:.12g}") for i in range(count)]


def _plots_section(plots: Sequence[Mapping[str, Any]]) -> str:
    if not plots:
        return '<section><h2>Signals</h2><p class="empty">No health signals were judged.</p></section>'
    figures = []
    for index, plot in enumerate(plots):
        name = _esc(plot["signal"])
        figures.append(
            f'<figure class="plot"><figcaption>{name}</figcaption>'
            f'<svg class="chart" data-signal="{name}" data-index="{index}" '
            f'viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" role="img" '
            f'aria-label="{name}: baseline band and candidate over time"></svg></figure>'
        )
    legend = ('<p class="legend"><span class="key band"></span>baseline p05–p95 '
              '<span class="key p50"></span>baseline median <span class="key cand"></span>candidate '
              '<span class="key mark"></span>shift began <span class="key proj"></span>leak '
              'projection to the limit</p>')
    return (f'<section><h2>Signals</h2>{legend}<p class="nojs">The plots need JavaScript; '
            f'the tables above hold the evidence.</p><div class="plots">{"".join(figures)}</div>'
            "</section>")


PLOT_WIDTH, PLOT_HEIGHT = 640, 240

STYLE = """
:root{--pass:#1a7f37;--hotfix:#b35900;--rollback:#cf222e;--pending:#0969da;--inconclusive:#6e7781;
--unknown:#6e7781;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--cand:#0550ae}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1400px;padding:24px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--ink);background:#fff}
header{border-left:8px solid var(--c);padding:8px 16px;margin-bottom:16px;background:#f6f8fa}
header.verdict-pass{--c:var(--pass)}header.verdict-hotfix{--c:var(--hotfix)}
header.verdict-rollback{--c:var(--rollback)}header.verdict-pending{--c:var(--pending)}
header.verdict-inconclusive{--c:var(--inconclusive)}header.verdict-unknown{--c:var(--unknown)}
.service{margin:0;color:var(--muted);font-size:15px}
h1{margin:2px 0 8px;font-size:28px}
.badge{display:inline-block;padding:2px 12px;border-radius:6px;background:var(--c);color:#fff;
font-size:20px;vertical-align:middle}
.facts{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0}
.facts dt{color:var(--muted);font-size:12px}.facts dd{margin:0;font-weight:600}
.reason{margin:10px 0 4px;overflow-wrap:anywhere}.note{color:var(--hotfix)}
h2{font-size:18px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;white-space:nowrap}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.detail{overflow-wrap:anywhere}
td.ok{color:var(--pass);font-weight:600}td.fail{color:var(--rollback);font-weight:700}
td.sev-major{color:var(--rollback);font-weight:700}td.sev-minor{color:var(--hotfix);font-weight:600}
td.empty,p.empty{color:var(--muted)}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
figure.plot{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px}
figcaption{font-weight:600;overflow-wrap:anywhere}
svg.chart{width:100%;height:auto;display:block}
svg .band{fill:#8c959f;fill-opacity:.22}svg .p50{stroke:#59636e;stroke-dasharray:6 4;fill:none}
svg .candidate{stroke:var(--cand);stroke-width:2;fill:none}
svg .marker{stroke:var(--hotfix);stroke-width:1.5}svg .limit{stroke:var(--rollback);stroke-width:1.5}
svg .projection{stroke:var(--rollback);stroke-width:2;stroke-dasharray:5 4;fill:none}
svg .axis{stroke:#8c959f}svg .grid{stroke:#eaeef2}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}svg text.note{fill:var(--rollback)}
svg text.mark{fill:var(--hotfix)}
.legend{color:var(--muted)}.key{display:inline-block;width:18px;height:10px;margin:0 4px 0 12px;
vertical-align:middle}.key.band{background:rgba(140,149,159,.3)}
.key.p50{border-top:2px dashed #59636e;height:0}.key.cand{border-top:2px solid var(--cand);height:0}
.key.mark{border-left:2px solid var(--hotfix);width:0}
.key.proj{border-top:2px dashed var(--rollback);height:0}
.js .nojs{display:none}
"""

SCRIPT = """
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var NS = "http://www.w3.org/2000/svg";
  var W = __WIDTH__, H = __HEIGHT__, L = 64, R = 16, T = 22, B = 34;
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function add(parent, name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { node.textContent = text; }
    parent.appendChild(node);
    return node;
  }

  function draw(svg, plot) {
    var x0 = plot.x[0], x1 = plot.x[1], y0 = plot.y[0], y1 = plot.y[1];
    function sx(t) { return L + (t - x0) / (x1 - x0) * (W - L - R); }
    function sy(v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); }
    function line(a, b, cls) {
      return add(svg, "line", {x1: sx(a[0]).toFixed(1), y1: sy(a[1]).toFixed(1),
                               x2: sx(b[0]).toFixed(1), y2: sy(b[1]).toFixed(1), "class": cls});
    }
    plot.y_ticks.forEach(function (tick) {
      line([x0, tick[0]], [x1, tick[0]], "grid");
      add(svg, "text", {x: L - 6, y: sy(tick[0]) + 4, "text-anchor": "end"}, tick[1]);
    });
    plot.x_ticks.forEach(function (tick) {
      line([tick[0], y0], [tick[0], y1], "grid");
      var edge = sx(tick[0]) > W - R - 24 ? "end" : "middle";  // keep the last label inside
      add(svg, "text", {x: sx(tick[0]), y: H - B + 16, "text-anchor": edge}, tick[1]);
    });
    line([x0, y0], [x1, y0], "axis");
    line([x0, y0], [x0, y1], "axis");
    add(svg, "text", {x: W - R, y: H - 4, "text-anchor": "end"}, plot.x_label);
    add(svg, "text", {x: 4, y: 12}, plot.y_label);
    if (plot.band) {
      var b = plot.band;
      add(svg, "rect", {x: sx(b.x0).toFixed(1), y: sy(b.p95).toFixed(1),
                        width: Math.max(1, sx(b.x1) - sx(b.x0)).toFixed(1),
                        height: Math.max(1, sy(b.p05) - sy(b.p95)).toFixed(1), "class": "band"});
      line([b.x0, b.p50], [b.x1, b.p50], "p50");
    }
    plot.markers.forEach(function (m) {
      line([m.t, y0], [m.t, y1], "marker");
      add(svg, "text", {x: sx(m.t) + 4, y: H - B - 6, "class": "mark"}, m.label);
    });
    var p = plot.projection;
    if (p) {
      line([x0, p.limit], [x1, p.limit], "limit");
      add(svg, "path", {d: "M" + sx(p.from[0]).toFixed(1) + "," + sy(p.from[1]).toFixed(1) +
                           " L" + sx(p.to[0]).toFixed(1) + "," + sy(p.to[1]).toFixed(1),
                        "class": "projection"});
      add(svg, "text", {x: W - R, y: sy(p.limit) - 5, "text-anchor": "end", "class": "note"},
          p.label);
    }
    if (plot.candidate.length) {
      var d = plot.candidate.map(function (pt, i) {
        return (i ? "L" : "M") + sx(pt[0]).toFixed(1) + "," + sy(pt[1]).toFixed(1);
      }).join(" ");
      add(svg, "path", {d: d, "class": "candidate"});
    } else {
      add(svg, "text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no candidate data");
    }
    svg.setAttribute("data-rendered", "1");
  }

  var charts = document.querySelectorAll("svg.chart");
  Array.prototype.forEach.call(charts, function (svg) {
    var plot = data.plots[Number(svg.getAttribute("data-index"))];
    try {
      if (plot) { draw(svg, plot); }
    } catch (err) {
      add(svg, "text", {x: 8, y: 40}, "could not draw: " + err);
    }
  });
})();
""".replace("__WIDTH__", str(PLOT_WIDTH)).replace("__HEIGHT__", str(PLOT_HEIGHT))
