"""Session reports for CI and people: ``--junitxml``, ``--report-json`` and ``--html``.

All three list the cells in matrix order and are written at ``amlrun_sessionfinish``.
The HTML page (:mod:`amlrun.report_html`) is one self-contained file (inline CSS, SVG
charts drawn in Python, a small inline script, embedded images, no CDN) so it opens
offline and can be archived as a CI artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from amlrun import strictjson
from amlrun.errors import UsageError
from amlrun.hookspec import hookimpl
from amlrun.ownfiles import remember as remember_own_file
from amlrun.protocol import CANCELED, ERROR, FAILED, REUSED, SKIPPED

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

DEFAULT_EMBED_LIMIT = 10 * 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|b|kb|mb|gb)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def embed_size(text: str) -> int:
    """``10MB``, ``500KB``, ``0`` → bytes (for ``--html-embed-limit``)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 10MB or 500KB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@hookimpl
def amlrun_addoption(parser, group):
    group = parser.add_argument_group("session reports")
    group.add_argument("--junitxml", metavar="PATH", help="write a JUnit XML report (one test case per cell)")
    group.add_argument(
        "--report-json", dest="report_json", metavar="PATH", help="write every cell with its run record as JSON"
    )
    group.add_argument(
        "--html",
        dest="html_report",
        metavar="PATH",
        help="write one self-contained HTML page: the matrix (filter, sort), metric curves and "
        "charts, failures with their logs, the runs' images",
    )
    group.add_argument(
        "--html-embed-limit",
        dest="html_embed_limit",
        metavar="SIZE",
        type=embed_size,
        help="images embedded in the --html page at most (default 10MB; 0: none)",
    )


@hookimpl(trylast=True)
def amlrun_sessionfinish(session, exitstatus):
    """Last, so a report that cannot be written (one-line error, exit 4) stops no other plugin."""
    config = session.config
    duration = time.monotonic() - session.started
    writers = (
        ("--junitxml", config.getoption("junitxml"), write_junitxml),
        ("--report-json", config.getoption("report_json"), write_json),
        ("--html", config.getoption("html_report"), write_html),
    )
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
    import socket
    import xml.etree.ElementTree as ET

    reports = session.reports
    count = lambda *outcomes: str(sum(1 for r in reports if r.outcome in outcomes))  # noqa: E731
    totals = {
        "tests": str(len(reports)),
        "failures": count(FAILED),
        "errors": count(ERROR, CANCELED),
        "skipped": count(SKIPPED),
        "time": f"{duration:.3f}",
    }
    suites = ET.Element("testsuites", {"name": "amlrun", **totals})
    stamp = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "hostname": socket.gethostname()}
    suite = ET.SubElement(suites, "testsuite", {"name": "amlrun", **totals, **stamp})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="project", value=str(session.project.root))
    for name, target in session.targets.items():
        ET.SubElement(props, "property", name=f"target.{name}", value=_xml_text(target.describe()))
    for report in reports:
        cell = report.cell
        case = ET.SubElement(
            suite,
            "testcase",
            classname=classname(cell.script),
            name=_xml_text(case_name(cell)),
            time=f"{report.duration:.3f}",
        )
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
    import xml.etree.ElementTree as ET

    tree = junit_tree(session, duration)
    ET.indent(tree)
    _write(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(tree, encoding="unicode") + "\n")


# -- JSON ---------------------------------------------------------------------------------------


def cell_entry(session, report) -> dict:
    cell = report.cell
    return {
        "id": cell.id,
        "script": cell.script,
        "target": cell.target,
        "params": cell.params.as_dict(),
        "marks": sorted(cell.mark_names()),
        "outcome": report.outcome,
        "duration": round(report.duration, 3),
        "reason": report.reason,
        "run_id": report.run_id,
        "metrics": report.metrics,
        "infrastructure_error": report.infrastructure_error,
        "attempts": session.attempts.get(cell.id, 0),
        "run_dir": str(report.run_dir) if report.run_dir else None,
        "log_tail": list(report.log_tail),
        "record": report.record.to_json() if report.record is not None else None,
    }


def write_json(session, path: Path, duration: float, exitstatus: int) -> None:
    counts: dict[str, int] = {}
    for report in session.reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    data = {
        "amlrun_report": 1,
        "project": str(session.project.root),
        "exitstatus": exitstatus,
        "duration": round(duration, 3),
        "created": time.time(),
        "stopped": session.shouldstop,
        "interrupted": session.interrupted,
        "summary": counts,
        "targets": {name: t.describe() for name, t in session.targets.items()},
        "cells": [cell_entry(session, r) for r in session.reports],
    }
    _write(path, strictjson.dumps(data, indent=1, default=str) + "\n")


# -- HTML ---------------------------------------------------------------------------------------


def write_html(session, path: Path, duration: float, exitstatus: int) -> None:
    from amlrun.report_html.page import render

    limit = session.config.getoption("html_embed_limit")
    _write(path, render(session, duration, exitstatus, DEFAULT_EMBED_LIMIT if limit is None else limit))
