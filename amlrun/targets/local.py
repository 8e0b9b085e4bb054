"""The ``local`` compute target: runs a script on this machine in a snapshot copy.

Registered through ``amlrun_register_targets`` exactly as a third party would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from amlrun.envs import ensure_venv, venv_key
from amlrun.process import ProcessOutcome, reap_orphan_groups, run_streaming
from amlrun.targets.base import ExecResult, Job, PreparedEnvironment, Target, contract_env
from amlrun.targets.outcome import finished


def share_directory(target: Target) -> str | None:
    """``nativeSharedDirectory/<project>/<target>``, created on first use (a local path)."""
    base = target.compute.get("nativeSharedDirectory")
    if not base:
        return None
    path = Path(os.path.expanduser(str(base))) / target.project.root.name / target.name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def move_outputs(source: Path, dest: Path) -> None:
    """Bring ``outputs/`` of a finished run into the run's folder; links in it pointing
    out of it are removed (the links, not what they point to): nothing may follow them."""
    if source.is_symlink() or not source.is_dir():
        return
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(dest))
    drop_outward_links(dest)


def drop_outward_links(root: Path) -> None:
    """Remove the symbolic links under ``root`` that resolve outside it (or nowhere)."""
    top = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into linked folders
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                resolved = path.resolve()
                if resolved != top and top not in resolved.parents:
                    path.unlink()


class LocalTarget(Target):
    type_name = "local"
    local_filesystem = True
    default_parallel = max(1, (os.cpu_count() or 1))

    def __init__(self, compute, context):
        super().__init__(compute, context)
        # runs of an amlrun process that was killed (kill -9) are still running: stop them
        reap_orphan_groups(self.project.state_dir / "work")

    def _managed(self) -> bool:
        return not self.compute.flag("userManagedEnvironment", default=True)

    def _python(self) -> str:
        return str(self.compute.get("pythonLocation") or "") or _default_python()

    def describe(self) -> str:
        return "local (managed environment)" if self._managed() else f"local {self._python()}"

    def _base_interpreter(self, deps) -> str:
        """The interpreter a managed venv is built from: pythonLocation, else one matching the pin."""
        from amlrun.envs import find_interpreter

        location = self.compute.get("pythonLocation")
        return _which(str(location)) if location else find_interpreter(deps.python_version)

    def environment_digest(self, runconfig) -> str:
        if self._managed():
            deps = self.project.conda_dependencies(runconfig)
            if deps is not None:
                # the same key ensure_venv files the environment under
                return venv_key(deps, self._base_interpreter(deps))
        return hashlib.sha256(f"user-managed\0{_interpreter_identity(self._python())}".encode()).hexdigest()[:20]

    def python_problem(self) -> str | None:
        """Why ``pythonLocation`` cannot run scripts here (Workbench's default ``python``
        does not exist on Debian, which has only ``python3``), or None."""
        location = self.compute.get("pythonLocation")
        if not location:
            return None
        text = os.path.expanduser(str(location))
        if os.sep in text:
            if os.path.isfile(text) and os.access(text, os.X_OK):
                return None
            return f"pythonLocation {location} ({self.compute.source or self.name}) is not an executable file"
        if shutil.which(text):
            return None
        alternative = next((n for n in ("python3", "python") if n != text and shutil.which(n)), None)
        hint = f"; this machine has {alternative}: set pythonLocation: {alternative}" if alternative else ""
        return f"pythonLocation {location} ({self.compute.source or self.name}) is not on PATH{hint}"

    def _check_python(self) -> None:
        from amlrun.errors import TargetUnavailable

        problem = self.python_problem()
        if problem:
            raise TargetUnavailable(f"target '{self.name}': {problem}")

    def doctor(self):
        from amlrun.targets.base import Check

        problem = self.python_problem()
        return [Check("python", problem is None, problem or _which(self._python()))]

    def is_prepared(self, runconfig) -> bool:
        self._check_python()
        if not self._managed():
            return True
        from amlrun.envs import COMPLETE_MARKER, cache_dir

        return (cache_dir() / "envs" / self.environment_digest(runconfig) / COMPLETE_MARKER).exists()

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        self._check_python()
        python, built = self._python(), False
        if self._managed():
            deps = self.project.conda_dependencies(runconfig)
            if deps is not None:
                built_python, built = ensure_venv(deps, progress, interpreter=self._base_interpreter(deps))
                python = str(built_python)
        details = {}
        if runconfig.framework == "PySpark":
            from amlrun.targets.cluster.localmaster import local_spark_submit

            details["spark_submit"] = local_spark_submit(self, _which(python), runconfig.conda_dependencies_file)
        return PreparedEnvironment(self.environment_digest(runconfig), python=python, built=built, details=details)

    def execute(self, job, prepared, sink) -> ExecResult:
        if job.runconfig.framework == "PySpark":
            from amlrun.targets.cluster.localmaster import submission

            submit = submission(
                self.project, job, spark_submit=prepared.details["spark_submit"], python=_which(prepared.python)
            )
            return execute_here(
                self,
                job,
                prepared.python,
                sink,
                command=submit.argv(),
                extra={"spark_submit": submit.command_line(), "spark_master": submit.master},
            )
        return execute_here(self, job, prepared.python, sink)


def execute_here(
    target: Target, job, python: str, sink, *, command: list[str] | None = None, extra: dict | None = None
) -> ExecResult:
    """Run ``job`` (or ``command`` for it) as a local process group in its working copy
    (local and plain-Python targets)."""
    outputs = job.workdir / "outputs"
    outputs.mkdir(exist_ok=True)
    env = os.environ.copy()
    env.update(contract_env(job, workdir=str(job.workdir), outputs=str(outputs), share=share_directory(target)))
    try:
        outcome = run_streaming(
            command or job.command(python),
            cwd=job.workdir,
            env=env,
            sink=sink,
            group_file=job.workdir.parent / f"{job.run_id}.pgid",
            cancel=job.cancel,
            timeout=job.timeout,
        )
    except FileNotFoundError as exc:
        return ExecResult("failed", None, f"cannot start {exc.filename}: not found")
    except PermissionError as exc:
        return ExecResult("failed", None, f"cannot start {exc.filename}: permission denied")
    finally:
        move_outputs(outputs, job.outputs_dir)
    return result_of(outcome, job, extra)


def result_of(outcome: ProcessOutcome, job: Job, extra: dict[str, object] | None = None) -> ExecResult:
    """The ExecResult of a finished local process (canceled, timed out, exit code)."""
    stopped = None
    if outcome.canceled:
        stopped = "canceled"
    elif outcome.timed_out:
        stopped = f"timed out after {job.timeout:g}s"
    return finished(outcome.exit_code, stopped=stopped, extra=extra)


def _default_python() -> str:
    import sys

    return sys.executable


def _which(name: str) -> str:
    return shutil.which(name) or name


def _interpreter_identity(python: str) -> str:
    """Which interpreter ``python`` is now: its real file (after PATH and links) and that
    file's size and mtime, so another Python first on PATH or a rebuilt one is another
    environment. (Its packages are checked against the run's package list when a run is reused.)"""
    found = os.path.realpath(_which(python))
    try:
        st = os.stat(found)
    except OSError:
        return found
    return f"{found}\0{st.st_size}\0{st.st_mtime_ns}"
