"""Reproducibility checks: ``--check-baseline``, ``--repeat N``, and environment recording.

A built-in plugin. It wraps ``amlrun_make_report`` so a check's verdict becomes the
cell's report (and the run's record) before the protocol records and reports it: a cell
whose metrics or artifacts moved beyond tolerance is a failed cell (exit code 1) whose
reason names every moved metric and whose log ends with a table of what moved and by how
much. Its wrapper of ``amlrun_execute`` records the environment's package list first.

``--repeat N`` runs each cell N times (ids get a ``#k`` suffix); every run of the same
script and parameters — on any ``-c`` target — is compared with the first one that
completed. ``AMLRUN_SEED`` is the same for every repeat (``--seed``, default 0), so a
script that seeds its generators from it gives the same numbers every time.

Every run also records its environment's package list (see :mod:`amlrun.freeze`).
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amlrun.errors import UsageError
from amlrun.freeze import RUN_FILE, EnvironmentRecorder, Freeze, describe_change
from amlrun.hookspec import hookimpl
from amlrun.matrix import Cell
from amlrun.protocol import FAILED, PASSED, RunReport

if TYPE_CHECKING:
    from amlrun import baseline as bl

PLUGIN_NAME = "repro-session"
TABLE_ROWS = 12  # rows of the moved-values table kept in the failure's log tail


def _repeat_count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of runs, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


@hookimpl
def amlrun_addoption(parser, group):
    group.add_argument(
        "--check-baseline",
        action="store_true",
        help="compare each cell's metrics and artifacts with the project's baseline file; "
        "a cell that moved beyond tolerance fails",
    )
    group.add_argument(
        "--baseline-missing",
        choices=("fail", "warn"),
        default="fail",
        help="with --check-baseline: a cell without a baseline entry fails (default) or only warns",
    )
    group.add_argument(
        "--baseline-file",
        metavar="PATH",
        help="the baseline file (default: [tool.amlrun] baseline_file, else amlrun-baseline.yml)",
    )
    group.add_argument(
        "--repeat",
        type=_repeat_count,
        metavar="N",
        help="run each cell N times (same AMLRUN_SEED) and fail runs whose metrics or artifacts "
        "differ beyond tolerance from the first; with several -c, targets are compared too",
    )


@hookimpl
def amlrun_configure(config):
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(Repro(config), name=PLUGIN_NAME)


@dataclass(frozen=True)
class RepeatedCell(Cell):
    """A cell run several times with ``--repeat``: its id ends in ``#k``."""

    repeat: int = 1

    @property
    def id(self) -> str:
        return f"{Cell.id.fget(self)}#{self.repeat}"  # type: ignore[attr-defined]  # slotted: no super()


@dataclass(frozen=True)
class Observed:
    """What one completed run produced."""

    cell_id: str
    run_id: str
    metrics: dict[str, Any]
    artifacts: dict[str, str]


def resolve_baseline_path(config):
    from pathlib import Path

    from amlrun.project import baseline_path

    given = config.getoption("baseline_file")
    if given:
        path = Path(given)
        return path if path.is_absolute() else Path.cwd() / path
    return baseline_path(config.project)


