"""The interface every compute target implements, built-in or third-party.

Execution contract: a run is an argv + environment + working directory, never a
pickled object. The protocol hands a target a :class:`Job` whose ``workdir`` is a
fresh local copy of the project snapshot (with amlrun's runtime modules in
``.amlrun_runtime/``); the target runs it wherever it runs things, streams every
output line to the sink, and brings ``outputs/`` back into ``job.outputs_dir``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from amlrun.config import ComputeTarget, RunConfig

if TYPE_CHECKING:
    from amlrun.project import Project

RUNTIME_DIRNAME = ".amlrun_runtime"


class Sink(Protocol):
    """Where a target sends the run's output, one line at a time."""

    def write(self, line: str) -> None: ...


class Progress(Protocol):
    """Where a target reports long preparation work (builds, uploads)."""

    def status(self, message: str) -> None: ...

    def line(self, text: str) -> None: ...


@dataclass(frozen=True, eq=False)
class Job:
    """One run, ready to execute."""

    run_id: str
    cell_id: str
    workdir: Path
    argv: tuple[str, ...]  # after $file substitution; argv[0] is the script when it ends in .py
    env: dict[str, str]  # runconfig variables, AMLRUN_* and parameters (no target paths)
    outputs_dir: Path  # where outputs/ must end up locally
    runconfig: RunConfig
    params: dict[str, object] = field(default_factory=dict)
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)

    def command(self, python: str) -> list[str]:
        """The argv to run on a target whose interpreter is ``python``."""
        if self.argv and self.argv[0].endswith(".py"):
            return [python, *self.argv]
        return list(self.argv)


@dataclass(frozen=True)
class PreparedEnvironment:
    """What ``prepare`` produced: an interpreter, an image, a packed env ...

    Other modules read only the named fields; ``details`` holds what the target itself
    needs later in ``execute`` (and is recorded nowhere)."""

    digest: str  # the environment spec's hash (recorded with every run)
    python: str = "python3"
    image: str | None = None  # a container image's tag
    image_id: str | None = None  # the engine's id of ``image``: what it holds changes only with it
    built: bool = False  # True when this call built it (not a cache hit)
    details: dict[str, Any] = field(default_factory=dict)


#: how an execution ended; "skipped" (a skip mark) and "error" (the target raised) are made
#: by the core only, a target returns one of the first three
Status = Literal["completed", "failed", "canceled", "skipped", "error"]
COMPLETED: Status = "completed"
FAILED: Status = "failed"
CANCELED: Status = "canceled"


@dataclass(frozen=True)
class ExecResult:
    """How an execution ended; build it with :mod:`amlrun.targets.outcome`'s helpers."""

    status: Status
    exit_code: int | None = None
    reason: str = ""
    infrastructure_error: bool = False  # the failure was not the script's (lost connection, OOM kill)
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One line of ``amlrun doctor``: what was checked, whether it is fine, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class TargetContext:
    """What a target may use from the session."""

    project: Project
    cache_dir: Path  # user-level cache (~/.cache/amlrun)
    #: ``[tool.amlrun.build]`` of the project: package index settings of environment builds
    build_settings: Mapping[str, object] = field(default_factory=dict)
    #: set when the session stops early (Ctrl-C, SIGTERM, --maxfail): long preparation work
    #: (an image build, a wait for another process's build) should give up
    stopping: threading.Event = field(default_factory=threading.Event, compare=False)


