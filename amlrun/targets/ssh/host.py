"""What every target reached over SSH shares: the connection, the project's workspace on
the host, sending a job there, following its detached run and bringing ``outputs/`` back.

Layout on the host: ``<remoteWorkspace>/workspaces/<project>-<id>/`` holds the project's
incrementally synced mirror (see :mod:`amlrun.targets.ssh.transfer`) and ``runs/<run id>/``
each run's folder (its copy of the job's files in ``work``, its log, pid and exit code).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.process import alive, process_start
from amlrun.targets.base import Check, ExecResult, Job, Sink, Target, remote_folder_name
from amlrun.targets.outcome import ConnectionLost, StopWatch, finished, infrastructure_failure
from amlrun.targets.ssh.connection import SSHSession, q, retrying, settings_from_compute
from amlrun.targets.ssh.detached import StreamState, exit_code, kill_group, stream_log, sweep_orphans
from amlrun.targets.ssh.transfer import fetch_tree, sync_tree

#: compute-file keys of every target reached over SSH
SSH_COMPUTE_KEYS = frozenset({"knownHostsFile", "remoteWorkspace"})
MIN_FREE_BYTES = 1 << 30

if TYPE_CHECKING:
    from amlrun.config import ComputeTarget
    from amlrun.targets.base import TargetContext

    _TargetBase = Target
else:
    _TargetBase = object  # a mixin: the concrete class derives from Target (or a subclass) after it


class SSHTargetMixin(_TargetBase):
    """What every target reached over SSH shares: the connection and the VM's workspace."""

    _ssh = None
    _home: str | None = None
    #: False where the target also works without SSH (cluster: spark-submit from here)
    requires_address = True

    def __init__(self, compute: ComputeTarget, context: TargetContext):
        super().__init__(compute, context)
        if self.requires_address and not str(compute.address or "").strip():
            raise ConfigError(
                f"'address' is missing: a {compute.type} target is reached over SSH (address: host or IP of the VM)",
                compute.source or compute.name,
            )

    def ssh(self):
        """The session's connection to the VM (opened on first use, reused by every cell)."""
        lock = self.__dict__.setdefault("_ssh_lock", threading.Lock())
        with lock:
            if self._ssh is None:
                self._ssh = SSHSession(settings_from_compute(self.compute))
            return self._ssh

    def adopt_connection(self, session: SSHSession) -> None:
        """Use another target's open connection to the same host (no second login)."""
        self._ssh = session

    def home(self) -> str:
        if self._home is None:
            result = self.ssh().run_checked('printf %s "$HOME"', "reading $HOME")
            self._home = result.stdout.strip() or "/tmp"
        return self._home

    def remote_base(self) -> str:
        """``remoteWorkspace`` (default ``~/.amlrun``) as an absolute path on the VM."""
        base = str(self.compute.get("remoteWorkspace") or "~/.amlrun")
        if base == "~" or base.startswith("~/"):
            base = self.home() + base[1:]
        if not base.startswith("/"):
            raise ConfigError(
                f"'remoteWorkspace' must be an absolute path or start with ~/, got {base!r}", self.compute.source
            )
        return base.rstrip("/")

    def workspace(self) -> str:
        """This project's folder on the VM: one per (project folder, local machine)."""
        return f"{self.remote_base()}/workspaces/{remote_folder_name(self.project.root)}"

    def remote_share(self) -> str | None:
        base = self.compute.get("nativeSharedDirectory")
        if not base:
            return None
        base = str(base)
        if base == "~" or base.startswith("~/"):
            base = self.home() + base[1:]
        return f"{base.rstrip('/')}/{self.project.root.name}/{self.name}"

    def ssh_checks(self) -> list[Check]:
        """SSH login, PATH of the non-interactive shell, free disk: the checks every SSH target runs."""
        checks: list[Check] = []
        try:
            settings = settings_from_compute(self.compute)
        except ConfigError as exc:
            return [Check("configuration", False, str(exc))]
        try:
            session = self.ssh()
            started = time.monotonic()
            session.connection()
            checks.append(
                Check(
                    "ssh login",
                    True,
                    f"{settings.label} "
                    f"({'key' if settings.key_file else 'password'}, {time.monotonic() - started:.1f}s)",
                )
            )
        except TargetUnavailable as exc:
            return [Check("ssh login", False, str(exc))]
        assert isinstance(session, SSHSession)
        path = session.run('printf %s "$PATH"', timeout=30)
        checks.append(Check("PATH (non-interactive shell)", path.ok and bool(path.stdout), path.stdout or "empty PATH"))
        try:
            base = self.remote_base()
            disk = session.run(f"mkdir -p {q(base)} && df -Pk {q(base)} | tail -1", timeout=30)
            fields = disk.stdout.split()
            free = int(fields[3]) * 1024 if disk.ok and len(fields) >= 4 and fields[3].isdigit() else None
            if free is None:
                checks.append(
                    Check(
                        "free disk",
                        False,
                        f"cannot create or measure {base}: {(disk.stderr or disk.stdout).strip()[-200:]}",
                    )
                )
            else:
                checks.append(
                    Check(
                        "free disk",
                        free >= MIN_FREE_BYTES,
                        f"{free / (1 << 30):.1f} GiB free in {base}"
                        + ("" if free >= MIN_FREE_BYTES else " (less than 1 GiB)"),
                    )
                )
        except TargetUnavailable as exc:
            checks.append(Check("free disk", False, str(exc)))
        return checks

    def sweep_once(self, sink=None) -> None:
        """Once per session: stop runs on the VM left by a dead amlrun of this machine."""
        lock = self.__dict__.setdefault("_sweep_lock", threading.Lock())
        with lock:
            if self.__dict__.get("_swept"):
                return
            self._swept = True
            try:
                removed = sweep_orphans(self.ssh(), f"{self.workspace()}/runs", owner_dead)
            except TargetUnavailable:
                return
            if removed and sink is not None:
                sink.write(f"[amlrun] stopped {len(removed)} run(s) on the VM left by an amlrun that is gone")

    def teardown(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None


def owner_line() -> str:
    """``host pid start``: this amlrun process, as written next to a detached run on the VM."""
    return f"{socket.gethostname()} {os.getpid()} {process_start(os.getpid()) or 0}"


def owner_dead(line: str) -> bool:
    """Whether the owner line names a process of this machine that no longer runs."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False  # another machine's amlrun (or unreadable): not ours to judge
    return not alive(int(parts[1]), "" if parts[2] == "0" else parts[2])


def send_job(target, job, work: str, sink=None):
    """Sync ``job.workdir`` into the target's workspace and copy it to ``work`` on the VM
    (again after a dropped connection: the sync is idempotent)."""
    session = target.ssh()
    workspace = target.workspace()
    note = (lambda text: sink.write(f"[amlrun] {text}")) if sink is not None else None
    return retrying(session, lambda: sync_tree(session, job.workdir, workspace, copy_to=work), on_note=note)


def fetch_outputs(target, job, remote_outputs: str, sink, extra: dict) -> None:
    """Bring ``remote_outputs`` back into ``job.outputs_dir`` (best effort after a failure)."""
    session = target.ssh()
    try:
        received, refused = retrying(session, lambda: fetch_tree(session, remote_outputs, job.outputs_dir))
    except TargetUnavailable as exc:
        sink.write(f"[amlrun] outputs not fetched: {exc}")
        return
    extra["outputs_bytes_received"] = received
    for item in refused:
        sink.write(f"[amlrun] refused an output entry: {item}")


def cleanup(session, run_dir: str) -> None:
    if os.environ.get("AMLRUN_KEEP_WORKDIR"):
        return
    try:
        session.run(f"rm -rf {q(run_dir)}", timeout=120)
    except TargetUnavailable:
        pass


def kill_run(session, run_dir: str) -> bool:
    """Stop a detached run's process group, over a connection that may need to come back."""
    return retrying(session, lambda: kill_group(session, run_dir), window=60)


def follow(
    session: SSHSession, run_dir: str, job: Job, sink: Sink, extra: dict[str, object], kill: Callable[[], bool]
) -> ExecResult:
    """Stream a detached run's log until it ends, is canceled or times out; stop it for real."""
    watch = StopWatch(job)
    state = StreamState()
    try:
        how = stream_log(
            session,
            run_dir,
            sink.write,
            state=state,
            should_stop=watch.should_stop,
            on_note=lambda text: sink.write(f"[amlrun] {text}"),
        )
    except ConnectionLost as exc:
        return infrastructure_failure(str(exc), {"reconnects": state.reconnects})
    extra["reconnects"] = state.reconnects
    if how == "stopped":
        stopped = watch.reason() or "canceled"
        try:
            gone = kill()
        except TargetUnavailable as exc:
            gone = False
            sink.write(f"[amlrun] could not stop the remote process: {exc}")
        extra["remote_stopped"] = gone
        return finished(None, stopped=stopped)
    code = None if how == "vanished" else exit_code(session, run_dir)
    return finished(code, no_code_reason="the remote process ended without an exit code (killed on the VM?)")
