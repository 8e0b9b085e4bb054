"""The session runner: collect, expand, select, run, report, exit code (pytest's ``main.py``)."""

from __future__ import annotations

from pathlib import Path

from amlrun.collection import collect
from amlrun.matrix import expand, parse_param_options, select
from amlrun.session import EXIT_FAILED, EXIT_NOTHING, EXIT_OK, Session


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


def run_session(config) -> int:
    """Collect, run and report one session; the exit code. ``config`` is a parsed
    :class:`amlrun.session.Config` (from the command line or from the Python API)."""
    session = Session(config)
    build_matrix(session)
    config.hook.amlrun_collection_finish(session=session)
    if config.getoption("collect_only"):
        if session.collection_errors:
            return EXIT_FAILED
        return EXIT_OK if session.cells else EXIT_NOTHING
    if not session.cells:
        return EXIT_FAILED if session.collection_errors else EXIT_NOTHING
    config.hook.amlrun_sessionstart(session=session)
    session.run_cells()
    status = session.exitstatus()
    config.hook.amlrun_sessionfinish(session=session, exitstatus=status)
    session.store.close()
    return status
