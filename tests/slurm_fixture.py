"""A private single-node SLURM cluster on 127.0.0.1 (the real thing: munged, slurmctld, slurmd).

Started once per test session from Debian's slurm-wlm and munge (``.ci/services/slurm.sh``
installs them), with its own munge key and socket, ``slurm.conf`` (``SLURM_CONF``), state
and spool folders and free ports, all in one temporary folder that other users can read
(the test sshd's user submits through it too); stopped at the end: only the daemons it
started, by their pid files. Where SLURM is missing or we are not root, the tests
``require_service`` (skip locally, fail under CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_service

SBIN = Path("/usr/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_unavailable() -> str | None:
    """Why a private SLURM cannot run here (None when it can)."""
    for daemon in ("munged", "slurmctld", "slurmd"):
        if not (SBIN / daemon).exists():
            return f"{daemon} is not installed (.ci/services/slurm.sh installs slurm-wlm and munge)"
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (.ci/services/slurm.sh installs slurm-wlm)"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users and needs root"
    return None


@dataclass
class SlurmCluster:
    root: Path
    node: str
    partition: str = "debug"
    #: a partition over the same node whose jobs preempt (cancel) the default partition's
    urgent_partition: str = "urgent"

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def queue(self, user: str | None = None) -> list[dict[str, str]]:
        """Jobs still pending or running (squeue's default states), one row per array task."""
        out = self.command("squeue", "-h", "-r", "-u", user or "root", "-o", "%i|%T|%j|%k")
        rows = []
        for line in out.splitlines():
            job, state, name, comment = (line.split("|", 3) + ["", "", ""])[:4]
            rows.append({"job": job, "state": state, "name": name, "comment": comment})
        return rows

    def wait_queue_empty(self, user: str | None = None, name_prefix: str = "amlrun", within: float = 120) -> list[dict]:
        """Wait until no job named ``name_prefix*`` is pending or running; return what is left then."""
        deadline = time.monotonic() + within
        while True:
            left = [r for r in self.queue(user) if r["name"].startswith(name_prefix)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def set_node(self, state: str, reason: str = "amlrun test") -> None:
        """``scontrol update`` the node: ``down`` kills its jobs (NODE_FAIL), ``resume`` brings it
        back (refused when it is up already: ReturnToService=2 may have returned it)."""
        args = ["scontrol", "update", f"nodename={self.node}", f"state={state}"]
        if state == "resume":
            self.command(*args, check=False)
        else:
            self.command(*args, f"reason={reason}")

    def wait_node(self, states: tuple[str, ...] = ("idle", "mix", "alloc"), within: float = 60) -> str:
        """Wait until sinfo shows the node in one of ``states``; its state then."""
        deadline = time.monotonic() + within
        while True:
            out = self.command("sinfo", "-h", "-p", self.partition, "-n", self.node, "-o", "%t", check=False).strip()
            if out in states or time.monotonic() > deadline:
                return out
            time.sleep(0.3)

    def compute_yaml(self, workspace: Path | str, extra: str = "") -> str:
        return (f"type: slurm\npartition: {self.partition}\nworkspace: {workspace}\n"
                f"slurmEnvironment:\n  SLURM_CONF: {self.conf}\n" + extra)

    def _pids(self) -> list[int]:
        pids = []
        for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                pids.append(int((self.root / name).read_text().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def stop(self) -> None:
        pids = self._pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def start_cluster() -> SlurmCluster:
    root = Path(tempfile.mkdtemp(prefix="amlrun-slurm-"))
    os.chmod(root, 0o755)   # the test sshd's user reads slurm.conf and reaches the munge socket
    munge = root / "munge"
    munge.mkdir(mode=0o755)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    subprocess.run([str(SBIN / "munged"), f"--socket={munge}/munge.sock", f"--key-file={key}",
                    f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed", "--force"], check=True, capture_output=True)
    node = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    (root / "slurm.conf").write_text(f"""ClusterName=amlrtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=100000,batch_sched_delay=0,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
MinJobAge=300
KillWait=2
InactiveLimit=0
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
NodeName={node} NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes={node} Default=NO MaxTime=INFINITE State=UP PriorityTier=10
""")
    cluster = SlurmCluster(root, node)
    env = {**os.environ, **cluster.env}
    try:
        subprocess.run([str(SBIN / "slurmctld"), "-f", str(cluster.conf), "-L", str(root / "slurmctld.log")],
                       check=True, env=env, capture_output=True)
        subprocess.run([str(SBIN / "slurmd"), "-f", str(cluster.conf), "-L", str(root / "slurmd.log")],
                       check=True, env=env, capture_output=True)
        out = cluster.wait_node()
        if out not in ("idle", "mix", "alloc"):
            raise RuntimeError(f"the test SLURM node did not come up (sinfo: {out!r}): "
                               + (root / "slurmctld.log").read_text()[-1500:])
        return cluster
    except BaseException:
        cluster.stop()
        raise


@pytest.fixture(scope="session")
def slurm_cluster():
    why = slurm_unavailable()
    if why:
        require_service("slurm", why)
    cluster = start_cluster()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
