"""The run protocol: what happens to one cell, as the default hook implementations.

resolve run config → prepare environment (once per target) → record → materialise the
snapshot → execute on the target → collect artifacts → record → report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.errors import AmlrunError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.sink import RunSink
from amlrun.targets.base import ExecResult, Job, PreparedEnvironment
from amlrun.tracebacks import exception_line, workdir_rewriter

RUNTIME_SOURCE = Path(__file__).parent / "runtime"

# outcome of a cell, as the terminal reports it
PASSED, FAILED, ERROR, SKIPPED, CANCELED, REUSED = "passed", "failed", "error", "skipped", "canceled", "reused"


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """How one cell ended: made by ``amlrun_make_report``, sent to ``amlrun_runreport``."""

    cell: Any
    outcome: str
    duration: float = 0.0
    record: Any = None  # amlrun.store.RunRecord (as recorded), None when untracked or skipped
    reason: str = ""
    log_tail: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    infrastructure_error: bool = False

    @property
    def run_id(self) -> str | None:
        return self.record.run_id if self.record is not None else None

    @property
    def failed(self) -> bool:
        return self.outcome in (FAILED, ERROR)


@hookimpl(trylast=True)
def amlrun_resolve_runconfig(name, project, config):
    return project.resolve_runconfig(name)


@hookimpl(trylast=True)
def amlrun_prepare_environment(target, runconfig, progress):
    return target.prepare(runconfig, progress)


@hookimpl(trylast=True)
def amlrun_execute(target, job, prepared, sink):
    return target.execute(job, prepared, sink)


def materialize_workdir(session, run_id: str) -> Path:
    """The run's private working directory (the snapshot and the run-time client), from the
    session's slots (:mod:`amlrun.workdirs`): its cost does not grow with the project."""
    return session.workdirs.acquire(run_id)