def contract_env(job: Job, *, workdir: str, outputs: str, share: str | None, pathsep: str = ":") -> dict[str, str]:
    """The run's environment on a target whose paths are ``workdir``/``outputs``/``share``."""
    env = dict(job.env)
    env["AMLRUN_OUTPUTS_DIR"] = outputs
    runtime = f"{workdir}/{RUNTIME_DIRNAME}"
    env["PYTHONPATH"] = runtime + (pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if share:
        env["AMLRUN_SHARE_DIRECTORY"] = share
        # with its trailing separator, as Workbench set it: scripts write
        # os.environ['AZUREML_NATIVE_SHARE_DIRECTORY'] + 'model.pkl'
        env["AZUREML_NATIVE_SHARE_DIRECTORY"] = share if share.endswith(("/", "\\")) else share + "/"
    return env


def remote_folder_name(project_root: Path) -> str:
    """The project's folder name on a shared machine: its own name, made safe, and a key of
    (this machine, its path), so two checkouts of one project never share a folder."""
    import hashlib
    import socket

    key = hashlib.sha256(f"{socket.gethostname()}\0{project_root}".encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in project_root.name) or "project"
    return f"{name}-{key}"


class Target(ABC):
    """Base class of a compute target type.

    Subclasses set ``type_name`` (and optionally ``aliases`` and ``compute_keys``, the
    extra compute-file keys they understand) and implement the three abstract methods;
    the others have defaults. ``execute`` runs on worker threads, up to ``max_parallel``
    at once for one target: keep per-run state in locals, share connections under a lock.
    """

    type_name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    compute_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when runs see this machine's filesystem (local, launcher): caches may then be
    #: validated with os.stat instead of asking the target
    local_filesystem: ClassVar[bool] = False
    #: how many cells of this target may run at once unless the compute file says (maxParallel)
    default_parallel: ClassVar[int] = 1
    #: True when the target's cells wait in a scheduler's own queue (SLURM, Ray), not on this
    #: machine: the run loop then hands it up to ``max_parallel`` cells at once whatever ``-n``
    #: says (``-n`` bounds the cells of the other targets), so they can go as one submission
    #: (see :mod:`amlrun.targets.batching`)
    queue_backed: ClassVar[bool] = False
    #: the run's working folder on the target when it is a fixed path (a container's): output
    #: naming it is rewritten to the project's own paths (folders named after the run id are found anyway)
    run_workdir: ClassVar[str | None] = None

    def __init__(self, compute: ComputeTarget, context: TargetContext):
        self.compute = compute
        self.context = context
        self.name = compute.name

    @property
    def project(self) -> Project:
        return self.context.project

    # -- required ----------------------------------------------------------------------------

    @abstractmethod
    def environment_digest(self, runconfig: RunConfig) -> str:
        """The hash of what ``prepare`` would build; recorded with each run. Cheap: no build."""

    @abstractmethod
    def prepare(self, runconfig: RunConfig, progress: Progress) -> PreparedEnvironment:
        """Build (or find cached) the execution environment of ``runconfig``; raise
        :class:`~amlrun.errors.EnvironmentBuildError` with the log's tail when it fails."""

    @abstractmethod
    def execute(self, job: Job, prepared: PreparedEnvironment, sink: Sink) -> ExecResult:
        """Run ``job`` to its end: stream every output line to ``sink``, honour
        ``job.timeout`` and ``job.cancel`` (stop everything the run started), and bring
        ``outputs/`` back into ``job.outputs_dir``. Raise
        :class:`~amlrun.errors.TargetUnavailable` when the target cannot be reached."""

    # -- optional ----------------------------------------------------------------------------

    def describe(self) -> str:
        """A short description for headers and ``amlrun targets`` (type and address)."""
        address = self.compute.address
        return f"{self.compute.type}" + (f" {address}" if address else "")

    def is_prepared(self, runconfig: RunConfig) -> bool:
        """Whether ``prepare`` would be a cache hit (for ``--collect-only`` and PrepareEnvironment: false)."""
        return True

    def doctor(self) -> list[Check]:
        """Checks for ``amlrun doctor -c NAME``; each failing one says what is wrong in one line."""
        return []

    def teardown(self) -> None:
        """Release connections and other session-wide resources."""

    @property
    def max_parallel(self) -> int:
        try:
            return max(1, int(str(self.compute.get("maxParallel", self.default_parallel))))
        except (TypeError, ValueError):
            return self.default_parallel
