"""Workbench's ``aml_config/`` spellings that real sample projects use: secret references
``AzureMlSecret=<target>#<user>#<hash>``, ``DataSourceSettings`` and the other Data Prep
keys of a runconfig, TABs in ``spark_dependencies.yml``. Fixtures follow the comments
Workbench wrote into the files it generated."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import pytest


#: the runconfig Workbench generated (its comments shortened), Data Prep keys uncommented
WORKBENCH_RUNCONFIG = """
# The program name and arguments to run when they aren't specified through
# other means. The $file token is replaced with the currently selected file
# by the Workbench application.
ArgumentVector:
  - "$file"
Target: "local"
EnvironmentVariables:
  "EXAMPLE_ENV_VAR": "Example Value"
Framework: "Python"
CondaDependenciesFile: "aml_config/conda_dependencies.yml"
SparkDependenciesFile: "aml_config/spark_dependencies.yml"
PrepareEnvironment: false
TrackedRun: true
# The UseSampling setting controls the use of sample data or complete data on
# all .dsource and .dprep files.
UseSampling: false
# For each data source (.dsource or .dprep file), the Sample setting allows a
# specific named sample to be used, overriding the active sample set in the
# .dsource or .dprep file.
DataSourceSettings:
  my.dsource:
    Sampling:
      Sample: MySampleName
# Data source substitutions allows all references to a .dsource ... to instead use
# a different .dsource.
DataSourceSubstitutions:
    my.dsource: replacement.dsource
