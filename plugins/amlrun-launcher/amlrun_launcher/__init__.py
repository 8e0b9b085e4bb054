"""The ``launcher`` compute target type: a local run started through a command prefix.

A compute file such as::

    type: launcher
    launcher: ["nice", "-n", "10"]

runs each cell as ``nice -n 10 python script.py --param value`` on this machine, with
everything the ``local`` target does (snapshot working directory, environment, outputs,
metrics, timeout, cancel). ``{run_id}``, ``{cell_id}`` and ``{target}`` in a prefix
argument are replaced per run (e.g. ``srun --job-name={run_id}``).

Registered through the ``amlrun`` entry-point group, exactly as any third-party plugin.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil

from amlrun.errors import ConfigError
from amlrun.hookspec import hookimpl
from amlrun.targets.base import Check
from amlrun.targets.local import LocalTarget

__version__ = "0.1.0"

PLACEHOLDERS = ("run_id", "cell_id", "target")


def parse_prefix(value, where: str) -> tuple[str, ...]:
    """The ``launcher`` key: a list of arguments, or one string split like a shell would."""
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"'launcher' is not a valid command line: {exc}", where) from None
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        parts = [str(v) for v in value]
    else:
        raise ConfigError('\'launcher\' must be a list of strings, e.g. ["nice", "-n", "10"]', where)
    if not parts:
        raise ConfigError(
            '\'launcher\' is empty: name the command runs start through, e.g. ["nice", "-n", "10"]', where
        )
    return tuple(parts)


class LauncherTarget(LocalTarget):
    """A :class:`LocalTarget` whose command is prefixed by the compute file's ``launcher``."""

    type_name = "launcher"
    compute_keys = frozenset({"launcher"})

    def __init__(self, compute, context):
        super().__init__(compute, context)
        where = compute.source or compute.name
        if "launcher" not in compute.settings:
            raise ConfigError(
                'a \'launcher\' target needs a \'launcher\' key, e.g. launcher: ["nice", "-n", "10"]', where
            )
        self.prefix = parse_prefix(compute.settings["launcher"], where)

    def describe(self) -> str:
        return f"launcher {shlex.join(self.prefix)} → {super().describe()}"

    def prefix_for(self, job) -> list[str]:
        values = {"run_id": job.run_id, "cell_id": job.cell_id, "target": self.name}
        out = []
        for arg in self.prefix:
            for key in PLACEHOLDERS:
                arg = arg.replace("{" + key + "}", values[key])
            out.append(arg)
        return out

    def execute(self, job, prepared, sink):
        # A Job's argv that does not start with a .py script is run as it is, so the
        # prefixed command goes through LocalTarget.execute unchanged (same cancel event).
        command = [*self.prefix_for(job), *job.command(prepared.python)]
        return super().execute(dataclasses.replace(job, argv=tuple(command)), prepared, sink)

    def doctor(self) -> list[Check]:
        program = self.prefix[0]
        found = shutil.which(program)
        return [
            *super().doctor(),
            Check(
                f"launcher command '{program}'",
                found is not None,
                found or f"'{program}' is not on PATH of this machine",
            ),
        ]


@hookimpl
def amlrun_register_targets():
    return {"launcher": LauncherTarget}
