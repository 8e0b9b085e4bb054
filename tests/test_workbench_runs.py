"""Workbench scripts run as Workbench ran them, on the real targets: the shared folder
idiom ``os.environ['AZUREML_NATIVE_SHARE_DIRECTORY'] + 'model.pkl'`` (Iris sample's
``iris_sklearn_shared_folder.py``) and positional script arguments
(``az ml experiment submit -c local iris_sklearn.py 0.01`` = ``amlrun -c local iris_sklearn.py -- 0.01``)."""

from __future__ import annotations

import json

import pytest

from dockerhelp import BASE, engine

#: what iris_sklearn_shared_folder.py does with the shared folder (a dict instead of a model)
SHARED_FOLDER_SCRIPT = """
import os, pickle, sys
reg = 0.01
if len(sys.argv) > 1:
    reg = float(sys.argv[1])
print("Serialize and deserialize using the native share folder: {0}".format(os.environ['AZUREML_NATIVE_SHARE_DIRECTORY']))
f = open(os.environ['AZUREML_NATIVE_SHARE_DIRECTORY'] + 'model.pkl', 'wb')
pickle.dump({"reg": reg, "target": os.environ["AMLRUN_TARGET"]}, f)
f.close()
f2 = open(os.environ['AZUREML_NATIVE_SHARE_DIRECTORY'] + 'model.pkl', 'rb')
print("loaded", pickle.load(f2))
"""

ARGV_SCRIPT = """
import json, os, sys
os.makedirs("outputs", exist_ok=True)
with open("outputs/argv.json", "w", encoding="utf-8") as fh:
    json.dump(sys.argv[1:], fh)
print("Regularization rate is {}".format(sys.argv[1] if len(sys.argv) > 1 else 0.01))
"""

#: positional values as a user types them; quoting, globs, dashes and non-ASCII arrive unchanged
SCRIPT_ARGS = ["0.01", "5", "two words", "it's \"quoted\"", "$HOME", "a;b | c", "*", "--not-an-amlrun-option", "-k",
               "naïve ✓", ""]


def _records(project) -> list[dict]:
    root = project.root / ".amlrun" / "runs"
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/record.json"))]


def _argv_of(project, record) -> list[str]:
    return json.loads((project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "argv.json").read_text())


def test_shared_folder_path_ends_with_a_slash_on_local_and_docker(project, tmp_path):
    engine()
    share = tmp_path / "share"
    project.write({
        # as the Iris sample's compute files write it (docker's with shared volumes on)
        "aml_config/local.compute": f'type: "local"\npythonLocation: "{__import__("sys").executable}"\n'
                                    f'nativeSharedDirectory: "{share}/"\n',
        "aml_config/docker.compute": f'type: "localdocker"\nbaseDockerImage: "{BASE}"\n'
                                     f'nativeSharedDirectory: "{share}/"\nsharedVolumes: true\n',
        "iris_sklearn_shared_folder.py": SHARED_FOLDER_SCRIPT,
    })
    result = project.run("-c", "local", "-c", "docker", "iris_sklearn_shared_folder.py", "--", "0.5")
    assert result.returncode == 0, result.output
    for target in ("local", "docker"):
        folder = share / project.root.name / target
        assert (folder / "model.pkl").is_file(), sorted(str(p) for p in share.rglob("*"))
        assert not (folder.parent / f"{target}model.pkl").exists()
    assert "'reg': 0.5, 'target': 'local'" in result.output + "".join(
        (project.root / ".amlrun" / "runs" / r["run_id"] / "log.txt").read_text() for r in _records(project))


def test_script_arguments_after_double_dash_reach_every_script_unchanged_local(project):
    project.write({
        "aml_config/local.runconfig": 'ArgumentVector:\n  - "$file"\n  - "--from-runconfig"\nTarget: "local"\n',
        "train.py": ARGV_SCRIPT, "other.py": ARGV_SCRIPT,
    })
    result = project.run("-c", "local", "train.py", "other.py", "-p", "lr=0.1", "--", *SCRIPT_ARGS)
    assert result.returncode == 0, result.output
    records = _records(project)
    assert len(records) == 2
    for record in records:
        # the runconfig's own entries first, then the ones after --, then the parameters
        assert _argv_of(project, record) == ["--from-runconfig", *SCRIPT_ARGS, "--lr", "0.1"]
        assert record["script_args"] == SCRIPT_ARGS


def test_a_positional_argument_without_double_dash_says_where_it_goes(project):
    project.write({"train.py": ARGV_SCRIPT})
    result = project.run("-c", "local", "train.py", "0.01")
    assert result.returncode == 4
    assert "file or directory not found: 0.01 (arguments for the scripts go after '--'" in result.stderr


def test_script_arguments_change_the_reuse_key(project):
    project.write({"train.py": ARGV_SCRIPT})
    assert project.run("-c", "local", "train.py", "--", "0.5").returncode == 0
    again = project.run("-c", "local", "train.py", "--reuse", "--", "0.5")
    other = project.run("-c", "local", "train.py", "--reuse", "--", "0.25")
    assert "1 reused" in again.stdout, again.output
    assert "1 passed" in other.stdout and "changed: script arguments" in other.stdout, other.output
    assert sorted(_argv_of(project, r)[0] for r in _records(project)) == ["0.25", "0.5"]


@pytest.mark.docker
def test_script_arguments_arrive_unchanged_in_docker(project):
    engine()
    project.write({"aml_config/docker.compute": f"type: docker\nbaseDockerImage: {BASE}\n", "train.py": ARGV_SCRIPT})
    result = project.run("-c", "docker", "train.py", "--", *SCRIPT_ARGS)
    assert result.returncode == 0, result.output
    (record,) = _records(project)
    assert _argv_of(project, record) == SCRIPT_ARGS and record["script_args"] == SCRIPT_ARGS


@pytest.mark.ssh
def test_script_arguments_arrive_unchanged_over_ssh(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(), "train.py": ARGV_SCRIPT})
    result = project.run("-c", "vm", "train.py", "--", *SCRIPT_ARGS)
    assert result.returncode == 0, result.output
    (record,) = _records(project)
    assert _argv_of(project, record) == SCRIPT_ARGS and record["script_args"] == SCRIPT_ARGS
