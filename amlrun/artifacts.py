"""Artifacts: the files a run left in ``outputs/``, with sizes and sha256."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from amlrun.hookspec import hookimpl
from amlrun.snapshot import hash_file


@dataclass(frozen=True)
class Artifact:
    path: str      # relative to the run folder, e.g. outputs/model.pkl
    size: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def list_outputs(run_dir: Path) -> list[Artifact]:
    outputs = run_dir / "outputs"
    found = []
    if not outputs.is_dir():
        return found
    try:
        outputs.rmdir()  # an empty outputs/ is not kept: 1,000 runs would pay a block each
        return found
    except OSError:
        pass
    for dirpath, dirnames, filenames in os.walk(outputs):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            found.append(Artifact(path.relative_to(run_dir).as_posix(), path.stat().st_size, hash_file(path)))
    return found


@hookimpl(trylast=True)
def amlrun_collect_artifacts(job, run_dir):
    return list_outputs(run_dir)
