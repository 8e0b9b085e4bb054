"""Notebook experiments on the host side: what collection reads from a ``.ipynb`` file
(without executing it) and what a notebook's run needs.

A notebook runs through ``.amlrun_runtime/amlrun_notebook.py`` (papermill), which takes
the place of ``$file`` in the run's argument vector. papermill and ipykernel are the run
environment's packages: :data:`EXECUTOR_REQUIREMENTS` is added to a managed environment
of every target that runs a notebook. Imported only when a notebook is collected.
"""

from __future__ import annotations

import dataclasses
import json

from amlrun.errors import ConfigError
from amlrun.matrix import Mark
from amlrun.targets.base import RUNTIME_DIRNAME

SUFFIX = ".ipynb"
RUNNER = f"{RUNTIME_DIRNAME}/amlrun_notebook.py"
#: what a managed environment gets when one of its target's cells is a notebook
EXECUTOR_REQUIREMENTS = ("papermill>=2.4", "ipykernel>=6")


def is_notebook(script: str) -> bool:
    return script.endswith(SUFFIX)


def code_cells(source: bytes, shown: str) -> list[tuple[int, str]]:
    """(1-based cell number, source) of each code cell; an unreadable notebook is a ConfigError."""
    try:
        document = json.loads(source)
    except ValueError as exc:
        raise ConfigError(f"not a readable notebook (invalid JSON: {exc})", shown) from None
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        raise ConfigError("not a readable notebook (no 'cells' list)", shown)
    found = []
    for number, cell in enumerate(cells, 1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            text = cell.get("source", "")
            found.append((number, "".join(text) if isinstance(text, list) else str(text)))
    return found


def _without_magics(text: str) -> str:
    """IPython's ``%magic``, ``!shell`` and ``?help`` lines blanked, so the rest parses as Python."""
    return "\n".join("" if line.lstrip().startswith(("%", "!", "?")) else line for line in text.split("\n"))


def read_notebook_declarations(source: bytes, shown: str) -> tuple[tuple[dict, ...], tuple[Mark, ...]]:
    """``AMLRUN_PARAMS`` / ``AMLRUN_MARKS`` literals in a notebook's code cells (the last wins)."""
    from amlrun.collection import parse_declarations

    params: tuple[dict, ...] = ()
    marks: tuple[Mark, ...] = ()
    if b"AMLRUN_" not in source:
        code_cells(source, shown)  # still a readable notebook?
        return params, marks
    for number, text in code_cells(source, shown):
        cell_params, cell_marks = parse_declarations(_without_magics(text).encode("utf-8"), f"{shown} cell {number}")
        params, marks = cell_params or params, cell_marks or marks
    return params, marks


def script_argv(script: str) -> list[str]:
    """What ``$file`` becomes in a run's argument vector."""
    return [RUNNER, script] if is_notebook(script) else [script]


def with_executor(session, cells) -> None:
    """Give every target that runs a notebook cell the executor in its (managed) environment."""
    targets = {cell.target for cell in cells if is_notebook(cell.script)}
    for name in targets:
        runconfig = session.runconfigs.get(name)
        if runconfig is not None and not set(EXECUTOR_REQUIREMENTS) <= set(runconfig.extra_requirements):
            session.runconfigs[name] = dataclasses.replace(
                runconfig, extra_requirements=(*runconfig.extra_requirements, *EXECUTOR_REQUIREMENTS)
            )
