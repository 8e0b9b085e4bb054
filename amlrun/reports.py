"""Session reports for CI and people: ``--junitxml``, ``--report-json`` and ``--html``.

All three list the cells in matrix order and are written at ``amlrun_sessionfinish``.
The HTML page is one self-contained file (inline CSS, inline SVG charts, a few lines of
inline script, no CDN) so it opens offline and can be archived as a CI artifact.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from amlrun.errors import UsageError
from amlrun.hookspec import hookimpl
from amlrun.ownfiles import remember as remember_own_file
from amlrun.protocol import CANCELED, ERROR, FAILED, PASSED, REUSED, SKIPPED

STATUS_COLOURS = {PASSED: "#2e7d32", FAILED: "#c62828", ERROR: "#8e24aa", CANCELED: "#ef6c00",
                  SKIPPED: "#757575", REUSED: "#0277bd"}
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@hookimpl
def amlrun_addoption(parser, group):
    group = parser.add_argument_group("session reports")
    group.add_argument("--junitxml", metavar="PATH", help="write a JUnit XML report (one test case per cell)")
    group.add_argument("--report-json", dest="report_json", metavar="PATH",
                       help="write every cell with its run record as JSON")
    group.add_argument("--html", dest="html_report", metavar="PATH",
                       help="write a self-contained HTML page: the matrix, metric charts, links to outputs")


@hookimpl(trylast=True)
def amlrun_sessionfinish(session, exitstatus):
    """Last, so a report that cannot be written (one-line error, exit 4) stops no other plugin."""
    config = session.config
    duration = time.monotonic() - session.started
    writers = (("--junitxml", config.getoption("junitxml"), write_junitxml),
               ("--report-json", config.getoption("report_json"), write_json),
               ("--html", config.getoption("html_report"), write_html))
    problems = []
    for option, path, writer in writers:
        if path:
            target = Path(path)
            if not target.is_absolute():
                target = Path.cwd() / target
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                writer(session, target, duration, exitstatus)
                remember_own_file(session.project, target)
            except OSError as exc:
                problems.append(f"{option} {path}: cannot write: {exc.strerror or exc}")
                continue
            if session.terminal is not None:
                session.terminal.progress(f"report: {target}")
    if problems:
        raise UsageError("; ".join(problems))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _xml_text(text: str) -> str:
    """XML 1.0 cannot carry most control characters (ANSI colours in logs): drop them."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def classname(script: str) -> str:
    """``experiments/train.py`` → ``experiments.train`` (as JUnit expects a dotted class)."""
    stem = script[:-3] if script.endswith(".py") else script
    return stem.replace("/", ".").replace("\\", ".")


def case_name(cell) -> str:
    return cell.id.split("::", 1)[1] if "::" in cell.id else cell.id


# -- JUnit XML ---------------------------------------------------------------------------------


def junit_tree(session, duration: float) -> ET.Element:
    reports = session.reports
    count = lambda *outcomes: sum(1 for r in reports if r.outcome in outcomes)  # noqa: E731
    suites = ET.Element("testsuites", name="amlrun", tests=str(len(reports)), failures=str(count(FAILED)),
                        errors=str(count(ERROR, CANCELED)), skipped=str(count(SKIPPED)), time=f"{duration:.3f}")
    suite = ET.SubElement(
        suites, "testsuite", name="amlrun", tests=str(len(reports)), failures=str(count(FAILED)),
        errors=str(count(ERROR, CANCELED)), skipped=str(count(SKIPPED)), time=f"{duration:.3f}",
        timestamp=datetime.datetime.now().isoformat(timespec="seconds"), hostname=socket.gethostname(),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="project", value=str(session.project.root))
    for name, target in session.targets.items():
        ET.SubElement(props, "property", name=f"target.{name}", value=_xml_text(target.describe()))
    for report in reports:
        cell = report.cell
        case = ET.SubElement(suite, "testcase", classname=classname(cell.script), name=_xml_text(case_name(cell)),
                             time=f"{report.duration:.3f}")
        cprops = ET.SubElement(case, "properties")
        values = [("cell", cell.id), ("target", cell.target), ("outcome", report.outcome)]
        if report.run_id:
            values.append(("run_id", report.run_id))
        for key, value in cell.params.items:
            values.append((f"param.{key}", str(value)))
        for key, value in report.metrics.items():
            values.append((f"metric.{key}", json.dumps(value) if not isinstance(value, str) else value))
        for key, value in values:
            ET.SubElement(cprops, "property", name=_xml_text(key), value=_xml_text(str(value)))
        tail = _xml_text("\n".join(report.log_tail))
        message = _xml_text(report.reason or report.outcome)
        if report.outcome == FAILED:
            ET.SubElement(case, "failure", message=message, type="failed").text = tail
        elif report.outcome in (ERROR, CANCELED):
            ET.SubElement(case, "error", message=message, type=report.outcome).text = tail
        elif report.outcome == SKIPPED:
            ET.SubElement(case, "skipped", message=message)
        elif report.outcome == REUSED:
            ET.SubElement(case, "system-out").text = f"reused run {report.run_id} ({report.reason})"
    return suites


