"""Targets on a Linux VM reached over SSH: ``remote`` (the VM's own Python) and
``remotedocker`` (Docker on the VM, see :mod:`amlrun.targets.remotedocker`).

A run of ``remote``: the job's folder is synced incrementally into the project's
workspace on the VM (``~/.amlrun/workspaces/<project>-<id>/``, see
:mod:`amlrun.transfer`) and copied to ``runs/<run id>/work``; the command starts
detached there (its log and exit code written on the VM) and its log is streamed,
resuming after a dropped connection; ``outputs/`` comes back as a tar, extracted safely.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

from amlrun.errors import ConfigError, EnvironmentBuildError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.targets.base import Check, ExecResult, PreparedEnvironment, Target, contract_env

SSH_COMPUTE_KEYS = frozenset({"knownHostsFile", "remoteWorkspace"})
COMPLETE_MARKER = ".amlrun-complete"
MIN_FREE_BYTES = 1 << 30


class SSHTargetMixin:
    """What every target reached over SSH shares: the connection and the VM's workspace."""

    _ssh = None
    _home: str | None = None

    def ssh(self):
        """The session's connection to the VM (opened on first use, reused by every cell)."""
        from amlrun.ssh import SSHSession, settings_from_compute

        lock = self.__dict__.setdefault("_ssh_lock", threading.Lock())
        with lock:
            if self._ssh is None:
                self._ssh = SSHSession(settings_from_compute(self.compute))
            return self._ssh

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
            raise ConfigError(f"'remoteWorkspace' must be an absolute path or start with ~/, got {base!r}",
                              self.compute.source)
        return base.rstrip("/")

    def workspace(self) -> str:
        """This project's folder on the VM: one per (project folder, local machine)."""
        root = str(self.project.root)
        key = hashlib.sha256(f"{socket.gethostname()}\0{root}".encode()).hexdigest()[:10]
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.project.root.name) or "project"
        return f"{self.remote_base()}/workspaces/{name}-{key}"

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
        from amlrun.ssh import SSHSession, settings_from_compute

        checks: list[Check] = []
        try:
            settings = settings_from_compute(self.compute)
        except ConfigError as exc:
            return [Check("configuration", False, str(exc))]
        try:
            session = self.ssh()
            started = time.monotonic()
            session.connection()
            checks.append(Check("ssh login", True, f"{settings.label} "
                                f"({'key' if settings.key_file else 'password'}, {time.monotonic() - started:.1f}s)"))
        except TargetUnavailable as exc:
            return [Check("ssh login", False, str(exc))]
        assert isinstance(session, SSHSession)
        path = session.run('printf %s "$PATH"', timeout=30)
        checks.append(Check("PATH (non-interactive shell)", path.ok and bool(path.stdout),
                            path.stdout or "empty PATH"))
        try:
            base = self.remote_base()
            disk = session.run(f"mkdir -p {_q(base)} && df -Pk {_q(base)} | tail -1", timeout=30)
            fields = disk.stdout.split()
            free = int(fields[3]) * 1024 if disk.ok and len(fields) >= 4 and fields[3].isdigit() else None
            if free is None:
                checks.append(Check("free disk", False, f"cannot create or measure {base}: "
                                    f"{(disk.stderr or disk.stdout).strip()[-200:]}"))
            else:
                checks.append(Check("free disk", free >= MIN_FREE_BYTES,
                                    f"{free / (1 << 30):.1f} GiB free in {base}"
                                    + ("" if free >= MIN_FREE_BYTES else " (less than 1 GiB)")))
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
            from amlrun.ssh import sweep_orphans

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
    from amlrun.store import _process_start

    return f"{socket.gethostname()} {os.getpid()} {_process_start(os.getpid()) or 0}"


def owner_dead(line: str) -> bool:
    """Whether the owner line names a process of this machine that no longer runs."""
    from amlrun.store import _alive

    parts = line.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False  # another machine's amlrun (or unreadable): not ours to judge
    return not _alive(int(parts[1]), "" if parts[2] == "0" else parts[2])


