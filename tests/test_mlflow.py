"""MLflow export (plugins/amlrun-mlflow) against a real ``mlflow server``: runs, params,
metric histories, tags and artifacts read back through MLflow's client; the MLflow UI
page of an exported run rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Project, require_service
from spark_fixture import free_port

SECRET = "hunter2-very-secret"

TRAIN = """
import os, sys
AMLRUN_PARAMS = {"lr": [0.1, 0.01], "depth": [3]}
from amlrun_client import log
lr = float(sys.argv[sys.argv.index("--lr") + 1])
for step in range(5):
    log("loss", round(1.0 / (step + 1) + lr, 4), step=step)
log("accuracy", 0.9 - lr)
os.makedirs("outputs", exist_ok=True)
with open("outputs/notes.txt", "w") as fh:
    fh.write("token=" + os.environ["API_TOKEN"] + "\\n")
open("outputs/big.bin", "wb").write(b"x" * 5000)
print("the token is", os.environ["API_TOKEN"])
if "MLFLOW_RUN_ID" in os.environ and lr == 0.1:  # export on: the script's own MLflow calls
    print("mlflow run", os.environ["MLFLOW_RUN_ID"])  # (mlflow.start_run removes the variable)
    import mlflow
    mlflow.log_metric("own_metric", 42.0)
if lr == 0.01:
    print("diverged")
    sys.exit(3)
"""

RUNCONFIG = """
ArgumentVector: ["$file"]
Target: local
EnvironmentVariables:
  API_TOKEN: secret:API_TOKEN
