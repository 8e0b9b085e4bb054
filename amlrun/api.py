"""amlrun from Python: run a selection as the command line does, and read the history.

    import amlrun.api as aml
    results = aml.run("train.py", targets=["local"], params={"lr": [0.1, 0.01]}, project="iris")
    results.exit_code, [r.outcome for r in results]          # 0, ['passed', 'passed']
    df = aml.runs(project="iris", script="train.py").to_pandas()   # one row per run
    aml.runs(project="iris")[0].open("model.json").read()    # a run's outputs/

``run`` turns its arguments into the command line (:func:`command_line`) and runs it with
:func:`run_command`, which is also what ``amlrun`` itself runs (:mod:`amlrun.cli` only
turns its results and errors into an exit code and one-line messages): plugins,
``amlrunconf.py`` and the terminal report on stdout (``args=["-q"]`` for less) are the
same. Results are typed frozen values; a user's mistake raises
:class:`amlrun.errors.AmlrunError` (``UsageError``, ``ConfigError``) instead of printing.
pandas is needed only by ``to_pandas``; importing this module imports neither pandas nor
the runner.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amlrun.errors import UsageError

if TYPE_CHECKING:
    from amlrun.apivalues import CellResult, Run, RunResults, Runs

__all__ = ["CellResult", "Run", "RunResults", "Runs", "command_line", "run", "run_command", "runs"]
_CWD_LOCK = threading.RLock()  # make_config discovers the project from the working directory
_VALUES = ("CellResult", "Run", "RunResults", "Runs")


def __getattr__(name: str) -> Any:
    """The value classes, imported when first named (see :mod:`amlrun.apivalues`)."""
    if name in _VALUES:
        from amlrun import apivalues

        return getattr(apivalues, name)
    raise AttributeError(f"module 'amlrun.api' has no attribute {name!r}")


def _param_options(params: Mapping[str, Any] | None) -> list[str]:
    from amlrun.matrix import format_value

    options = []
    for name, values in (params or {}).items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            values = [values]
        texts = [format_value(v) for v in values]
        if not texts or any("," in t for t in texts):
            raise UsageError(f"params[{name!r}]: expected a value or a list of values without commas")
        options += ["-p", f"{name}={','.join(texts)}"]
    return options


def command_line(
    paths: str | os.PathLike | Sequence[str | os.PathLike] = (),
    *,
    targets: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    n: int = 1,
    keyword: str | None = None,
    marks: str | None = None,
    args: Sequence[str] = (),
) -> list[str]:
    """The ``amlrun`` arguments that select what :func:`run` is given (see there)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"n: expected a whole number of at least 1, got {n!r}")
    argv = [os.fspath(p) for p in paths]
    for name in targets:
        argv += ["-c", name]
    argv += _param_options(params) + ["-n", str(n)]
    argv += ["-k", keyword] if keyword else []
    argv += ["-m", marks] if marks else []
    return argv + [str(a) for a in args]


def run(
    paths: str | os.PathLike | Sequence[str | os.PathLike] = (),
    *,
    targets: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    n: int = 1,
    project: str | os.PathLike | None = None,
    keyword: str | None = None,
    marks: str | None = None,
    args: Sequence[str] = (),
) -> RunResults:
    """Run ``paths`` (default: the project's experiments) × ``params`` × ``targets``.

    ``params`` maps a name to a value or a list of values (a sweep, as ``-p name=a,b``);
    ``targets`` are ``-c`` names; ``n`` is ``-n``; ``keyword``/``marks`` are ``-k``/``-m``;
    ``args`` are any further command-line options (e.g. ``["--timeout", "60", "-q"]``).
    Paths are relative to ``project`` (default: the working directory).
    """
    argv = command_line(paths, targets=targets, params=params, n=n, keyword=keyword, marks=marks, args=args)
    return run_command(argv, project=project)


def run_command(
    argv: Sequence[str] = (), *, project: str | os.PathLike | None = None, prog: str = "amlrun"
) -> RunResults:
    """Run ``amlrun ARGV`` (the run command, no subcommand) and return its results: what
    the ``amlrun`` command line itself runs, before it turns the exit code into its own."""
    from amlrun.options import make_config
    from amlrun.runner import run_session
    from amlrun.session import Session

    root = Path(project).expanduser() if project is not None else None
    if root is not None and not root.is_dir():
        raise UsageError(f"project: {root} is not a folder")
    with _CWD_LOCK:
        before = os.getcwd() if root is not None else None
        try:
            if root is not None:
                os.chdir(root)
            config = make_config([str(a) for a in argv], prog)
            session = Session(config)
            status = run_session(config, session)
        finally:
            if before is not None:
                os.chdir(before)
    from amlrun.apivalues import RunResults, result_of

    return RunResults(tuple(result_of(r) for r in session.reports), status, tuple(c.id for c in session.cells))


# -- the history ---------------------------------------------------------------------------------


def runs(
    project: str | os.PathLike | None = None,
    *,
    script: str | Sequence[str] | None = None,
    target: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
    limit: int | None = None,
) -> Runs:
    """The project's recorded runs, newest first, filtered as ``amlrun history list`` filters."""
    from amlrun.apivalues import Run, Runs
    from amlrun.project import Project
    from amlrun.store import RunStore

    start = Path(project).expanduser() if project is not None else Path.cwd()
    if not start.is_dir():
        raise UsageError(f"project: {start} is not a folder")
    found = Project.discover(start, start)
    store = RunStore(found.state_dir)
    try:
        records = store.list(limit=limit, status=status, script=script, target=target)
        return Runs(tuple(Run(rec, store.run_dir(rec.run_id)) for rec in records))
    finally:
        store.close()
