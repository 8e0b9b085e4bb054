"""The run-time client as its own distribution: installed alone in a fresh venv it makes a
script run by hand; inside a run the copy amlrun puts on the path is the same files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "plugins" / "amlrun-client"

SCRIPT = """
    from amlrun_client import log, log_list, log_row, tag, param, save_artifact, in_run
    from azureml.logging import get_azureml_logger

    lr = param("lr", 0.01)
    log("accuracy", 0.93)
    for step in range(3):
        log("loss", 1.0 / (step + 1), step=step)
    log_list("folds", [0.8, 0.9])
    log_row("curve", x=1, y=0.5)
    log_row("curve", x=2, y=0.25)
    tag("dataset", "iris-v2")
    get_azureml_logger().log("Regularization Rate", lr)
    with open("model.txt", "w") as f:
        f.write("weights")
    print("saved", save_artifact("model.txt", "model/final.txt"), "in_run", in_run(), "lr", lr, type(lr).__name__)
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMLRUN_") and k != "PYTHONPATH"}
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system packages, no amlrun) with only amlrun-client installed."""
    venv = tmp_path_factory.mktemp("clientvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(CLIENT)],
                             capture_output=True, text=True, env=_clean_env(), timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def test_installed_alone_a_script_run_by_hand_logs_without_error(client_venv, tmp_path):
    probe = subprocess.run([str(client_venv), "-c", "import amlrun"], cwd=tmp_path, capture_output=True, text=True,
                           env=_clean_env())
    assert probe.returncode != 0 and "No module named 'amlrun'" in probe.stderr  # the client alone
    listed = subprocess.run([str(client_venv), "-m", "pip", "list", "--format", "json"], capture_output=True,
                            text=True, env=_clean_env())
    names = {p["name"] for p in json.loads(listed.stdout)}
    assert "amlrun-client" in names and not names - {"amlrun-client", "pip", "setuptools", "wheel"}  # no dependencies

    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([str(client_venv), "train.py"], cwd=tmp_path, capture_output=True, text=True,
                            env=_clean_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    # outside a run: readable lines on stderr, no metric lines, the default parameter
    assert "##amlrun" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert "[amlrun_client] accuracy = 0.93" in lines
    assert "[amlrun_client] loss = 0.5 (step 1)" in lines
    assert '[amlrun_client] curve = {"x": 2, "y": 0.25}' in lines
    assert '[amlrun_client] dataset = "iris-v2"' in lines
    assert "[amlrun_client] Regularization Rate = 0.01" in lines
    assert "in_run False lr 0.01 float" in result.stdout
    assert (tmp_path / "outputs" / "model" / "final.txt").read_text() == "weights"

    quiet = subprocess.run([str(client_venv), "train.py"], cwd=tmp_path, capture_output=True, text=True,
                           env={**_clean_env(), "AMLRUN_CLIENT_QUIET": "1"}, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_inside_a_run_every_call_is_recorded(project):
    project.write({"train.py": SCRIPT})
    result = project.run("train.py", "-p", "lr=0.5")
    assert result.returncode == 0, result.output
    shown = json.loads(project.run("history", "show", "last", "--format", "json").stdout)
    record = shown["record"]
    assert record["metrics"]["accuracy"] == 0.93
    assert record["metrics"]["folds"] == [0.8, 0.9]
    assert record["metrics"]["curve"] == {"x": 2, "y": 0.25}          # the last row
    assert record["metrics"]["Regularization Rate"] == 0.5           # param() typed like its default
    assert shown["metric_series"]["curve"] == [[None, {"x": 1, "y": 0.5}], [None, {"x": 2, "y": 0.25}]]
    assert record["tags"] == {"dataset": "iris-v2"}
    assert [a["path"] for a in record["artifacts"]] == ["outputs/model/final.txt"]
    assert any("in_run True lr 0.5 float" in line for line in shown["log_tail"])
    text = project.run("history", "show", "last").stdout
    assert "tag dataset" in text and "iris-v2" in text


def test_the_runtime_copy_is_the_distributions_files(project):
    """One source of truth: what a run imports is byte for byte the installable client."""
    project.write({"which.py": """
        import hashlib, amlrun_client, azureml.logging
        for module in (amlrun_client, azureml.logging):
            print("file", module.__file__.split(".amlrun_runtime/")[1],
                  hashlib.sha256(open(module.__file__, "rb").read()).hexdigest())
    """})
    result = project.run("which.py", "--stream")
    assert result.returncode == 0, result.output
    seen = dict(line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("file "))
    for rel in ("amlrun_client.py", "azureml/logging.py"):
        assert seen[rel] == hashlib.sha256((CLIENT / rel).read_bytes()).hexdigest()
