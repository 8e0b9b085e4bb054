"""The shipped examples work: examples/quickstart, examples/workbench_classic and every
conftest_examples/ folder, each run with the real CLI on the local target in a copy."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import REPO, Project


def copy_example(src: Path, dest: Path) -> Project:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".amlrun", "outputs", "__pycache__"))
    return Project(dest)


def test_quickstart_runs_with_plain_amlrun(tmp_path):
    proj = copy_example(REPO / "examples/quickstart", tmp_path / "quickstart")
    result = proj.run()
    assert result.returncode == 0, result.output
    assert "7 passed" in result.stdout and "warning" not in result.stderr
    recs = proj.records_by_cell()
    assert sorted(recs) == [
        "experiments/kmeans.py::local[k=2]",
        "experiments/kmeans.py::local[k=3]",
        "experiments/kmeans.py::local[k=4]",
        "experiments/linear_regression.py::local[lr=0.05-epochs=10]",
        "experiments/linear_regression.py::local[lr=0.05-epochs=40]",
        "experiments/linear_regression.py::local[lr=0.2-epochs=10]",
        "experiments/linear_regression.py::local[lr=0.2-epochs=40]",
    ]
    assert all(r["status"] == "completed" for r in recs.values())
    # real outcomes: more epochs fit better, 3 blobs are best split in 3+ clusters
    lin = {(r["params"]["lr"], r["params"]["epochs"]): r for cid, r in recs.items() if "linear" in cid}
    assert lin[(0.2, 40)]["metrics"]["final_mse"] < lin[(0.2, 10)]["metrics"]["final_mse"] < 1
    for (lr, epochs), rec in lin.items():
        model = json.loads((proj.run_dir(rec) / "outputs/model.json").read_text())
        assert (model["lr"], model["epochs"]) == (lr, epochs)
        series = [json.loads(line) for line in (proj.run_dir(rec) / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in series if m["name"] == "mse"] == list(range(epochs))
        assert "hello from local.runconfig" in (proj.run_dir(rec) / "log.txt").read_text()
    km = {r["params"]["k"]: r for cid, r in recs.items() if "kmeans" in cid}
    assert km[3]["metrics"]["inertia"] < km[2]["metrics"]["inertia"] / 2
    for k, rec in km.items():
        centroids = json.loads((proj.run_dir(rec) / "outputs/centroids.json").read_text())
        assert len(centroids) == k
    # the example's own tree is untouched: outputs went to the history only
    assert not (proj.root / "experiments/outputs").exists() and not (proj.root / "outputs").exists()


def test_workbench_classic_runs_unchanged_on_local(tmp_path):
    proj = copy_example(REPO / "examples/workbench_classic", tmp_path / "workbench_classic")
    home = tmp_path / "home"
    home.mkdir()
    result = proj.run("-c", "local", "-p", "reg=0.1,0.9", env={"HOME": str(home)})
    assert result.returncode == 0, result.output
    assert "2 passed" in result.stdout
    assert "warning" not in result.stderr  # every Workbench key (UseSampling too) is known
    recs = proj.records_by_cell()
    assert sorted(recs) == ["iris_classic.py::local[reg=0.1]", "iris_classic.py::local[reg=0.9]"]
    low, high = recs["iris_classic.py::local[reg=0.1]"], recs["iris_classic.py::local[reg=0.9]"]
    assert low["metrics"]["Regularization Rate"] == 0.1  # azureml.logging's logger reached the history
    assert low["metrics"]["Accuracy"] > 0.9 > high["metrics"]["Accuracy"]
    for rec in (low, high):
        folder = proj.run_dir(rec)
        with open(folder / "outputs/model.pkl", "rb") as fh:
            model = pickle.load(fh)
        assert sorted(model) == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]
        assert "EXAMPLE_ENV_VAR = Example Value" in (folder / "log.txt").read_text()
        assert any(a["path"] == "outputs/model.pkl" for a in rec["artifacts"])
    # nativeSharedDirectory: ~/.azureml/share/ → one folder per project and target, kept across runs
    shared = (home / ".azureml/share/workbench_classic/local/runs.txt").read_text().split()
    assert low["run_id"] in shared and high["run_id"] in shared


def test_conftest_example_grid_from_yaml(tmp_path):
    proj = copy_example(REPO / "conftest_examples/grid_from_yaml", tmp_path / "grid")
    plan = proj.run("--collect-only")
    assert plan.returncode == 0, plan.output
    ids = [line for line in plan.stdout.splitlines() if line.startswith("train.py::")]
    assert ids == [
        "train.py::local[optimizer=sgd-lr=0.01]",
        "train.py::local[optimizer=sgd-lr=0.1]",
        "train.py::local[optimizer=adam-lr=0.01]",
        "train.py::local[optimizer=adam-lr=0.1]",
        "train.py::local[optimizer=lbfgs-lr=1.0]",
    ]
    assert not (proj.root / ".amlrun/runs").exists() or not list((proj.root / ".amlrun/runs").iterdir())

    result = proj.run()
    assert result.returncode == 0, result.output
    assert "5 passed" in result.stdout
    scores = {cid: r["metrics"]["score"] for cid, r in proj.records_by_cell().items()}
    assert scores["train.py::local[optimizer=lbfgs-lr=1.0]"] == 3.0
    assert scores["train.py::local[optimizer=adam-lr=0.1]"] == 0.2

    # the generator reads the YAML at collection time: editing it changes the matrix
    (proj.root / "grid.yml").write_text("grid:\n  optimizer: [sgd]\n  lr: [0.5]\n")
    plan = proj.run("--collect-only")
    assert [ln for ln in plan.stdout.splitlines() if ln.startswith("train.py::")] == ["train.py::local[optimizer=sgd-lr=0.5]"]
    (proj.root / "grid.yml").write_text("grid:\n  lr: 0.5\n")
    bad = proj.run("--collect-only")
    assert bad.returncode == 4 and "grid.yml" in bad.stderr and "Traceback" not in bad.output


def test_conftest_example_skip_per_target(tmp_path):
    proj = copy_example(REPO / "conftest_examples/skip_per_target", tmp_path / "skipper")
    result = proj.run()  # default_targets: local and gpubox
    assert result.returncode == 0, result.output
    assert "3 passed, 1 skipped" in result.stdout
    assert "SKIPPED gpu_job.py::local" in result.stdout and "needs a GPU; target 'local' has none" in result.stdout
    recs = proj.records_by_cell()
    assert sorted(recs) == ["cpu_job.py::gpubox", "cpu_job.py::local", "gpu_job.py::gpubox"]
    assert recs["gpu_job.py::gpubox"]["metrics"] == {"device": "gpu", "target": "gpubox"}

    only_local = proj.run("-c", "local", "gpu_job.py")
    assert only_local.returncode == 0 and "1 skipped" in only_local.stdout


def test_conftest_example_markdown_report(tmp_path):
    proj = copy_example(REPO / "conftest_examples/markdown_report", tmp_path / "report")
    result = proj.run("-p", "threshold=0.5,0.99")
    assert result.returncode == 1, result.output  # one cell fails on purpose
    summary = proj.root / ".amlrun/summary.md"
    assert f"markdown summary: {summary}" in result.stdout
    text = summary.read_text()
    assert "exit status: 1" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    recs = proj.records_by_cell()
    assert rows == [
        f"| `evaluate.py::local[threshold=0.5]` | passed | {rows[0].split(' | ')[2]} | precision=0.75 | "
        f"{recs['evaluate.py::local[threshold=0.5]']['run_id']} |",
        f"| `evaluate.py::local[threshold=0.99]` | failed | {rows[1].split(' | ')[2]} | precision=0.995 | "
        f"{recs['evaluate.py::local[threshold=0.99]']['run_id']} |",
    ]

    # the option the root amlrunconf.py adds works
    custom = proj.run("--md-report", "reports/today.md")
    assert custom.returncode == 0, custom.output
    assert len([ln for ln in (proj.root / "reports/today.md").read_text().splitlines() if ln.startswith("| `")]) == 3


@pytest.mark.parametrize("folder", sorted(p.name for p in (REPO / "conftest_examples").iterdir() if p.is_dir()))
def test_every_conftest_example_has_a_conftest_and_collects(folder, tmp_path):
    proj = copy_example(REPO / "conftest_examples" / folder, tmp_path / folder)
    assert (proj.root / "amlrunconf.py").is_file()
    result = proj.run("--collect-only")
    assert result.returncode == 0, result.output
    assert "warning" not in result.stderr


def test_workbench_classic_configuration_reads_as_written(tmp_path):
    from amlrun.project import Project as AmlProject

    root = REPO / "examples/workbench_classic"
    project = AmlProject.discover(root, root)
    docker_rc = project.resolve_runconfig("docker")
    assert docker_rc.target == "docker" and docker_rc.prepare_environment is True
    compute = project.compute_target("docker")
    assert compute.type == "localdocker" and compute.flag("sharedVolumes") and not compute.flag("nvidiaDocker")
    conda = project.conda_dependencies(docker_rc)
    assert conda.python_version == "3.5.2" and conda.conda_packages == ("scikit-learn",)
    assert conda.pip_packages == ("azure-ml-api-sdk==0.1.0a10", "matplotlib")
    spark = project.spark_dependencies(docker_rc)
    assert spark.packages == ("com.microsoft.ml.spark:mmlspark_2.11:0.9.9",)
    assert spark.configuration["spark.yarn.maxAppAttempts"] == "1"

    # the localdocker alias resolves to the docker target type: the plan lists its cell
    proj = copy_example(root, tmp_path / "wb")
    plan = proj.run("-c", "docker", "-c", "local", "--collect-only", env={"HOME": str(tmp_path)})
    assert plan.returncode == 0, plan.output
    assert "microsoft/mmlspark:plus-0.9.9" in plan.stdout
    assert "iris_classic.py::docker" in plan.stdout and "iris_classic.py::local" in plan.stdout
    assert "warning" not in plan.stderr


def test_conftest_example_fixed_order_replaces_the_run_loop(tmp_path):
    proj = copy_example(REPO / "conftest_examples/fixed_order", tmp_path / "fixed")
    result = proj.run("-n", "4")
    assert result.returncode == 0, result.output
    order = ["prepare.py::local", "train.py::local[lr=0.1]", "train.py::local[lr=0.01]", "evaluate.py::local"]
    log = (proj.root / ".amlrun/run_order.log").read_text().splitlines()
    assert log == [f"{cell_id} passed" for cell_id in order]
    passed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("PASSED ")]
    assert passed == order  # the terminal saw them in that order: one at a time, despite -n 4
    recs = sorted(proj.records_by_cell().values(), key=lambda r: r["started"])
    assert [r["cell_id"] for r in recs] == order
    for earlier, later in zip(recs, recs[1:]):
        assert earlier["ended"] <= later["started"], "the example's loop runs one cell at a time"
    assert "4 passed" in result.stdout

    # it honours -x like the built-in loop: the first failure stops it
    proj.write({"prepare.py": "import sys\nsys.exit(3)\n"})
    stopped = proj.run("-x")
    assert stopped.returncode == 1, stopped.output
    assert (proj.root / ".amlrun/run_order.log").read_text().splitlines() == ["prepare.py::local failed"]
    assert "stopping after 1 failure" in stopped.stdout


def test_conftest_example_summary_section_adds_to_the_terminal_summary(tmp_path):
    proj = copy_example(REPO / "conftest_examples/summary_section", tmp_path / "summary")
    result = proj.run()
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "best accuracy" in line and line.startswith("---"))
    assert lines[start + 1] == "train.py::local[depth=4]: accuracy=1 (of 3 cells)"
    assert "3 passed" in lines[-1] and start < len(lines) - 1  # before the final line

    by_depth = proj.run("--best-metric", "depth")
    assert by_depth.returncode == 0, by_depth.output
    assert "train.py::local[depth=8]: depth=8 (of 3 cells)" in by_depth.stdout
