"""Who owns a container: amlrun's labels on it, owner markers in the cache, and the
removal of containers whose amlrun process is gone (even after ``kill -9``).

Every container carries amlrun labels (owner pid, start time, host, run id); a target's
start-up removes containers whose amlrun process is gone. Importing this module is cheap
(docker is imported only when a dead session left something): ``amlrun history`` sweeps too.
"""

from __future__ import annotations

import os
from pathlib import Path

from amlrun.process import alive, process_start

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LABEL_OWNER_PID = "amlrun.owner-pid"
LABEL_OWNER_START = "amlrun.owner-start"
LABEL_OWNER_HOST = "amlrun.owner-host"
LABEL_RUN_ID = "amlrun.run-id"
LABEL_CELL = "amlrun.cell"
LABEL_TARGET = "amlrun.target"


def run_labels(run_id: str, cell_id: str, target: str) -> dict[str, str]:
    """The labels of a run's container: managed by amlrun, owned by this process."""
    from amlrun.targets.docker.image import LABEL_MANAGED

    pid = os.getpid()
    return {
        LABEL_MANAGED: "1",
        LABEL_OWNER_PID: str(pid),
        LABEL_OWNER_START: process_start(pid),
        LABEL_OWNER_HOST: _host(),
        LABEL_RUN_ID: run_id,
        LABEL_CELL: cell_id[:200],
        LABEL_TARGET: target,
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the amlrun process that started a container (per its labels) still runs."""
    if labels.get(LABEL_OWNER_HOST) not in (None, "", _host()):
        return True  # another machine's amlrun: not ours to judge
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    return alive(pid, labels.get(LABEL_OWNER_START, ""))


def remove_orphans(client) -> list[str]:
    """Remove amlrun containers whose amlrun process is dead; return their names."""
    from amlrun.targets.docker.image import docker_sdk

    docker = docker_sdk()
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER_PID}):
        if owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise
    return removed


# -- leftovers of a killed amlrun, found from any later amlrun command ------------------------------
#
# Each amlrun process that starts containers on the local engine leaves a marker file
# (pid, start time, DOCKER_HOST) in the cache until its teardown. A later amlrun
# command of any kind (``amlrun_configure``) looks for markers of dead processes and
# removes their containers: one directory listing when there is nothing to do.


def _markers_dir(cache_dir: Path) -> Path:
    return cache_dir / "docker-owners"


def _marker_path(cache_dir: Path) -> Path:
    pid = os.getpid()
    return _markers_dir(cache_dir) / f"{_host()}-{pid}-{process_start(pid) or 0}.json"


def write_owner_marker(cache_dir: Path) -> None:
    import json

    path = _marker_path(cache_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "start": process_start(os.getpid()),
                    "host": _host(),
                    "docker_host": os.environ.get("DOCKER_HOST"),
                }
            )
        )


def drop_owner_marker(cache_dir: Path) -> None:
    try:
        _marker_path(cache_dir).unlink()
    except FileNotFoundError:
        pass


def sweep_dead_owners(cache_dir: Path) -> list[str]:
    """Remove containers of dead amlrun processes named by markers; quiet when the engine is away."""
    import json

    folder = _markers_dir(cache_dir)
    try:
        markers = list(folder.iterdir())
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for marker in markers:
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            marker.unlink(missing_ok=True)
            continue
        labels = {
            LABEL_OWNER_PID: str(data.get("pid")),
            LABEL_OWNER_START: data.get("start") or "",
            LABEL_OWNER_HOST: data.get("host") or "",
        }
        if owner_alive(labels):
            continue
        try:
            from amlrun.targets.docker.image import docker_sdk

            docker = docker_sdk()
            client = docker.DockerClient(base_url=data.get("docker_host") or DEFAULT_SOCKET, timeout=30)
            try:
                for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL_OWNER_PID}={data.get('pid')}"}
                ):
                    if not owner_alive(container.labels):
                        container.remove(force=True)
                        removed.append(container.name)
            finally:
                client.close()
        except Exception:
            continue  # engine unreachable: try again next time
        marker.unlink(missing_ok=True)
    return removed


def _host() -> str:
    import socket  # not at import: every amlrun command sweeps, few have markers to read

    return socket.gethostname()
