"""Packages for the job server: the run's working directory and a job's secret variables.

A package is a zip stored in the cluster's GCS as ``gcs://_ray_pkg_<hash>.zip``, the
form Ray's own client uploads (``ray/_private/runtime_env/packaging.py``). The working
directory's name is a hash of its content, so an unchanged project is not uploaded again,
even by a later session; zip entries carry a fixed time so the same content is the same
zip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets as _random
import zipfile
from dataclasses import dataclass
from pathlib import Path

from amlrun.targets.base import RUNTIME_DIRNAME

BOOT_NAME = "amlrun_ray_boot.py"
BOOT_SOURCE = Path(__file__).with_name("boot.py")
SECRETS_FILE = "amlrun_secrets.json"
#: the run contract's variables, base64-encoded JSON, read by the boot script
ENV_VARIABLE = "AMLRUN_RAY_ENV"
#: Ray refuses packages of its gRPC message size or more (512 MiB by default)
MAX_PACKAGE_BYTES = 500 * 1024 * 1024
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Package:
    uri: str
    data: bytes = b""

    @property
    def name(self) -> str:
        """The package's folder name on a node (``_ray_pkg_<hash>``)."""
        return self.uri.split("://", 1)[1].removesuffix(".zip")


def _entries(root: Path) -> list[tuple[str, Path]]:
    """Regular files under ``root`` (relative POSIX path, path), sorted; links are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return found


def fingerprint(root: Path) -> tuple:
    """Names and sizes: within one session every run's working directory is the same
    snapshot, so this tells whether its package is already made (no file is read)."""
    return tuple((rel, path.stat().st_size) for rel, path in _entries(root))


def working_dir_package(root: Path) -> Package:
    """The zip of ``root`` plus amlrun's boot program, named by the hash of its content."""
    files = [(rel, path.read_bytes(), path.stat().st_mode) for rel, path in _entries(root)]
    files.append((f"{RUNTIME_DIRNAME}/{BOOT_NAME}", BOOT_SOURCE.read_bytes(), 0o644))
    # Ray unwraps a zip whose entries share one top-level folder: a top-level file prevents it
    files.append((".amlrun-snapshot", b"", 0o644))
    digest = hashlib.sha256()
    for rel, data, mode in files:
        digest.update(json.dumps([rel, len(data), mode & 0o111 != 0]).encode())
        digest.update(data)
    return Package(f"gcs://_ray_pkg_{digest.hexdigest()[:40]}.zip", _zip(files))


def secrets_package(values: dict[str, str]) -> Package:
    """One job's secret variables, under a random name only that job's runtime env holds."""
    data = json.dumps(values).encode()
    return Package(f"gcs://_ray_pkg_{_random.token_hex(20)}.zip", _zip([(SECRETS_FILE, data, 0o600)]))


def _zip(files: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for rel, data, mode in files:
            info = zipfile.ZipInfo(rel, _EPOCH)
            info.external_attr = (0o100000 | (mode & 0o7777)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()
