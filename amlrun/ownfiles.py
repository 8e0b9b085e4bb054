"""Files amlrun itself writes into a project: never part of a code snapshot.

A report written by one run (``--junitxml``, ``--report-json``, ``--html``) or the
baseline file must not make the next run's code differ, or ``--reuse`` would rerun every
cell after it. Reports are remembered when written (``.amlrun/own-files.json``); the
baseline file is known by its setting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OWN_FILES = "own-files.json"


def _registry(project) -> Path:
    return project.state_dir / OWN_FILES


def _recorded(project) -> list[str]:
    try:
        data = json.loads(_registry(project).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


def remember(project, path: Path) -> None:
    """Note that amlrun wrote ``path``; outside the project it is not a snapshot's concern."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return
    known = _recorded(project)
    if rel in known:
        return
    registry = _registry(project)
    registry.parent.mkdir(parents=True, exist_ok=True)
    tmp = registry.with_name(f"{registry.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted({*known, rel}), indent=0), encoding="utf-8")
    os.replace(tmp, registry)


def own_files(project) -> frozenset[str]:
    """Project-relative paths of the files amlrun wrote or keeps in the project."""
    from amlrun.project import baseline_path

    found = set(_recorded(project))
    try:
        found.add(baseline_path(project).resolve().relative_to(project.root.resolve()).as_posix())
    except ValueError:
        pass
    return frozenset(found)
