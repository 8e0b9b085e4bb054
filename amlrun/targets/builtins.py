"""The built-in target families as plugins that import nothing heavy.

Each family registers its types as ``"module:Class"`` (see :mod:`amlrun.targets.registry`):
the Docker SDK, tarfile, the SSH libraries and the Spark code load only when a target of
that family is made, so ``amlrun --help`` and a local run do not wait for them. The plugin
names are those ``-p no:NAME`` blocks.
"""

from __future__ import annotations

from typing import Any

from amlrun.hookspec import hookimpl


class TargetFamily:
    """A plugin registering some target types lazily."""

    def __init__(self, types: dict[str, str]):
        self.types = types

    @hookimpl
    def amlrun_register_targets(self) -> dict[str, str]:
        return dict(self.types)


class DockerFamily(TargetFamily):
    @hookimpl
    def amlrun_configure(self, config: Any) -> None:
        """Containers of an amlrun that was killed are removed by the next amlrun command."""
        from amlrun.envs import cache_dir
        from amlrun.targets.docker.owners import sweep_dead_owners

        sweep_dead_owners(cache_dir())


def local() -> TargetFamily:
    return TargetFamily({"local": "amlrun.targets.local:LocalTarget"})


def docker() -> TargetFamily:
    spec = "amlrun.targets.docker.target:DockerTarget"
    return DockerFamily({"docker": spec, "localdocker": spec})


def remote() -> TargetFamily:
    return TargetFamily({"remote": "amlrun.targets.remote:RemoteTarget"})


def remotedocker() -> TargetFamily:
    return TargetFamily({"remotedocker": "amlrun.targets.remotedocker:RemoteDockerTarget"})


def cluster() -> TargetFamily:
    return TargetFamily({"cluster": "amlrun.targets.cluster.target:ClusterTarget"})
