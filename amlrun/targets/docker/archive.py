"""Moving a run's files in and out of a container as tar streams (``put_archive`` /
``get_archive``), never trusting what comes out: no links, devices, absolute paths or ``..``."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterable
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


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (a ``get_archive`` stream), so that
    tarfile reads the archive as it arrives instead of from a copy of all of it in memory."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _inside(member: tarfile.TarInfo) -> str | None:
    """The path of a member under ``outputs/`` ("" for the folder itself), None for what is
    never extracted: anything outside it, ``..``, absolute paths, links and devices."""
    name = PurePosixPath(member.name)
    if not name.parts or name.parts[0] != "outputs" or ".." in name.parts or name.is_absolute():
        return None
    if not (member.isfile() or member.isdir()):
        return None  # no links or devices out of a container
    return str(PurePosixPath(*name.parts[1:])) if len(name.parts) > 1 else ""


def extract_outputs(stream: Iterable[bytes], dest: Path) -> None:
    """Unpack a ``get_archive`` stream of ``outputs/`` into ``dest`` as the invoking user,
    one member at a time straight to disk (outputs may be far larger than memory)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    reader = io.BufferedReader(ChunkReader(stream), buffer_size=1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            relative = _inside(member)
            if not relative:
                continue
            path = dest / relative
            try:
                if member.isdir():
                    path.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                _write_member(tar, member, path)
            except OSError:
                continue  # e.g. a file and a folder of the same name: the first one stays


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    source = tar.extractfile(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, (member.mode | 0o600) & 0o777)
    with os.fdopen(fd, "wb") as out:
        if source is not None:
            shutil.copyfileobj(source, out, 1 << 20)
    os.utime(path, (member.mtime, member.mtime))