"""


def _env(server=None, **extra) -> dict[str, str]:
    env = {"API_TOKEN": SECRET, **extra}
    if server is not None:
        env["MLFLOW_TRACKING_URI"] = server.url
    return env


def _project(root: Path, experiment: str, limit: str = "100MB") -> Project:
    (root / "aml_config").mkdir(parents=True)
    return Project(root).write({
        "experiments/train.py": TRAIN, "aml_config/cpu.runconfig": RUNCONFIG,
        "pyproject.toml": f'[tool.amlrun]\n[tool.amlrun.mlflow]\nexperiment = "{experiment}"\n'
                          f'max_artifact_size = "{limit}"\n',
    })


@pytest.fixture(scope="module")
def exported(mlflow_server, tmp_path_factory):  # noqa: F811
    """One sweep (2 cells, one fails) run with export on."""
    project = _project(tmp_path_factory.mktemp("mlflow") / "proj", "sweep", limit="20KB")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "sweep"]):
        subprocess.run(git + args, cwd=project.root, check=True, capture_output=True)
    result = project.run("-c", "cpu", env=_env(mlflow_server))
    return project, result


def _records(project: Project) -> dict[str, dict]:
    records = [json.loads(p.read_text()) for p in (project.root / ".amlrun/runs").glob("*/record.json")]
    return {r["run_id"]: r for r in records}


def test_every_run_becomes_an_mlflow_run(exported, mlflow_server):  # noqa: F811
    project, result = exported
    assert result.returncode == 1, result.output
    assert "1 passed, 1 failed" in result.stdout
    assert f"mlflow: {mlflow_server.url}, experiment 'sweep'" in result.stdout
    assert "mlflow: 2 runs exported to" in result.stdout
    assert "View run" not in result.output  # the client's own chatter stays out of amlrun's terminal
    records = _records(project)
    runs = {r.data.tags["amlrun.run_id"]: r for r in mlflow_server.runs("sweep")}
    assert set(runs) == set(records)  # one MLflow run per amlrun run: the script's calls made no second one
    client = mlflow_server.client()
    for run_id, record in records.items():
        run = runs[run_id]
        assert run.info.run_name == record["cell_id"]
        assert run.info.status == {"completed": "FINISHED", "failed": "FAILED"}[record["status"]]
        assert run.data.params == {"lr": str(record["params"]["lr"]), "depth": "3"}
        tags = run.data.tags
        expected = {
            "amlrun.cell_id": record["cell_id"], "amlrun.target": "cpu", "amlrun.target_type": "local",
            "amlrun.runconfig": "cpu", "amlrun.snapshot_digest": record["snapshot_digest"],
            "amlrun.environment_digest": record["environment_digest"], "amlrun.version": record["amlrun_version"],
            "amlrun.status": record["status"], "amlrun.exported": "true",
        }
        assert {k: tags.get(k) for k in expected} == expected
        assert len(record["git_commit"]) == 40
        assert tags["amlrun.git_commit"] == tags["mlflow.source.git.commit"] == record["git_commit"]
        assert tags["amlrun.git_dirty"] == str(record["git_dirty"]).lower()
        if record["status"] == "failed":
            assert tags["amlrun.reason"] == record["reason"] == "exited with code 3"
        # every logged point, with its step and time
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2, 3, 4]
        lr = record["params"]["lr"]
        assert [m.value for m in history] == [round(1.0 / (s + 1) + lr, 4) for s in range(5)]
        assert all(m.timestamp / 1000 >= record["started"] - 1 for m in history)
        assert run.data.metrics["accuracy"] == pytest.approx(0.9 - lr)
        log = (project.root / ".amlrun/runs" / run_id / "log.txt").read_text()
        if lr == 0.1:  # the script's own mlflow.log_metric landed in this run
            assert run.data.metrics["own_metric"] == 42.0 and f"mlflow run {run.info.run_id}" in log
        # artifacts: log, environment, outputs (the 5 KB file over the 20 KB limit? no: it fits)
        paths = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"log.txt", "environment.txt", "outputs"} <= paths
        outputs = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
        assert outputs == {"outputs/notes.txt", "outputs/big.bin"}


def test_secrets_never_reach_mlflow(exported, mlflow_server, tmp_path):  # noqa: F811
    project, _ = exported
    client = mlflow_server.client()
    for run in mlflow_server.runs("sweep"):
        dest = tmp_path / run.info.run_id
        dest.mkdir()
        client.download_artifacts(run.info.run_id, "", str(dest))
        texts = [p.read_bytes() for p in dest.rglob("*") if p.is_file()]
        assert texts and not any(SECRET.encode() in t for t in texts)
        assert b"token=*****" in (dest / "outputs/notes.txt").read_bytes()
        assert b"the token is *****" in (dest / "log.txt").read_bytes()
        assert SECRET not in json.dumps([run.data.params, run.data.tags])
    assert SECRET not in (mlflow_server.root / "mlflow.db").read_bytes().decode("latin-1")


def test_artifacts_over_the_limit_are_left_out_and_listed(mlflow_server, tmp_path):  # noqa: F811
    project = _project(tmp_path / "proj", "limits", limit="3KB")
    result = project.run("-c", "cpu", "-k", "lr=0.1", env=_env(mlflow_server))
    assert result.returncode == 0, result.output
    (run,) = mlflow_server.runs("limits")
    client = mlflow_server.client()
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "amlrun-left-out.txt" in paths and "log.txt" in paths
    assert "outputs/big.bin" not in {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    listing = Path(client.download_artifacts(run.info.run_id, "amlrun-left-out.txt", str(tmp_path))).read_text()
    assert "outputs/big.bin\t5000 bytes" in listing
    assert run.data.tags["amlrun.artifacts_left_out"] == str(listing.count("bytes") - 1)


def test_unreachable_server_warns_once_and_export_catches_up_idempotently(mlflow_server, tmp_path):  # noqa: F811
    project = _project(tmp_path / "proj", "later")
    dead = f"http://127.0.0.1:{free_port()}"
    result = project.run("-c", "cpu", env=_env(MLFLOW_TRACKING_URI=dead))
    assert result.returncode == 1, result.output  # the one failing cell, nothing else
    assert "1 passed, 1 failed" in result.stdout
    warnings = [line for line in result.output.splitlines() if "MLflow" in line]
    assert len(warnings) == 1, result.output
    assert warnings[0].startswith(f"warning: MLflow export stopped: {dead} is unreachable")
    assert "amlrun history export mlflow" in warnings[0]
    assert len(_records(project)) == 2
    assert mlflow_server.runs("later") == []
    # a later export sends both; a second one adds nothing
    first = project.run("history", "export", "mlflow", env=_env(mlflow_server))
    assert first.returncode == 0, first.output
    assert f"exported 2 runs to MLflow experiment 'later' at {mlflow_server.url}; 0 already there" in first.stdout
    runs = mlflow_server.runs("later")
    assert sorted(r.data.tags["amlrun.run_id"] for r in runs) == sorted(_records(project))
    assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}
    assert all(len(mlflow_server.client().get_metric_history(r.info.run_id, "loss")) == 5 for r in runs)
    second = project.run("history", "export", "mlflow", env=_env(mlflow_server))
    assert second.returncode == 0, second.output
    assert "exported 0 runs to MLflow experiment 'later'" in second.stdout and "2 already there" in second.stdout
    assert len(mlflow_server.runs("later")) == 2
    # the unreachable server with the export command: one line, exit 4
    third = project.run("history", "export", "mlflow", env=_env(MLFLOW_TRACKING_URI=dead))
    assert third.returncode == 4
    assert re.fullmatch(rf"amlrun: error: history export mlflow: {re.escape(dead)} is unreachable \([^\n]+\)",
                        third.stderr.strip())


def test_export_resumes_a_run_left_unfinished(mlflow_server, tmp_path):  # noqa: F811
    """An MLflow run created for an amlrun run whose export never finished is completed, not duplicated."""
    project = _project(tmp_path / "proj", "resume")
    assert project.run("-c", "cpu", "-k", "lr=0.1", env=_env()).returncode == 0
    (run_id,) = _records(project)
    client = mlflow_server.client()
    experiment = client.create_experiment("resume")
    half = client.create_run(experiment, tags={"amlrun.run_id": run_id}, run_name="half")
    client.log_metric(half.info.run_id, "loss", 999.0, step=7)
    result = project.run("history", "export", "mlflow", run_id[:12], env=_env(mlflow_server))
    assert result.returncode == 0, result.output
    (run,) = mlflow_server.runs("resume")
    assert run.info.run_id == half.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["amlrun.exported"] == "true" and run.data.params["lr"] == "0.1"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [0, 1, 2, 3, 4, 7]


def test_export_off_imports_no_mlflow(project):
    """Without a tracking URI the plugin does nothing, and mlflow is never imported."""
    project.write({
        "exp/a.py": "print('hi')\n",
        "amlrunconf.py": """
            import sys
            from amlrun.hookspec import hookimpl
            @hookimpl
            def amlrun_sessionfinish(session, exitstatus):
                print("mlflow imported:", any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules))
        """,
    })
    result = project.run("exp")
    assert result.returncode == 0, result.output
    assert "mlflow imported: False" in result.stdout
    assert "mlflow:" not in result.stdout
    off = project.run("history", "export", "mlflow")
    assert off.returncode == 4
    assert off.stderr.strip() == ("amlrun: error: history export mlflow: MLflow export is off; set MLFLOW_TRACKING_URI "
                                  "or [tool.amlrun.mlflow] tracking_uri in pyproject.toml")
    unknown = project.run("history", "export", "wandb")
    assert unknown.returncode == 4 and "no exporter named 'wandb' (known: mlflow)" in unknown.stderr


@pytest.mark.parametrize("line, message", [
    ('max_artifact_size = "lots"', "'max_artifact_size' must be a size such as 100MB or a number of bytes, not 'lots'"),
    ("experiment = 3", "'experiment' must be a non-empty string"),
    ('enabled = "yes"', "'enabled' must be true or false"),
])
def test_bad_settings_are_one_line_errors(project, line, message):
    project.write({"exp/a.py": "print('hi')\n",
                   "pyproject.toml": f'[tool.amlrun.mlflow]\ntracking_uri = "http://127.0.0.1:9"\n{line}\n'})
    result = project.run("exp")
    assert result.returncode == 4
    assert result.stderr.strip() == f"amlrun: error: pyproject.toml [tool.amlrun.mlflow]: {message}"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        require_service("chromium", "install Debian's chromium (.ci/services/browser.sh)")
    return found


@pytest.mark.browser
def test_mlflow_ui_shows_the_exported_run(exported, mlflow_server, tmp_path):  # noqa: F811
    browser = _chromium()
    run = next(r for r in mlflow_server.runs("sweep") if r.info.status == "FINISHED")
    url = f"{mlflow_server.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    text = ""
    for budget in (8000, 20000, 40000):  # the UI is a single-page app: give its requests time to finish
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / f'profile{budget}'}", f"--virtual-time-budget={budget}", "--dump-dom", url],
            capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", proc.stdout))
        if "Metrics (3)" in text:
            break
    assert "Metrics (3)" in text, text[-3000:]
    assert run.info.run_name in text
    for name in ("loss", "accuracy", "own_metric"):
        assert re.search(rf"\b{name}\b", text)
    assert re.search(r"\bown_metric 42\b", text)
