"""A run loop of one's own: cells one at a time, in a fixed order, a line per cell in a file.

``amlrun_runloop`` is a ``firstresult`` hook (pytest's ``pytest_runtestloop``): returning
non-None means "the cells have run" and the built-in scheduler is skipped. This loop
sorts the cells by ``run_order.txt`` (scripts listed there first, in that order; the
rest after, in matrix order), runs each through ``amlrun_run_cell`` (the whole run
protocol: record, environment, snapshot, execute, report), appends its report to
``session.reports`` and writes ``<cell id> <outcome>`` to ``.amlrun/run_order.log``.
It honours ``-x``/``--maxfail``; retries, ``-n`` and per-target limits are the
built-in scheduler's (``amlrun.scheduler``) and do not apply.
"""

from pathlib import Path

from amlrun.hookspec import hookimpl


def _order(session) -> list:
    listed = Path(session.project.root, "run_order.txt").read_text(encoding="utf-8").split()
    rank = {script: n for n, script in enumerate(listed)}
    return sorted(session.cells, key=lambda cell: rank.get(cell.script, len(rank)))


@hookimpl
def amlrun_runloop(session):
    log = Path(session.project.state_dir, "run_order.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    maxfail = session.config.getoption("maxfail") or 0
    failures = 0
    with log.open("w", encoding="utf-8") as out:
        for cell in _order(session):
            if session.shouldstop or session.interrupted:
                break
            report = session.config.hook.amlrun_run_cell(cell=cell, session=session)
            session.reports.append(report)
            out.write(f"{cell.id} {report.outcome}\n")
            failures += report.failed
            if maxfail and failures >= maxfail:
                session.stop(f"stopping after {failures} failure{'s' * (failures != 1)}")
    return True
