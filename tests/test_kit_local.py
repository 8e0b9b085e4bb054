"""The conformance kit against the ``local`` target (and against itself: the kit's checks
must pass for a target that keeps the contract)."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance


class TestLocalTarget(TargetConformance):
    target_name = "local"

    @pytest.fixture
    def target_files(self) -> dict[str, str]:
        return {"aml_config/local.compute": "type: local\n"}
