"""Moving a run's files in and out of a container as tar streams (``put_archive`` /
``get_archive``), never trusting what comes out: no links, devices, absolute paths or ``..``."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath


def tar_tree(root: Path, arcroot: str) -> bytes:
    """A tar of ``root`` placed at ``arcroot``, root-owned and writable by any container user."""
    buf = io.BytesIO()

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isdir():
            info.mode = 0o777
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = PurePosixPath(arcroot).parts
        for depth in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        tar.add(str(root), arcname=arcroot, filter=normalise)
    return buf.getvalue()


def extract_outputs(stream, dest: Path) -> None:
    """Unpack a ``get_archive`` stream of ``outputs/`` into ``dest`` as the invoking user."""
    buf = io.BytesIO()
    for chunk in stream:
        buf.write(chunk)
    buf.seek(0)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()
    with tarfile.open(fileobj=buf, mode="r") as tar:
        members = []
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if not name.parts or name.parts[0] != "outputs" or ".." in name.parts or name.is_absolute():
                continue
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices out of a container
            member.name = str(PurePosixPath(*name.parts[1:])) if len(name.parts) > 1 else "."
            member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
            member.mode = (member.mode | 0o600) & 0o777 if member.isfile() else 0o755
            if member.name != ".":
                members.append(member)
        tar.extractall(dest, members=members)
        for member in members:
            try:
                os.chown(dest / member.name, uid, gid)
            except OSError:
                pass
