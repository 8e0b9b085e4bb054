"""A real Spark standalone cluster on 127.0.0.1: one master and one worker (1 core, 1 GiB).

Started once per test session from the pip-installed pyspark (``spark-class``; Java 17),
on free ports, with its own work folder; stopped at the end. Where pyspark or Java is
missing the tests ``require_service`` (skip locally, fail under CI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_service
from amlrun.process import stop_group

SPARK_ENV = {"SPARK_LOCAL_IP": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_unavailable() -> str | None:
    """Why Spark cannot run here (None when it can)."""
    if shutil.which("spark-submit") is None or shutil.which("spark-class") is None:
        return "spark-submit/spark-class not on PATH (.ci/services/spark.sh pip-installs pyspark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java not on PATH, JAVA_HOME unset)"
    return None


def require_spark() -> None:
    reason = spark_unavailable()
    if reason:
        require_service("spark", reason)


@dataclass
class SparkCluster:
    master_port: int
    ui_port: int
    root: Path

    @property
    def master(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def state(self) -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.ui + "/json/", timeout=5) as response:
            return json.loads(response.read())

    def active_apps(self) -> list[dict]:
        return [a for a in self.state().get("activeapps", []) if a.get("state") in ("RUNNING", "WAITING")]

    def app(self, app_id: str) -> dict | None:
        state = self.state()
        for app in state.get("activeapps", []) + state.get("completedapps", []):
            if app.get("id") == app_id:
                return app
        return None

    def compute_yaml(self, **extra: str) -> str:
        lines = ["type: cluster", f"sparkMaster: {self.master}", f"sparkMasterUI: {self.ui}"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, **SPARK_ENV)
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def start_cluster(root: Path, timeout: float = 120) -> tuple[SparkCluster, list[subprocess.Popen]]:
    root.mkdir(parents=True, exist_ok=True)
    cluster = SparkCluster(free_port(), free_port(), root)
    procs = [_start(["spark-class", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                     "--port", str(cluster.master_port), "--webui-port", str(cluster.ui_port)], root / "master.log")]
    try:
        _wait(lambda: cluster.state().get("status") == "ALIVE", timeout, "master", root / "master.log", procs[0])
        procs.append(_start(["spark-class", "org.apache.spark.deploy.worker.Worker", cluster.master,
                             "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                             "--webui-port", str(free_port()), "--work-dir", str(root / "work")],
                            root / "worker.log"))
        _wait(lambda: cluster.state().get("aliveworkers", 0) >= 1, timeout, "worker", root / "worker.log", procs[1])
    except BaseException:
        for proc in reversed(procs):
            stop_group(proc, grace=15)
        raise
    return cluster, procs


def _wait(ready, timeout: float, what: str, log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark {what} exited with {proc.returncode}: " + log.read_text()[-2000:])
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"Spark {what} not ready after {timeout:g}s: " + log.read_text()[-2000:])


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master and one worker on 127.0.0.1 for the whole session."""
    require_spark()
    cluster, procs = start_cluster(tmp_path_factory.mktemp("spark"))
    try:
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_group(proc, grace=15)