def _q(value: str) -> str:
    from amlrun.ssh import q

    return q(value)


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

    def _venv_dir(self, runconfig) -> str:
        return f"{self.remote_base()}/envs/{self.environment_digest(runconfig)}"

    def is_prepared(self, runconfig) -> bool:
        if self._deps(runconfig) is None:
            return True
        venv = self._venv_dir(runconfig)
        return self.ssh().run(f"[ -f {_q(venv)}/{COMPLETE_MARKER} ]", timeout=30).ok

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        deps = self._deps(runconfig)
        digest = self.environment_digest(runconfig)
        if deps is None:
            return PreparedEnvironment(digest, python=self._python())
        if deps.conda_packages:
            raise ConfigError("conda packages " + ", ".join(deps.conda_packages) + " need conda, which a managed "
                              "remote environment does not use; list them under 'pip:' or set "
                              "userManagedEnvironment: true", deps.source)
        venv = self._venv_dir(runconfig)
        python = self._python()
        pip = " ".join(_q(p) for p in deps.pip_packages)
        v = _q(venv)
        script = (
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; set -e; mkdir -p {_q(venv.rsplit('/', 1)[0])}; "
            f"exec 9>>{v}.lock; if command -v flock >/dev/null 2>&1; then flock 9; fi; "
            f"[ -f {v}/{COMPLETE_MARKER} ] && {{ echo amlrun-cached; exit 0; }}; "
            f"rm -rf {v}; {_q(python)} -m venv {v} 2>&1; "
            + (f"{v}/bin/python -m pip install --disable-pip-version-check --no-input {pip} 2>&1; " if pip else "")
            + f"echo {_q(deps.digest)} > {v}/{COMPLETE_MARKER}; echo amlrun-built"
        )
        progress.status(f"preparing environment {digest} on {self.compute.address}")
        started = time.monotonic()
        result = self.ssh().run(script, timeout=3600)
        lines = (result.stdout + result.stderr).splitlines()
        for line in lines:
            if not line.startswith("amlrun-"):
                progress.line(line)
        if not result.ok:
            raise EnvironmentBuildError(f"building the environment on {self.compute.address} failed "
                                        f"(exit {result.exit_code})", "\n".join(lines[-20:]))
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
        prelude = f"mkdir -p {_q(work)}/outputs" + (f" {_q(share)}" if share else "")
        from amlrun.ssh import retrying, start_detached

        pgid = retrying(session, lambda: start_detached(session, run_dir, job.command(prepared.python), cwd=work,
                                                        env=env, prelude=prelude, owner=owner_line()))
        extra = {"remote_host": session.settings.label, "remote_run_dir": run_dir, "remote_pgid": pgid,
                 "transfer": stats.to_json()}
        result = follow(session, run_dir, job, sink, extra, kill=lambda: _kill(session, run_dir))
        fetch_outputs(self, job, f"{work}/outputs", sink, extra)
        if result.status != "failed" or not result.infrastructure_error:
            cleanup(session, run_dir)
        return ExecResult(result.status, result.exit_code, result.reason, result.infrastructure_error,
                          {**extra, **result.extra})

    def doctor(self) -> list[Check]:
        checks = self.ssh_checks()
        if not checks or not checks[0].ok:
            return checks
        python = self._python()
        found = self.ssh().run(f"command -v {_q(python)} && {_q(python)} --version 2>&1", timeout=30)
        checks.append(Check("python", found.ok, " ".join(found.stdout.split()) if found.ok else
                            f"'{python}' is not found by the non-interactive shell (set pythonLocation)"))
        return checks


# -- shared by remote and remotedocker ----------------------------------------------------


def send_job(target, job, work: str, sink=None):
    """Sync ``job.workdir`` into the target's workspace and copy it to ``work`` on the VM
    (again after a dropped connection: the sync is idempotent)."""
    from amlrun.ssh import retrying
    from amlrun.transfer import sync_tree

    session = target.ssh()
    workspace = target.workspace()
    note = (lambda text: sink.write(f"[amlrun] {text}")) if sink is not None else None
    return retrying(session, lambda: sync_tree(session, job.workdir, workspace, copy_to=work), on_note=note)


def fetch_outputs(target, job, remote_outputs: str, sink, extra: dict) -> None:
    """Bring ``remote_outputs`` back into ``job.outputs_dir`` (best effort after a failure)."""
    from amlrun.ssh import retrying
    from amlrun.transfer import fetch_tree

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
        session.run(f"rm -rf {_q(run_dir)}", timeout=120)
    except TargetUnavailable:
        pass