def write_junitxml(session, path: Path, duration: float, exitstatus: int) -> None:
    tree = junit_tree(session, duration)
    ET.indent(tree)
    _write(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(tree, encoding="unicode") + "\n")


# -- JSON ---------------------------------------------------------------------------------------


def cell_entry(session, report) -> dict:
    cell = report.cell
    return {
        "id": cell.id, "script": cell.script, "target": cell.target, "params": cell.params.as_dict(),
        "marks": sorted(cell.mark_names()), "outcome": report.outcome, "duration": round(report.duration, 3),
        "reason": report.reason, "run_id": report.run_id, "metrics": report.metrics,
        "infrastructure_error": report.infrastructure_error, "attempts": session.attempts.get(cell.id, 0),
        "run_dir": str(report.run_dir) if report.run_dir else None,
        "log_tail": list(report.log_tail),
        "record": report.record.to_json() if report.record is not None else None,
    }


def write_json(session, path: Path, duration: float, exitstatus: int) -> None:
    counts: dict[str, int] = {}
    for report in session.reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    data = {
        "amlrun_report": 1, "project": str(session.project.root), "exitstatus": exitstatus,
        "duration": round(duration, 3), "created": time.time(), "stopped": session.shouldstop,
        "interrupted": session.interrupted, "summary": counts,
        "targets": {name: t.describe() for name, t in session.targets.items()},
        "cells": [cell_entry(session, r) for r in session.reports],
    }
    _write(path, json.dumps(data, indent=1, default=str) + "\n")


# -- HTML ---------------------------------------------------------------------------------------