def build_argv(runconfig, cell, script_args: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The runconfig's ``ArgumentVector`` (``$file`` = the script), then the arguments given
    after ``--``, then the cell's parameters as ``--name value``."""
    script = [cell.script]
    if cell.script.endswith(".ipynb"):  # a notebook runs through the runtime's notebook runner
        from amlrun.notebooks import script_argv

        script = script_argv(cell.script)
    argv = [part for a in runconfig.argument_vector for part in (script if a == "$file" else [a])]
    if cell.script not in argv:
        argv[0:0] = script
    argv += script_args
    for name, value in cell.params.items:
        argv += [f"--{name}", _param_text(value)]
    return tuple(argv)


def _param_text(value: Any) -> str:
    from amlrun.matrix import format_value

    return format_value(value)


def param_env_name(name: str) -> str:
    return "AMLRUN_PARAM_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def build_env(session, cell, run_id: str, runconfig) -> dict[str, str]:
    env = {
        k: session.resolve_secret(v, runconfig.source or runconfig.name)
        for k, v in runconfig.environment_variables.items()
    }
    env["AMLRUN_RUN_ID"] = run_id
    env["AMLRUN_CELL_ID"] = cell.id
    env["AMLRUN_TARGET"] = cell.target
    env["AMLRUN_SEED"] = str(session.seed)
    if runconfig.data_prep:
        env["AMLRUN_DATAPREP_SETTINGS"] = json.dumps(runconfig.data_prep, sort_keys=True)
    for name, value in cell.params.items:
        env[param_env_name(name)] = _param_text(value)
    return env


@dataclass(eq=False)
class CellRun:
    """One run of a cell while the protocol executes it: its record (as last saved), its
    folder, its output sink. Passed to ``amlrun_make_report``; plugins read it, only the
    protocol changes it."""

    session: Any
    cell: Any
    record: Any  # amlrun.store.RunRecord
    run_dir: Path
    sink: RunSink
    tracked: bool
    started: float  # time.monotonic() when the protocol began
    artifacts: tuple = ()  # amlrun.artifacts.Artifact entries, once collected
    log_tail: tuple[str, ...] | None = None  # set when the sink's tail is not the story (a failed build)
    workdir: Path | None = None

    @property
    def target(self):
        return self.session.targets[self.cell.target]

    @property
    def runconfig(self):
        return self.session.runconfigs[self.cell.target]

    def save(self, **changes: Any) -> None:
        """Record ``changes`` (to the history when the run is tracked)."""
        self.record = dataclasses.replace(self.record, **changes)
        if self.tracked:
            self.record = self.session.store.save(self.record)


@hookimpl(trylast=True)
def amlrun_run_cell(cell, session):
    hook = session.config.hook
    skip = cell.skip_mark()
    if skip is not None:
        result = ExecResult("skipped", reason=skip.reason or "skip mark")
        report = hook.amlrun_make_report(cell=cell, job=None, result=result, run=None)
    else:
        run = open_run(session, cell)
        try:
            report = execute_run(run)
        finally:
            close_run(run)
    hook.amlrun_runreport(report=report)
    return report


def open_run(session, cell) -> CellRun:
    """Create the run's record (status ``preparing``: saved when the environment is still to be
    prepared, so one write fewer per cell of a sweep), its folder and its sink."""
    runconfig = session.runconfigs[cell.target]
    store = session.store
    script_args = tuple(session.config.getoption("script_args") or ())
    record = store.new_record(
        cell_id=cell.id,
        script=cell.script,
        target=cell.target,
        target_type=session.targets[cell.target].compute.type,
        runconfig=runconfig.name,
        params=cell.params.as_dict(),
        script_args=script_args,
        status="preparing",
        git_commit=session.git.commit,
        git_dirty=session.git.dirty,
        snapshot_digest=session.snapshot.digest,
        environment_digest=session.environment_digest(cell.target),
    )
    tracked = runconfig.tracked_run
    run_dir = store.run_dir(record.run_id) if tracked else session.untracked_root / record.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if session.git.dirty and session.git.diff and tracked:
        (run_dir / "git.diff").write_text(session.redact(session.git.diff), encoding="utf-8")
    rewrite = workdir_rewriter(
        record.run_id, session.work_root / record.run_id, session.project.root, session.targets[cell.target].run_workdir
    )
    sink = RunSink(run_dir, lambda line: rewrite(session.redact(line)), session.stream_for(cell))
    run = CellRun(session, cell, record, run_dir, sink, tracked, time.monotonic())
    if not session.environment_ready(cell.target):
        run.save()  # the history shows it preparing; with the environment ready, the first write is "running"
    return run


def execute_run(run: CellRun):
    """Prepare, execute, collect, report: the report of a run whose record exists."""
    prepared = prepare_step(run)
    if isinstance(prepared, ExecResult):
        return finish_run(run, None, prepared)
    job = make_job(run)
    result = execute_step(run, job, prepared)
    run.artifacts = collect_step(run, job)
    return finish_run(run, job, result)


def prepare_step(run: CellRun) -> PreparedEnvironment | ExecResult:
    """The target's environment, or (when it cannot be had) the result of the run: an error."""
    try:
        return run.session.prepare(run.cell.target, run.sink)
    except AmlrunError as exc:
        reason = str(exc)
        tail = getattr(exc, "log_tail", "") or ""
        for line in [reason, *tail.splitlines()]:
            run.sink.note(line)
        run.log_tail = tuple(tail.splitlines()[-15:])
        return ExecResult("error", None, reason, infrastructure_error=isinstance(exc, TargetUnavailable))


def make_job(run: CellRun) -> Job:
    """The job to execute: its environment, a fresh work folder with the snapshot; record ``running``."""
    session, cell, runconfig = run.session, run.cell, run.runconfig
    try:
        env = build_env(session, cell, run.record.run_id, runconfig)
        for extra in session.config.hook.amlrun_run_environment(
            cell=cell, record=run.record, target=run.target, session=session
        ):
            env.update({k: v for k, v in (extra or {}).items() if not k.startswith("AMLRUN_")})
    except AmlrunError as exc:  # e.g. an unresolvable secret: record why, then stop the session
        run.sink.note(f"[amlrun] {exc}")
        run.save(status="failed", reason=str(exc), ended=time.time())
        raise
    run.save(status="running", started=time.time())
    run.workdir = materialize_workdir(session, run.record.run_id)
    return Job(
        run_id=run.record.run_id,
        cell_id=cell.id,
        workdir=run.workdir,
        argv=build_argv(runconfig, cell, run.record.script_args),
        env=env,
        outputs_dir=run.run_dir / "outputs",
        runconfig=runconfig,
        params=cell.params.as_dict(),
        timeout=session.timeout,
    )


def execute_step(run: CellRun, job: Job, prepared: PreparedEnvironment) -> ExecResult:
    """``amlrun_execute``, with the job cancellable by the session; a target's error is a failed result."""
    session = run.session
    session.register_job(job)
    try:
        result = session.config.hook.amlrun_execute(target=run.target, job=job, prepared=prepared, sink=run.sink)
    except AmlrunError as exc:
        result = ExecResult("failed", None, str(exc), infrastructure_error=isinstance(exc, TargetUnavailable))
    finally:
        session.unregister_job(job)
    if result.reason and result.status != "completed":
        run.sink.note(f"[amlrun] {result.reason}")
    return result


def collect_step(run: CellRun, job: Job) -> tuple:
    found = run.session.config.hook.amlrun_collect_artifacts(job=job, run_dir=run.run_dir)
    return tuple(a for artifacts in found if artifacts for a in artifacts)


def finish_run(run: CellRun, job: Job | None, result: ExecResult):
    """``amlrun_make_report``, then record what it decided."""
    report = run.session.config.hook.amlrun_make_report(cell=run.cell, job=job, result=result, run=run)
    if report.record is not None:  # tracked: the history keeps the record the report carries
        run.record = run.session.store.save(report.record)
    return report


def close_run(run: CellRun) -> None:
    run.sink.close()
    if run.workdir is not None:
        run.session.workdirs.release(run.workdir, keep=bool(os.environ.get("AMLRUN_KEEP_WORKDIR")))


#: ExecResult.status → the cell's outcome (a failed status is ERROR when the infrastructure failed it)
OUTCOMES = {"completed": PASSED, "canceled": CANCELED, "skipped": SKIPPED, "error": ERROR}


@hookimpl(trylast=True)
def amlrun_make_report(cell, job, result, run):
    """The default report: the outcome from the result, the record with the result written in."""
    outcome = OUTCOMES.get(result.status) or (ERROR if result.infrastructure_error else FAILED)
    if run is None:
        return RunReport(cell=cell, outcome=outcome, reason=result.reason)
    reason = result.reason
    if outcome == FAILED and result.exit_code is not None:
        raised = exception_line(run.sink.tail)
        reason = f"{raised} ({reason})" if raised and reason else (raised or reason)
    record = dataclasses.replace(
        run.record,
        status="failed" if result.status == "error" else result.status,
        exit_code=result.exit_code,
        reason=reason,
        ended=time.time(),
        metrics=dict(run.sink.metrics),
        tags=dict(run.sink.tags),
        artifacts=tuple(a.to_json() for a in run.artifacts),
        extra={**run.record.extra, **result.extra},
    )
    return RunReport(
        cell=cell,
        outcome=outcome,
        duration=time.monotonic() - run.started,
        record=record if run.tracked else None,
        reason=reason,
        log_tail=tuple(run.sink.tail) if run.log_tail is None else run.log_tail,
        metrics=dict(run.sink.metrics),
        run_dir=run.run_dir,
        infrastructure_error=result.infrastructure_error,
    )
