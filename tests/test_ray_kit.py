"""The conformance kit against the ``ray`` target of plugins/amlrun-ray on the private Ray
head (tests/ray_fixture.py). The head runs on this machine, so its jobs' processes are
here: the kit's default process listing sees them, and ``outputs/`` comes back through a
folder on this file system (no ``outputsStorage``)."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance


class TestRayKit(TargetConformance):
    target_name = "ray"

    @pytest.fixture
    def target_files(self, ray_head) -> dict[str, str]:
        return {"aml_config/ray.compute": ray_head.compute_yaml()}
