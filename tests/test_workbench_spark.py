"""``Framework: PySpark`` on the local and docker targets, as Workbench ran the Iris
sample's ``docker-spark`` run configuration: spark-submit with a local master and the
``spark_dependencies.yml`` settings; one clear line where there is no Spark."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from dockerhelp import BASE, JAVA_BASE, derived_image, engine
from spark_fixture import require_spark

IRIS = Path(__file__).parent / "data" / "workbench_iris"

#: the Iris sample's PySpark runconfig (docker-spark.runconfig), its Target made a parameter
RUNCONFIG = """
ArgumentVector:
  - "$file"
Target: "{target}"
EnvironmentVariables:
  "EXAMPLE_ENV_VAR": "Example Value"
Framework: "PySpark"
CondaDependenciesFile: "aml_config/conda_dependencies.yml"
SparkDependenciesFile: "aml_config/spark_dependencies.yml"
PrepareEnvironment: true
TrackedRun: true
"""

#: as the sample's, with a TAB (Workbench accepted them) and no Maven packages (no repository here)
SPARK_DEPENDENCIES = (
    "# Spark configuration and packages specification.\n"
    "configuration:\n"
    "  \"spark.app.name\": \"Classifying Iris\"\n"
    "  \"spark.yarn.maxAppAttempts\":\t1\t\n"
    "  \"spark.ui.enabled\": \"false\"\n"
    "  \"spark.amlrun.probe\": \"from spark_dependencies.yml\"\n"
)

#: iris_spark.py's start, plus the Data Prep package read as a Spark DataFrame
SPARK_SCRIPT = """
import os, sys
import pyspark
from azureml.dataprep.package import run
from azureml.logging import get_azureml_logger

run_logger = get_azureml_logger()
spark = pyspark.sql.SparkSession.builder.getOrCreate()
print('Spark version: {}'.format(spark.version))
conf = spark.sparkContext.getConf()
print('master', spark.sparkContext.master)
print('app', conf.get('spark.app.name'), '|', conf.get('spark.amlrun.probe'))
iris = run('iris.dprep', dataflow_idx=0, spark=True)
print('dataframe', type(iris).__name__, iris.count(), iris.columns[-1])
print('args', sys.argv[1:], os.environ['EXAMPLE_ENV_VAR'])
run_logger.log('Rows', iris.count())
spark.stop()
"""


def _project(project, target: str, compute: str, conda: str = "dependencies:\n  - python\n"):
    for name in ("iris.dprep", "iris.dsource", "iris.csv"):
        shutil.copy(IRIS / name, project.root / name)
    project.write({
        f"aml_config/{target}.compute": compute,
        f"aml_config/{target}-spark.runconfig": RUNCONFIG.format(target=target),
        "aml_config/spark_dependencies.yml": SPARK_DEPENDENCIES,
        "aml_config/conda_dependencies.yml": conda,
        "iris_spark.py": SPARK_SCRIPT,
    })
    return project


def _record(project) -> dict:
    (path,) = (project.root / ".amlrun" / "runs").glob("*/record.json")
    return json.loads(path.read_text())


def _assert_spark_run(result, record, project):
    assert result.returncode == 0, result.output
    log = (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    assert "master local[*]" in log
    assert "app Classifying Iris | from spark_dependencies.yml" in log
    assert "dataframe DataFrame 150 Species" in log
    assert "args ['0.5', 'two words'] Example Value" in log
    assert record["metrics"]["Rows"] == 150
    assert record["extra"]["spark_master"] == "local[*]"
    assert "--conf 'spark.amlrun.probe=from spark_dependencies.yml'" in record["extra"]["spark_submit"]


@pytest.mark.spark
def test_pyspark_on_local_through_spark_submit_location(project, monkeypatch):
    require_spark()
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    # the Iris sample's local.compute: python and spark-submit found on PATH
    compute = (f'type: "local"\npythonLocation: "{sys.executable}"\nsparkSubmitLocation: "spark-submit"\n')
    _project(project, "local", compute)
    result = project.run("-c", "local-spark", "iris_spark.py", "--", "0.5", "two words", timeout=600)
    _assert_spark_run(result, _record(project), project)


def test_pyspark_on_local_without_spark_is_one_line(project, tmp_path):
    # an interpreter in a folder of its own: the test's own may have pyspark (CI installs it)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    compute = f'type: "local"\npythonLocation: "{bin_dir / "python3"}"\n'
    _project(project, "local", compute)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SPARK_HOME": ""}
    result = project.run("-c", "local-spark", "iris_spark.py", env=env)
    assert result.returncode != 0 and "Traceback" not in result.output
    assert ("target 'local': Framework PySpark needs spark-submit, and this machine has none; set "
            "sparkSubmitLocation in aml_config/local.compute or pyspark in the pip: list of "
            "aml_config/conda_dependencies.yml with userManagedEnvironment: false or pip install pyspark") in result.output
    missing = project.write({"aml_config/local.compute": compute + "sparkSubmitLocation: /nowhere/spark-submit\n"})
    result = missing.run("-c", "local-spark", "iris_spark.py")
    assert "sparkSubmitLocation /nowhere/spark-submit is not an executable spark-submit" in result.output


@pytest.mark.docker
def test_pyspark_on_docker_without_spark_in_the_image_is_one_line(project):
    engine()
    _project(project, "docker", f'type: "localdocker"\nbaseDockerImage: "{BASE}"\n')
    result = project.run("-c", "docker-spark", "iris_spark.py")
    assert result.returncode != 0 and "Traceback" not in result.output
    assert "target 'docker': Framework PySpark needs spark-submit, and the image amlrun/env:" in result.output
    assert ("has none; a base image with Spark (baseDockerImage in aml_config/docker.compute) or pyspark in the "
            "pip: list of aml_config/conda_dependencies.yml") in result.output


@pytest.mark.docker
@pytest.mark.spark
def test_pyspark_on_docker_with_pyspark_in_the_managed_environment(project):
    client = engine()
    base = derived_image(client, JAVA_BASE)
    import pyspark

    conda = f"dependencies:\n  - python\n  - pip:\n    - pyspark=={pyspark.__version__}\n    - pandas\n"
    _project(project, "docker", f'type: "localdocker"\nbaseDockerImage: "{base}"\n', conda)
    started = time.monotonic()
    result = project.run("-c", "docker-spark", "iris_spark.py", "--", "0.5", "two words", timeout=1500)
    took = time.monotonic() - started
    print(f"PySpark in docker, environment image with pyspark built and run: {took:.0f} s")
    _assert_spark_run(result, _record(project), project)
