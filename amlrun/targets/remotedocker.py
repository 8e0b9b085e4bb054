"""The ``remotedocker`` compute target: the docker target, given an engine reached over SSH.

The engine is reached through a local unix socket relayed over the SSH connection
(``docker system dial-stdio`` on the VM), so images are built and cached on the VM's engine
exactly as locally. With ``sharedVolumes`` (the default) the run's code is synced
incrementally into the VM workspace and bind-mounted from there; without it the docker
target copies it into the container. The shared folder (``nativeSharedDirectory``) is a
folder on the VM. A dropped connection is waited out for ``AMLRUN_SSH_RECONNECT_SECONDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amlrun.errors import TargetUnavailable
from amlrun.targets.base import Check, Job, Sink, Target
from amlrun.targets.docker.engine import Engine, Staging
from amlrun.targets.docker.target import DockerTarget
from amlrun.targets.ssh.connection import q, reconnect_seconds, sh
from amlrun.targets.ssh.host import SSH_COMPUTE_KEYS, SSHTargetMixin, cleanup, fetch_outputs, send_job
from amlrun.targets.ssh.relay import SocketRelay

if TYPE_CHECKING:
    import docker


def dial_script(socket_path: str | None) -> str:
    """sh that connects stdin/stdout to the VM's Docker engine."""
    path = socket_path or "/var/run/docker.sock"
    host = f"DOCKER_HOST={q('unix://' + socket_path)} " if socket_path else ""
    return (
        f"if command -v docker >/dev/null 2>&1; then {host}exec docker system dial-stdio; "
        f"elif command -v socat >/dev/null 2>&1; then exec socat - UNIX-CONNECT:{q(path)}; "
        f"else echo 'neither the docker CLI nor socat is on the VM (non-interactive PATH)' >&2; exit 127; fi"
    )


class SSHEngine(Engine):
    """The Docker engine of a VM, through the SSH connection of ``host``."""

    def __init__(self, host: RemoteDockerTarget):
        self.host = host
        self._relay: SocketRelay | None = None
        self._ids: str | None = None

    def describe(self) -> str:
        return f"the Docker engine of {self.host.compute.address} over SSH"

    def connect(self) -> docker.DockerClient:
        import docker

        session = self.host.ssh()
        socket_path = self.host.compute.get("dockerSocket")
        probe = session.run(
            "command -v docker >/dev/null 2>&1 || exit 0; "
            + (f"DOCKER_HOST={q('unix://' + str(socket_path))} " if socket_path else "")
            + "docker version --format '{{.Server.Version}}' 2>&1",
            timeout=60,
        )
        if not probe.ok:
            lines = probe.stdout.strip().splitlines()
            raise TargetUnavailable(
                f"target '{self.host.name}': the Docker engine on {self.host.compute.address} "
                f"does not answer {session.settings.username}: "
                f"{lines[-1] if lines else probe.exit_code}"
            )
        if self._relay is None:
            self._relay = SocketRelay(session, sh(dial_script(str(socket_path) if socket_path else None)))
        return docker.DockerClient(base_url=self._relay.url, timeout=300, version="auto")

    def mounts_by_default(self) -> bool:
        return True

    def reconnect_window(self) -> float:
        return reconnect_seconds()

    def stage(self, job: Job, mounted: bool, sink: Sink | None) -> Staging:
        extra: dict[str, object] = {"remote_host": self.host.ssh().settings.label}
        if not mounted:
            return Staging(extra=extra)
        run_dir = f"{self.host.workspace()}/runs/{job.run_id}"
        work = f"{run_dir}/work"
        stats = send_job(self.host, job, work, sink)
        self.host.ssh().run_checked(f"mkdir -p {q(work)}/outputs", "creating outputs/")
        extra.update({"remote_run_dir": run_dir, "transfer": stats.to_json()})
        # files in the VM workspace belong to the SSH user
        return Staging(bind=work, user=self._user(), cleanup=run_dir, extra=extra)

    def _user(self) -> str:
        if self._ids is None:
            self._ids = self.host.ssh().run_checked("echo $(id -u):$(id -g)", "reading uid").stdout.strip()
        return self._ids

    def fetch_mounted_outputs(self, staging: Staging, job: Job, sink: Sink) -> None:
        fetch_outputs(self.host, job, f"{staging.bind}/outputs", sink, {})

    def share_source(self, target: Target, mounted: bool) -> str | None:
        share = self.host.remote_share()
        if share:
            self.host.ssh().run_checked(f"mkdir -p {q(share)}", f"creating the shared folder {share}")
        return share

    def release(self, staging: Staging) -> None:
        if staging.cleanup:
            cleanup(self.host.ssh(), staging.cleanup)

    def checks(self) -> list[Check]:
        return self.host.ssh_checks()

    def close(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None


class RemoteDockerTarget(SSHTargetMixin, DockerTarget):
    """``remotedocker``: the docker target's images and containers, on the VM's engine."""

    type_name = "remotedocker"
    aliases = ()
    compute_keys = DockerTarget.compute_keys | SSH_COMPUTE_KEYS | frozenset({"dockerSocket"})
    default_parallel = 2
    what = "environment (on the VM)"

    def make_engine(self) -> Engine:
        return SSHEngine(self)

    def describe(self) -> str:
        port = self.compute.get("port")
        where = f"{self.compute.get('username', '')}@{self.compute.address}" + (f":{port}" if port else "")
        return f"remotedocker {where} {self.compute.get('baseDockerImage')}"

    def teardown(self) -> None:
        DockerTarget.teardown(self)
        SSHTargetMixin.teardown(self)
