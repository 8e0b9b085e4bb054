"""Managed local Python environments: a virtual environment per dependency spec.

Built from the ``pip:`` list (and the ``python=X.Y`` pin) of ``conda_dependencies.yml``,
kept under the user's cache keyed by a hash of the resolved spec, reused while it is
unchanged. A file lock keeps concurrent amlrun processes from building the same
environment twice at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amlrun.config import CondaDependencies
from amlrun.errors import ConfigError, EnvironmentBuildError

COMPLETE_MARKER = ".amlrun-complete"


def cache_dir() -> Path:
    override = os.environ.get("AMLRUN_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "amlrun"


def find_interpreter(version: str | None, default: str | None = None) -> str:
    """An interpreter for ``python=X.Y`` (this one if it matches), or ``default``/this one."""
    if not version:
        return default or sys.executable
    wanted = version.split(".")[:2]
    if [str(sys.version_info[0]), str(sys.version_info[1])][: len(wanted)] == wanted:
        return sys.executable
    found = shutil.which(f"python{'.'.join(wanted)}")
    if found is None:
        raise ConfigError(f"the dependency file pins python={version}, but no python{'.'.join(wanted)} is on PATH")
    return found


def venv_key(deps: CondaDependencies, interpreter: str) -> str:
    return hashlib.sha256(f"{deps.digest}\0{os.path.realpath(interpreter)}".encode()).hexdigest()[:20]


def venv_python(location: Path) -> Path:
    return location / "bin" / "python"


def ensure_venv(
    deps: CondaDependencies, progress, *, interpreter: str | None = None, root: Path | None = None
) -> tuple[Path, bool]:
    """Return (python of the environment, whether it was built now)."""
    if deps.conda_packages:
        raise ConfigError(
            "conda packages " + ", ".join(deps.conda_packages) + " need conda, which a managed local "
            "environment does not use; list them under 'pip:' or set userManagedEnvironment: true",
            deps.source,
        )
    interpreter = interpreter or find_interpreter(deps.python_version)
    root = root or cache_dir() / "envs"
    root.mkdir(parents=True, exist_ok=True)
    location = root / venv_key(deps, interpreter)
    if (location / COMPLETE_MARKER).exists():
        return venv_python(location), False
    from filelock import FileLock  # 20 ms of imports (asyncio): only when there is something to build

    with FileLock(str(location) + ".lock"):
        if (location / COMPLETE_MARKER).exists():
            return venv_python(location), False
        shutil.rmtree(location, ignore_errors=True)
        started = time.monotonic()
        progress.status(f"building environment {location.name} ({len(deps.pip_packages)} pip packages)")
        log: list[str] = []
        _step([interpreter, "-m", "venv", str(location)], progress, log)
        if deps.pip_packages:
            _step(
                [
                    str(venv_python(location)),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    *deps.pip_packages,
                ],
                progress,
                log,
            )
        (location / COMPLETE_MARKER).write_text(f"{deps.digest}\n")
        progress.status(f"built environment {location.name} in {time.monotonic() - started:.1f}s")
        return venv_python(location), True


def _step(cmd: list[str], progress, log: list[str]) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None  # stdout=PIPE
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        log.append(line)
        progress.line(line)
    if proc.wait() != 0:
        tail = "\n".join(log[-20:])
        raise EnvironmentBuildError(f"environment build failed: {' '.join(cmd[:4])} ... exited {proc.returncode}", tail)
