"""Workbench ``aml_config/`` files read as written, ``-c`` resolution, ``[tool.amlrun]``,
and one-line errors (exit 4) for a user's mistakes."""

from __future__ import annotations

import stat
import sys

import pytest

from amlrun.config import load_compute, load_conda_dependencies, load_runconfig, load_spark_dependencies
from amlrun.errors import ConfigError
from amlrun.project import Project, load_settings

# Written by hand from the Azure ML Workbench documentation (the files `az ml` generated).
WORKBENCH_FILES = {
    "aml_config/local.compute": """
        # Defines the type of the compute target: local, docker, remote, cluster
        type: "local"
        # Path to the python interpreter
        pythonLocation: "python"
        # Whether the execution environment is managed by the user
        userManagedEnvironment: true
        # Directory that is shared between runs (AZUREML_NATIVE_SHARE_DIRECTORY)
        nativeSharedDirectory: "~/.azureml/share/"
    """,
    "aml_config/docker.compute": """
        type: "localdocker"
        baseDockerImage: "microsoft/mmlspark:plus-0.9.9"
        sharedVolumes: true
        nvidiaDocker: false
        nativeSharedDirectory: "~/.azureml/share/"
        userManagedEnvironment: false
    """,
    "aml_config/local.runconfig": """
        # The script to run and its arguments; $file is the script named on the command line
        ArgumentVector:
          - "$file"
        Target: "local"
        EnvironmentVariables:
          "EXAMPLE_ENV_VAR": "Example Value"
        Framework: "Python"
        CondaDependenciesFile: "aml_config/conda_dependencies.yml"
        SparkDependenciesFile: "aml_config/spark_dependencies.yml"
        PrepareEnvironment: true
        TrackedRun: true
        UseSampling: true
    """,
    "aml_config/docker.runconfig": """
        ArgumentVector:
          - "$file"
        Target: "docker"
        EnvironmentVariables:
          "EXAMPLE_ENV_VAR": "Example Value"
        Framework: "PySpark"
        CondaDependenciesFile: "aml_config/conda_dependencies.yml"
        SparkDependenciesFile: "aml_config/spark_dependencies.yml"
        PrepareEnvironment: true
        TrackedRun: true
        UseSampling: true
    """,
    "aml_config/conda_dependencies.yml": """
        name: project_environment
        dependencies:
          # The python interpreter version.
          - python=3.5.2
          - scikit-learn
          - pip:
            - https://azuremldownloads.blob.core.windows.net/wheels/latest/azureml.dataprep-latest-py3-none-any.whl
    """,
    "aml_config/spark_dependencies.yml": """
        configuration:
          "spark.app.name": "Azure ML Experiment"
          "spark.yarn.maxAppAttempts": 1
        repositories:
          - "https://mmlspark.azureedge.net/maven"
        packages:
          - group: "com.microsoft.ml.spark"
            artifact: "mmlspark_2.11"
            version: "0.9.9"
    """,
    "train.py": """
        import json, os, sys
        print("ENV=" + os.environ["EXAMPLE_ENV_VAR"])
        print("ARGV=" + json.dumps(sys.argv[1:]))
        print("SHARE=" + os.environ.get("AZUREML_NATIVE_SHARE_DIRECTORY", ""))
    """,
}


@pytest.fixture
def workbench(project, tmp_path):
    project.write(WORKBENCH_FILES)
    return project


# -- unit level: the loaders ---------------------------------------------------------------


def test_workbench_files_load_as_written(workbench):
    root = workbench.root
    local = load_compute(root / "aml_config/local.compute", root)
    assert local.type == "local"
    assert local.get("pythonLocation") == "python"
    assert local.get("nativeSharedDirectory") == "~/.azureml/share/"
    assert local.flag("userManagedEnvironment") is True

    docker = load_compute(root / "aml_config/docker.compute", root)
    assert docker.type == "localdocker"
    assert docker.get("baseDockerImage") == "microsoft/mmlspark:plus-0.9.9"
    assert docker.flag("sharedVolumes") is True and docker.flag("nvidiaDocker") is False

    rc = load_runconfig(root / "aml_config/local.runconfig", root)
    assert rc.argument_vector == ("$file",)
    assert rc.target == "local"
    assert rc.environment_variables == {"EXAMPLE_ENV_VAR": "Example Value"}
    assert rc.framework == "Python"
    assert rc.conda_dependencies_file == "aml_config/conda_dependencies.yml"
    assert rc.spark_dependencies_file == "aml_config/spark_dependencies.yml"
    assert rc.prepare_environment and rc.tracked_run
    assert load_runconfig(root / "aml_config/docker.runconfig", root).framework == "PySpark"

    deps = load_conda_dependencies(root / "aml_config/conda_dependencies.yml", root)
    assert deps.python_version == "3.5.2"
    assert deps.conda_packages == ("scikit-learn",)
    assert len(deps.pip_packages) == 1 and deps.pip_packages[0].endswith(".whl")

    spark = load_spark_dependencies(root / "aml_config/spark_dependencies.yml", root)
    assert spark.packages == ("com.microsoft.ml.spark:mmlspark_2.11:0.9.9",)
    assert spark.repositories == ("https://mmlspark.azureedge.net/maven",)
    assert spark.configuration["spark.yarn.maxAppAttempts"] == "1"


