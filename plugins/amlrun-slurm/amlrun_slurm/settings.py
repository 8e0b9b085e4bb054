"""The ``slurm`` compute file's own keys, each validated where it is read.

A mistake is one line naming the file and the key (``ConfigError``, exit code 4)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from amlrun.errors import ConfigError

COMPUTE_KEYS = frozenset({"partition", "sbatchArguments", "workspace", "slurmEnvironment", "knownHostsFile"})

#: cells in the queue at once unless ``maxParallel`` says
DEFAULT_PARALLEL = 100
DEFAULT_WORKSPACE = "~/.amlrun/slurm"

#: sbatch options amlrun sets itself: a user's value would break the run contract
RESERVED_OPTIONS = {
    "--array": "amlrun submits a sweep's cells as one job array itself",
    "-a": "amlrun submits a sweep's cells as one job array itself",
    "--output": "the run's log is amlrun's",
    "-o": "the run's log is amlrun's",
    "--error": "the run's log is amlrun's",
    "-e": "the run's log is amlrun's",
    "--job-name": "amlrun names its jobs (it finds them again by name and comment)",
    "-J": "amlrun names its jobs (it finds them again by name and comment)",
    "--comment": "amlrun finds its jobs again by their comment",
    "--wrap": "amlrun writes the job script",
    "--parsable": "amlrun reads sbatch's answer itself",
    "--chdir": "the run's working directory is its snapshot copy",
    "-D": "the run's working directory is its snapshot copy",
    "--partition": "use the 'partition' key",
    "-p": "use the 'partition' key",
    "--export": "the run's environment travels in a 0600 file, not through sbatch",
    "--wait": "amlrun follows the job itself",
    "-W": "amlrun follows the job itself",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    sbatch_arguments: tuple[str, ...] = ()
    workspace: str = DEFAULT_WORKSPACE  # absolute, or ~/... on the login node
    max_parallel: int = DEFAULT_PARALLEL
    python: str = "python3"
    managed: bool = False  # userManagedEnvironment: false
    over_ssh: bool = False  # an 'address' names the login node
    slurm_environment: dict[str, str] = field(default_factory=dict)


def read_settings(compute) -> SlurmSettings:
    where = compute.source or compute.name
    get = compute.settings.get
    partition = get("partition")
    if partition is not None:
        if not isinstance(partition, str) or not re.fullmatch(r"[A-Za-z0-9_.,-]+", partition):
            raise ConfigError(
                f"'partition' must be a partition name such as 'gpu' (or several: 'a,b'), got {partition!r}", where
            )
    args = _sbatch_arguments(get("sbatchArguments", []), where)
    workspace = get("workspace", DEFAULT_WORKSPACE)
    if not isinstance(workspace, str) or not (
        workspace.startswith("/") or workspace == "~" or workspace.startswith("~/")
    ):
        raise ConfigError(
            f"'workspace' must be an absolute path on the cluster's shared filesystem or start with ~/, "
            f"got {workspace!r}",
            where,
        )
    if any(c in workspace for c in "\n\0"):
        raise ConfigError("'workspace' contains a newline or NUL", where)
    parallel = get("maxParallel", DEFAULT_PARALLEL)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"'maxParallel' must be a whole number of cells, at least 1, got {parallel!r}", where)
    python = get("pythonLocation", "python3")
    if not isinstance(python, str) or not python.strip():
        raise ConfigError(f"'pythonLocation' must be a path or a command name, got {python!r}", where)
    env = _slurm_environment(get("slurmEnvironment", {}) or {}, where)
    return SlurmSettings(
        partition=partition,
        sbatch_arguments=args,
        workspace=workspace.rstrip("/") or "/",
        max_parallel=parallel,
        python=python.strip(),
        managed=not compute.flag("userManagedEnvironment", default=True),
        over_ssh=bool(str(get("address") or "").strip()),
        slurm_environment=env,
    )


def _sbatch_arguments(args, where: str) -> tuple[str, ...]:
    """Options amlrun passes to sbatch as given, minus those amlrun must set itself."""
    if isinstance(args, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError('\'sbatchArguments\' must be a list of strings, e.g. ["--mem=4G", "--time=01:00:00"]', where)
    for arg in args:
        if not arg.startswith("-"):
            raise ConfigError(
                f"'sbatchArguments': {arg!r} is not an option; write each as one item with its value, "
                'e.g. "--gres=gpu:1"',
                where,
            )
        option = arg.split("=", 1)[0]
        if option in RESERVED_OPTIONS or (len(option) > 2 and option[:2] in RESERVED_OPTIONS and option[1] != "-"):
            why = RESERVED_OPTIONS.get(option) or RESERVED_OPTIONS[option[:2]]
            raise ConfigError(f"'sbatchArguments': {option} is not allowed: {why}", where)
    return tuple(args)


def _slurm_environment(env, where: str) -> dict[str, str]:
    """Variables for the SLURM commands themselves (SLURM_CONF, ...), not for the runs."""
    if not isinstance(env, dict):
        raise ConfigError(
            "'slurmEnvironment' must be a mapping of variable names to values "
            "(e.g. SLURM_CONF: /etc/slurm-test/slurm.conf)",
            where,
        )
    for name, value in env.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"'slurmEnvironment': {name!r} is not a valid variable name", where)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"'slurmEnvironment': {name} must be a string, got {value!r}", where)
    return {k: str(v) for k, v in env.items()}
