"""The conformance kit against the Spark ``cluster`` target: PySpark submitted to a real
standalone master and worker on 127.0.0.1 (each Spark job costs ~15-20 s, so the kit's
few sessions matter here)."""

from __future__ import annotations

import pytest

from amlrun.testing import TargetConformance

pytestmark = pytest.mark.spark


class TestClusterTarget(TargetConformance):
    target_name = "spark"
    timeout_seconds = 20.0      # spark-submit alone takes several seconds to start the driver

    @pytest.fixture
    def target_files(self, spark_cluster) -> dict[str, str]:
        return {"aml_config/spark.compute": spark_cluster.compute_yaml(userManagedEnvironment="true"),
                "aml_config/spark.runconfig": "Target: spark\nFramework: PySpark\n"}
