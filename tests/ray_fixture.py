"""A real Ray head on 127.0.0.1 for the ray target's tests, one per test session.

``ray start --head --block`` from the Ray venv of ``.ci/services/ray.sh`` (``/opt/amlrun-ray``,
or ``$AMLRUN_RAY_VENV``), every port free and chosen here, its own ``--temp-dir``, 2 CPUs and a
custom resource ``amlrun_slot: 1``. Stopped at the end by its own processes only: the ``ray
start`` process and whatever runs in its session or below its temp dir (never ``ray stop``,
which would stop every Ray of the machine).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import require_service

_HEADS = itertools.count()
RAY_VENV = Path(os.environ.get("AMLRUN_RAY_VENV", "/opt/amlrun-ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    port: int
    temp_dir: Path
    proc: subprocess.Popen
    frozen: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.address + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(self.address + path, data=b"", method="POST")
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def jobs(self, owner_pid: int | None = None) -> list[dict]:
        """Jobs amlrun submitted (by the amlrun process ``owner_pid``, when given)."""
        found = []
        for job in self.get("/api/jobs/"):
            owner = (job.get("metadata") or {}).get("amlrun_owner", "").split()
            if owner and (owner_pid is None or owner[1:2] == [str(owner_pid)]):
                found.append(job)
        return found

    def job_server_pids(self) -> list[int]:
        """The head's dashboard process: the job server amlrun talks to."""
        found = []
        for pid in _processes_of(self):
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"ray/dashboard/dashboard.py") for a in argv) and \
                    f"--temp-dir={self.temp_dir}".encode() in argv:
                found.append(pid)
        return found

    def freeze_job_server(self) -> None:
        """SIGSTOP the dashboard: its port still accepts connections, nothing answers (the
        jobs themselves go on running: their supervisors are actors of the cluster)."""
        pids = self.job_server_pids()
        assert pids, "the Ray head's dashboard process was not found"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.frozen = pids

    def thaw_job_server(self) -> None:
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def compute_yaml(self, **extra) -> str:
        lines = ["type: ray", f"address: {self.address}"]
        lines += [f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"


def _processes_of(head: RayHead) -> list[int]:
    """Pids in the head's session, or working below its temp dir (the jobs' drivers)."""
    mine = []
    root = str(head.temp_dir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                sid = int(fh.read().rsplit(b")", 1)[1].split()[3])
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except (OSError, ValueError, IndexError):
            continue
        if sid == head.proc.pid or cwd.startswith(root):
            mine.append(int(entry))
    return mine


def stop_head(head: RayHead) -> None:
    head.thaw_job_server()
    if head.proc.poll() is None:
        head.proc.send_signal(signal.SIGTERM)     # ray start --block stops what it started
        try:
            head.proc.wait(30)
        except subprocess.TimeoutExpired:
            head.proc.kill()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _processes_of(head)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids:
            time.sleep(2)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def start_head(timeout: float = 120, attempts: int = 3) -> RayHead:
    """A head, tried again when ``ray start`` gives up: on a loaded machine its node may not
    register within the 30 s Ray waits for it (a fixed value in ``ray/_private/node.py``)."""
    ray = RAY_VENV / "bin" / "ray"
    if not ray.exists():
        require_service("ray", f"{ray} missing (.ci/services/ray.sh installs ray[default] there)")
    for attempt in range(1, attempts + 1):
        try:
            return _start_head(ray, timeout)
        except HeadStartFailed:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


class HeadStartFailed(RuntimeError):
    """``ray start`` exited before its head answered."""


def _start_head(ray: Path, timeout: float) -> RayHead:
    # short: Ray's unix socket paths live below it (108 bytes at most)
    temp_dir = Path(tempfile.mkdtemp(prefix="amlrun-ray-", dir="/tmp"))
    # worker ports: a range per process and head (a test's private head beside the session's),
    # below the ephemeral ports free_port() hands out (32768 and up)
    low = 10000 + ((os.getpid() % 5) * 4 + next(_HEADS) % 4) * 1000
    cmd = [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--num-cpus", "2", "--resources", json.dumps({"amlrun_slot": 1}), "--disable-usage-stats",
           "--temp-dir", str(temp_dir), "--port", str(free_port()), "--dashboard-port", str(free_port()),
           "--ray-client-server-port", str(free_port()), "--node-manager-port", str(free_port()),
           "--object-manager-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
           "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
           "--runtime-env-agent-port", str(free_port()),
           "--min-worker-port", str(low), "--max-worker-port", str(low + 999)]
    port = int(cmd[cmd.index("--dashboard-port") + 1])
    env = dict(os.environ, PATH=f"{RAY_VENV / 'bin'}:{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "AMLRUN_CREDENTIALS", "AMLRUN_CACHE_DIR"):
        env.pop(name, None)
    log = temp_dir / "start.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    head = RayHead(port, temp_dir, proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:]
            stop_head(head)
            raise HeadStartFailed(f"ray start exited with {proc.returncode}: {text}")
        try:
            nodes = head.get("/api/v0/nodes")["data"]["result"]["result"]
            if any(n.get("state") == "ALIVE" for n in nodes):
                return head
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
            pass            # not up yet, or another program took the port chosen for the dashboard
        if time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:]
            stop_head(head)
            raise HeadStartFailed(f"the Ray head did not answer in {timeout:g}s: {text}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def ray_head():
    head = start_head()
    try:
        yield head
    finally:
        stop_head(head)