def test_conda_digest_changes_with_the_spec(tmp_path):
    path = tmp_path / "deps.yml"
    path.write_text("dependencies:\n  - python=3.11\n  - pip:\n    - six==1.16.0\n")
    first = load_conda_dependencies(path, tmp_path).digest
    assert load_conda_dependencies(path, tmp_path).digest == first
    path.write_text("dependencies:\n  - python=3.11\n  - pip:\n    - six==1.17.0\n")
    assert load_conda_dependencies(path, tmp_path).digest != first


def test_settings_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.amlrun]\nexperiment_paths = ["exp"]\nexperiment_files = ["run_*.py", "*_exp.py"]\n'
        'default_targets = ["a", "b"]\nnorecursedirs = ["skipme"]\n'
    )
    settings = load_settings(tmp_path / "pyproject.toml")
    assert settings.experiment_paths == ("exp",)
    assert settings.experiment_files == ("run_*.py", "*_exp.py")
    assert settings.default_targets == ("a", "b")
    assert settings.norecursedirs == ("skipme",)


def test_settings_wrong_type_names_the_key(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.amlrun]\ndefault_targets = 3\n")
    with pytest.raises(ConfigError, match="default_targets"):
        load_settings(tmp_path / "pyproject.toml")


def test_runconfig_first_then_compute(workbench):
    project = Project.discover(workbench.root, workbench.root)
    assert project.resolve_runconfig("local").source == "aml_config/local.runconfig"
    workbench.write({"aml_config/bare.compute": "type: local\n"})
    bare = project.resolve_runconfig("bare")
    assert bare.source is None and bare.target == "bare" and bare.argument_vector == ("$file",)
    assert project.resolve_runconfig("nothing") is None


# -- the real CLI on a hand-written Workbench project -----------------------------------------


def test_workbench_project_runs_unchanged(workbench, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = workbench.run("-c", "local", "train.py", env={"HOME": str(home)})
    assert result.returncode == 0, result.output
    assert "ENV=Example Value" in result.stdout
    assert 'ARGV=[]' in result.stdout
    share = home / ".azureml" / "share" / workbench.root.name / "local"
    assert f"SHARE={share}" in result.stdout and share.is_dir()
    assert "warning" not in result.stderr  # every Workbench key is known
    # the localdocker target and its PySpark runconfig are understood (planning needs no engine)
    result = workbench.run("-c", "docker", "-c", "local", "--collect-only", "train.py", env={"HOME": str(home)})
    assert result.returncode == 0, result.output
    assert "train.py::docker" in result.stdout and "train.py::local" in result.stdout
    assert "warning" not in result.stderr


def test_c_resolves_runconfig_before_compute(workbench, tmp_path):
    """``both`` exists as a runconfig (Target: local) and a compute file; the runconfig wins."""
    marker = tmp_path / "wrapper-used"
    wrapper = tmp_path / "pywrap"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    workbench.write({
        "aml_config/both.runconfig": 'ArgumentVector: ["$file"]\nTarget: local\nEnvironmentVariables:\n  EXAMPLE_ENV_VAR: from-runconfig\n',
        "aml_config/both.compute": f'type: local\npythonLocation: "{wrapper}"\n',
        "aml_config/onlycompute.compute": f'type: local\npythonLocation: "{wrapper}"\n',
    })
    result = workbench.run("-c", "both", "train.py")
    assert result.returncode == 0, result.output
    assert "ENV=from-runconfig" in result.stdout
    assert not marker.exists()
    # a compute target without a runconfig gets the default one (no EXAMPLE_ENV_VAR)
    result = workbench.run("-c", "onlycompute", "train.py")
    assert result.returncode == 1
    assert marker.exists()
    assert "KeyError: 'EXAMPLE_ENV_VAR'" in result.stdout


def test_python_location_picks_the_interpreter(project, tmp_path):
    wrapper = tmp_path / "my python"
    wrapper.write_text(f'#!/bin/sh\nexport PICKED_BY_WRAPPER=yes\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    project.write({
        "aml_config/local.compute": f'type: "local"\npythonLocation: "{wrapper}"\n',
        "s.py": "import os\nprint('PICKED=' + os.environ.get('PICKED_BY_WRAPPER', 'no'))\n",
    })
    result = project.run("-c", "local", "s.py")
    assert result.returncode == 0, result.output
    assert "PICKED=yes" in result.stdout
    assert str(wrapper) in result.stdout  # the header names the interpreter


