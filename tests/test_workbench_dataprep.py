"""Workbench Data Prep packages (``azureml.dataprep.package.run``) on the Iris sample's own
``.dprep``/``.dsource`` files (tests/data/workbench_iris, unchanged from the sample), in a
real run and in-process for the edge cases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pandas = pytest.importorskip("pandas", reason="pandas is in amlrun's test extras")

REPO = Path(__file__).resolve().parent.parent
IRIS = Path(__file__).parent / "data" / "workbench_iris"
RUNTIME = REPO / "amlrun" / "runtime"

#: what iris_sklearn.py does with the package, as the sample writes it
IRIS_SCRIPT = '''
from azureml.dataprep.package import run
from azureml.logging import get_azureml_logger

iris = run('iris.dprep', dataflow_idx=0, spark=False)
print('Iris dataset shape: {}'.format(iris.shape))
print('columns:', list(iris.columns))
print('dtypes:', [str(t) for t in iris.dtypes])
print('species:', sorted(set(iris['Species'])))
X = iris[['Sepal Length', 'Sepal Width', 'Petal Length', 'Petal Width']].values
get_azureml_logger().log("Rows", iris.shape[0])
print('first:', X[0].tolist())
'''


def _iris_project(project):
    for name in ("iris.dprep", "iris.dsource", "iris.csv"):
        shutil.copy(IRIS / name, project.root / name)
    project.write({"iris_sklearn.py": IRIS_SCRIPT})
    return project


def _in_process(cwd: Path, code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = os.environ.copy()
    full["PYTHONPATH"] = str(RUNTIME)
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_iris_package_runs_unchanged_in_a_local_run(project):
    _iris_project(project)
    result = project.run("-c", "local", "iris_sklearn.py")
    assert result.returncode == 0, result.output
    # 151 lines in iris.csv, the last one empty: the package's string filter drops it
    assert "Iris dataset shape: (150, 5)" in result.stdout
    assert "columns: ['Sepal Length', 'Sepal Width', 'Petal Length', 'Petal Width', 'Species']" in result.stdout
    assert "dtypes: ['float64', 'float64', 'float64', 'float64'" in result.stdout
    assert "species: ['Iris-setosa', 'Iris-versicolor', 'Iris-virginica']" in result.stdout
    assert "first: [5.1, 3.5, 1.4, 0.2]" in result.stdout
    record = json.loads(next((project.root / ".amlrun" / "runs").iterdir()).joinpath("record.json").read_text())
    assert record["metrics"]["Rows"] == 150


def test_dsource_alone_keeps_the_generated_column_names_and_the_empty_row(tmp_path):
    for name in ("iris.dsource", "iris.csv"):
        shutil.copy(IRIS / name, tmp_path / name)
    done = _in_process(tmp_path, "from azureml.dataprep.package import run\n"
                                 "df = run('iris.dsource')\n"
                                 "print(df.shape, list(df.columns), df['Column5'].isna().sum())")
    assert done.returncode == 0, done.stderr
    # no filter in the .dsource: the trailing empty line is a row; the path column is dropped
    assert done.stdout.strip() == "(151, 5) ['Column1', 'Column2', 'Column3', 'Column4', 'Column5'] 1"


def _copy_iris(tmp_path: Path) -> None:
    for name in ("iris.dprep", "iris.dsource", "iris.csv"):
        shutil.copy(IRIS / name, tmp_path / name)


def _edit(path: Path, edit) -> None:
    package = json.loads(path.read_text())
    edit(package)
    path.write_text(json.dumps(package))


def test_an_unknown_block_type_fails_with_one_line_naming_it(tmp_path):
    _copy_iris(tmp_path)
    _edit(tmp_path / "iris.dprep", lambda p: p["activities"][0]["blocks"].append(
        {"id": "x", "type": "Microsoft.DPrep.DeriveColumnByExampleBlock", "arguments": {}}))
    done = _in_process(tmp_path, "from azureml.dataprep.package import run\nrun('iris.dprep')")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("azureml.dataprep.package.DataPrepError: iris.dprep: block 8 has type "
                           "Microsoft.DPrep.DeriveColumnByExampleBlock, which amlrun's azureml.dataprep does not execute")


def test_sampling_settings_of_the_runconfig_are_honoured(tmp_path):
    _copy_iris(tmp_path)
    # the sample's active sample is "Top 10000"; make it "Top 7" and add a second, full one
    def edit(package):
        block = package["activities"][0]["blocks"][3]
        block["arguments"]["samples"][0]["topArguments"]["sampleCount"] = 7
        full = dict(block["arguments"]["samples"][0], sampleId="full-id", sampleName="Full File", sampleStrategy=3)
        block["arguments"]["samples"].append(full)
    _edit(tmp_path / "iris.dsource", edit)
    code = "from azureml.dataprep.package import run\nprint(run('iris.dprep').shape[0])"
    assert _in_process(tmp_path, code).stdout.strip() == "7"
    off = {"AMLRUN_DATAPREP_SETTINGS": json.dumps({"UseSampling": False})}
    assert _in_process(tmp_path, code, off).stdout.strip() == "150"
    named = {"AMLRUN_DATAPREP_SETTINGS": json.dumps(
        {"DataSourceSettings": {"iris.dsource": {"Sampling": {"Sample": "Full File"}}}})}
    assert _in_process(tmp_path, code, named).stdout.strip() == "150"


def test_data_source_substitution_reads_the_replacement(tmp_path):
    _copy_iris(tmp_path)
    (tmp_path / "small.csv").write_text("1,2,3,4,Iris-setosa\n5,6,7,8,Iris-virginica\n")
    _edit(tmp_path / "iris.dsource",
          lambda p: p["activities"][0]["blocks"][0]["arguments"]["path"]["resourceDetails"][0].update(path="./small.csv"))
    (tmp_path / "iris.dsource").rename(tmp_path / "small.dsource")
    shutil.copy(IRIS / "iris.dsource", tmp_path / "iris.dsource")
    settings = {"AMLRUN_DATAPREP_SETTINGS": json.dumps({"DataSourceSubstitutions": {"iris.dsource": "small.dsource"}})}
    done = _in_process(tmp_path, "from azureml.dataprep.package import run\n"
                                 "print(run('iris.dprep')['Species'].tolist())", settings)
    assert done.stdout.strip() == "['Iris-setosa', 'Iris-virginica']", done.stderr


def test_a_missing_data_file_names_the_file(tmp_path):
    shutil.copy(IRIS / "iris.dprep", tmp_path / "iris.dprep")
    shutil.copy(IRIS / "iris.dsource", tmp_path / "iris.dsource")
    done = _in_process(tmp_path, "from azureml.dataprep.package import run\nrun('iris.dprep')")
    assert done.stderr.strip().splitlines()[-1] == (
        "azureml.dataprep.package.DataPrepError: iris.dsource: block 1 (Microsoft.DPrep.DataSourceBlock): "
        "data file ./iris.csv does not exist")


def test_importing_the_module_needs_no_pandas(tmp_path):
    done = _in_process(tmp_path, "import sys\nsys.modules['pandas'] = None\n"
                                 "import azureml.dataprep.package as p\nprint(p.run.__name__)")
    assert done.stdout.strip() == "run", done.stderr
