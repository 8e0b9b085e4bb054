"""The session runner: collect, expand, select, run, report, exit code (pytest's ``main.py``)."""

from __future__ import annotations

from pathlib import Path

from amlrun.collection import collect
from amlrun.diagnostics import warn
from amlrun.errors import UsageError
from amlrun.matrix import expand, parse_param_options, select, split_scoped, undeclared_params
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
    grid, scoped = param_grids(config, experiments)
    cells = expand(experiments, list(session.targets), grid, scoped)
    selected, deselected = select(cells, config.getoption("keyword"), config.getoption("markexpr"))
    session.deselected = deselected  # before the hook: --lf adds the cells it leaves out
    session.experiments = experiments
    config.hook.amlrun_collection_modifyitems(session=session, config=config, items=selected)
    session.cells = selected


def param_grids(config, experiments) -> tuple[dict, dict]:
    """The ``-p`` sweeps: one for every script, and one per ``SCRIPT::`` scope; warns, before
    anything runs, of a name a script's declaration does not know."""
    plain, by_script = split_scoped(config.getoption("params") or [])
    grid = parse_param_options(plain)
    known = {e.path: e for e in experiments}
    scoped = {}
    for script, options in by_script.items():
        path = config.project.relative((Path.cwd() / script).resolve())
        if path not in known:
            raise UsageError(
                f"-p {script}::...: {script} is not a collected experiment "
                f"(collected: {', '.join(sorted(known)[:5]) or 'none'})"
            )
        scoped[path] = parse_param_options(options)
    for experiment in experiments:
        names = {**grid, **scoped.get(experiment.path, {})}
        for name, nearest in undeclared_params(experiment, names):
            hint = f"; did you mean '{nearest}'?" if nearest else ""
            warn(f"-p {name}: {experiment.path} declares no parameter '{name}'{hint}")
    return grid, scoped


def run_session(config, session: Session | None = None) -> int:
    """Collect, run and report one session; the exit code. ``config`` is a parsed
    :class:`amlrun.session.Config`; ``session``, when given, is the caller's to read
    afterwards (:func:`amlrun.api.run_command` makes its results from it)."""
    session = session if session is not None else Session(config)
    if not config.getoption("collect_only"):
        session.start_reading_git()
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
