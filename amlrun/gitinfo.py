"""The project's git state, recorded with every run."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitInfo:
    """The project's commit (None: no repository, or no commit yet), whether its tree differs, the diff."""

    commit: str | None = None
    dirty: bool | None = None
    diff: str = ""


def in_repository(root: Path) -> bool:
    """Whether git could find a repository for ``root``: a ``.git`` in it or above it, or
    ``GIT_DIR`` set. Most projects outside git pay no git process this way."""
    if os.environ.get("GIT_DIR"):
        return True
    root = Path(os.path.abspath(root))
    return any((folder / ".git").exists() for folder in (root, *root.parents))


def read_git(root: Path) -> GitInfo:
    if not in_repository(root) or not shutil.which("git"):
        return GitInfo()

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, errors="replace")

    head = git("rev-parse", "--verify", "-q", "HEAD")
    if head.returncode != 0:
        inside = git("rev-parse", "--is-inside-work-tree")
        return GitInfo(None, True, "") if inside.returncode == 0 else GitInfo()
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude).amlrun")
    dirty = bool(status.stdout.strip())
    diff = git("diff", "HEAD", "--", ".", ":(exclude).amlrun").stdout if dirty else ""
    return GitInfo(head.stdout.strip(), dirty, diff)
