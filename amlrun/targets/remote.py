"""The ``remote`` compute target: a Linux VM's own Python, reached over SSH.

A run: the job's folder is synced incrementally into the project's workspace on the VM
and copied to ``runs/<run id>/work`` (see :mod:`amlrun.targets.ssh.host`); the command
starts detached there (its log and exit code written on the VM) and its log is streamed,
resuming after a dropped connection; ``outputs/`` comes back as a tar, extracted safely.
"""

from __future__ import annotations

import hashlib
import time

from amlrun.errors import ConfigError, EnvironmentBuildError
from amlrun.targets.base import Check, ExecResult, PreparedEnvironment, Target, contract_env
from amlrun.targets.ssh.connection import q, retrying
from amlrun.targets.ssh.detached import start_detached
from amlrun.targets.ssh.host import (
    SSH_COMPUTE_KEYS,
    SSHTargetMixin,
    cleanup,
    fetch_outputs,
    follow,
    kill_run,
    owner_line,
    send_job,
)

COMPLETE_MARKER = ".amlrun-complete"


class RemoteTarget(SSHTargetMixin, Target):
    """``remote``: the VM's own Python (``pythonLocation``), or a managed venv on the VM."""

    type_name = "remote"
    compute_keys = SSH_COMPUTE_KEYS
    default_parallel = 1

    def describe(self) -> str:
        port = self.compute.get("port")
        return f"remote {self.compute.get('username', '')}@{self.compute.address}" + (f":{port}" if port else "")

    def _python(self) -> str:
        return str(self.compute.get("pythonLocation") or "python3")

    def _managed(self) -> bool:
        return not self.compute.flag("userManagedEnvironment", default=True)

    def _deps(self, runconfig):
        return self.project.conda_dependencies(runconfig) if self._managed() else None

    def environment_digest(self, runconfig) -> str:
        deps = self._deps(runconfig)
        if deps is not None:
            return hashlib.sha256(f"remote-venv\0{deps.digest}\0{self._python()}".encode()).hexdigest()[:20]
        return hashlib.sha256(f"remote-user-managed\0{self._python()}".encode()).hexdigest()[:20]

    def venv_dir(self, runconfig) -> str:
        """Where the managed venv of ``runconfig`` is on the VM."""
        return f"{self.remote_base()}/envs/{self.environment_digest(runconfig)}"

    def is_prepared(self, runconfig) -> bool:
        if self._deps(runconfig) is None:
            return True
        venv = self.venv_dir(runconfig)
        return self.ssh().run(f"[ -f {q(venv)}/{COMPLETE_MARKER} ]", timeout=30).ok

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        deps = self._deps(runconfig)
        digest = self.environment_digest(runconfig)
        if deps is None:
            return PreparedEnvironment(digest, python=self._python())
        if deps.conda_packages:
            raise ConfigError(
                "conda packages " + ", ".join(deps.conda_packages) + " need conda, which a managed "
                "remote environment does not use; list them under 'pip:' or set "
                "userManagedEnvironment: true",
                deps.source,
            )
        venv = self.venv_dir(runconfig)
        python = self._python()
        pip = " ".join(q(p) for p in deps.pip_packages)
        v = q(venv)
        script = (
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; set -e; "
            f"mkdir -p {q(venv.rsplit('/', 1)[0])}; "
            f"exec 9>>{v}.lock; if command -v flock >/dev/null 2>&1; then flock 9; fi; "
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; "
            f"rm -rf {v}; {q(python)} -m venv {v} 2>&1; "
            + (f"{v}/bin/python -m pip install --disable-pip-version-check --no-input {pip} 2>&1; " if pip else "")
            + f"echo {q(deps.digest)} > {v}/{COMPLETE_MARKER}; echo amlrun-built"
        )
        progress.status(f"preparing environment {digest} on {self.compute.address}")
        started = time.monotonic()
        result = self.ssh().run(script, timeout=3600)
        lines = (result.stdout + result.stderr).splitlines()
        for line in lines:
            if not line.startswith("amlrun-"):
                progress.line(line)
        if not result.ok:
            raise EnvironmentBuildError(
                f"building the environment on {self.compute.address} failed (exit {result.exit_code})",
                "\n".join(lines[-20:]),
            )
        built = "amlrun-built" in lines
        if built:
            progress.status(f"built environment {digest} on the VM in {time.monotonic() - started:.1f}s")
        return PreparedEnvironment(digest, python=f"{venv}/bin/python", built=built, details={"venv": venv})

    def execute(self, job, prepared, sink) -> ExecResult:
        session = self.ssh()
        self.sweep_once(sink)
        run_dir = f"{self.workspace()}/runs/{job.run_id}"
        work = f"{run_dir}/work"
        stats = send_job(self, job, work, sink)
        share = self.remote_share()
        env = contract_env(job, workdir=work, outputs=f"{work}/outputs", share=share)
        prelude = f"mkdir -p {q(work)}/outputs" + (f" {q(share)}" if share else "")
        pgid = retrying(
            session,
            lambda: start_detached(
                session, run_dir, job.command(prepared.python), cwd=work, env=env, prelude=prelude, owner=owner_line()
            ),
        )
        extra = {
            "remote_host": session.settings.label,
            "remote_run_dir": run_dir,
            "remote_pgid": pgid,
            "transfer": stats.to_json(),
        }
        result = follow(session, run_dir, job, sink, extra, kill=lambda: kill_run(session, run_dir))
        fetch_outputs(self, job, f"{work}/outputs", sink, extra)
        if result.status != "failed" or not result.infrastructure_error:
            cleanup(session, run_dir)
        return ExecResult(
            result.status, result.exit_code, result.reason, result.infrastructure_error, {**extra, **result.extra}
        )

    def doctor(self) -> list[Check]:
        checks = self.ssh_checks()
        if not checks or not checks[0].ok:
            return checks
        python = self._python()
        found = self.ssh().run(f"command -v {q(python)} && {q(python)} --version 2>&1", timeout=30)
        checks.append(
            Check(
                "python",
                found.ok,
                " ".join(found.stdout.split())
                if found.ok
                else f"'{python}' is not found by the non-interactive shell (set pythonLocation)",
            )
        )
        return checks
