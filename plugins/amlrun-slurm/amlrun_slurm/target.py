"""The ``slurm`` compute target: each cell a SLURM array task, a sweep one submission.

``execute()`` hands its job to a :class:`amlrun.targets.batching.Batcher`: the cells
the run loop dispatches together (``-n``) become one ``sbatch --array=0-N%maxParallel``
of one batch script; each ``execute()`` then follows its own task through the
target's :class:`~amlrun_slurm.tracker.Tracker` and returns that run's own result.
See :mod:`amlrun_slurm.jobscript` for what lands on the cluster's shared filesystem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets as pysecrets
import shlex
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from amlrun.errors import AmlrunError, ConfigError, EnvironmentBuildError, TargetUnavailable
from amlrun.targets.base import (
    Check,
    ExecResult,
    Job,
    PreparedEnvironment,
    Sink,
    Target,
    contract_env,
    remote_folder_name,
)
from amlrun.targets.batching import Batcher
from amlrun_slurm import jobscript
from amlrun_slurm.settings import COMPUTE_KEYS, DEFAULT_PARALLEL, read_settings
from amlrun_slurm.tracker import Task, Tracker, run_capturing

q = shlex.quote
COMMENT_PREFIX = "amlrun owner="
COMPLETE_MARKER = ".amlrun-complete"
#: SLURM's default MaxArraySize is 1001: a bigger batch is split
MAX_ARRAY = 1000
#: a cancel waits this long for SLURM to confirm before the run is reported canceled anyway
CANCEL_WAIT = 60.0
SNAPSHOT_KEEP_DAYS = 7
#: a batch (one array) gathers cells arriving less than BATCH_IDLE s apart, for at most BATCH_WINDOW s:
#: a loaded machine creates a big sweep's records some tens of milliseconds apart
BATCH_IDLE = 1.0
BATCH_WINDOW = 5.0


class SubmitRefused(AmlrunError):
    """sbatch refused the job (a bad partition, an impossible --time or --mem ...)."""


@dataclass(frozen=True, eq=False)
class _Pending:
    job: Job
    prepared: PreparedEnvironment
    sink: Sink
    snapshot: str  # its working tree's folder on the cluster (synced before the batch closes)


class SlurmTarget(Target):
    """Cells as SLURM jobs, from the login node (no ``address``) or through it over SSH."""

    type_name = "slurm"
    compute_keys = COMPUTE_KEYS
    default_parallel = DEFAULT_PARALLEL
    queue_backed = True  # a sweep's cells go to the queue together (one array) without -n

    def __init__(self, compute, context):
        super().__init__(compute, context)
        self.settings = read_settings(compute)
        if self.settings.over_ssh:
            from amlrun.targets.ssh.connection import settings_from_compute

            self._ssh_settings = settings_from_compute(compute)  # validates address/username/key now
        self._login = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._home: str | None = None
        self._synced: dict[str, str] = {}
        self._swept = False
        self._sweep_lock = threading.Lock()
        self._sweep_note: str | None = None
        self._tracker: Tracker | None = None
        self._batch_left: dict[str, int] = {}
        limit = min(self.settings.max_parallel, MAX_ARRAY)
        self._batcher: Batcher[_Pending, Task] = Batcher(
            self._submit,
            key=lambda p: p.job.argv[0] if p.job.argv else "",
            idle=BATCH_IDLE,
            window=BATCH_WINDOW,
            max_size=limit,
        )
        self.slurm_prefix = "".join(f"export {k}={q(v)}; " for k, v in self.settings.slurm_environment.items())

    # -- where things are ---------------------------------------------------------------

    @property
    def max_parallel(self) -> int:
        return self.settings.max_parallel

    def describe(self) -> str:
        where = f" via {self.compute.get('username', '')}@{self.compute.address}" if self.settings.over_ssh else ""
        part = f" partition {self.settings.partition}" if self.settings.partition else ""
        return f"slurm{part}{where}"

    def login(self):
        with self._lock:
            if self._login is None:
                if self.settings.over_ssh:
                    from amlrun.targets.ssh.connection import SSHSession

                    self._login = SSHSession(self._ssh_settings)
                else:
                    from amlrun_slurm.login import LocalShell

                    self._login = LocalShell()
            return self._login

    def home(self) -> str:
        if self._home is None:
            self._home = self.login().run_checked('printf %s "$HOME"', "reading $HOME").stdout.strip() or "/tmp"
        return self._home

    def _expand(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = self.home() + path[1:]
        return path.rstrip("/") or "/"

    def base(self) -> str:
        return self._expand(self.settings.workspace)

    def project_dir(self) -> str:
        """This project's folder in the workspace: one per (project folder, machine amlrun runs on)."""
        return f"{self.base()}/projects/{remote_folder_name(self.project.root)}"

    def share(self) -> str | None:
        base = self.compute.get("nativeSharedDirectory")
        if not base:
            return None
        return f"{self._expand(str(base))}/{self.project.root.name}/{self.name}"

    def _tracker_for(self) -> Tracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = Tracker(
                    lambda script, stdin=b"": run_capturing(self.login(), script, stdin),
                    f"{self.project_dir()}/runs",
                    self.slurm_prefix,
                )
            return self._tracker

    # -- environments -------------------------------------------------------------------

    def _deps(self, runconfig):
        return self.project.conda_dependencies(runconfig) if self.settings.managed else None

    def environment_digest(self, runconfig) -> str:
        deps = self._deps(runconfig)
        if deps is not None:
            return hashlib.sha256(f"slurm-venv\0{deps.digest}\0{self.settings.python}".encode()).hexdigest()[:20]
        return hashlib.sha256(f"slurm-user-managed\0{self.settings.python}".encode()).hexdigest()[:20]

    def _venv(self, runconfig) -> str:
        return f"{self.base()}/envs/{self.environment_digest(runconfig)}"

    def is_prepared(self, runconfig) -> bool:
        if self._deps(runconfig) is None:
            return True
        return self.login().run(f"[ -f {q(self._venv(runconfig))}/{COMPLETE_MARKER} ]", timeout=60).ok

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        """User-managed: ``pythonLocation`` as it is on the compute nodes. Managed: a venv
        on the shared filesystem, built once per dependency hash on the login node."""
        deps = self._deps(runconfig)
        digest = self.environment_digest(runconfig)
        if deps is None:
            return PreparedEnvironment(digest, python=self.settings.python)
        if deps.conda_packages:
            raise ConfigError(
                "conda packages " + ", ".join(deps.conda_packages) + " need conda, which a managed "
                "slurm environment does not use; list them under 'pip:' or set "
                "userManagedEnvironment: true",
                deps.source,
            )
        venv = self._venv(runconfig)
        v = q(venv)
        pip = " ".join(q(p) for p in deps.pip_packages)
        script = (
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; set -e; "
            f"mkdir -p {q(str(PurePosixPath(venv).parent))}; exec 9>>{v}.lock; "
            f"if command -v flock >/dev/null 2>&1; then flock 9; fi; "
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; "
            f"rm -rf {v}; {q(self.settings.python)} -m venv {v} 2>&1; "
            + (f"{v}/bin/python -m pip install --disable-pip-version-check --no-input {pip} 2>&1; " if pip else "")
            + f"echo {q(deps.digest)} > {v}/{COMPLETE_MARKER}; echo amlrun-built"
        )
        progress.status(f"preparing environment {digest} on the cluster's shared filesystem")
        result = self.login().run(script, timeout=3600)
        lines = (result.stdout + result.stderr).splitlines()
        for line in lines:
            if not line.startswith("amlrun-"):
                progress.line(line)
        if not result.ok:
            raise EnvironmentBuildError(
                f"building the environment in {venv} failed (exit {result.exit_code})", "\n".join(lines[-20:])
            )
        return PreparedEnvironment(
            digest, python=f"{venv}/bin/python", built="amlrun-built" in lines, details={"venv": venv}
        )

    # -- submitting ---------------------------------------------------------------------

    def _snapshot_for(self, workdir: Path) -> str:
        """The run's working tree, synced once per distinct tree into ``snapshots/<digest>``."""
        from amlrun.targets.ssh.transfer import local_manifest, sync_tree

        manifest = local_manifest(workdir)
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:24]
        with self._sync_lock:
            found = self._synced.get(digest)
            if found:
                return found
            login = self.login()
            pd = self.project_dir()
            final = f"{pd}/snapshots/{digest}"
            present = login.run(f"[ -f {q(final)}/{COMPLETE_MARKER} ] && touch {q(final)}", timeout=60).ok
            if not present:
                tmp = f"{pd}/snapshots/.{digest}.{pysecrets.token_hex(4)}"
                sync_tree(login, workdir, pd, copy_to=tmp)
                login.run_checked(
                    f"mkdir -p {q(tmp)}/outputs; touch {q(tmp)}/{COMPLETE_MARKER}; "
                    f"if [ -f {q(final)}/{COMPLETE_MARKER} ]; then rm -rf {q(tmp)}; "
                    f"else rm -rf {q(final)}; mv {q(tmp)} {q(final)}; fi; "
                    f"find {q(pd)}/snapshots -mindepth 1 -maxdepth 1 -mtime +{SNAPSHOT_KEEP_DAYS} "
                    "-exec rm -rf {} + 2>/dev/null; true",
                    "placing the snapshot",
                )
            self._synced[digest] = final
            return final

    def _submit(self, items: list[_Pending]) -> list[Task]:
        """One sbatch for the whole batch: the per-run files travel in one tar on stdin."""
        from amlrun.targets.ssh.host import owner_line

        login = self.login()
        pd = self.project_dir()
        batch = time.strftime("%Y%m%d-%H%M%S") + "-" + pysecrets.token_hex(4)
        batch_dir = f"{pd}/batches/{batch}"
        owner = owner_line()
        payload, tasks = self._batch_payload(items, batch, owner)
        args = [
            "--parsable",
            f"--array=0-{len(items) - 1}%{self.settings.max_parallel}",
            f"--job-name={_job_name(items[0].job)}",
            f"--comment={COMMENT_PREFIX}{owner}",
            f"--output={batch_dir}/slurm-%a.out",
        ]
        if self.settings.partition:
            args.append(f"--partition={self.settings.partition}")
        if not any(a.split("=")[0] == "--requeue" for a in self.settings.sbatch_arguments):
            args.append("--no-requeue")  # amlrun's --retries decide, with a fresh run record
        args += self.settings.sbatch_arguments
        script = (
            f"set -e; umask 077; mkdir -p {q(pd)}/runs {q(pd)}/batches; cd {q(pd)}; "
            f"tar -xf - --no-same-owner; cd {q(batch_dir)}; date +%s.%N; "
            f"{self.slurm_prefix}sbatch {' '.join(q(a) for a in args)} {q(batch_dir + '/job.sh')}"
        )
        result = login.run(script, stdin=payload, timeout=300)
        out = result.stdout.split()
        if not result.ok or len(out) < 2 or not out[1].split(";")[0].isdigit():
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            message = detail[-1] if detail else f"exit {result.exit_code}"
            login.run(f"rm -rf {q(batch_dir)} " + " ".join(q(f"{pd}/runs/{i.job.run_id}") for i in items), timeout=60)
            if "sbatch:" in message or "error:" in message:
                raise SubmitRefused(f"sbatch refused the job ({self.compute.source}): {message.strip()}")
            raise TargetUnavailable(f"{login.settings.label}: submitting to SLURM failed: {message}")
        submitted, array_id = float(out[0]), out[1].split(";")[0]
        for index, task in enumerate(tasks):
            task.array_id, task.index, task.submitted = array_id, index, submitted
        with self._lock:
            self._batch_left[batch] = len(tasks)
        self._tracker_for().add(tasks)
        return tasks

    def _batch_payload(self, items, batch: str, owner: str) -> tuple[bytes, list[Task]]:
        """The tar of every run's command, environment and owner files plus the batch's job
        script, and a task per run for the tracker."""
        from amlrun.targets.ssh.detached import env_file_text

        pd, share = self.project_dir(), self.share()
        payload = io.BytesIO()
        runs: list[tuple[str, str]] = []
        tasks = []
        with tarfile.open(fileobj=payload, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for item in items:
                job = item.job
                rd = f"{pd}/runs/{job.run_id}"
                work = f"{rd}/work"
                env = contract_env(job, workdir=work, outputs=f"{work}/outputs", share=share)
                command = jobscript.command_file(job.command(item.prepared.python), work, share)
                _add(tar, f"runs/{job.run_id}/cmd", command.encode(), 0o600)
                _add(tar, f"runs/{job.run_id}/env", env_file_text(env), 0o600)
                _add(tar, f"runs/{job.run_id}/owner", (owner + "\n").encode(), 0o600)
                runs.append((rd, item.snapshot))
                tasks.append(Task(job.run_id, job.run_id, item.sink.write, item.sink.write, batch=batch))
            _add(tar, f"batches/{batch}/owner", (owner + "\n").encode(), 0o600)
            _add(tar, f"batches/{batch}/job.sh", jobscript.batch_script(runs).encode(), 0o700)
        return payload.getvalue(), tasks

    # -- running ------------------------------------------------------------------------

    def execute(self, job, prepared, sink) -> ExecResult:
        self._sweep_once()
        self._show_sweep_note(job, sink)
        # each cell's tree digest on its own thread: the batch's submission only looks it up
        task = self._batcher.submit(_Pending(job, prepared, sink, self._snapshot_for(job.workdir)))
        tracker = self._tracker_for()
        size = sum(1 for t in tracker.active() if t.array_id == task.array_id) or 1
        sink.write(f"[amlrun] submitted as SLURM job {task.job_id}" + (f" (array of {size})" if size > 1 else ""))
        canceled_at = None
        while not task.ended.wait(1.0):  # set by the tracker the moment the task ends
            now = time.monotonic()
            if canceled_at is None:
                if job.cancel.is_set():
                    tracker.cancel(task, "canceled")
                    canceled_at = now
                elif job.timeout and task.started_local is not None and now - task.started_local > job.timeout:
                    tracker.cancel(task, f"timed out after {job.timeout:g}s")
                    canceled_at = now
            elif now - canceled_at > CANCEL_WAIT:
                sink.write(f"[amlrun] SLURM did not confirm the cancel of {task.job_id} within {CANCEL_WAIT:g}s")
                break
        ending = task.ending or jobscript.Ending("canceled", None, task.cancel_reason or "canceled")
        extra = self._record(task, ending)
        queued, ran = extra.get("slurm_queue_seconds"), extra.get("slurm_run_seconds")
        sink.write(
            f"[amlrun] SLURM job {task.job_id} {extra.get('slurm_state') or ending.status}"
            + (f" on {task.node}" if task.node else "")
            + (f": {queued:.1f}s in the queue" if queued is not None else "")
            + (f", {ran:.1f}s running" if ran is not None else "")
        )
        if task.has_outputs is not False:
            self._fetch_outputs(job, sink, extra)
        self._cleanup(task)
        return ExecResult(ending.status, ending.exit_code, ending.reason, ending.infrastructure_error, extra)

    def _record(self, task: Task, ending) -> dict:
        extra: dict = {
            "slurm_job_id": task.job_id,
            "slurm_array_job_id": task.array_id,
            "slurm_array_index": task.index,
            "slurm_partition": task.partition or self.settings.partition,
            "slurm_node": task.node,
            "slurm_state": task.state
            if task.state in jobscript.TERMINAL_STATES
            else ("COMPLETED" if ending.status == "completed" else (task.state or "")),
            "slurm_login": self.login().settings.label,
        }
        if task.started is not None:
            extra["slurm_task_job_id"] = task.started[3]
            if task.submitted:
                extra["slurm_queue_seconds"] = round(max(0.0, task.started[0] - task.submitted), 3)
            if task.exit is not None:
                extra["slurm_run_seconds"] = round(max(0.0, task.exit[1] - task.started[0]), 3)
            elif task.started_local is not None:
                extra["slurm_run_seconds"] = round(time.monotonic() - task.started_local, 3)
        return extra

    def _fetch_outputs(self, job, sink, extra: dict) -> None:
        from amlrun.targets.ssh.transfer import fetch_tree

        remote = f"{self.project_dir()}/runs/{job.run_id}/work/outputs"
        try:
            received, refused = fetch_tree(self.login(), remote, job.outputs_dir)
        except TargetUnavailable as exc:
            sink.write(f"[amlrun] outputs not fetched: {exc}")
            return
        extra["outputs_bytes_received"] = received
        for item in refused:
            sink.write(f"[amlrun] refused an output entry: {item}")

    def _cleanup(self, task: Task) -> None:
        if os.environ.get("AMLRUN_KEEP_WORKDIR"):
            return
        pd = self.project_dir()
        folders = [f"{pd}/runs/{task.run_id}"]
        with self._lock:
            left = self._batch_left.get(task.batch, 1) - 1
            self._batch_left[task.batch] = left
            if left <= 0:
                self._batch_left.pop(task.batch, None)
                folders.append(f"{pd}/batches/{task.batch}")
        self._tracker_for().remove_later(folders)

    # -- after a kill -9 -------------------------------------------------------------------

    def _sweep_once(self) -> None:
        """Once per session: scancel the jobs of an amlrun of this machine that is gone
        (found by their comment) and remove its folders from the workspace."""
        with self._sweep_lock:
            if self._swept:
                return
            self._swept = True
            try:
                canceled = self.sweep()
            except TargetUnavailable:
                canceled = []
            if canceled:
                self._sweep_note = (
                    f"[amlrun] canceled SLURM job(s) {', '.join(canceled)} left by an amlrun that is gone"
                )

    def _show_sweep_note(self, job, sink) -> None:
        """The sweep's note goes to the log of the session's first run (the environment
        listing that may come before it has no log of its own)."""
        note = self._sweep_note
        if note:
            sink.write(note)
            if job.outputs_dir.name == "outputs":
                self._sweep_note = None

    def sweep(self) -> list[str]:
        from amlrun.targets.ssh.detached import sweep_orphans
        from amlrun.targets.ssh.host import owner_dead

        login = self.login()
        listing = login.run(f"{self.slurm_prefix}squeue -h -u \"$(id -un)\" -o '%F|%k' 2>/dev/null", timeout=60)
        dead = sorted(
            {
                line.split("|", 1)[0]
                for line in listing.stdout.splitlines()
                if "|" in line
                and line.split("|", 1)[1].startswith(COMMENT_PREFIX)
                and owner_dead(line.split("|", 1)[1][len(COMMENT_PREFIX) :].strip())
            }
        )
        if dead:
            login.run(f"{self.slurm_prefix}scancel {' '.join(q(j) for j in dead)}", timeout=60)
        pd = self.project_dir()
        for folder in ("runs", "batches"):
            sweep_orphans(login, f"{pd}/{folder}", owner_dead)
        return dead

    # -- doctor ---------------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        checks: list[Check] = []
        try:
            login = self.login()
            started = time.monotonic()
            if self.settings.over_ssh:
                login.connection()
                checks.append(Check("ssh login", True, f"{login.settings.label} ({time.monotonic() - started:.1f}s)"))
        except TargetUnavailable as exc:
            return [Check("ssh login", False, str(exc))]
        prefix = self.slurm_prefix
        tools = login.run(
            prefix + "for t in sbatch squeue scancel sinfo; do command -v $t >/dev/null 2>&1 || echo $t; done",
            timeout=30,
        )
        missing = tools.stdout.split()
        checks.append(
            Check(
                "sbatch, squeue, scancel",
                not missing and tools.ok,
                "found" if not missing else f"not on the login node's PATH: {', '.join(missing)}",
            )
        )
        if missing:
            return checks
        checks += self._partition_checks(login)
        try:
            base = self.base()
            probe = f"{base}/.amlrun-doctor-{pysecrets.token_hex(4)}"
            writable = login.run(f"mkdir -p {q(base)} && touch {q(probe)} && rm -f {q(probe)}", timeout=60)
            checks.append(
                Check(
                    "workspace writable",
                    writable.ok,
                    base
                    if writable.ok
                    else f"cannot write in {base}: {(writable.stderr or writable.stdout).strip()[-200:]}",
                )
            )
        except TargetUnavailable as exc:
            checks.append(Check("workspace writable", False, str(exc)))
            return checks
        checks.append(self._python_check(login, base))
        return checks

    def _partition_checks(self, login) -> list[Check]:
        """The partition the runs go to (the cluster's default unless set) exists and is up."""
        checks: list[Check] = []
        info = login.run(self.slurm_prefix + "sinfo -h -o '%P|%a'", timeout=60)
        parts = {line.split("|")[0]: line.split("|")[1] for line in info.stdout.splitlines() if "|" in line}
        wanted = self.settings.partition or next((p for p in parts if p.endswith("*")), None)
        if not info.ok:
            checks.append(Check("partition", False, f"sinfo failed: {(info.stderr or info.stdout).strip()[-200:]}"))
        else:
            names = {p.rstrip("*"): a for p, a in parts.items()}
            shown = (wanted or "").rstrip("*")
            for name in shown.split(",") if shown else []:
                state = names.get(name)
                checks.append(
                    Check(
                        f"partition {name}",
                        state == "up",
                        "up"
                        if state == "up"
                        else (f"is {state}" if state else f"does not exist (known: {', '.join(sorted(names))})"),
                    )
                )
            if not shown:
                checks.append(Check("partition", False, "no 'partition' set and the cluster has no default partition"))
        return checks

    def _python_check(self, login, base: str) -> Check:
        """A one-second job: does the Python of the runs start on a compute node?"""
        out = f"{base}/.amlrun-doctor-{pysecrets.token_hex(4)}.out"
        args = ["--parsable", "--wait", "--job-name=amlrun-doctor", f"--output={out}", "--no-requeue"]
        if self.settings.partition:
            args.append(f"--partition={self.settings.partition}")
        args += self.settings.sbatch_arguments
        python = self.settings.python
        wrap = f"{q(python)} -c 'import sys, platform; print(sys.version.split()[0], platform.node())'"
        result = login.run(
            f"{self.slurm_prefix}sbatch {' '.join(q(a) for a in args)} --wrap={q(wrap)}; code=$?; "
            f"cat {q(out)} 2>/dev/null; rm -f {q(out)}; exit $code",
            timeout=300,
        )
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.ok and len(lines) >= 2:
            version, _, node = lines[-1].partition(" ")
            return Check("python on a compute node", True, f"{python}: Python {version} on {node}")
        detail = (result.stderr.strip() or "\n".join(lines)).splitlines()
        return Check(
            "python on a compute node",
            False,
            f"a test job running {python} failed: {detail[-1] if detail else result.exit_code}",
        )

    def teardown(self) -> None:
        tracker = self._tracker
        if tracker is not None:
            tracker.stop()
            self._tracker = None
        if self._login is not None:
            self._login.close()
            self._login = None


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _job_name(job) -> str:
    head = PurePosixPath(job.argv[0]).name if job.argv else "run"
    return "amlrun:" + (re.sub(r"[^A-Za-z0-9_.-]", "_", head) or "run")
