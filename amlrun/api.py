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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from amlrun.errors import UsageError

_CWD_LOCK = threading.RLock()  # make_config discovers the project from the working directory
T = TypeVar("T")


class _Items(Sequence[T], Generic[T]):
    """A read-only sequence over the dataclass field ``items``."""

    items: tuple[T, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):  # type: ignore[override]
        return self.items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)


@dataclass(frozen=True)
class CellResult:
    """How one cell of :func:`run` ended."""

    cell_id: str
    script: str
    target: str
    params: dict[str, Any]
    outcome: str                 # passed, failed, error, skipped, canceled, reused
    run_id: str | None
    metrics: dict[str, Any]
    reason: str
    duration: float
    run_dir: Path | None

    @property
    def outputs(self) -> Path | None:
        """The run's ``outputs/`` folder in the history (None for a skipped cell)."""
        return self.run_dir / "outputs" if self.run_dir is not None else None


@dataclass(frozen=True)
class RunResults(_Items[CellResult]):
    """The cells of one :func:`run`, in matrix order, and the command line's exit code.

    ``collected`` are the selected cells' ids (with ``--collect-only``, the only result)."""

    items: tuple[CellResult, ...]
    exit_code: int
    collected: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_pandas(self):
        """A DataFrame: one row per cell, its parameters and last metric values as columns."""
        return _frame([{"cell_id": c.cell_id, "script": c.script, "target": c.target, "outcome": c.outcome,
                        "run_id": c.run_id, "duration": c.duration} for c in self.items],
                      [c.params for c in self.items], [c.metrics for c in self.items])


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


def command_line(paths: str | os.PathLike | Sequence[str | os.PathLike] = (), *, targets: Sequence[str] = (),
                 params: Mapping[str, Any] | None = None, n: int = 1, keyword: str | None = None,
                 marks: str | None = None, args: Sequence[str] = ()) -> list[str]:
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


def run(paths: str | os.PathLike | Sequence[str | os.PathLike] = (), *, targets: Sequence[str] = (),
        params: Mapping[str, Any] | None = None, n: int = 1, project: str | os.PathLike | None = None,
        keyword: str | None = None, marks: str | None = None, args: Sequence[str] = ()) -> RunResults:
    """Run ``paths`` (default: the project's experiments) × ``params`` × ``targets``.

    ``params`` maps a name to a value or a list of values (a sweep, as ``-p name=a,b``);
    ``targets`` are ``-c`` names; ``n`` is ``-n``; ``keyword``/``marks`` are ``-k``/``-m``;
    ``args`` are any further command-line options (e.g. ``["--timeout", "60", "-q"]``).
    Paths are relative to ``project`` (default: the working directory).
    """
    argv = command_line(paths, targets=targets, params=params, n=n, keyword=keyword, marks=marks, args=args)
    return run_command(argv, project=project)


def run_command(argv: Sequence[str] = (), *, project: str | os.PathLike | None = None,
                prog: str = "amlrun") -> RunResults:
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
    return RunResults(tuple(_result(r) for r in session.reports), status, tuple(c.id for c in session.cells))


def _result(report) -> CellResult:
    cell = report.cell
    return CellResult(cell_id=cell.id, script=cell.script, target=cell.target, params=cell.params.as_dict(),
                      outcome=report.outcome, run_id=report.run_id, metrics=dict(report.metrics),
                      reason=report.reason, duration=report.duration, run_dir=report.run_dir)


# -- the history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One recorded run: its record's fields, and its folder in the history."""

    record: Any                  # amlrun.store.RunRecord
    run_dir: Path

    def __getattr__(self, name: str) -> Any:  # run_id, cell_id, script, target, status, params, metrics, tags ...
        if name in ("record", "run_dir"):
            raise AttributeError(name)
        return getattr(self.record, name)

    @property
    def outputs(self) -> Path:
        return self.run_dir / "outputs"

    def open(self, name: str, mode: str = "r", **kwargs: Any):
        """Open file ``name`` of the run's ``outputs/`` (never a link, never outside it)."""
        base = self.outputs.resolve()
        path = (self.outputs / name)
        if path.is_symlink() or base not in path.resolve().parents:
            raise UsageError(f"run {self.record.run_id}: no artifact outputs/{name}")
        if not path.is_file():
            raise UsageError(f"run {self.record.run_id}: no artifact outputs/{name} "
                             f"(artifacts: {', '.join(a.get('path', '') for a in self.record.artifacts) or 'none'})")
        return open(path, mode, **kwargs)

    def metric_history(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every logged point (``name``, ``value``, ``step``, ``time``), of one metric or all."""
        from amlrun.sink import read_metrics

        return [row for row in read_metrics(self.run_dir) if name is None or row.get("name") == name]


@dataclass(frozen=True)
class Runs(_Items[Run]):
    """Recorded runs, newest first."""

    items: tuple[Run, ...] = field(default=())

    def to_pandas(self, history: bool = False):
        """A DataFrame. Default: one row per run, its parameters and last metric values as
        columns. ``history=True``: one row per logged point (run_id, metric, step, value, time)."""
        if history:
            pandas = _pandas()
            rows = [{"run_id": r.record.run_id, "metric": p.get("name"), "step": p.get("step"),
                     "value": p.get("value"), "time": p.get("time")} for r in self.items for p in r.metric_history()]
            return pandas.DataFrame(rows, columns=["run_id", "metric", "step", "value", "time"])
        records = [r.record for r in self.items]
        return _frame([{"run_id": rec.run_id, "cell_id": rec.cell_id, "script": rec.script, "target": rec.target,
                        "status": rec.status, "started": rec.started, "duration": rec.duration} for rec in records],
                      [rec.params for rec in records], [rec.metrics for rec in records])


def runs(project: str | os.PathLike | None = None, *, script: str | Sequence[str] | None = None,
         target: str | Sequence[str] | None = None, status: str | Sequence[str] | None = None,
         limit: int | None = None) -> Runs:
    """The project's recorded runs, newest first, filtered as ``amlrun history list`` filters."""
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


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas in this environment: pip install pandas") from None
    return pandas


def _frame(fixed: list[dict[str, Any]], params: list[dict[str, Any]], metrics: list[dict[str, Any]]):
    """Rows of ``fixed`` columns, then parameters, then metrics (``metric:NAME`` when a name is both)."""
    pandas = _pandas()
    param_names = list(dict.fromkeys(k for p in params for k in p))
    rows = []
    for base, p, m in zip(fixed, params, metrics, strict=True):
        row = dict(base)
        row.update({k: p.get(k) for k in param_names})
        row.update({(f"metric:{k}" if k in row else k): v for k, v in m.items()})
        rows.append(row)
    return pandas.DataFrame(rows)