def _kill(session, run_dir: str) -> bool:
    from amlrun.ssh import kill_group, retrying

    return retrying(session, lambda: kill_group(session, run_dir), reconnect_seconds=60)


def follow(session, run_dir: str, job, sink, extra: dict, kill) -> ExecResult:
    """Stream a detached run's log until it ends, is canceled or times out; stop it for real."""
    from amlrun.ssh import ConnectionLost, StreamState, exit_code, stream_log

    deadline = time.monotonic() + job.timeout if job.timeout else None
    state = StreamState()

    def should_stop() -> bool:
        return job.cancel.is_set() or (deadline is not None and time.monotonic() > deadline)

    try:
        how = stream_log(session, run_dir, sink.write, state=state, should_stop=should_stop,
                         on_note=lambda text: sink.write(f"[amlrun] {text}"))
    except ConnectionLost as exc:
        return ExecResult("failed", None, str(exc), True, {"reconnects": state.reconnects})
    extra["reconnects"] = state.reconnects
    if how == "stopped":
        try:
            gone = kill()
        except TargetUnavailable as exc:
            gone = False
            sink.write(f"[amlrun] could not stop the remote process: {exc}")
        extra["remote_stopped"] = gone
        if job.cancel.is_set():
            return ExecResult("canceled", None, "canceled")
        return ExecResult("canceled", None, f"timed out after {job.timeout:g}s")
    code = exit_code(session, run_dir)
    if how == "vanished" or code is None:
        return ExecResult("failed", None, "the remote process ended without an exit code (killed on the VM?)", True)
    if code == 0:
        return ExecResult("completed", 0)
    return ExecResult("failed", code, f"exited with code {code}")


# -- remotedocker ---------------------------------------------------------------------------

try:
    from amlrun.targets.docker import CONTAINER_SHARE, CONTAINER_WORKDIR, DockerTarget
except ImportError:  # pragma: no cover - a build without the docker target
    DockerTarget = None  # type: ignore[assignment]


def _dial_script(socket_path: str | None) -> str:
    """sh that connects stdin/stdout to the VM's Docker engine."""
    path = socket_path or "/var/run/docker.sock"
    host = f"DOCKER_HOST={_q('unix://' + socket_path)} " if socket_path else ""
    return (f"if command -v docker >/dev/null 2>&1; then {host}exec docker system dial-stdio; "
            f"elif command -v socat >/dev/null 2>&1; then exec socat - UNIX-CONNECT:{_q(path)}; "
            f"else echo 'neither the docker CLI nor socat is on the VM (non-interactive PATH)' >&2; exit 127; fi")


