"""A run's secret variables reach its container in an owner-only file, never in the
container's configuration (``docker inspect`` shows ``Config.Env`` to anyone who may talk
to the engine).

Every container runs its command through :data:`WRAPPER` (``sh``, which every amlrun image
has: its build runs ``sh install.sh``): it sources the file (the ``export`` lines the
``remote`` target's detached runs source, :func:`amlrun.targets.ssh.detached.env_file_text`),
deletes it, and execs the command with stderr on stdout, so the engine's log keeps the two
streams in the order they were written, as a local run's single pipe does.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath
from typing import Any

SECRETS_DIR = "/amlrun/secrets"
SECRETS_FILE = f"{SECRETS_DIR}/env"

WRAPPER = (
    f"if [ -e {SECRETS_FILE} ]; then "
    f". {SECRETS_FILE} || {{ echo '[amlrun] cannot read the run'\"'\"'s secrets' >&2; exit 126; }}; "
    f"rm -f {SECRETS_FILE}; fi; "
    'exec "$@" 2>&1'
)


def wrap(argv: list[str]) -> list[str]:
    """The container's command running ``argv`` through the wrapper."""
    return ["/bin/sh", "-c", WRAPPER, "amlrun-run", *argv]


def secrets_tar(env: dict[str, str], uid: int, gid: int) -> bytes:
    """A tar for ``put_archive("/")``: the secrets file (0600) in a folder (0700), both
    owned by the container's user, so only it (and root) can read them."""
    from amlrun.targets.ssh.detached import env_file_text

    data = env_file_text(env)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = PurePosixPath(SECRETS_FILE).relative_to("/").parts
        for depth in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type = tarfile.DIRTYPE
            mine = depth == len(parts) - 1
            info.mode = 0o700 if mine else 0o755
            info.uid, info.gid = (uid, gid) if mine else (0, 0)
            tar.addfile(info)
        info = tarfile.TarInfo("/".join(parts))
        info.size, info.mode, info.uid, info.gid = len(data), 0o600, uid, gid
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def container_ids(user: str | None, container: Any) -> tuple[int, int]:
    """The numeric (uid, gid) a created container runs as: ``user`` is docker's ``--user``
    (or the image's ``USER``): empty, ``uid[:gid]`` or names, looked up in the container's
    own ``/etc/passwd`` and ``/etc/group``."""
    name, _, group = (user or "").partition(":")
    if name in ("", "root"):
        uid, primary = 0, 0
    elif name.isdigit():
        uid, primary = int(name), int(name)
    else:
        entry = _lookup(container, "/etc/passwd", name)
        uid = int(entry[2]) if entry else 0
        primary = int(entry[3]) if entry and entry[3].isdigit() else uid
    if not group:
        return uid, primary
    if group.isdigit():
        return uid, int(group)
    entry = _lookup(container, "/etc/group", group)
    return uid, int(entry[2]) if entry else primary


def _lookup(container: Any, path: str, name: str) -> list[str] | None:
    """The ``name:...`` line of a passwd-style file in the container, split on ``:``."""
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            text = handle.read().decode("utf-8", "replace") if handle else ""
    except Exception:  # no such file: docker itself refuses an unknown user at start
        return None
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == name and fields[2].isdigit():
            return fields
    return None


def unwrap(command: list[str]) -> list[str]:
    """The argv :func:`wrap` runs."""
    return command[len(wrap([])) :]


def private_env(job: Any) -> dict[str, str]:
    """The run's variables that refer to secrets (delivered in the file, not ``Config.Env``)."""
    from amlrun.secrets import secret_names

    return {name: job.env[name] for name in sorted(secret_names(job.env, job.runconfig.environment_variables))}


def deliver(container: Any, env: dict[str, str], user: str | None) -> None:
    """Put ``env`` into the created (not yet started) ``container`` for the wrapper to source."""
    if env:
        container.put_archive("/", secrets_tar(env, *container_ids(user, container)))
