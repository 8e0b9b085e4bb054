"""The values :mod:`amlrun.api` returns: typed, frozen, and defined here so that importing
the API (and the command line's start-up) does not pay for building these classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from amlrun.errors import UsageError

T = TypeVar("T")


class _Items(Sequence[T], Generic[T]):
    """A read-only sequence over the dataclass field ``items``."""

    items: tuple[T, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
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
    outcome: str  # passed, failed, error, skipped, canceled, reused
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
        return _frame(
            [
                {
                    "cell_id": c.cell_id,
                    "script": c.script,
                    "target": c.target,
                    "outcome": c.outcome,
                    "run_id": c.run_id,
                    "duration": c.duration,
                }
                for c in self.items
            ],
            [c.params for c in self.items],
            [c.metrics for c in self.items],
        )


def result_of(report) -> CellResult:
    cell = report.cell
    return CellResult(
        cell_id=cell.id,
        script=cell.script,
        target=cell.target,
        params=cell.params.as_dict(),
        outcome=report.outcome,
        run_id=report.run_id,
        metrics=dict(report.metrics),
        reason=report.reason,
        duration=report.duration,
        run_dir=report.run_dir,
    )


@dataclass(frozen=True)
class Run:
    """One recorded run: its record's fields, and its folder in the history."""

    record: Any  # amlrun.store.RunRecord
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
        path = self.outputs / name
        if path.is_symlink() or base not in path.resolve().parents:
            raise UsageError(f"run {self.record.run_id}: no artifact outputs/{name}")
        if not path.is_file():
            raise UsageError(
                f"run {self.record.run_id}: no artifact outputs/{name} "
                f"(artifacts: {', '.join(a.get('path', '') for a in self.record.artifacts) or 'none'})"
            )
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
            rows = [
                {
                    "run_id": r.record.run_id,
                    "metric": p.get("name"),
                    "step": p.get("step"),
                    "value": p.get("value"),
                    "time": p.get("time"),
                }
                for r in self.items
                for p in r.metric_history()
            ]
            return pandas.DataFrame(rows, columns=["run_id", "metric", "step", "value", "time"])
        records = [r.record for r in self.items]
        return _frame(
            [
                {
                    "run_id": rec.run_id,
                    "cell_id": rec.cell_id,
                    "script": rec.script,
                    "target": rec.target,
                    "status": rec.status,
                    "started": rec.started,
                    "duration": rec.duration,
                }
                for rec in records
            ],
            [rec.params for rec in records],
            [rec.metrics for rec in records],
        )


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
