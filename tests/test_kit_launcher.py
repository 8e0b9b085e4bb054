"""The conformance kit against the ``launcher`` target of plugins/amlrun-launcher, installed
with pip and found through the ``amlrun`` entry-point group as a third party's would be."""

from __future__ import annotations

import importlib.metadata

import pytest

from amlrun.testing import TargetConformance
from conftest import require_service


class TestLauncherTarget(TargetConformance):
    target_name = "niced"

    @pytest.fixture
    def target_files(self) -> dict[str, str]:
        names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="amlrun")}
        if names.get("launcher") != "amlrun_launcher":
            require_service("amlrun-launcher", "not installed (bash scripts/test.sh pip-installs plugins/*)")
        return {"aml_config/niced.compute": 'type: launcher\nlauncher: ["nice", "-n", "5"]\n'}
