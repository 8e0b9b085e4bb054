"""A real MLflow tracking server on 127.0.0.1 for the test session.

The full ``mlflow`` distribution lives in its own venv (``.ci/services/mlflow.sh``:
``/opt/amlrun-mlflow``, or ``$AMLRUN_MLFLOW_VENV``); the server gets a free port, a
SQLite backend and an artifact folder in a temporary directory, and serves artifacts
itself (clients upload over HTTP, as they would to a remote server). Stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from amlrun.process import stop_group
from conftest import require_service
from spark_fixture import free_port

VENV = Path(os.environ.get("AMLRUN_MLFLOW_VENV", "/opt/amlrun-mlflow"))


@dataclass(frozen=True)
class MlflowServer:
    url: str
    root: Path

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.url)

    def runs(self, experiment: str) -> list:
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return list(client.search_runs([found.experiment_id], max_results=1000))


def _healthy(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    mlflow = VENV / "bin" / "mlflow"
    if not mlflow.is_file():
        require_service("mlflow", f"no MLflow server in {VENV} (.ci/services/mlflow.sh installs it)")
    try:
        import mlflow as _client  # noqa: F401 - the plugin's client, read-back needs it too
    except ImportError:
        require_service("mlflow", "mlflow-skinny is not installed (pip install -e plugins/amlrun-mlflow)")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=root,
    )
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: " + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield MlflowServer(url, root)
    finally:
        stop_group(proc, grace=10)
        log.close()