if DockerTarget is not None:

    class RemoteDockerTarget(SSHTargetMixin, DockerTarget):
        """``remotedocker``: the Docker target's images and containers, on the VM's engine.

        The engine is reached through a local unix socket relayed over the SSH connection
        (``docker system dial-stdio`` on the VM), so envimage builds and caches images on
        the VM's engine exactly as it does locally. With ``sharedVolumes`` (the default) the
        run's code is synced incrementally into the VM workspace and bind-mounted from
        there; without it the Docker target copies it into the container. The shared
        folder (``nativeSharedDirectory``) is a folder on the VM.
        """

        type_name = "remotedocker"
        aliases = ()
        compute_keys = DockerTarget.compute_keys | SSH_COMPUTE_KEYS | frozenset({"dockerSocket"})
        default_parallel = 2
        shared_volumes_default = True
        what = "environment (on the VM)"

        def __init__(self, compute, context):
            super().__init__(compute, context)
            self._relay = None
            self._vm_work: dict[str, str] = {}
            self._vm_ids: str | None = None
            self._reconnects: dict[str, int] = {}     # run id → times its log was re-followed

        def engine_description(self) -> str:
            return f"the Docker engine of {self.compute.address} over SSH"

        def describe(self) -> str:
            port = self.compute.get("port")
            where = f"{self.compute.get('username', '')}@{self.compute.address}" + (f":{port}" if port else "")
            return f"remotedocker {where} {self.compute.get('baseDockerImage')}"

        def _connect(self):
            import docker

            from amlrun.ssh import SocketRelay, sh

            session = self.ssh()
            socket_path = self.compute.get("dockerSocket")
            probe = session.run("command -v docker >/dev/null 2>&1 || exit 0; "
                                + (f"DOCKER_HOST={_q('unix://' + str(socket_path))} " if socket_path else "")
                                + "docker version --format '{{.Server.Version}}' 2>&1", timeout=60)
            if not probe.ok:
                lines = probe.stdout.strip().splitlines()
                raise TargetUnavailable(f"target '{self.name}': the Docker engine on {self.compute.address} does not "
                                        f"answer {session.settings.username}: {lines[-1] if lines else probe.exit_code}")
            if self._relay is None:
                self._relay = SocketRelay(session, sh(_dial_script(str(socket_path) if socket_path else None)))
            return docker.DockerClient(base_url=self._relay.url, timeout=300, version="auto")

        def _share_volume(self):
            share = self.remote_share()
            if not share:
                return None
            self.ssh().run_checked(f"mkdir -p {_q(share)}", f"creating the shared folder {share}")
            return share, {"bind": CONTAINER_SHARE, "mode": "rw"}

        def _ids(self) -> str:
            if self._vm_ids is None:
                self._vm_ids = self.ssh().run_checked("echo $(id -u):$(id -g)", "reading uid").stdout.strip()
            return self._vm_ids

        def create_options(self, job, prepared):
            opts = super().create_options(job, prepared)
            work = self._vm_work.get(job.run_id)
            if work is not None:
                local_bind = f"{job.workdir}:{CONTAINER_WORKDIR}:rw"
                opts["volumes"] = [f"{work}:{CONTAINER_WORKDIR}:rw" if v == local_bind else v for v in opts["volumes"]]
                opts["user"] = self._ids()       # files in the VM workspace belong to the SSH user
            return opts

        def _deliver_code(self, container, job) -> None:
            if job.run_id in self._vm_work:
                return  # synced into the VM workspace and bind-mounted
            from amlrun.targets.docker import _tar_tree

            container.put_archive("/", _tar_tree(job.workdir, CONTAINER_WORKDIR.lstrip("/")))

        def _fetch_outputs(self, container, job) -> None:
            work = self._vm_work.get(job.run_id)
            if work is None:
                import docker.errors

                from amlrun.targets.docker import _extract_outputs

                try:
                    stream, _ = container.get_archive(f"{CONTAINER_WORKDIR}/outputs")
                except docker.errors.NotFound:
                    return
                _extract_outputs(stream, job.outputs_dir)
                return
            from amlrun.transfer import fetch_tree

            _, refused = fetch_tree(self.ssh(), f"{work}/outputs", job.outputs_dir)
            if refused:
                raise TargetUnavailable("refused output entries: " + "; ".join(refused))

        def execute(self, job, prepared, sink) -> ExecResult:
            import dataclasses

            session = self.ssh()
            extra: dict = {"remote_host": session.settings.label}
            run_dir = None
            if self.shared_volumes():
                run_dir = f"{self.workspace()}/runs/{job.run_id}"
                work = f"{run_dir}/work"
                stats = send_job(self, job, work, sink)
                session.run_checked(f"mkdir -p {_q(work)}/outputs", "creating outputs/")
                self._vm_work[job.run_id] = work
                extra.update({"remote_run_dir": run_dir, "transfer": stats.to_json()})
            self._reconnects[job.run_id] = 0
            try:
                result = super().execute(job, prepared, sink)
            except (OSError, TargetUnavailable) as exc:
                result = ExecResult("failed", None, f"lost the VM's Docker engine: {str(exc)[:200]}", True)
            except Exception as exc:  # requests' ConnectionError when the tunnel stays down
                if type(exc).__module__.split(".")[0] not in ("requests", "urllib3", "docker"):
                    raise
                result = ExecResult("failed", None, f"lost the VM's Docker engine: {str(exc)[:200]}", True)
            finally:
                self._vm_work.pop(job.run_id, None)
                if run_dir is not None:
                    cleanup(session, run_dir)
            extra["reconnects"] = self._reconnects.pop(job.run_id, 0)
            return dataclasses.replace(result, extra={**result.extra, **extra})

        def _follow(self, container, job, sink) -> ExecResult:
            """The Docker target's follow, resilient to a dropped connection: logs are
            re-followed from the last timestamp seen (duplicates skipped)."""
            from amlrun.targets.docker import _stop

            deadline = time.monotonic() + job.timeout if job.timeout else None
            reconnect_for = float(os.environ.get("AMLRUN_SSH_RECONNECT_SECONDS", "300"))
            state = {"last": None, "since": None}
            stopped = None
            lost_since = None
            while True:
                pump = threading.Thread(target=_pump_timestamped, args=(container, sink, state), daemon=True)
                pump.start()
                while pump.is_alive():
                    pump.join(0.05)
                    if job.cancel.is_set():
                        stopped = "canceled"
                    elif deadline is not None and time.monotonic() > deadline:
                        stopped = f"timed out after {job.timeout:g}s"
                    if stopped:
                        break
                if stopped:
                    _stop_retrying(container, _stop)
                    pump.join(5)
                    break
                try:
                    container.reload()
                    running = container.attrs.get("State", {}).get("Running")
                    if lost_since is not None:
                        sink.write("[amlrun] reconnected to the VM's engine")
                    lost_since = None
                except Exception as exc:  # the tunnel is down: wait for the connection to come back
                    if lost_since is None:
                        lost_since = time.monotonic()
                        self._reconnects[job.run_id] = self._reconnects.get(job.run_id, 0) + 1
                        sink.write(f"[amlrun] connection to the VM's engine lost ({str(exc)[:120]}); reconnecting")
                    if time.monotonic() - lost_since > reconnect_for:
                        return ExecResult("failed", None, f"connection to {self.compute.address} lost and not back "
                                          f"within {reconnect_for:g}s; the container may still run there", True)
                    time.sleep(1)
                    continue
                if not running:
                    break
                # the log stream broke while the container runs: follow again from the last line seen
                self._reconnects[job.run_id] = self._reconnects.get(job.run_id, 0) + 1
                sink.write("[amlrun] resuming the log")
            try:
                code = container.wait(timeout=60).get("StatusCode")
            except Exception:
                code = None
            if stopped:
                return ExecResult("canceled", code, stopped)
            if code == 0:
                return ExecResult("completed", 0)
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                return ExecResult("failed", code, "killed: out of memory (the container's memory limit)", True)
            return ExecResult("failed", code, f"exited with code {code}")

        def doctor(self) -> list[Check]:
            checks = self.ssh_checks()
            if not checks or not checks[0].ok:
                return checks
            return checks + [c for c in DockerTarget.doctor(self) if c.name != "disk space"]

        def teardown(self) -> None:
            DockerTarget.teardown(self)
            if self._relay is not None:
                self._relay.close()
                self._relay = None
            SSHTargetMixin.teardown(self)


