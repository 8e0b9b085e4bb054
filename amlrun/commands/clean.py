"""``amlrun clean``: remove what amlrun left on this machine and its Docker engine.

By default only what belongs to the current project: environment images and managed
local environments its runs used (by environment digest, from its history and
``.amlrun/environments/``; one shared with another project of the same dependencies is
rebuilt there on demand), and its runs' stopped containers or containers of dead amlrun
processes. ``--all``: everything amlrun made, every project's. Never an image or
container amlrun did not label. ``--older-than`` keeps recent ones, ``--dry-run`` only
lists. It says what it removed and how much space that freed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from amlrun.commands._common import parser
from amlrun.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise UsageError(f"--older-than: expected an age like 30m, 12h, 7d or 2w, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _created(text: str) -> float:
    from datetime import datetime

    text = re.sub(r"\.(\d{6})\d*", r".\1", text or "").replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class Scope:
    """What ``clean`` may touch: everything (``--all``), or one project's runs and environments."""

    def __init__(self, run_ids: set[str] | None = None, digests: set[str] | None = None):
        self.run_ids, self.digests = run_ids, digests

    @classmethod
    def of_project(cls, project) -> Scope:
        from amlrun.store import RunStore

        run_ids: set[str] = set()
        digests = {p.stem for p in (project.state_dir / "environments").glob("*.txt")}
        if (project.state_dir / "runs").is_dir():
            for record in RunStore(project.state_dir).list(reap=False):
                run_ids.add(record.run_id)
                if record.environment_digest:
                    digests.add(record.environment_digest)
        return cls(run_ids, digests)

    @property
    def everything(self) -> bool:
        return self.digests is None

    def has_digest(self, digest: str | None) -> bool:
        """Environment digests are recorded shortened (20 characters) where images carry them whole."""
        known = self.digests or set()
        return self.everything or (digest is not None and (digest in known or digest[:20] in known))

    def has_run(self, run_id: str | None) -> bool:
        return self.everything or (run_id is not None and run_id in (self.run_ids or ()))


def _engine(out):  # -> docker.DockerClient | None
    """A client of the engine ``DOCKER_HOST`` names, or None (said on ``out``) when none answers."""
    from amlrun.targets.docker.image import docker_sdk
    from amlrun.targets.docker.owners import DEFAULT_SOCKET

    try:
        client = docker_sdk().from_env(timeout=120)
        client.ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        print(
            f"docker: no engine answers at {where} ({str(exc).splitlines()[0][:120]}); images and containers "
            "not cleaned",
            file=out,
        )
        return None
    return client


def _clean_containers(client, cutoff: float, dry_run: bool, out, scope: Scope) -> int:
    """Remove this project's amlrun containers that ended before ``cutoff`` (or whose amlrun is dead)."""
    import docker.errors

    from amlrun.targets.docker.image import LABEL_MANAGED
    from amlrun.targets.docker.owners import LABEL_RUN_ID, owner_alive

    count = 0
    verb = "would remove" if dry_run else "removed"
    for container in client.containers.list(all=True, filters={"label": LABEL_MANAGED}):
        if not scope.has_run(container.labels.get(LABEL_RUN_ID)):
            continue  # another project's
        state = container.attrs.get("State", {})
        running = state.get("Status") in ("running", "restarting", "paused")
        if owner_alive(container.labels) and container.labels.get("amlrun.owner-pid"):
            continue  # a live amlrun's run
        finished = _created(state.get("FinishedAt", "")) or _created(container.attrs.get("Created", ""))
        if not running and finished > cutoff:
            continue
        if not dry_run:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                continue
        count += 1
        print(f"{verb} container {container.name}", file=out)
    return count


def _image_size(client, image) -> int:
    """The bytes an image adds to its base image (whose layers stay)."""
    import docker.errors

    size = int(image.attrs.get("Size") or 0)
    base = image.labels.get("amlrun.base-image")
    if base:
        try:
            size -= int(client.images.get(base).attrs.get("Size") or 0)
        except docker.errors.DockerException:
            pass
    return max(size, 0)


