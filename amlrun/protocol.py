"""The run protocol: what happens to one cell, as the default hook implementations.

resolve run config → prepare environment (once per target) → record → materialise the
snapshot → execute on the target → collect artifacts → record → report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.errors import AmlrunError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.sink import RunSink
from amlrun.targets.base import RUNTIME_DIRNAME, ExecResult, Job

RUNTIME_SOURCE = Path(__file__).parent / "runtime"

# outcome of a cell, as the terminal reports it
PASSED, FAILED, ERROR, SKIPPED, CANCELED, REUSED = "passed", "failed", "error", "skipped", "canceled", "reused"


@dataclass(frozen=True)
class RunReport:
    """How one cell ended; sent to ``amlrun_runreport``."""

    cell: Any
    outcome: str
    duration: float = 0.0
    record: Any = None            # amlrun.store.RunRecord, None when untracked or skipped
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
    workdir = session.work_root / run_id
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    session.snapshots.materialize(session.snapshot, workdir)
    shutil.copytree(RUNTIME_SOURCE, workdir / RUNTIME_DIRNAME, ignore=shutil.ignore_patterns("__pycache__"))
    return workdir


def build_argv(runconfig, cell, script_args: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The runconfig's ``ArgumentVector`` (``$file`` = the script), then the arguments given
    after ``--``, then the cell's parameters as ``--name value``."""
    argv = [cell.script if a == "$file" else a for a in runconfig.argument_vector]
    if cell.script not in argv:
        argv.insert(0, cell.script)
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
    env = {k: session.resolve_secret(v, runconfig.source or runconfig.name) for k, v in
           runconfig.environment_variables.items()}
    env["AMLRUN_RUN_ID"] = run_id
    env["AMLRUN_CELL_ID"] = cell.id
    env["AMLRUN_TARGET"] = cell.target
    env["AMLRUN_SEED"] = str(session.seed)
    if runconfig.data_prep:
        env["AMLRUN_DATAPREP_SETTINGS"] = json.dumps(runconfig.data_prep, sort_keys=True)
    for name, value in cell.params.items:
        env[param_env_name(name)] = _param_text(value)
    return env


@hookimpl(trylast=True)
def amlrun_run_cell(cell, session):
    started = time.monotonic()
    hook = session.config.hook
    skip = cell.skip_mark()
    if skip is not None:
        report = RunReport(cell, SKIPPED, reason=skip.reason or "skip mark")
        hook.amlrun_runreport(report=report)
        return report
    target = session.targets[cell.target]
    runconfig = session.runconfigs[cell.target]
    store = session.store
    tracked = runconfig.tracked_run
    script_args = tuple(session.config.getoption("script_args") or ())
    record = store.new_record(
        cell_id=cell.id, script=cell.script, target=cell.target, target_type=target.compute.type,
        runconfig=runconfig.name, params=cell.params.as_dict(), script_args=script_args, status="preparing",
        git_commit=session.git.commit, git_dirty=session.git.dirty,
        snapshot_digest=session.snapshot.digest, environment_digest=session.environment_digest(cell.target),
    )
    run_dir = store.run_dir(record.run_id) if tracked else session.untracked_root / record.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    if session.git.dirty and session.git.diff and tracked:
        (run_dir / "git.diff").write_text(session.redact(session.git.diff), encoding="utf-8")
    save = store.save if tracked else (lambda r: r)
    record = save(record)
    sink = RunSink(run_dir, session.redact, session.stream_for(cell))
    result: ExecResult
    workdir = None
    try:
        try:
            prepared = session.prepare(cell.target, sink)
        except AmlrunError as exc:
            infra = isinstance(exc, TargetUnavailable)
            reason = str(exc)
            tail = getattr(exc, "log_tail", "")
            for line in ([reason] + (tail.splitlines() if tail else [])):
                sink.note(line)
            record = save(dataclasses.replace(record, status="failed", reason=reason, ended=time.time()))
            report = RunReport(cell, ERROR, time.monotonic() - started, record if tracked else None, reason,
                               tuple(tail.splitlines()[-15:]) if tail else (), run_dir=run_dir,
                               infrastructure_error=infra)
            hook.amlrun_runreport(report=report)
            return report
        try:
            env = build_env(session, cell, record.run_id, runconfig)
        except AmlrunError as exc:  # e.g. an unresolvable secret: record why, then stop as before
            sink.note(f"[amlrun] {exc}")
            save(dataclasses.replace(record, status="failed", reason=str(exc), ended=time.time()))
            raise
        record = save(dataclasses.replace(record, status="running", started=time.time()))
        workdir = materialize_workdir(session, record.run_id)
        job = Job(
            run_id=record.run_id, cell_id=cell.id, workdir=workdir, argv=build_argv(runconfig, cell, script_args),
            env=env, outputs_dir=run_dir / "outputs",
            runconfig=runconfig, params=cell.params.as_dict(), timeout=session.timeout,
        )
        session.register_job(job)
        try:
            result = hook.amlrun_execute(target=target, job=job, prepared=prepared, sink=sink)
        except AmlrunError as exc:
            result = ExecResult("failed", None, str(exc), infrastructure_error=isinstance(exc, TargetUnavailable))
        finally:
            session.unregister_job(job)
        if result.reason and result.status != "completed":
            sink.note(f"[amlrun] {result.reason}")
        artifacts = [a for found in hook.amlrun_collect_artifacts(job=job, run_dir=run_dir) if found for a in found]
        record = save(dataclasses.replace(
            record, status=result.status, exit_code=result.exit_code, reason=result.reason, ended=time.time(),
            metrics=dict(sink.metrics), tags=dict(sink.tags), artifacts=tuple(a.to_json() for a in artifacts),
            extra={**record.extra, **result.extra},
        ))
    finally:
        sink.close()
        if workdir is not None and not os.environ.get("AMLRUN_KEEP_WORKDIR"):
            shutil.rmtree(workdir, ignore_errors=True)
    if result.status == "completed":
        outcome = PASSED
    elif result.status == "canceled":
        outcome = CANCELED
    else:
        outcome = ERROR if result.infrastructure_error else FAILED
    report = RunReport(cell, outcome, time.monotonic() - started, record if tracked else None, result.reason,
                       tuple(sink.tail), dict(sink.metrics), run_dir, result.infrastructure_error)
    hook.amlrun_runreport(report=report)
    return report