class Repro:
    """Per-invocation state of the reproducibility checks."""

    def __init__(self, config):
        self.config = config
        self.check = bool(config.getoption("check_baseline"))
        self.missing_mode = config.getoption("baseline_missing") or "fail"
        self.repeat = config.getoption("repeat") or 0
        if (self.check or self.repeat) and (config.getoption("reuse") or config.getoption("resume")):
            flag = "--check-baseline" if self.check else "--repeat"
            raise UsageError(
                f"{flag} reruns cells to compare their results; it cannot be combined with "
                "--reuse or --resume (a reused run would not be checked)"
            )
        self.baseline: bl.Baseline | None = None
        self.project_tolerances: bl.Tolerances | None = None  # read with the baseline
        self._items: list[Cell] = []
        self._cells: dict[str, Cell] | None = None
        self.references: dict[tuple[str, str], Observed] = {}
        self.baseline_outcomes: dict[str, str] = {}  # cell id → matched / moved / missing
        self.repeat_outcomes: dict[str, str] = {}  # cell id → consistent / differs
        self.recorder: EnvironmentRecorder | None = None
        self._freezes: dict[str, Freeze] = {}  # run id → its environment's packages, until its report
        self._lock = threading.Lock()

    # -- set-up ----------------------------------------------------------------------------

    def _load_baseline(self) -> None:
        from amlrun import baseline as bl  # only for --check-baseline / --repeat

        path = resolve_baseline_path(self.config)
        self.project_tolerances = bl.project_tolerances(self.config.project)
        self.baseline = bl.load(path, display=self.config.project.relative(path))
        if self.check and not self.baseline.exists and self.missing_mode == "fail":
            raise UsageError(
                f"--check-baseline: no baseline file {self.config.project.relative(path)}; create it with "
                "'amlrun baseline save' after a run (or pass --baseline-missing=warn)"
            )

    @hookimpl
    def amlrun_report_header(self, config):
        lines = []
        if self.check and self.baseline is not None:
            shown = config.project.relative(self.baseline.path)
            lines.append(f"baseline: {shown} ({len(self.baseline.entries)} cells)")
        if self.repeat:
            lines.append(f"repeat: {self.repeat} runs per cell, AMLRUN_SEED={self._seed()}")
        return lines

    def _seed(self) -> str:
        import os

        return str(self.config.getoption("seed") or os.environ.get("AMLRUN_SEED") or 0)

    @hookimpl
    def amlrun_collection_modifyitems(self, session, config, items):
        if self.check or self.repeat:
            self._load_baseline()
        if self.repeat > 1:
            items[:] = [
                RepeatedCell(experiment=c.experiment, params=c.params, target=c.target, marks=c.marks, repeat=k)
                for c in items
                for k in range(1, self.repeat + 1)
            ]
        self._items = list(items)
        self._cells = None  # built on first use: a --collect-only of 10^6 cells needs no id map

    @property
    def cells(self) -> dict[str, Cell]:
        """The session's cells by id."""
        if self._cells is None:
            self._cells = {cell.id: cell for cell in self._items}
        return self._cells

    @hookimpl
    def amlrun_sessionstart(self, session):
        self.recorder = session.environments

    # -- around every execution -------------------------------------------------------------

    @hookimpl(wrapper=True, tryfirst=True)
    def amlrun_execute(self, target, job, prepared, sink):
        """Record the environment's package list before the run (kept for its report)."""
        freeze = self._record_environment(target, prepared, job, sink)
        if isinstance(freeze, Freeze):
            with self._lock:
                self._freezes[job.run_id] = freeze
        return (yield)

    @hookimpl(wrapper=True)
    def amlrun_make_report(self, cell, job, result, run):
        """The verdict: a completed run whose results moved beyond tolerance is a failed cell."""
        report = yield
        if job is None or run is None:
            return report
        extra: dict[str, Any] = {}
        with self._lock:
            freeze = self._freezes.pop(job.run_id, None)
        if freeze is not None:
            try:
                # a hard link to one content-addressed copy: 1,000 runs do not store 1,000 lists
                run.session.snapshots.put_file(run.run_dir / RUN_FILE, freeze.text.encode("utf-8"))
            except OSError:
                pass
            extra["environment_packages"] = freeze.digest
        failures: list[str] = []
        if report.outcome == PASSED and job.cell_id in self.cells and (self.check or self.repeat):
            failures, extra["repro"] = self._verdict(self.cells[job.cell_id], job, run)
        return _with_verdict(report, extra, failures, run)

    def _verdict(self, cell, job, run) -> tuple[list[str], dict]:
        observed = self._observe(job, run.sink, run.run_dir)
        failures: list[str] = []
        details: dict[str, Any] = {}
        if self.check:
            self._check_baseline(cell, observed, run.sink, failures, details)
        if self.repeat:
            self._check_repeat(cell, observed, run.sink, failures, details)
        details["failed"] = bool(failures)
        return failures, details

    def _record_environment(self, target, prepared, job, sink):
        if self.recorder is None or job.cell_id not in self.cells:
            return None
        found = self.recorder.record(target, prepared, job.runconfig, job.cancel)
        if isinstance(found, str):
            _note(sink, f"[amlrun] {found}")
            return None
        drift = self.recorder.drift.pop((target.name, prepared.digest), None)
        if drift:
            _note(sink, f"[amlrun] the packages of environment {prepared.digest} changed since it was last recorded:")
            for change in drift:
                _note(sink, f"[amlrun]   {describe_change(*change)}")
        return found

    def _observe(self, job, sink, run_dir) -> Observed:
        from amlrun.artifacts import list_outputs

        artifacts = {a.path: a.sha256 for a in list_outputs(run_dir)}
        return Observed(job.cell_id, job.run_id, dict(getattr(sink, "metrics", {}) or {}), artifacts)

    def _layers(self, cell_id: str) -> tuple[bl.Tolerances, ...]:
        from amlrun import baseline as bl  # only for --check-baseline / --repeat

        entry = self.baseline.get(cell_id) if self.baseline is not None else None
        file_level = self.baseline.tolerances if self.baseline is not None else bl.Tolerances()
        project_level = self.project_tolerances or bl.Tolerances()
        return ((entry.tolerances if entry else bl.Tolerances()), file_level, project_level)

    def _check_baseline(self, cell, observed: Observed, sink, failures: list, details: dict) -> None:
        from amlrun import baseline as bl  # only for --check-baseline / --repeat

        entry = self.baseline.get(cell.id) if self.baseline is not None else None
        shown = self.config.project.relative(self.baseline.path) if self.baseline is not None else "baseline"
        if entry is None:
            message = (
                f"no baseline for {bl.base_cell_id(cell.id)} in {shown} "
                f"(save one: amlrun baseline save -k '{bl.base_cell_id(cell.id)}')"
            )
            details["baseline"] = {"status": "missing"}
            self.baseline_outcomes[cell.id] = "missing"
            if self.missing_mode == "fail":
                _write(sink, f"[amlrun repro] {message}")
                failures.append(message)
            else:
                _write(sink, f"[amlrun repro] warning: {message}")
            return
        layers = self._layers(cell.id)
        moved = bl.compare_metrics(entry.metrics, observed.metrics, *layers)
        moved += bl.compare_artifacts(entry.artifacts, observed.artifacts, *layers)
        what = f"baseline (run {entry.run})" if entry.run else "baseline"
        details["baseline"] = {
            "status": "moved" if moved else "matched",
            "run": entry.run,
            "moved": [m.to_json() for m in moved],
        }
        if not moved:
            self.baseline_outcomes[cell.id] = "matched"
            _note(
                sink,
                f"[amlrun repro] matches {what}: {len(entry.metrics)} metrics, "
                f"{len(entry.artifacts)} artifacts within tolerance",
            )
            return
        self.baseline_outcomes[cell.id] = "moved"
        self._write_table(sink, f"moved beyond tolerance vs {what} in {shown}", moved, "baseline")
        failures.append(bl.reason_line("baseline", moved))

    def _check_repeat(self, cell, observed: Observed, sink, failures: list, details: dict) -> None:
        from amlrun import baseline as bl  # only for --check-baseline / --repeat

        key = (cell.script, cell.params.id)
        with self._lock:
            reference = self.references.setdefault(key, observed)
        if reference is observed:
            details["repeat"] = {"status": "reference"}
            self.repeat_outcomes[cell.id] = "consistent"
            return
        layers = self._layers(cell.id)
        moved = bl.compare_metrics(reference.metrics, observed.metrics, *layers)
        for name in observed.metrics:
            if name not in reference.metrics and not bl.lookup(name, *layers).any:
                moved.append(bl.Movement(name, "metric", None, observed.metrics[name], bl.EXACT, "new"))
        moved += bl.compare_artifacts(reference.artifacts, observed.artifacts, *layers)
        for path in observed.artifacts:
            if path not in reference.artifacts and not bl.lookup(path, *layers).any:
                moved.append(bl.Movement(path, "artifact", None, observed.artifacts[path], bl.EXACT, "new"))
        what = f"{reference.cell_id} (run {reference.run_id})"
        details["repeat"] = {
            "status": "differs" if moved else "consistent",
            "reference": reference.cell_id,
            "reference_run": reference.run_id,
            "moved": [m.to_json() for m in moved],
        }
        if not moved:
            self.repeat_outcomes[cell.id] = "consistent"
            _note(sink, f"[amlrun repro] same results as {what}")
            return
        self.repeat_outcomes[cell.id] = "differs"
        self._write_table(sink, f"differs from {what} (same script, parameters and AMLRUN_SEED)", moved, "first run")
        failures.append(bl.reason_line(f"first run {reference.cell_id}", moved))

    def _write_table(self, sink, title: str, moved: list, label: str) -> None:
        from amlrun import baseline as bl  # only for --check-baseline / --repeat

        _write(sink, f"[amlrun repro] {len(moved)} value{'s' * (len(moved) != 1)} {title}:")
        lines = bl.table(moved, label)
        shown = lines[: TABLE_ROWS + 2]
        for line in shown:
            _write(sink, "  " + line)
        if len(lines) > len(shown):
            _write(sink, f"  ... {len(lines) - len(shown)} more (see the run's record)")

    # -- the end ------------------------------------------------------------------------------

    @hookimpl
    def amlrun_terminal_summary(self, terminalreporter, exitstatus, session):
        terminal = terminalreporter
        counts: dict[str, int] = {}
        for outcome in [*self.baseline_outcomes.values(), *self.repeat_outcomes.values()]:
            counts[outcome] = counts.get(outcome, 0) + 1
        if self.check and self.baseline_outcomes:
            from amlrun import baseline as bl

            missing = sorted(bl.base_cell_id(c) for c, o in self.baseline_outcomes.items() if o == "missing")
            for cell_id in dict.fromkeys(missing):
                verdict = "FAILED" if self.missing_mode == "fail" else "warning"
                terminal.write_line(f"{verdict}: no baseline for {cell_id}")
            terminal.write_line(
                f"baseline check: {counts.get('matched', 0)} matched, {counts.get('moved', 0)} moved, "
                f"{counts.get('missing', 0)} without baseline"
            )
        if self.repeat and self.repeat_outcomes:
            terminal.write_line(
                f"repeat check: {counts.get('consistent', 0)} consistent, "
                f"{counts.get('differs', 0)} differ (AMLRUN_SEED={self._seed()})"
            )


def _with_verdict(report: RunReport, extra: dict[str, Any], failures: list[str], run) -> RunReport:
    """``report`` with the checks' details in its record and, when a check failed, failed
    (its log tail then ends with the checks' table)."""
    record = report.record
    if record is not None and extra:
        record = dataclasses.replace(record, extra={**record.extra, **extra})
    if not failures:
        return dataclasses.replace(report, record=record)
    reason = " | ".join(failures)
    run.sink.note(f"[amlrun] {reason}")
    if record is not None:
        record = dataclasses.replace(record, status="failed", reason=reason)
    return dataclasses.replace(report, outcome=FAILED, reason=reason, record=record, log_tail=tuple(run.sink.tail))


def _write(sink, line: str) -> None:
    """A line that belongs in the failure report (log, log tail and live stream)."""
    sink.write(line)


def _note(sink, line: str) -> None:
    note = getattr(sink, "note", None)
    if note is not None:
        note(line)
