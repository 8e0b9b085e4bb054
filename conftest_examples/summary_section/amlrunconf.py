"""A section of one's own in the terminal summary: the best value of a metric.

``amlrun_terminal_summary`` is called once at the end, after the failures and before
the short summary and the final line; write with ``terminalreporter.write_line`` (it
masks secrets and keeps the live status area intact) and ``terminalreporter.sep``.
``--best-metric NAME`` picks the metric (default ``accuracy``); the root
``amlrunconf.py`` may add options because it is loaded before the command line is parsed.
"""

from amlrun.hookspec import hookimpl


@hookimpl
def amlrun_addoption(parser, group):
    group.add_argument("--best-metric", metavar="NAME", default="accuracy",
                       help="the metric whose best cell the summary names (default: accuracy)")


@hookimpl
def amlrun_terminal_summary(terminalreporter, exitstatus, session):
    name = session.config.getoption("best_metric")
    scored = [(r.metrics[name], r.cell.id) for r in session.reports
              if isinstance(r.metrics.get(name), (int, float)) and not isinstance(r.metrics.get(name), bool)]
    terminalreporter.sep("-", f"best {name}")
    if not scored:
        terminalreporter.write_line(f"no cell logged {name}")
        return
    value, cell_id = max(scored)
    terminalreporter.write_line(f"{cell_id}: {name}={value:g} (of {len(scored)} cells)")
