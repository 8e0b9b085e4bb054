"""The ``remotedocker`` compute target: the Docker target's images and containers, on the
Docker engine of a VM reached over SSH.
"""

from __future__ import annotations

import threading
import time

from amlrun.errors import TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.targets.base import Check, ExecResult
from amlrun.targets.docker.archive import extract_outputs, tar_tree
from amlrun.targets.docker.target import CONTAINER_SHARE, CONTAINER_WORKDIR, DockerTarget, stop_container
from amlrun.targets.ssh.connection import q, reconnect_seconds, sh
from amlrun.targets.ssh.host import SSH_COMPUTE_KEYS, SSHTargetMixin, cleanup, send_job
from amlrun.targets.ssh.relay import SocketRelay
from amlrun.targets.ssh.transfer import fetch_tree


def _dial_script(socket_path: str | None) -> str:
    """sh that connects stdin/stdout to the VM's Docker engine."""
    path = socket_path or "/var/run/docker.sock"
    host = f"DOCKER_HOST={q('unix://' + socket_path)} " if socket_path else ""
    return (f"if command -v docker >/dev/null 2>&1; then {host}exec docker system dial-stdio; "
            f"elif command -v socat >/dev/null 2>&1; then exec socat - UNIX-CONNECT:{q(path)}; "
            f"else echo 'neither the docker CLI nor socat is on the VM (non-interactive PATH)' >&2; exit 127; fi")


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

        session = self.ssh()
        socket_path = self.compute.get("dockerSocket")
        probe = session.run("command -v docker >/dev/null 2>&1 || exit 0; "
                            + (f"DOCKER_HOST={q('unix://' + str(socket_path))} " if socket_path else "")
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
        self.ssh().run_checked(f"mkdir -p {q(share)}", f"creating the shared folder {share}")
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
        container.put_archive("/", tar_tree(job.workdir, CONTAINER_WORKDIR.lstrip("/")))

    def _fetch_outputs(self, container, job) -> None:
        work = self._vm_work.get(job.run_id)
        if work is None:
            import docker.errors

            try:
                stream, _ = container.get_archive(f"{CONTAINER_WORKDIR}/outputs")
            except docker.errors.NotFound:
                return
            extract_outputs(stream, job.outputs_dir)
            return
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
            session.run_checked(f"mkdir -p {q(work)}/outputs", "creating outputs/")
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
        deadline = time.monotonic() + job.timeout if job.timeout else None
        reconnect_for = reconnect_seconds()
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
                _stop_retrying(container, stop_container)
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
    deadline = time.monotonic() + reconnect_seconds()
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
    return {"remotedocker": RemoteDockerTarget}
