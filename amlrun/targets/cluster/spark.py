"""Spark submission without pyspark: spark-submit command lines, what the driver
prints, and the standalone master's JSON UI.

amlrun never imports pyspark (it may exist only on the cluster); it drives
``spark-submit`` as a process, reads the application id from the driver's log
lines, and talks to a standalone master over plain HTTP.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import threading
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEPLOY_MODES = ("client", "cluster")
#: directories never shipped in the ``--py-files`` archive
_SKIP_DIRS = {"outputs", "__pycache__", "node_modules", "venv", "env", "build", "dist"}
PY_FILES_NAME = "amlrun-pyfiles.zip"


@dataclass(frozen=True)
class Submission:
    """One ``spark-submit`` invocation, as values; ``argv()`` renders it."""

    spark_submit: str
    master: str
    script: str
    args: tuple[str, ...] = ()
    deploy_mode: str | None = None
    conf: tuple[tuple[str, str], ...] = ()  # ordered; later entries win in Spark too
    packages: tuple[str, ...] = ()
    repositories: tuple[str, ...] = ()
    py_files: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        cmd = [self.spark_submit, "--master", self.master]
        if self.deploy_mode:
            cmd += ["--deploy-mode", self.deploy_mode]
        for key, value in self.conf:
            cmd += ["--conf", f"{key}={value}"]
        if self.packages:
            cmd += ["--packages", ",".join(self.packages)]
        if self.repositories:
            cmd += ["--repositories", ",".join(self.repositories)]
        if self.py_files:
            cmd += ["--py-files", ",".join(self.py_files)]
        if self.archives:
            cmd += ["--archives", ",".join(self.archives)]
        return [*cmd, self.script, *self.args]

    def command_line(self) -> str:
        """The argv quoted for a POSIX shell (the SSH path runs it through one)."""
        return shlex.join(self.argv())


def merge_conf(*layers: dict[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Merge conf layers in order (later layers override earlier ones), keeping first-seen order."""
    merged: dict[str, str] = {}
    for layer in layers:
        items = layer.items() if isinstance(layer, dict) else layer
        for key, value in items:
            merged[str(key)] = str(value)
    return tuple(merged.items())


def pack_py_files(root: Path, dest: Path) -> Path | None:
    """Zip the project's Python files under ``root`` (modules and packages, paths kept)
    so executors can import them; None when there is nothing to ship."""
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in _SKIP_DIRS for part in rel.parts[:-1]):
            continue
        if any((root / Path(*rel.parts[:i]) / "pyvenv.cfg").exists() for i in range(1, len(rel.parts))):
            continue
        files.append((path, rel))
    if not files:
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, rel in files:
            archive.write(path, rel.as_posix())
    return dest


ENV_ARCHIVE_ALIAS = "amlrun_env"


def pack_environment(venv: Path, dest: Path) -> tuple[Path, bool]:
    """A ``.tar.gz`` of the virtual environment ``venv`` for ``--archives`` (executors
    unpack it as ``./amlrun_env``); made once per environment, atomically. Returns
    (archive, whether it was made now). Its ``bin/python`` still points at the base
    interpreter, which must exist at the same path on the executors' machines."""
    import os
    import tarfile

    if dest.exists():
        return dest, False
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest, False
        partial = dest.with_name(dest.name + f".{os.getpid()}.partial")
        with tarfile.open(partial, "w:gz") as archive:
            for item in sorted(venv.iterdir()):
                archive.add(
                    item, arcname=item.name, filter=lambda info: None if "__pycache__" in info.name.split("/") else info
                )
        os.replace(partial, dest)
    return dest, True


# -- what the driver prints ------------------------------------------------------------

_PATTERNS = (
    ("spark_app_id", re.compile(r"Connected to Spark cluster with app ID (\S+)")),
    ("spark_app_id", re.compile(r"Submitted application (application_\d+_\d+)")),
    ("spark_app_id", re.compile(r"Application report for (application_\d+_\d+)")),
    ("spark_app_id", re.compile(r"spark-app-selector(?:\s*->\s*|=|: )(spark-[0-9a-f]+)")),
    ("spark_ui", re.compile(r"Bound SparkUI to \S+, and started at (https?://\S+)")),
    ("spark_ui", re.compile(r"Start Jetty (\S+:\d+) for SparkUI")),
    ("spark_tracking_url", re.compile(r"tracking URL: (https?://\S+)")),
    ("spark_driver_pod", re.compile(r"pod name: (\S+)")),
    ("spark_namespace", re.compile(r"namespace: (\S+)")),
    ("spark_submission_id", re.compile(r"Driver successfully submitted as (\S+)")),
)


