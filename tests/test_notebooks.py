"""Notebook experiments: collected like scripts, run through papermill on local and docker
(managed environments that get the executor from PyPI), parameters injected into the
``parameters`` cell, the executed notebook kept, outputs and metrics in the log and the
history, a failing cell shown as the failure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dockerhelp import BASE, engine


def notebook(*cells: tuple[str, str] | str, kernel: str = "iris_local") -> str:
    """A notebook document; a cell is its source, or (tag, source)."""
    built = []
    for cell in cells:
        tag, source = cell if isinstance(cell, tuple) else ("", cell)
        if tag == "markdown":
            built.append({"cell_type": "markdown", "metadata": {}, "source": source})
            continue
        built.append({"cell_type": "code", "execution_count": None, "outputs": [],
                      "metadata": {"tags": [tag]} if tag else {}, "source": source.splitlines(keepends=True)})
    # a Workbench notebook names a kernel that exists only in Workbench: amlrun ignores it
    return json.dumps({"cells": built, "nbformat": 4, "nbformat_minor": 4,
                       "metadata": {"kernelspec": {"name": kernel, "display_name": "Iris local", "language": "python"}}})


TRAIN = notebook(
    ("markdown", "# Train\nThe parameters cell below is overridden per run."),
    ("parameters", "lr = 0.5\nepochs = 2\n"),
    "%load_ext autoreload\nAMLRUN_PARAMS = {'epochs': [1, 2]}\n",
    "from amlrun_client import log\nimport subprocess\n"
    "print('training with', lr, type(lr).__name__, epochs, end='')\n"   # no newline: the metric starts a line
    "for e in range(epochs):\n    log('loss', lr / (e + 1), step=e)\n"
    "log('accuracy', 1 - lr)\nsubprocess.run(['echo', 'from a subprocess'])\n",
    "if lr > 0.2:\n    raise ValueError('lr too high: %s' % lr)\nprint('done')\n",
)


def records(project) -> list[dict]:
    listed = project.run("history", "list", "--format", "json")
    assert listed.returncode == 0, listed.output
    return json.loads(listed.stdout)


def executed(project, record: dict, name: str = "train.ipynb") -> dict:
    path = project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / name
    return json.loads(path.read_text(encoding="utf-8"))


def test_collected_by_default_with_static_parameters(project):
    project.write({
        "train.ipynb": TRAIN,
        "notes/scratch.ipynb": notebook("print(1)"),
        "notes/.ipynb_checkpoints/scratch-checkpoint.ipynb": notebook("print(1)"),
        "plain.py": "print('script')\n",
    })
    result = project.run("--collect-only", "-p", "lr=0.1")
    assert result.returncode == 0, result.output
    cells = [line for line in result.stdout.splitlines() if "::" in line]
    assert cells == ["plain.py::local[lr=0.1]", "train.ipynb::local[epochs=1-lr=0.1]",
                     "train.ipynb::local[epochs=2-lr=0.1]", "notes/scratch.ipynb::local[lr=0.1]"]
    # configurable like experiment_files
    project.write({"pyproject.toml": '[tool.amlrun]\nnotebook_files = ["train*.ipynb"]\n'})
    cells = [line for line in project.run("--collect-only").stdout.splitlines() if "::" in line]
    assert cells == ["plain.py::local", "train.ipynb::local[epochs=1]", "train.ipynb::local[epochs=2]"]
    project.write({"pyproject.toml": "[tool.amlrun]\nnotebook_files = []\n"})
    cells = [line for line in project.run("--collect-only").stdout.splitlines() if "::" in line]
    assert cells == ["plain.py::local"]


def test_unreadable_notebooks_are_one_line_collection_errors(project):
    """As for a script: the notebook is its own 'ERROR collecting' line, exit 1, no traceback."""
    cases = [
        ('{"cells": [', "broken.ipynb: not a readable notebook (invalid JSON"),
        (notebook("print(1)", "AMLRUN_PARAMS = {'a': [1,\n"), "broken.ipynb cell 2"),
        (notebook("AMLRUN_PARAMS = {'a': make()}\n"), "must be a literal"),
    ]
    for text, expected in cases:
        project.write({"broken.ipynb": text, "fine.ipynb": notebook("print(1)")})
        result = project.run("--collect-only")
        assert result.returncode == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("ERROR collecting broken.ipynb")]
        assert errors and expected in errors[0], result.output
        assert "fine.ipynb::local" in result.stdout and "Traceback" not in result.output


def sweep(project, *targets: str, timeout: float = 1200):
    """``-p lr=0.1,0.5 -k epochs=2`` over TRAIN on ``targets``; checks what the issue asks of
    every target: each run's executed notebook in the history, its metrics in ``history
    list``, cell output streamed to the log, a failing cell as the failure."""
    argv = [part for target in targets for part in ("-c", target)]
    result = project.run(*argv, "-p", "lr=0.1,0.5", "-k", "epochs=2", "-n", "2", timeout=timeout)
    assert result.returncode == 1, result.output  # lr=0.5 fails in its last cell, on every target
    runs = records(project)
    assert len(runs) == 2 * len(targets)
    by_cell = {r["cell_id"]: r for r in runs}
    for target in targets:
        good = by_cell[f"train.ipynb::{target}[epochs=2-lr=0.1]"]
        bad = by_cell[f"train.ipynb::{target}[epochs=2-lr=0.5]"]
        assert good["status"] == "completed" and bad["status"] == "failed"
        assert good["metrics"] == {"loss": 0.05, "accuracy": 0.9}
        assert bad["metrics"] == {"loss": 0.25, "accuracy": 0.5}  # logged before the failing cell
        for record, lr in ((good, 0.1), (bad, 0.5)):
            check_executed_run(project, record, lr)
        assert "done" in (project.root / ".amlrun" / "runs" / good["run_id"] / "log.txt").read_text()
    # the failure section: the failing cell, its error and its traceback
    failures = result.stdout.split("FAILURES", 1)[1]
    assert "train.ipynb: cell 5 (In [" in failures and "failed: ValueError: lr too high: 0.5" in failures
    assert "----> 2     raise ValueError" in failures
    listed = project.run("history", "list")
    assert "loss" in listed.stdout.splitlines()[0] and "accuracy" in listed.stdout.splitlines()[0]
    return result


def check_executed_run(project, record: dict, lr: float) -> None:
    """The run's executed notebook (parameters injected after the ``parameters`` cell, typed
    as papermill types them) is an artifact, and its cell output is in the run's log."""
    assert "outputs/train.ipynb" in [a["path"] for a in record["artifacts"]]
    document = executed(project, record)
    injected = [c for c in document["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and f"lr = {lr}" in "".join(injected[0]["source"])
    tags = [c["metadata"].get("tags", []) for c in document["cells"]]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    texts = ["".join(o.get("text", "")) for c in document["cells"] for o in c.get("outputs", [])]
    assert any(f"training with {lr} float 2" in t for t in texts)  # typed as papermill's -p types
    log = (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    assert f"training with {lr} float 2\n##amlrun-metric" in log  # cell output streamed to the log
    assert log.count('"name": "accuracy"') == 1 and "from a subprocess" in log


def test_sweep_on_local_and_docker(project):
    """The issue's check on local and docker (managed environments: amlrun adds papermill
    and ipykernel, from PyPI, because a notebook runs)."""
    engine()
    project.write({
        "train.ipynb": TRAIN,
        "aml_config/local.compute": "type: local\nuserManagedEnvironment: false\n",
        "aml_config/docker.compute": f"type: docker\nbaseDockerImage: {BASE}\n",
    })
    sweep(project, "local", "docker")


def test_metrics_of_a_notebook_go_with_their_cell(project):
    """A metric line in a kernel is sent with its cell's own output, not through file
    descriptor 1: the kernel reads that on a thread of its own, so a line written there as a
    cell ended could arrive after it, and the executor dropped it (a sweep in CI once had no
    metrics). Shown deterministically: the last cell silences descriptor 1, as a C library's
    noise filter does, and every point of it is still recorded, in order."""
    logged = ("import os\nfrom amlrun_client import log\nsaved = os.dup(1)\n"
              "os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
              "for i in range(40):\n    log('m', i, step=i)\nos.dup2(saved, 1)\n")
    project.write({
        "last.ipynb": notebook("x = 1", logged),
        "aml_config/local.compute": "type: local\nuserManagedEnvironment: false\n",
    })
    result = project.run("-c", "local", "last.ipynb", timeout=1200)
    assert result.returncode == 0, result.output
    (record,) = result.records
    assert record["metrics"] == {"m": 39}
    points = project.root / ".amlrun" / "runs" / record["run_id"] / "metrics.jsonl"
    assert [json.loads(line)["step"] for line in points.read_text().splitlines()] == list(range(40))


@pytest.mark.timeout(1800)  # the VM's environment is built with papermill from PyPI
def test_sweep_on_a_remote_vm(project, sshd):
    """The same on the ``remote`` target (a real sshd; the VM's managed environment gets the
    executor from PyPI, as a local one does)."""
    project.write({
        "train.ipynb": TRAIN,
        "aml_config/vm.compute": sshd.compute_yaml(extra="userManagedEnvironment: false\n"),
    })
    sweep(project, "vm")


SPARK_NOTEBOOK = notebook(
    ("parameters", "n = 10\n"),
    "from pyspark.sql import SparkSession\nfrom amlrun_client import log\n"
    "spark = SparkSession.builder.getOrCreate()\n"
    "total = spark.sparkContext.parallelize(range(n), 2).map(lambda x: x * 2).sum()\n"
    "print('sum of doubles', total)\nlog('total', total)\n"
    "log('master', spark.sparkContext.master)\n",
    "spark.stop()\nif n > 10:\n    raise ValueError('n too big: %s' % n)\n",
)


@pytest.mark.spark
@pytest.mark.timeout(2400)  # a managed environment with papermill, then two Spark applications
def test_sweep_on_the_spark_cluster(project, spark_cluster):
    """A notebook on the ``cluster`` target: spark-submit runs the notebook runner as the
    driver, its kernel inherits the driver's gateway, so the notebook's SparkSession is the
    application's and its work runs on the cluster's executors."""
    from spark_fixture import SPARK_ENV

    project.write({
        "sparknb.ipynb": SPARK_NOTEBOOK,
        "aml_config/spark.compute": spark_cluster.compute_yaml(),  # managed: the executor is added
        "aml_config/spark.runconfig": "ArgumentVector: [\"$file\"]\nTarget: spark\nFramework: PySpark\n",
    })
    result = project.run("-c", "spark", "-p", "n=10,20", env=SPARK_ENV, timeout=2000)
    assert result.returncode == 1, result.output
    by_cell = {r["cell_id"]: r for r in records(project)}
    good, bad = by_cell["sparknb.ipynb::spark[n=10]"], by_cell["sparknb.ipynb::spark[n=20]"]
    assert (good["status"], bad["status"]) == ("completed", "failed")
    assert good["metrics"] == {"total": 90, "master": spark_cluster.master}
    assert bad["metrics"]["total"] == 380
    assert good["extra"].get("spark_app_id", "").startswith("app-"), good["extra"]
    document = executed(project, good, "sparknb.ipynb")
    texts = ["".join(o.get("text", "")) for c in document["cells"] for o in c.get("outputs", [])]
    assert any("sum of doubles 90" in t for t in texts)
    assert "failed: ValueError: n too big: 20" in result.stdout.split("FAILURES", 1)[1]


def test_a_user_managed_environment_without_the_executor_says_so(project, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    project.write({
        "train.ipynb": TRAIN,
        "aml_config/bare.compute": f"type: local\npythonLocation: {bare / 'bin' / 'python'}\n",
    })
    result = project.run("-c", "bare", "-k", "epochs=1")
    assert result.returncode == 1, result.output
    lines = [line for line in result.stdout.splitlines() if "needs papermill and ipykernel" in line]
    assert len(lines) == 1 and "train.ipynb is a notebook" in lines[0] and str(bare) in lines[0]
    assert "Traceback" not in result.output


def test_a_plain_run_imports_nothing_of_notebooks(project):
    project.write({"a.py": "print('hi')\n"})
    code = ("import sys\nfrom amlrun.cli import main\nstatus = main(['a.py', '-q'])\n"
            "print('loaded', sorted(m for m in sys.modules if 'notebook' in m or m.split('.')[0] in "
            "('papermill', 'nbformat', 'nbclient', 'jupyter_client')), status)")
    result = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "loaded [] 0" in result.stdout


@pytest.mark.parametrize("argv, expected", [
    (["nb.ipynb"], {}),
    (["nb.ipynb", "--lr", "0.1", "--n", "3", "--flag", "True", "--none", "None", "--name", "x y"],
     {"lr": 0.1, "n": 3, "flag": True, "none": None, "name": "x y"}),
    (["nb.ipynb", "--lr=1e-3"], {"lr": 0.001}),
])
def test_runner_reads_parameters_as_papermill_does(argv, expected):
    sys.path.insert(0, "amlrun/runtime")
    try:
        import amlrun_notebook
    finally:
        sys.path.pop(0)
    assert amlrun_notebook.parse_args(argv) == ("nb.ipynb", expected)
