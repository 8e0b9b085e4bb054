"""Failures that read like pytest's: tracebacks name the project's own files, and the
one-line reason of a failed cell is the exception's last line.

A run executes in a copy of the project (``.amlrun/work/<run id>/`` here, a folder of
the run's own on a VM, a fixed folder in a container) that is deleted afterwards; a
traceback naming that copy points at nothing. A traceback's frame lines
(``  File "...", line N``) and warnings (``path:N: SomeWarning``) have the copy's path
replaced by the project's own before they are logged, streamed or shown; other output,
which a script may parse or compare, is left as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

_TRACEBACK = "Traceback (most recent call last):"
#: ``ValueError: bad``, ``mypkg.errors.Oops``, ``KeyboardInterrupt`` (not indented, a dotted name first)
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?::\s.*)?$")
#: lines that locate code: a traceback frame, or a warning's ``path:line:``
_LOCATION = re.compile(r'^\s+File "|^\S+:\d+: \w*Warning')


def exception_line(lines: Iterable[str]) -> str | None:
    """The last line of the last Python traceback in ``lines`` (``ValueError: bad``), or None."""
    found = None
    in_traceback = False
    for line in lines:
        if line.startswith(_TRACEBACK):
            in_traceback, found = True, None
        elif in_traceback and not line.startswith((" ", "\t")) and _EXCEPTION.match(line):
            found, in_traceback = line.strip(), False
    return found


def shown_project_path(root: Path) -> str:
    """How the project's folder is written in output: relative to the current folder when inside it."""
    try:
        rel = os.path.relpath(root, Path.cwd())
    except ValueError:
        return str(root)
    if rel == ".":
        return ""
    return str(root) if rel.startswith("..") else rel + "/"


def workdir_rewriter(
    run_id: str, local_workdir: Path, project_root: Path, target_workdir: str | None = None
) -> Callable[[str], str]:
    """A function that replaces the run's working copy's path in a line by the project's.

    Covered: ``local_workdir``, any path ending in ``/<run id>/`` or ``/<run id>/work/``
    (the SSH and cluster targets' folders), and ``target_workdir`` (a container's fixed folder)."""
    shown = shown_project_path(project_root)
    prefixes = [re.escape(str(local_workdir).rstrip("/")) + "/", rf"/(?:[^\s\"'()/]+/)*{re.escape(run_id)}(?:/work)?/"]
    if target_workdir:
        prefixes.append(re.escape(target_workdir.rstrip("/")) + "/")
    compiled: list[re.Pattern] = []  # compiled at the first traceback line: most runs print none

    def rewrite(line: str) -> str:
        if not _LOCATION.match(line) or not (run_id in line or (target_workdir and target_workdir in line)):
            return line
        if not compiled:
            compiled.append(re.compile("|".join(f"(?:{p})" for p in prefixes)))
        return compiled[0].sub(shown, line)

    return rewrite
