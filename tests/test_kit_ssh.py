"""The conformance kit against the targets reached over SSH (a real sshd on 127.0.0.1):
``remote`` (the VM's Python) and ``remotedocker`` (the VM's Docker engine)."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance
from dockerhelp import BASE, engine

pytestmark = pytest.mark.ssh


class TestRemoteTarget(TargetConformance):
    target_name = "vm"
    share_directory = "~/amlrun-kit-share"        # a folder on the VM, in the SSH user's home

    @pytest.fixture
    def target_files(self, sshd) -> dict[str, str]:
        return {"aml_config/vm.compute": sshd.compute_yaml("remote")}


class TestRemoteDockerTarget(TargetConformance):
    target_name = "vmdocker"
    share_directory = "~/amlrun-kit-share"

    @pytest.fixture
    def target_files(self, sshd) -> dict[str, str]:
        engine()
        return {"aml_config/vmdocker.compute": sshd.compute_yaml("remotedocker", extra=f"baseDockerImage: {BASE}\n")}
