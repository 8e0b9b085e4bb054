"""Artifacts: the files a run left in ``outputs/``, with sizes and sha256.

A run's ``outputs/`` is written by a script amlrun does not trust: it may be a link
to a host folder, hold links out of the run's folder, or FIFOs and devices whose
reading never ends. Only regular files reached without following any link are
artifacts; an ``outputs/`` that is itself a link is removed (the link, not what it
points to), so nothing later (``history download``) can follow it either.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from amlrun.hookspec import hookimpl

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class Artifact:
    """One file of a run's ``outputs/``, as its record lists it."""

    path: str  # relative to the run folder, e.g. outputs/model.pkl
    size: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def output_files(outputs: Path) -> Iterator[Path]:
    """Regular files under ``outputs`` in a stable order, never through a link."""
    try:
        if not stat.S_ISDIR(os.lstat(outputs).st_mode):
            return
    except OSError:
        return
    for dirpath, dirnames, filenames in os.walk(outputs):  # os.walk never descends into linked folders
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except OSError:
                continue


def open_regular(path: Path):
    """``path`` opened for binary reading, refusing links and anything not a regular file
    (checked on the open descriptor, so a file swapped for a FIFO meanwhile is refused too)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_regular(path: Path) -> tuple[int, str]:
    """(size, sha256) of a regular file, read through :func:`open_regular`."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def list_outputs(run_dir: Path) -> list[Artifact]:
    outputs = run_dir / "outputs"
    if outputs.is_symlink():
        outputs.unlink()  # a script replaced outputs/ with a link: what it points to is not the run's
        return []
    if not outputs.is_dir():
        return []
    try:
        outputs.rmdir()  # an empty outputs/ is not kept: 1,000 runs would pay a block each
        return []
    except OSError:
        pass
    found = []
    for path in output_files(outputs):
        try:
            size, digest = hash_regular(path)
        except OSError:
            continue
        found.append(Artifact(path.relative_to(run_dir).as_posix(), size, digest))
    return found


@hookimpl(trylast=True)
def amlrun_collect_artifacts(job, run_dir):
    return list_outputs(run_dir)