class DriverLog:
    """A sink in front of the run's sink: forwards every line and remembers what Spark
    says about the application (id, UIs), first occurrence wins."""

    def __init__(self, sink):
        self._sink = sink
        self._lock = threading.Lock()
        self.found: dict[str, str] = {}

    def write(self, line: str) -> None:
        if "INFO" in line or "application" in line or "tracking URL" in line or "pod name" in line:
            self._scan(line)
        self._sink.write(line)

    def _scan(self, line: str) -> None:
        for key, pattern in _PATTERNS:
            if key in self.found:
                continue
            match = pattern.search(line)
            if match:
                value = match.group(1)
                if key == "spark_ui" and not value.startswith("http"):
                    value = f"http://{value}"
                with self._lock:
                    self.found.setdefault(key, value)

    @property
    def app_id(self) -> str | None:
        return self.found.get("spark_app_id")


# -- masters ---------------------------------------------------------------------------


def master_endpoints(master: str) -> list[tuple[str, int]]:
    """The (host, port) pairs a master URL names: ``spark://h1:7077,h2:7077``, ``k8s://https://h:443``."""
    if master.startswith("spark://"):
        hosts = master[len("spark://") :].split(",")
        found = []
        for item in hosts:
            host, _, port = item.strip().rpartition(":")
            if not host:
                host, port = item.strip(), "7077"
            try:
                found.append((host.strip("[]"), int(port)))
            except ValueError:
                continue
        return found
    if master.startswith("k8s://"):
        url = master[len("k8s://") :]
        if "://" not in url:
            url = "https://" + url
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname:
            return [(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))]
    return []


def is_standalone(master: str) -> bool:
    return master.startswith("spark://")


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster[")


def tcp_check(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when ``host:port`` accepts a connection, else why not (one short phrase)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return exc.strerror or str(exc)


def default_master_ui(master: str) -> str | None:
    """A standalone master's web UI, assuming the default port 8080 (``sparkMasterUI`` overrides)."""
    endpoints = master_endpoints(master) if is_standalone(master) else []
    if not endpoints:
        return None
    host = endpoints[0][0]
    return f"http://{host}:8080"


@dataclass(frozen=True)
class MasterUI:
    """A standalone master's web UI: ``/json/`` for state, ``/app/kill/`` to kill."""

    url: str
    timeout: float = 5.0

    def state(self) -> dict:
        import urllib.request

        # never through an HTTP proxy: the master is on the cluster's own network
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url.rstrip("/") + "/json/", timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def app_state(self, app_id: str) -> str | None:
        """The application's state if the master lists it as active, else None."""
        for app in self.state().get("activeapps", []):
            if app.get("id") == app_id:
                return str(app.get("state"))
        return None

    def kill(self, app_id: str) -> None:
        """Press the UI's kill link. Spark 4 guards it with a CSRF token printed in the
        page's kill form; earlier versions have none."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        form = {"id": app_id, "terminate": "true"}
        with opener.open(self.url.rstrip("/") + "/", timeout=self.timeout) as response:
            page = response.read().decode("utf-8", "replace")
        token = _CSRF.search(page)
        if token:
            form["csrfToken"] = token.group(1)
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url.rstrip("/") + "/app/kill/", data=data, method="POST")
        with opener.open(request, timeout=self.timeout) as response:
            response.read()

    def ensure_stopped(self, app_id: str, wait: float = 15.0) -> str | None:
        """Wait for ``app_id`` to leave the active applications, killing it through the UI
        if it lingers; None when it is gone, else what is wrong (one line)."""
        import urllib.error

        try:
            if self._wait_gone(app_id, wait):
                return None
            self.kill(app_id)
            if self._wait_gone(app_id, wait):
                return None
        except (OSError, urllib.error.URLError, ValueError) as exc:
            return f"could not verify that Spark application {app_id} stopped ({self.url}: {_reason(exc)})"
        return f"Spark application {app_id} is still active on the master ({self.url})"

    def _wait_gone(self, app_id: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            state = self.app_state(app_id)
            if state is None or state in ("FINISHED", "KILLED", "FAILED"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


_CSRF = re.compile(r'name="csrfToken"\s+value="([^"]+)"')


def _reason(exc: Exception) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return getattr(inner, "strerror", None) or str(inner)
    return str(exc)


#: a PySpark program that prints the driver's and the executors' Python versions (for doctor)
PROBE_SCRIPT = """\
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("amlrun-doctor").getOrCreate()
sc = spark.sparkContext
versions = sc.parallelize(range(2), 2).map(lambda _: "%d.%d.%d" % sys.version_info[:3]).distinct().collect()
print("##amlrun-probe driver=%d.%d.%d executors=%s" % (sys.version_info[:3] + (",".join(sorted(versions)),)))
spark.stop()
"""
PROBE_LINE = re.compile(r"##amlrun-probe driver=(\S+) executors=(\S*)")


def find_spark_submit() -> str | None:
    """spark-submit on PATH, else ``$SPARK_HOME/bin/spark-submit``, else None."""
    import os
    import shutil

    found = shutil.which("spark-submit")
    if found:
        return found
    home = os.environ.get("SPARK_HOME")
    if home and os.access(Path(home) / "bin" / "spark-submit", os.X_OK):
        return str(Path(home) / "bin" / "spark-submit")
    return None