def test_python_location_missing_interpreter_fails_the_cell(project):
    project.write({
        "aml_config/local.compute": 'type: "local"\npythonLocation: "/nonexistent/python9"\n',
        "s.py": "print('hi')\n",
    })
    result = project.run("-c", "local", "s.py")
    # found before the run starts: the target is unusable, a configuration error (exit 4)
    assert result.returncode == 4
    assert "Traceback" not in result.output
    assert "pythonLocation /nonexistent/python9 (aml_config/local.compute) is not an executable file" in result.stdout


def test_tool_amlrun_settings_drive_collection_and_targets(tmp_path):
    from conftest import Project as P, write_files

    root = tmp_path / "tomlproj"
    write_files(root, {
        "pyproject.toml": """
            [tool.amlrun]
            experiment_paths = ["experiments"]
            experiment_files = ["exp_*.py"]
            default_targets = ["fast"]
            norecursedirs = ["skipped"]
        """,
        "aml_config/fast.runconfig": 'ArgumentVector: ["$file"]\nTarget: local\n',
        "experiments/exp_a.py": "print('a')\n",
        "experiments/helper.py": "print('not an experiment')\n",
        "experiments/sub/exp_b.py": "print('b')\n",
        "experiments/skipped/exp_c.py": "print('c')\n",
        "exp_outside.py": "print('outside experiment_paths')\n",
    })
    result = P(root).run("--collect-only")
    assert result.returncode == 0, result.output
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids == ["experiments/exp_a.py::fast", "experiments/sub/exp_b.py::fast"]


def test_project_found_from_pyproject_without_aml_config(tmp_path):
    from conftest import Project as P, write_files

    root = tmp_path / "p"
    write_files(root, {"pyproject.toml": "[tool.amlrun]\n", "a.py": "print(1)\n", "sub/b.py": "print(2)\n"})
    result = P(root / "sub").run("--collect-only", "b.py")
    assert result.returncode == 0, result.output
    assert f"project: {root}" in result.stdout
    assert "sub/b.py::local" in result.stdout


# -- bad input: one line, exit 4 ------------------------------------------------------------


def _one_error_line(result) -> str:
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("amlrun: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    "name, text, line",
    [
        ("local.compute", 'type: "local"\npythonLocation: "python\n', 2),
        ("local.compute", 'type: local\n  pythonLocation: python\n', 2),
        ("local.runconfig", 'ArgumentVector:\n  - "$file"\nTarget: local\nEnvironmentVariables:\n  A: 1\n B: 2\n', 6),
        ("conda_dependencies.yml", "dependencies:\n  - python=3.6\n\t- six\n", 3),
    ],
)
def test_malformed_yaml_names_file_and_line(project, name, text, line):
    project.write({f"aml_config/{name}": text, "s.py": "print(1)\n"})
    if name == "conda_dependencies.yml":  # read only when amlrun manages the environment
        project.write({"aml_config/local.compute": "type: local\nuserManagedEnvironment: false\n"})
    result = project.run("-c", "local", "s.py")
    assert result.returncode == 4, result.output
    assert "Traceback" not in result.output
    if name == "conda_dependencies.yml":  # found while preparing: the cell errors, the session exits 4
        assert f"aml_config/{name}:{line}: invalid YAML" in result.stdout
        return
    error = _one_error_line(result)
    assert f"aml_config/{name}:{line}:" in error, error


def test_malformed_pyproject_names_the_file(tmp_path):
    from conftest import Project as P, write_files

    root = tmp_path / "p"
    write_files(root, {"pyproject.toml": "[tool.amlrun]\nexperiment_paths = [\n", "s.py": "print(1)\n"})
    result = P(root).run("--collect-only")
    assert result.returncode == 4
    assert "pyproject.toml" in _one_error_line(result)


