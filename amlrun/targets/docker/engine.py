"""The Docker engine a docker target runs its containers on, and how a run's files reach it.

The docker target does everything through an :class:`Engine`: :class:`LocalEngine` is the
engine of this machine (or ``DOCKER_HOST``); ``remotedocker`` gives the same target an
engine reached over SSH (:class:`amlrun.targets.remotedocker.SSHEngine`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from amlrun.targets.base import Check, Job, Sink, Target
from amlrun.targets.docker.image import docker_sdk
from amlrun.targets.docker.owners import DEFAULT_SOCKET
from amlrun.targets.local import move_outputs, share_directory

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class Staging:
    """Where a run's files are for the engine: bind-mounted from ``bind`` (a path on the
    engine's host, owned by ``user``) or, when ``bind`` is None, copied into the container."""

    bind: str | None = None
    user: str | None = None
    home: str | None = None  # HOME of a non-root user whose own home is not in the image
    cleanup: str | None = None  # a folder on the engine's host to remove after the run
    extra: dict[str, object] = field(default_factory=dict)


class Engine(ABC):
    """What the docker target needs from the place its containers run."""

    #: markers in the cache name an engine by DOCKER_HOST: only the local engine writes them
    writes_owner_markers: bool = False
    #: whether ``amlrun doctor`` measures this machine's disk for the engine
    local_disk: bool = False

    @abstractmethod
    def describe(self) -> str:
        """The engine, for messages (a socket, a host)."""

    @abstractmethod
    def connect(self) -> docker.DockerClient:
        """A docker-py client of the engine (not yet pinged)."""

    @abstractmethod
    def mounts_by_default(self) -> bool:
        """Whether ``sharedVolumes`` defaults to on: the engine's host has the run's files."""

    @abstractmethod
    def stage(self, job: Job, mounted: bool, sink: Sink | None) -> Staging:
        """Put the run's files where the engine's host can mount them (when ``mounted``)."""

    @abstractmethod
    def fetch_mounted_outputs(self, staging: Staging, job: Job, sink: Sink) -> None:
        """Bring ``outputs/`` of a mounted run folder into ``job.outputs_dir``."""

    @abstractmethod
    def share_source(self, target: Target, mounted: bool) -> str | None:
        """The ``nativeSharedDirectory`` folder (or named volume) on the engine's host."""

    def reconnect_window(self) -> float:
        """How long a run waits for a dropped engine connection to come back (0: it fails)."""
        return 0.0

    def release(self, staging: Staging) -> None:
        """Remove what :meth:`stage` left on the engine's host."""

    def checks(self) -> list[Check]:
        """Checks ``amlrun doctor`` runs before asking the engine (e.g. an SSH login)."""
        return []

    def close(self) -> None:
        """Release what :meth:`connect` opened besides the client."""


class LocalEngine(Engine):
    """This machine's engine (or the one ``DOCKER_HOST`` names)."""

    writes_owner_markers = True
    local_disk = True

    def describe(self) -> str:
        host = os.environ.get("DOCKER_HOST")
        return f"DOCKER_HOST={host}" if host else DEFAULT_SOCKET

    def connect(self) -> docker.DockerClient:
        return docker_sdk().from_env(timeout=300)

    def mounts_by_default(self) -> bool:
        host = os.environ.get("DOCKER_HOST", "")
        return not host or host.startswith(("unix://", "npipe://"))

    def stage(self, job: Job, mounted: bool, sink: Sink | None) -> Staging:
        if not mounted:
            return Staging()
        # files written into the mounted tree belong to the invoking user, not root
        return Staging(bind=str(job.workdir), user=f"{os.getuid()}:{os.getgid()}", home="/tmp")

    def fetch_mounted_outputs(self, staging: Staging, job: Job, sink: Sink) -> None:
        move_outputs(Path(job.workdir) / "outputs", job.outputs_dir)

    def share_source(self, target: Target, mounted: bool) -> str | None:
        base = target.compute.get("nativeSharedDirectory")
        if not base:
            return None
        if mounted:
            return share_directory(target)
        path = str(base)
        if path.startswith("~") or not path.startswith("/"):
            # a path on an engine host whose home amlrun does not know: a named volume instead
            return f"amlrun-share-{slug(target.project.root.name)}-{slug(target.name)}"
        return str(PurePosixPath(path) / target.project.root.name / target.name)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "x"
