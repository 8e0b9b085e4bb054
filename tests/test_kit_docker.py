"""The conformance kit against the ``docker`` target and the real engine: code mounted
(the default) and code copied in (``sharedVolumes: false``)."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance
from dockerhelp import BASE, engine

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docker_engine():
    return engine()


class TestDockerTarget(TargetConformance):
    target_name = "docker"

    @pytest.fixture
    def target_files(self, docker_engine) -> dict[str, str]:
        return {"aml_config/docker.compute": f"type: docker\nbaseDockerImage: {BASE}\n"}


class TestDockerTargetCopyingCode(TargetConformance):
    target_name = "copied"

    @pytest.fixture
    def target_files(self, docker_engine) -> dict[str, str]:
        return {"aml_config/copied.compute": f"type: docker\nbaseDockerImage: {BASE}\nsharedVolumes: false\n"}
