"""A custom report: a Markdown table of every cell, written when the session ends.

The project root's ``amlrunconf.py`` is loaded before the command line is parsed, so it
may add options (``--md-report PATH``). ``amlrun_runreport`` is called once per finished
cell (from worker threads when cells run in parallel); ``amlrun_sessionfinish`` once.
"""

import threading
from pathlib import Path

from amlrun.hookspec import hookimpl

_reports = []
_lock = threading.Lock()


@hookimpl
def amlrun_addoption(parser, group):
    group.add_argument("--md-report", metavar="PATH", default=".amlrun/summary.md",
                       help="where to write the Markdown summary (default: .amlrun/summary.md)")


@hookimpl
def amlrun_runreport(report):
    with _lock:
        _reports.append(report)


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


@hookimpl
def amlrun_sessionfinish(session, exitstatus):
    path = Path(session.config.getoption("md_report") or ".amlrun/summary.md")
    if not path.is_absolute():
        path = session.project.root / path
    lines = [
        "# amlrun session summary",
        "",
        f"exit status: {exitstatus}",
        "",
        "| cell | outcome | seconds | metrics | run |",
        "|---|---|---|---|---|",
    ]
    with _lock:
        reports = sorted(_reports, key=lambda r: r.cell.id)
    for r in reports:
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(r.metrics.items()))
        lines.append(f"| `{_cell(r.cell.id)}` | {r.outcome} | {r.duration:.2f} | {_cell(metrics)} | {r.run_id or ''} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    session.terminal.write_line(f"markdown summary: {path}")