def _clean_images(client, cutoff: float, dry_run: bool, out, scope: Scope) -> tuple[int, int]:
    """Remove this project's environment images built before ``cutoff``: (images, bytes)."""
    import docker.errors

    from amlrun.targets.docker.image import LABEL_DIGEST, LABEL_MANAGED

    count = freed = 0
    verb = "would remove" if dry_run else "removed"
    for image in client.images.list(filters={"label": LABEL_MANAGED}):
        if not scope.has_digest((image.labels or {}).get(LABEL_DIGEST)):
            continue  # another project's
        if _created(image.attrs.get("Created", "")) > cutoff:
            continue
        size = _image_size(client, image)
        tags = ", ".join(image.tags) or image.short_id
        if not dry_run:
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.APIError as exc:
                print(f"kept image {tags}: {getattr(exc, 'explanation', exc)}", file=out)
                continue
        count += 1
        freed += size
        print(f"{verb} image {tags} ({human(size)})", file=out)
    return count, freed


def clean_docker(cutoff: float, dry_run: bool, out, scope: Scope | None = None) -> tuple[int, int] | None:
    """(items, bytes) freed on the engine, or None when no engine answers."""
    scope = scope or Scope()
    client = _engine(out)
    if client is None:
        return None
    containers = _clean_containers(client, cutoff, dry_run, out, scope)
    images, freed = _clean_images(client, cutoff, dry_run, out, scope)
    client.close()
    return containers + images, freed


def clean_envs(cutoff: float, dry_run: bool, out, scope: Scope | None = None) -> tuple[int, int]:
    from amlrun.envs import cache_dir

    scope = scope or Scope()
    root = cache_dir() / "envs"
    count = freed = 0
    if not root.is_dir():
        return 0, 0
    verb = "would remove" if dry_run else "removed"
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.stat().st_mtime > cutoff or not scope.has_digest(entry.name):
            continue
        size = _dir_size(entry)
        if not dry_run:
            from filelock import FileLock, Timeout

            try:
                with FileLock(str(entry) + ".lock", timeout=0):
                    shutil.rmtree(entry, ignore_errors=True)
            except Timeout:
                print(f"kept environment {entry.name}: being built", file=out)
                continue
        count += 1
        freed += size
        print(f"{verb} environment {entry.name} ({human(size)})", file=out)
    return count, freed


def main(argv: list[str], prog: str) -> int:
    p = parser(prog, "Remove the project's amlrun Docker images, stopped containers and managed local environments.")
    p.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="everything amlrun made on this machine and engine, every project's",
    )
    p.add_argument("--older-than", metavar="AGE", help="only what is older than AGE (30m, 12h, 7d, 2w)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--no-docker", action="store_true", help="leave the Docker engine alone")
    p.add_argument("--no-envs", action="store_true", help="leave managed local environments alone")
    options = p.parse_args(argv)
    cutoff = time.time() - parse_age(options.older_than) if options.older_than else float("inf")
    out = sys.stdout
    if options.everything:
        scope = Scope()
    else:
        from amlrun.project import Project

        scope = Scope.of_project(Project.discover(Path.cwd(), Path.cwd()))
    count = freed = 0
    if not options.no_docker:
        found = clean_docker(cutoff, options.dry_run, out, scope)
        if found:
            count, freed = count + found[0], freed + found[1]
    if not options.no_envs:
        found = clean_envs(cutoff, options.dry_run, out, scope)
        count, freed = count + found[0], freed + found[1]
    what = "would free" if options.dry_run else "freed"
    whose = "" if scope.everything else " of this project (--all: every project's)"
    print(f"{count} item{'s' * (count != 1)}, {what} {human(freed)}" if count else f"nothing to clean{whose}")
    return 0