def test_unknown_key_warns_with_nearest_key(project):
    project.write({
        "aml_config/local.compute": 'type: local\npythonLocaton: python\n',
        "aml_config/local.runconfig": 'ArgumentVector: ["$file"]\nTarget: local\nEnviromentVariables: {A: "1"}\n',
        "s.py": "print('ran')\n",
    })
    result = project.run("-c", "local", "s.py")
    assert result.returncode == 0, result.output
    assert ("warning: aml_config/local.compute: unknown key 'pythonLocaton' (did you mean 'pythonLocation'?)"
            in result.stderr)
    assert ("warning: aml_config/local.runconfig: unknown key 'EnviromentVariables' "
            "(did you mean 'EnvironmentVariables'?)" in result.stderr)
    assert result.stderr.count("pythonLocaton") == 1


def test_unknown_tool_amlrun_key_warns(tmp_path):
    from conftest import Project as P, write_files

    root = tmp_path / "p"
    write_files(root, {"pyproject.toml": '[tool.amlrun]\nexperiment_path = ["x"]\n', "s.py": "print(1)\n"})
    result = P(root).run("--collect-only", "s.py")
    assert result.returncode == 0, result.output
    assert "unknown key 'experiment_path' (did you mean 'experiment_paths'?)" in result.stderr


def test_unknown_target_lists_available(workbench):
    workbench.write({"aml_config/gpu.runconfig": 'ArgumentVector: ["$file"]\nTarget: local\n'})
    result = workbench.run("-c", "nope", "train.py")
    assert result.returncode == 4
    error = _one_error_line(result)
    assert "'nope'" in error
    for name in ("docker", "gpu", "local"):
        assert name in error


def test_runconfig_naming_missing_compute(project):
    project.write({"aml_config/orphan.runconfig": 'Target: vm1\n', "s.py": "print(1)\n"})
    result = project.run("-c", "orphan", "s.py")
    assert result.returncode == 4
    error = _one_error_line(result)
    assert "aml_config/orphan.runconfig" in error and "vm1" in error and "available:" in error


def test_missing_compute_type(project):
    project.write({"aml_config/vm.compute": "address: 127.0.0.1\n", "s.py": "print(1)\n"})
    result = project.run("-c", "vm", "s.py")
    assert result.returncode == 4
    assert "aml_config/vm.compute" in _one_error_line(result)


def test_unknown_compute_type_lists_known(project):
    project.write({"aml_config/weird.compute": "type: quantum\n", "s.py": "print(1)\n"})
    result = project.run("-c", "weird", "s.py")
    assert result.returncode == 4
    error = _one_error_line(result)
    assert "quantum" in error and "local" in error


@pytest.mark.parametrize("key, value", [("Framework", "Rust"), ("TrackedRun", "maybe"), ("ArgumentVector", "{a: 1}"),
                                         ("EnvironmentVariables", "[1, 2]")])
def test_bad_runconfig_values(project, key, value):
    project.write({"aml_config/local.runconfig": f"Target: local\n{key}: {value}\n", "s.py": "print(1)\n"})
    result = project.run("-c", "local", "s.py")
    assert result.returncode == 4, result.output
    error = _one_error_line(result)
    assert "aml_config/local.runconfig" in error and key in error


def test_missing_script_path(project):
    result = project.run("-c", "local", "experiments/nothere.py")
    assert result.returncode == 4
    assert "experiments/nothere.py" in _one_error_line(result)


def test_bad_option_is_usage_error(project):
    result = project.run("--timeout", "soon")
    assert result.returncode == 4
    assert "--timeout" in _one_error_line(result)


def test_missing_conda_file_named_in_runconfig(project):
    project.write({"aml_config/local.runconfig": "Target: local\nCondaDependenciesFile: deps/nothere.yml\n",
                   "aml_config/local.compute": "type: local\nuserManagedEnvironment: false\n",
                   "s.py": "print(1)\n"})
    result = project.run("-c", "local", "s.py")
    assert result.returncode == 4, result.output
    assert "deps/nothere.yml" in result.output
    assert "Traceback" not in result.output


def test_environment_variable_scalars_keep_their_yaml_text(tmp_path):
    (tmp_path / "r.runconfig").write_text("EnvironmentVariables:\n  A: true\n  B: 3\n  C:\n  D: 0.5\n  E: 'x y'\n")
    rc = load_runconfig(tmp_path / "r.runconfig", tmp_path)
    assert rc.environment_variables == {"A": "true", "B": "3", "C": "", "D": "0.5", "E": "x y"}
