"""The run command's session: collect, expand, select, run, report, exit code."""

from __future__ import annotations

import time
from pathlib import Path

from amlrun.collection import collect
from amlrun.matrix import expand, parse_param_options, select
from amlrun.session import EXIT_FAILED, EXIT_NOTHING, EXIT_OK, Session
from amlrun.terminal import TerminalReporter, plural


def target_names(config) -> list[str]:
    names = config.getoption("compute") or list(config.project.settings.default_targets)
    unique = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def collection_paths(config) -> list[Path]:
    given = config.getoption("paths")
    if given:
        return [Path(p) for p in given]
    configured = config.project.settings.experiment_paths
    if configured:
        return [config.project.root / p for p in configured]
    return [config.project.root]


def build_matrix(session) -> None:
    """Collect, expand and select the session's cells (raises for bad input)."""
    config = session.config
    session.setup_targets(target_names(config))
    session.collection_errors = []
    experiments = collect(config, collection_paths(config), session.collection_errors)
    grid = parse_param_options(config.getoption("params") or [])
    cells = expand(experiments, list(session.targets), grid)
    selected, deselected = select(cells, config.getoption("keyword"), config.getoption("markexpr"))
    session.deselected = deselected  # before the hook: --lf adds the cells it leaves out
    session.experiments = experiments
    config.hook.amlrun_collection_modifyitems(session=session, config=config, items=selected)
    session.cells = selected


def print_collection(session, terminal: TerminalReporter) -> None:
    per_target: dict[str, int] = {}
    for cell in session.cells:
        per_target[cell.target] = per_target.get(cell.target, 0) + 1
        skip = cell.skip_mark()
        suffix = f"  (skip: {skip.reason or 'skip mark'})" if skip else ""
        if not skip and cell.id in getattr(session, "reuse_plan", {}):
            suffix = f"  (reuse run {session.reuse_plan[cell.id].run_id})"
        terminal.write_line(f"{cell.id}{suffix}")
    terminal.write_line()
    reused = getattr(session, "reuse_plan", {})
    for name, count in per_target.items():
        target = session.targets[name]
        try:
            ready = "environment ready" if target.is_prepared(session.runconfigs[name]) else "environment not built"
        except Exception as exc:  # a plan is informational: report, don't fail
            ready = f"environment unknown ({exc})"
        cells = [c for c in session.cells if c.target == name]
        skipped = sum(1 for c in cells if c.skip_mark() is not None)
        from_cache = sum(1 for c in cells if c.id in reused)
        plan = f"{count - skipped - from_cache} to run" + (f", {from_cache} reused from the cache" if from_cache else "")
        plan += f", {skipped} skipped" if skipped else ""
        terminal.write_line(f"target {name}: {plural(count, 'cell')} ({plan}), {ready}")
    for error in getattr(session, "collection_errors", ()):
        terminal.write_line(f"ERROR collecting {error.path}: {error.message}")


def run_session(config) -> int:
    terminal = TerminalReporter(config)
    config.pluginmanager.register(terminal, name="terminalreporter")
    session = Session(config, terminal)
    started = time.monotonic()
    build_matrix(session)
    terminal.header(session, len(session.cells), len(session.deselected))
    if config.getoption("collect_only"):
        print_collection(session, terminal)
        if session.collection_errors:
            return EXIT_FAILED
        return EXIT_OK if session.cells else EXIT_NOTHING
    if not session.cells:
        terminal.write_line("no cells collected" if not session.deselected else "every cell was deselected")
        for error in session.collection_errors:
            terminal.write_line(f"ERROR {error.path} - {error.message}")
        return EXIT_FAILED if session.collection_errors else EXIT_NOTHING
    config.hook.amlrun_sessionstart(session=session)
    session.run_cells()
    status = session.exitstatus()
    terminal.summary(session, time.monotonic() - started)
    config.hook.amlrun_sessionfinish(session=session, exitstatus=status)
    session.store.close()
    return status
