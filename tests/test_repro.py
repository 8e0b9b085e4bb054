"""Reproducibility checks through the real CLI on the local target: --repeat, baselines,
environment recording and ``amlrun history diff``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from amlrun import baseline as bl
from amlrun.errors import ConfigError

DETERMINISTIC = """
    import os
    from amlrun_client import log
    log("accuracy", 0.9)
    log("loss", 0.25)
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write("weights 1 2 3\\n")
"""

UNSEEDED = """
    import os, random
    from amlrun_client import log
    log("accuracy", random.random())
    log("steps", 100)
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write(str(random.random()))
"""

SEEDED = """
    import os, random
    from amlrun_client import log
    random.seed(int(os.environ["AMLRUN_SEED"]))
    log("accuracy", random.random())
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write(str(random.random()))
"""


# -- --repeat --------------------------------------------------------------------------------


def test_deterministic_experiment_passes_repeat_3(project):
    project.write({"train.py": DETERMINISTIC})
    result = project.run("--repeat", "3")
    assert result.returncode == 0, result.output
    for k in (1, 2, 3):
        assert f"PASSED train.py::local#{k}" in result.stdout
    assert "repeat check: 3 consistent, 0 differ (AMLRUN_SEED=0)" in result.stdout
    assert len(project.records()) == 3


def test_unseeded_random_fails_repeat_with_a_table_of_what_moved(project):
    project.write({"train.py": UNSEEDED})
    result = project.run("--repeat", "3")
    assert result.returncode == 1, result.output
    assert "PASSED train.py::local#1" in result.stdout
    assert "FAILED train.py::local#2" in result.stdout and "FAILED train.py::local#3" in result.stdout
    # the table: header, the moved metric and artifact with their diff; the steady metric is not in it
    out = result.stdout
    assert "metric/artifact    first run" in out
    table_rows = [line for line in out.splitlines() if line.startswith("  accuracy ")]
    assert table_rows and "%" in table_rows[0] and "exact" in table_rows[0]
    assert any(line.startswith("  outputs/model.txt ") for line in out.splitlines())
    assert not any(line.startswith("  steps ") for line in out.splitlines())
    assert "FAILED train.py::local#2 - metric moved beyond tolerance vs first run train.py::local#1: accuracy (" in out
    assert "repeat check: 1 consistent, 2 differ" in out
    failed = [r for r in project.records() if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["exit_code"] == 0 for r in failed)
    moved = failed[0]["extra"]["repro"]["repeat"]["moved"]
    assert {m["name"] for m in moved} == {"accuracy", "outputs/model.txt"}


def test_seeding_from_AMLRUN_SEED_passes_repeat(project):
    project.write({"train.py": SEEDED})
    result = project.run("--repeat", "3")
    assert result.returncode == 0, result.output
    result = project.run("--repeat", "2", "--seed", "7")
    assert result.returncode == 0, result.output
    assert "AMLRUN_SEED=7" in result.stdout
    by_seed = sorted({r["metrics"]["accuracy"] for r in project.records()})
    assert len(by_seed) == 2, by_seed  # seed 0 and seed 7 give different, individually stable values


def test_repeat_compares_targets_and_honours_tolerances(project):
    project.write({
        "aml_config/other.compute": "type: local\n",
        "train.py": """
            import os
            from amlrun_client import log
            log("accuracy", 0.9 if os.environ["AMLRUN_TARGET"] == "local" else 0.905)
            log("seconds", 1.0 if os.environ["AMLRUN_TARGET"] == "local" else 3.0)
        """,
    })
    result = project.run("-c", "local", "-c", "other", "--repeat", "1")
    assert result.returncode == 1, result.output
    assert "FAILED train.py::other - metrics moved beyond tolerance vs first run train.py::local" in result.stdout
    project.write({"pyproject.toml": """
        [tool.amlrun.tolerances]
        accuracy = { abs = 0.01 }
        seconds = "any"
    """})
    result = project.run("-c", "local", "-c", "other", "--repeat", "1")
    assert result.returncode == 0, result.output


# -- baselines --------------------------------------------------------------------------------


TRAIN_V1 = """
    import os, random
    from amlrun_client import log
    log("accuracy", 0.90)
    log("loss", 0.25)
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write("weights\\n")
    open("outputs/plot.svg", "w").write(str(random.random()))