"""

SHOW_SETTINGS = "import os\nprint('settings=' + os.environ.get('AMLRUN_DATAPREP_SETTINGS', 'none'))\n"


def test_data_prep_keys_are_known_and_reach_the_run(project):
    project.write({"aml_config/local.runconfig": WORKBENCH_RUNCONFIG, "show.py": SHOW_SETTINGS})
    result = project.run("-c", "local", "show.py")
    assert result.returncode == 0, result.output
    assert "warning" not in result.stderr
    line = next(x for x in result.stdout.splitlines() if "settings=" in x)
    assert json.loads(line.split("settings=", 1)[1]) == {
        "UseSampling": False,
        "DataSourceSettings": {"my.dsource": {"Sampling": {"Sample": "MySampleName"}}},
        "DataSourceSubstitutions": {"my.dsource": "replacement.dsource"},
    }


def test_a_commented_data_source_block_sets_nothing(project):
    # as Workbench generated it: the two blocks commented out
    head, _, _ = WORKBENCH_RUNCONFIG.partition("UseSampling: false")
    commented = head + "# DataSourceSettings:\n#   my.dsource:\n#     Sampling:\n#       Sample: MySampleName\n" \
        "# DataSourceSubstitutions:\n#     my.dsource: replacement.dsource\n"
    project.write({"aml_config/local.runconfig": commented, "show.py": SHOW_SETTINGS})
    result = project.run("-c", "local", "show.py")
    assert result.returncode == 0 and "settings=none" in result.stdout, result.output


def test_malformed_data_source_settings_name_the_file_and_key(project):
    project.write({"aml_config/local.runconfig": "DataSourceSettings: [a, b]\n", "show.py": SHOW_SETTINGS})
    result = project.run("-c", "local", "show.py")
    assert result.returncode == 4
    assert "aml_config/local.runconfig" in result.stderr and "'DataSourceSettings'" in result.stderr
    assert "Traceback" not in result.output


SPARK_WITH_TABS = (
    "# Spark configuration and packages specification.\n"
    "configuration:\n"
    "\t\"spark.app.name\":\t\"Classifying Iris\"\n"
    "\t\"spark.yarn.maxAppAttempts\": 1\n"
    "repositories:\n"
    "  -\t\"https://mmlspark.azureedge.net/maven\"\n"
    "packages:\n"
    "\t- group: \"com.microsoft.ml.spark\"\t# a comment\twith a tab\n"
    "\t  artifact: \"mmlspark_2.11\"\n"
    "\t  version: \"0.7.91\"\n"
)


def test_tabs_in_spark_dependencies_are_accepted(tmp_path):
    from amlrun.config import load_spark_dependencies

    path = tmp_path / "aml_config" / "spark_dependencies.yml"
    path.parent.mkdir()
    path.write_text(SPARK_WITH_TABS)
    deps = load_spark_dependencies(path, tmp_path)
    assert deps.configuration == {"spark.app.name": "Classifying Iris", "spark.yarn.maxAppAttempts": "1"}
    assert deps.repositories == ("https://mmlspark.azureedge.net/maven",)
    assert deps.packages == ("com.microsoft.ml.spark:mmlspark_2.11:0.7.91",)


def test_a_tab_inside_a_quoted_value_is_kept_and_real_errors_still_name_the_line(tmp_path):
    from amlrun.config import load_spark_dependencies
    from amlrun.errors import ConfigError

    path = tmp_path / "spark_dependencies.yml"
    path.write_text("configuration:\n\t\"spark.driver.extraJavaOptions\": \"-Da=1\t-Db=2\"\n")
    assert load_spark_dependencies(path, tmp_path).configuration == {"spark.driver.extraJavaOptions": "-Da=1\t-Db=2"}
    path.write_text("configuration:\n\t\"a\": [1, 2\npackages: []\n")
    with pytest.raises(ConfigError) as caught:
        load_spark_dependencies(path, tmp_path)
    assert re.match(r"spark_dependencies.yml:[23]: invalid YAML: expected .,. or .]", str(caught.value)), caught.value


# -- AzureMlSecret=<target>#<user>#<hash> ------------------------------------------------------

WORKBENCH_REFERENCE = "AzureMlSecret=myvm#ldsvmadmin#2fcf0f4c1a0b4a9e9d1f"


def _credentials(name: str, value: str) -> Path:
    path = Path(os.environ["AMLRUN_CREDENTIALS"])
    path.write_text(json.dumps({name: value}))  # JSON is YAML
    path.chmod(0o600)
    return path


def test_workbench_secret_reference_is_resolved_not_sent_literally(project, sshd):
    name = WORKBENCH_REFERENCE.split("=", 1)[1]
    creds = _credentials(name, sshd.password)
    try:
        compute = sshd.compute_yaml(auth="password").replace("secret:AMLRUN_TEST_SSH_PASSWORD", WORKBENCH_REFERENCE)
        project.write({"aml_config/myvm.compute": compute, "hello.py": "print('hello from the vm')\n"})
        doctor = project.run("doctor", "-c", "myvm")
        assert doctor.returncode == 0, doctor.output
        assert "holds the secret itself" not in doctor.stderr
        ran = project.run("-c", "myvm", "hello.py")
        assert ran.returncode == 0 and "hello from the vm" in ran.stdout, ran.output
        assert sshd.password not in doctor.output + ran.output
    finally:
        creds.unlink()


def test_unresolvable_workbench_reference_says_where_to_put_it(project):
    project.write({"aml_config/local.runconfig": f"EnvironmentVariables:\n  DB_PASSWORD: {WORKBENCH_REFERENCE}\n",
                   "hello.py": "print('hi')\n"})
    result = project.run("-c", "local", "hello.py")
    assert result.returncode != 0
    assert "secret 'myvm#ldsvmadmin#2fcf0f4c1a0b4a9e9d1f'" in result.output
    assert "Workbench kept it in the system's credential store" in result.output
    assert "Traceback" not in result.output


# -- pythonLocation: "python" (Workbench's default) where only python3 exists ------------------


def test_doctor_and_collect_only_check_python_location(project, tmp_path):
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:/nonexistent"}
    # the Iris sample's local.compute
    project.write({"aml_config/local.compute": 'type: "local"\npythonLocation: "python"\n'
                                               'nativeSharedDirectory: "~/.azureml/share/"\n',
                   "train.py": "print('hi')\n"})
    problem = ("pythonLocation python (aml_config/local.compute) is not on PATH; this machine has python3: "
               "set pythonLocation: python3")
    doctor = project.run("doctor", "-c", "local", env=env)
    assert doctor.returncode == 1 and f"FAIL python: {problem}" in doctor.stdout, doctor.output
    plan = project.run("-c", "local", "--collect-only", env=env)
    assert "environment ready" not in plan.stdout and problem in plan.stdout, plan.output
    ran = project.run("-c", "local", "train.py", env=env)
    assert ran.returncode != 0 and problem in ran.stdout and "Traceback" not in ran.output
    project.write({"aml_config/local.compute": 'type: "local"\npythonLocation: "python3"\n'})
    assert "environment ready" in project.run("-c", "local", "--collect-only", env=env).stdout
    fixed = project.run("-c", "local", "train.py", env=env)
    assert fixed.returncode == 0 and "hi" in fixed.stdout, fixed.output
