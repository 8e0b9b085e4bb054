"""The project's git state, recorded with every run."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitInfo:
    commit: str | None = None
    dirty: bool | None = None
    diff: str = ""


def read_git(root: Path) -> GitInfo:
    if not shutil.which("git"):
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