"""


def test_baseline_save_then_a_moved_metric_fails_and_junit_names_it(project):
    project.write({
        "train.py": TRAIN_V1,
        "pyproject.toml": """
            [tool.amlrun]
            [tool.amlrun.tolerances]
            accuracy = { abs = 0.01 }
            "outputs/*.svg" = "any"
        """,
    })
    assert project.run().returncode == 0
    saved = project.run("baseline", "save")
    assert saved.returncode == 0, saved.output
    assert "added train.py::local" in saved.stdout
    entry = bl.load(project.root / "amlrun-baseline.yml").get("train.py::local")
    assert entry.metrics == {"accuracy": 0.9, "loss": 0.25}
    assert set(entry.artifacts) == {"outputs/model.txt", "outputs/plot.svg"}
    assert len(entry.artifacts["outputs/model.txt"]) == 64

    shown = project.run("baseline", "show")
    assert shown.returncode == 0 and "accuracy" in shown.stdout and "abs 0.01" in shown.stdout

    # unchanged code: passes (the non-deterministic plot is declared 'any')
    result = project.run("--check-baseline")
    assert result.returncode == 0, result.output
    assert "baseline check: 1 matched, 0 moved, 0 without baseline" in result.stdout

    # within tolerance: passes
    project.write({"train.py": TRAIN_V1.replace("0.90", "0.905")})
    result = project.run("--check-baseline")
    assert result.returncode == 0, result.output

    # beyond tolerance: exit 1, a table, and the JUnit failure names the metric
    project.write({"train.py": TRAIN_V1.replace("0.90", "0.85")})
    result = project.run("--check-baseline", "--junitxml", "reports/junit.xml", "--report-json", "reports/r.json")
    assert result.returncode == 1, result.output
    assert "accuracy           0.9         0.85      -0.05" in result.stdout
    assert "abs 0.01" in result.stdout
    case = ET.parse(project.root / "reports" / "junit.xml").getroot().find(".//testcase")
    failure = case.find("failure")
    assert failure is not None
    assert "accuracy (0.9 -> 0.85" in failure.get("message")
    assert "accuracy" in failure.text and "-0.05" in failure.text
    report = json.loads((project.root / "reports" / "r.json").read_text())
    moved = report["cells"][0]["record"]["extra"]["repro"]["baseline"]["moved"]
    assert moved == [{"name": "accuracy", "kind": "metric", "expected": 0.9, "actual": 0.85,
                      "diff": pytest.approx(-0.05), "rel": pytest.approx(-0.05 / 0.9), "tolerance": "abs 0.01",
                      "note": ""}]

    # accepting the new value: the run failed only by the check, so it can become the baseline
    saved = project.run("baseline", "save")
    assert saved.returncode == 0, saved.output
    assert bl.load(project.root / "amlrun-baseline.yml").get("train.py::local").metrics["accuracy"] == 0.85
    assert project.run("--check-baseline").returncode == 0


def test_changed_artifact_fails_unless_declared_nondeterministic(project):
    project.write({"train.py": DETERMINISTIC})
    assert project.run().returncode == 0
    assert project.run("baseline", "save").returncode == 0
    project.write({"train.py": DETERMINISTIC.replace("weights 1 2 3", "weights 1 2 4")})
    result = project.run("--check-baseline")
    assert result.returncode == 1
    assert "artifact changed vs baseline: outputs/model.txt (sha256 " in result.stdout
    text = (project.root / "amlrun-baseline.yml").read_text()
    text = text.replace(text.split("outputs/model.txt: ")[1].split("\n")[0], "nondeterministic")
    (project.root / "amlrun-baseline.yml").write_text(text)
    assert project.run("--check-baseline").returncode == 0


def test_missing_baselines_are_reported_not_passed(project):
    project.write({"a.py": DETERMINISTIC, "b.py": DETERMINISTIC})
    result = project.run("--check-baseline")
    assert result.returncode == 4
    assert "no baseline file amlrun-baseline.yml" in result.stderr and "Traceback" not in result.output

    assert project.run("a.py").returncode == 0
    assert project.run("baseline", "save", "a.py").returncode == 0
    result = project.run("--check-baseline")
    assert result.returncode == 1, result.output
    assert "PASSED a.py::local" in result.stdout
    assert "FAILED: no baseline for b.py::local" in result.stdout
    assert "FAILED b.py::local - no baseline for b.py::local in amlrun-baseline.yml" in result.stdout

    result = project.run("--check-baseline", "--baseline-missing=warn")
    assert result.returncode == 0, result.output
    assert "warning: no baseline for b.py::local" in result.stdout


def test_baseline_save_reports_cells_without_runs_and_bad_files(project):
    project.write({"a.py": DETERMINISTIC})
    result = project.run("baseline", "save")
    assert result.returncode == 1
    assert "no completed run of a.py::local in the history" in result.stdout
    project.write({"amlrun-baseline.yml": "version: 1\ncells:\n  a.py::local:\n    metrics: [1, 2\n"})
    result = project.run("--check-baseline")
    assert result.returncode == 4
    assert result.stderr.startswith("amlrun: error: amlrun-baseline.yml:") and "Traceback" not in result.stderr
    project.write({"amlrun-baseline.yml": "version: 1\ntolerances:\n  accuracy: {absolute: 1}\ncells: {}\n"})
    result = project.run("--check-baseline")
    assert result.returncode == 4
    assert "tolerance for 'accuracy': unknown key 'absolute'" in result.stderr


def test_save_a_named_run_and_checks_refuse_reuse(project):
    project.write({"train.py": SEEDED})
    assert project.run("--seed", "3").returncode == 0
    assert project.run("--seed", "4").returncode == 0
    first = project.records()[0]
    saved = project.run("baseline", "save", "--run", first["run_id"][:21])
    assert saved.returncode == 0, saved.output
    assert f"added train.py::local: run {first['run_id']}" in saved.stdout
    assert project.run("--check-baseline", "--seed", "3").returncode == 0
    moved = project.run("--check-baseline", "--seed", "4")
    assert moved.returncode == 1 and "accuracy (" in moved.stdout
    # `amlrun repro` is the same check
    assert project.run("repro", "--seed", "3").returncode == 0
    again = project.run("repro", "--seed", "4")
    assert again.returncode == 1 and "accuracy (" in again.stdout
    result = project.run("--check-baseline", "--reuse")
    assert result.returncode == 4 and "cannot be combined with --reuse" in result.stderr


@pytest.mark.parametrize("spec, reference, value, ok", [
    (0.01, 0.9, 0.91, True), (0.01, 0.9, 0.911, False), ("5%", 2.0, 2.1, True), ("5%", 2.0, 2.11, False),
    ({"abs": 0.1, "rel": 0.5}, 10.0, 14.9, True), ({"abs": 0.1, "rel": 0.5}, 0.0, 0.2, False),
    ("any", 1.0, 99.0, True), ({}, 0.3, 0.1 + 0.2, False), ({}, float("nan"), float("nan"), True),
])
def test_tolerances(spec, reference, value, ok):
    assert bl.parse_tolerance("m", spec, "here").accepts(reference, value) is ok


def test_bad_tolerance_names_where():
    with pytest.raises(ConfigError, match=r"pyproject.toml: tolerance 'm' must be a non-negative number"):
        bl.parse_tolerance("m", -1, "pyproject.toml")
    with pytest.raises(ConfigError, match="expected a number, 'N%'"):
        bl.parse_tolerance("m", "loose", "f.yml")


# -- environment drift -------------------------------------------------------------------------


def test_every_run_records_its_environment(project):
    project.write({"train.py": DETERMINISTIC})
    assert project.run().returncode == 0
    (record,) = project.records()
    text = (project.root / ".amlrun" / "runs" / record["run_id"] / "environment.txt").read_text()
    assert text.startswith("# python: ")
    assert "pytest==" in text  # the interpreter running amlrun's tests has pytest installed
    import hashlib

    assert record["extra"]["environment_packages"] == hashlib.sha256(text.encode()).hexdigest()
    cached = project.root / ".amlrun" / "environments" / f"{record['environment_digest']}.txt"
    assert cached.read_text() == text


def test_history_diff_names_the_package_whose_version_changed(project):
    project.write({
        "aml_config/venv.compute": "type: local\nuserManagedEnvironment: false\n",
        "aml_config/conda_dependencies.yml": "name: p\ndependencies:\n  - pip:\n    - six==1.16.0\n",
        "train.py": "import six\nfrom amlrun_client import log\nlog('accuracy', 0.5)\n",
    })
    first = project.run("-c", "venv")
    assert first.returncode == 0, first.output
    project.write({"aml_config/conda_dependencies.yml": "name: p\ndependencies:\n  - pip:\n    - six==1.17.0\n"})
    second = project.run("-c", "venv")
    assert second.returncode == 0, second.output
    a, b = (r["run_id"] for r in project.records())
    result = project.run("history", "diff", a, b)
    assert result.returncode == 0, result.output
    out = result.stdout
    assert "changed: code, environment" in out
    assert "~ six 1.16.0 -> 1.17.0" in out
    assert "-    - six==1.16.0" in out and "+    - six==1.17.0" in out
    packages = [line for line in out.split("== environment")[1].split("== metrics")[0].splitlines()
                if line.startswith(("~", "+", "-"))]
    assert packages == ["~ six 1.16.0 -> 1.17.0"]
    data = json.loads(project.run("history", "diff", a, b, "--format", "json").stdout)
    assert data["environment"]["packages"] == [{"name": "six", "a": "1.16.0", "b": "1.17.0"}]
    assert data["metrics"] == []
    assert project.run("history", "diff", a, b, "--exit-code").returncode == 1
    assert project.run("history", "diff", a, a, "--exit-code").returncode == 0


# -- the CI recipe ------------------------------------------------------------------------------


def test_ci_example_workflow_check_step_passes_on_the_quickstart(tmp_path):
    """Run the workflow's check step as GitHub would (its shell command, its working folder)."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    workflow = yaml.safe_load((REPO / "examples/ci/github-actions.yml").read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["repro"]["steps"]}
    check = steps["Reproducibility check"]
    assert "--check-baseline" in check["run"] and "--junitxml" in check["run"] and "--html" in check["run"]
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps.values())
    workspace = tmp_path / "ws"
    for name in ("quickstart", "ci"):
        shutil.copytree(REPO / "examples" / name, workspace / "examples" / name,
                        ignore=shutil.ignore_patterns(".amlrun", "outputs", "__pycache__"))
    env = {**os.environ, "GITHUB_WORKSPACE": str(workspace), **workflow["jobs"]["repro"]["env"],
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "-e", "-c", check["run"]], cwd=workspace / check["working-directory"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "baseline check: 14 matched, 0 moved, 0 without baseline" in proc.stdout
    junit = ET.parse(workspace / "reports" / "junit.xml").getroot()
    assert junit.get("tests") == "14" and junit.get("failures") == "0"
    assert (workspace / "reports" / "report.html").stat().st_size > 0


@pytest.mark.docker
def test_repeat_across_local_and_docker_and_the_environment_of_each(project):
    """The freeze script runs through each target's own execute: a container's packages are its own."""
    from dockerhelp import BASE, engine

    engine()
    project.write({"aml_config/docker.compute": f"type: docker\nbaseDockerImage: {BASE}\n", "train.py": SEEDED})
    result = project.run("-c", "local", "-c", "docker", "--repeat", "2", timeout=600)
    assert result.returncode == 0, result.output
    assert "repeat check: 4 consistent, 0 differ" in result.stdout
    by_cell = {r["cell_id"]: r for r in project.records()}
    local, docker = by_cell["train.py::local#1"], by_cell["train.py::docker#1"]
    texts = {name: (project.root / ".amlrun" / "runs" / r["run_id"] / "environment.txt").read_text()
             for name, r in (("local", local), ("docker", docker))}
    assert "pytest==" in texts["local"] and "pytest==" not in texts["docker"]
    diff = project.run("history", "diff", local["run_id"], docker["run_id"], "--name-only")
    assert diff.returncode == 0, diff.output
    assert "changed: target, environment" in diff.stdout
    assert "target_type: local -> docker" in diff.stdout and "- pytest " in diff.stdout