def _numeric(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _href(report, page: Path) -> str | None:
    if report.run_dir is None:
        return None
    outputs = report.run_dir / "outputs"
    folder = outputs if outputs.is_dir() else report.run_dir
    try:
        rel = os.path.relpath(folder, page.parent)
    except ValueError:  # another drive on Windows
        return folder.as_uri()
    return rel.replace(os.sep, "/") + "/"


def svg_chart(metric: str, script: str, reports) -> str:
    """One metric of one script: x = parameter sets in matrix order, one line per target."""
    labels: list[str] = []
    series: dict[str, dict[str, float]] = {}
    for report in reports:
        label = report.cell.params.id or "(no params)"
        if label not in labels:
            labels.append(label)
        value = _numeric(report.metrics.get(metric))
        if value is not None:
            series.setdefault(report.cell.target, {})[label] = value
    if not series:
        return ""
    values = [v for points in series.values() for v in points.values()]
    low, high = min(values), max(values)
    if low == high:
        low, high = low - 1, high + 1
    width, height, left, right, top, bottom = 560, 240, 56, 16, 24, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(labels) - 1)
    x = lambda i: left + (i * step if len(labels) > 1 else plot_w / 2)  # noqa: E731
    y = lambda v: top + plot_h - (v - low) / (high - low) * plot_h  # noqa: E731
    esc = html.escape
    parts = [f'<svg class="chart" data-metric="{esc(metric)}" data-script="{esc(script)}" '
             f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{esc(metric)} of {esc(script)}">',
             f'<text x="{left}" y="14" class="title">{esc(metric)} · {esc(script)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"/>']
    for frac in (0, 0.5, 1):
        value = low + (high - low) * frac
        parts.append(f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end" class="tick">{_fmt(value)}</text>')
    for i, label in enumerate(labels):
        short = label if len(label) <= 18 else label[:17] + "…"
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" text-anchor="end" class="tick" '
                     f'transform="rotate(-30 {x(i):.1f} {top + plot_h + 14})">{esc(short)}</text>')
    for n, (target, points) in enumerate(sorted(series.items())):
        colour = SERIES_COLOURS[n % len(SERIES_COLOURS)]
        coords = [(x(i), y(points[label])) for i, label in enumerate(labels) if label in points]
        if len(coords) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (a, b), label in zip(coords, [lb for lb in labels if lb in points]):
            parts.append(f'<circle class="point" cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}">'
                         f'<title>{esc(target)} {esc(label)}: {_fmt(points[label])}</title></circle>')
        parts.append(f'<rect x="{left + plot_w - 120}" y="{top + n * 16}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w - 106}" y="{top + n * 16 + 9}" class="tick">{esc(target)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f3f3;cursor:pointer}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.status{color:#fff;font-weight:600}
.badge{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:3px;color:#fff}
svg.chart{border:1px solid #eee;margin:6px}svg .axis{stroke:#999}svg .tick{font-size:10px;fill:#555}
svg .title{font-size:12px;font-weight:600}
""" + "".join(f"td.status.{o},.badge.{o}{{background:{c}}}" for o, c in STATUS_COLOURS.items())

_SCRIPT = """
(function(){
  var rows=document.querySelectorAll('#matrix tbody tr.cell');
  var counts={};rows.forEach(function(r){var s=r.dataset.status;counts[s]=(counts[s]||0)+1;});
  var out=document.getElementById('rendered');
  out.textContent=rows.length+' cells shown: '+Object.keys(counts).sort().map(function(k){return counts[k]+' '+k;}).join(', ');
  document.querySelectorAll('#matrix th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var body=th.closest('table').tBodies[0];var list=Array.prototype.slice.call(body.rows);
      var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
      list.sort(function(a,b){var x=a.cells[col].dataset.v||a.cells[col].textContent,y=b.cells[col].dataset.v||b.cells[col].textContent;
        var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
      list.forEach(function(r){body.appendChild(r);});
    });
  });
})();
"""


def render_html(session, page: Path, duration: float, exitstatus: int) -> str:
    esc = html.escape
    reports = session.reports
    metrics: list[str] = []
    for report in reports:
        for name in report.metrics:
            if name not in metrics:
                metrics.append(name)
    params: list[str] = []
    for report in reports:
        for name, _ in report.cell.params.items:
            if name not in params:
                params.append(name)
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    badges = "".join(f'<span class="badge {o}">{n} {o}</span>' for o, n in counts.items())
    head = ["cell", "script", "target", *params, "status", "duration (s)", *metrics, "run"]
    rows = []
    for report in reports:
        cell = report.cell
        values = cell.params.as_dict()
        tds = [f"<td>{esc(cell.id)}</td>", f"<td>{esc(cell.script)}</td>", f"<td>{esc(cell.target)}</td>"]
        tds += [f"<td>{esc(_fmt(values[p])) if p in values else ''}</td>" for p in params]
        title = f' title="{esc(report.reason)}"' if report.reason else ""
        tds.append(f'<td class="status {report.outcome}"{title}>{esc(report.outcome)}</td>')
        tds.append(f'<td class="num">{report.duration:.2f}</td>')
        for name in metrics:
            value = report.metrics.get(name)
            shown = "" if value is None else esc(_fmt(value))
            tds.append(f'<td class="num metric" data-metric="{esc(name)}">{shown}</td>')
        href = _href(report, page)
        run = esc(report.run_id or "")
        tds.append(f'<td><a class="outputs" href="{esc(href)}">{run or "log"}</a></td>' if href else f"<td>{run}</td>")
        rows.append(f'<tr class="cell" data-status="{report.outcome}" data-cell="{esc(cell.id)}">{"".join(tds)}</tr>')
    charts = []
    scripts: dict[str, list] = {}
    for report in reports:
        scripts.setdefault(report.cell.script, []).append(report)
    for metric in metrics:
        for script, group in scripts.items():
            chart = svg_chart(metric, script, group)
            if chart:
                charts.append(chart)
    title = f"amlrun report: {session.project.root.name}"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stopped = f"<p><b>{esc(session.shouldstop)}</b></p>" if session.shouldstop else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><h1>{esc(title)}</h1>
<p>{when} · {len(reports)} cells · {duration:.1f}s · exit status {exitstatus} · {badges}</p>{stopped}
<p id="rendered"></p>
<h2>Matrix</h2>
<table id="matrix"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<h2>Metrics</h2>
<div id="charts">{"".join(charts) or "<p>no numeric metrics were logged</p>"}</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_html(session, path: Path, duration: float, exitstatus: int) -> None:
    _write(path, render_html(session, path, duration, exitstatus))
