"""The conformance kit against the ``slurm`` target of plugins/amlrun-slurm on the private
single-node cluster (tests/slurm_fixture.py), the login node being this machine: its jobs'
processes run here, so the kit's default process listing sees them."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance


class TestSlurmKit(TargetConformance):
    target_name = "slurm"

    @pytest.fixture
    def target_files(self, slurm_cluster, tmp_path_factory) -> dict[str, str]:  # noqa: F811
        workspace = tmp_path_factory.mktemp("slurm-kit-ws")
        return {"aml_config/slurm.compute": slurm_cluster.compute_yaml(workspace)}