def _ts_key(stamp: bytes) -> tuple[bytes, bytes]:
    """Sortable key of a Docker RFC3339Nano timestamp (trailing zeros are trimmed there)."""
    main, _, frac = stamp.rstrip(b"Z").partition(b".")
    return main, frac.ljust(9, b"0")


def _pump_timestamped(container, sink, state: dict) -> None:
    """Follow the container's log from ``state['since']``, skipping lines already delivered."""
    partial = b""
    try:
        stream = container.logs(stream=True, follow=True, stdout=True, stderr=True, timestamps=True,
                                since=state["since"])
        for chunk in stream:
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                _deliver(line, sink, state)
    except Exception:
        return  # the connection dropped: the caller decides
    if partial:
        _deliver(partial, sink, state)


def _deliver(line: bytes, sink, state: dict) -> None:
    stamp, _, text = line.partition(b" ")
    key = _ts_key(stamp)
    if state["last"] is not None and key <= state["last"]:
        return
    state["last"] = key
    try:
        import datetime

        moment = datetime.datetime.strptime(key[0].decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        state["since"] = int(moment.timestamp())
    except ValueError:
        pass
    sink.write(text.decode("utf-8", "replace").rstrip("\r"))


def _stop_retrying(container, stop) -> None:
    """Stop the container, retrying while the connection to the VM comes back."""
    deadline = time.monotonic() + float(os.environ.get("AMLRUN_SSH_RECONNECT_SECONDS", "300"))
    while True:
        try:
            stop(container)
            return
        except Exception:
            if time.monotonic() > deadline:
                return
            time.sleep(1)


@hookimpl
def amlrun_register_targets():
    types = {"remote": RemoteTarget}
    if DockerTarget is not None:
        types["remotedocker"] = RemoteDockerTarget
    return types
