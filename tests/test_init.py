"""``amlrun init``: the scaffold is complete, valid, runs at once, and never clobbers files."""

from __future__ import annotations

import json

from conftest import Project

from amlrun.config import load_compute, load_conda_dependencies, load_runconfig, load_spark_dependencies

SCAFFOLD = [
    "aml_config/local.compute",
    "aml_config/local.runconfig",
    "aml_config/docker.compute",
    "aml_config/docker.runconfig",
    "aml_config/conda_dependencies.yml",
    "aml_config/spark_dependencies.yml",
    "experiments/train.py",
    "pyproject.toml",
    ".gitignore",
]


def test_init_scaffolds_a_project_that_runs(tmp_path):
    result = Project(tmp_path).run("init", "newproj")
    assert result.returncode == 0, result.output
    root = tmp_path / "newproj"
    for rel in SCAFFOLD:
        assert (root / rel).is_file(), rel
        assert rel in result.stdout  # it says what it wrote
    assert "cd newproj && amlrun" in result.stdout  # and what to run next

    # the files are what amlrun's own readers expect, Workbench-shaped
    local = load_compute(root / "aml_config/local.compute", root)
    docker = load_compute(root / "aml_config/docker.compute", root)
    assert local.type == "local"
    assert docker.type == "docker" and docker.get("baseDockerImage") and docker.flag("sharedVolumes") is True
    for name in ("local", "docker"):
        rc = load_runconfig(root / f"aml_config/{name}.runconfig", root)
        assert rc.target == name and rc.argument_vector == ("$file",) and rc.framework == "Python"
        assert rc.conda_dependencies_file == "aml_config/conda_dependencies.yml"
        assert rc.environment_variables == {"EXAMPLE_ENV_VAR": "Example Value"}
    conda = load_conda_dependencies(root / "aml_config/conda_dependencies.yml", root)
    assert conda.python_version == "3.11" and conda.pip_packages == ()
    load_spark_dependencies(root / "aml_config/spark_dependencies.yml", root)
    assert "[tool.amlrun]" in (root / "pyproject.toml").read_text()
    ignored = (root / ".gitignore").read_text().splitlines()
    assert ".amlrun/" in ignored and "outputs/" in ignored

    # the next command it printed works: 2 cells, metrics and outputs in the history
    run = Project(root).run()
    assert run.returncode == 0, run.output
    assert "2 passed" in run.stdout
    assert "warning" not in run.stderr
    recs = Project(root).records()
    assert sorted(r["cell_id"] for r in recs) == [
        "experiments/train.py::local[lr=0.05-epochs=20]",
        "experiments/train.py::local[lr=0.1-epochs=20]",
    ]
    for rec in recs:
        assert rec["status"] == "completed"
        assert rec["metrics"]["final_loss"] < 5
        model = json.loads((root / ".amlrun/runs" / rec["run_id"] / "outputs/model.json").read_text())
        assert model["lr"] == rec["params"]["lr"]
        log = (root / ".amlrun/runs" / rec["run_id"] / "log.txt").read_text()
        assert "EXAMPLE_ENV_VAR='Example Value'" in log  # local.runconfig's variables reached the run


def test_init_in_the_current_folder_prints_plain_next_command(tmp_path):
    result = Project(tmp_path).run("init")
    assert result.returncode == 0, result.output
    assert "Next: amlrun" in result.stdout
    assert (tmp_path / "aml_config/local.compute").is_file()


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments/train.py").write_text("print('mine')\n")
    result = Project(tmp_path).run("init")
    assert result.returncode == 4
    assert "experiments/train.py" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.output
    assert (tmp_path / "experiments/train.py").read_text() == "print('mine')\n"
    assert not (tmp_path / "aml_config").exists()
    assert not (tmp_path / "pyproject.toml").exists()

    forced = Project(tmp_path).run("init", "--force")
    assert forced.returncode == 0, forced.output
    assert "overwrote experiments/train.py" in " ".join(forced.stdout.split())
    assert "AMLRUN_PARAMS" in (tmp_path / "experiments/train.py").read_text()


def test_init_extends_existing_pyproject_and_gitignore(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "mine"\nversion = "1.0"\n')
    (tmp_path / ".gitignore").write_text("outputs/\n*.log")
    result = Project(tmp_path).run("init")
    assert result.returncode == 0, result.output
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert pyproject.startswith('[project]\nname = "mine"') and "[tool.amlrun]" in pyproject
    from amlrun.project import toml_parser

    tomllib = toml_parser()  # tomllib, or tomli on Python 3.10

    assert tomllib.loads(pyproject)["tool"]["amlrun"]["experiment_paths"] == ["experiments"]
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines.count("outputs/") == 1 and "*.log" in lines and ".amlrun/" in lines

    again = Project(tmp_path).run("init")  # now everything exists: refused, one line
    assert again.returncode == 4 and "pyproject.toml ([tool.amlrun])" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_init_folder_with_spaces_and_non_ascii(tmp_path):
    result = Project(tmp_path).run("init", "my prøj")
    assert result.returncode == 0, result.output
    assert "cd 'my prøj' && amlrun" in result.stdout
    from amlrun.project import toml_parser

    tomllib = toml_parser()

    assert tomllib.loads((tmp_path / "my prøj/pyproject.toml").read_text())["project"]["name"] == "my-pr-j"
    run = Project(tmp_path / "my prøj").run("-q")
    assert run.returncode == 0 and "2 passed" in run.stdout, run.output


def test_init_custom_docker_image_and_bad_directory(tmp_path):
    result = Project(tmp_path).run("init", "p", "--docker-image", "mybase:1")
    assert result.returncode == 0, result.output
    compute = load_compute(tmp_path / "p/aml_config/docker.compute", tmp_path / "p")
    assert compute.get("baseDockerImage") == "mybase:1"

    (tmp_path / "afile").write_text("x")
    bad = Project(tmp_path).run("init", "afile")
    assert bad.returncode == 4 and "afile exists and is not a directory" in bad.stderr


def test_init_docker_target_runs_in_a_real_container(tmp_path):
    """The scaffold's docker.compute/docker.runconfig work as written (base image swapped
    for the locally built test image: no registry is reachable here)."""
    from dockerhelp import BASE, engine

    engine()
    result = Project(tmp_path).run("init", "dockproj", "--docker-image", BASE)
    assert result.returncode == 0, result.output
    root = tmp_path / "dockproj"
    run = Project(root).run("-c", "docker", timeout=900)
    assert run.returncode == 0, run.output
    assert "2 passed" in run.stdout
    for rec in run.records:
        assert rec["target_type"] == "docker" and rec["status"] == "completed"
        assert json.loads((run.run_dir(rec) / "outputs/model.json").read_text())["epochs"] == 20
        assert "EXAMPLE_ENV_VAR='Example Value'" in (run.run_dir(rec) / "log.txt").read_text()
