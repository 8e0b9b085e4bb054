"""A session: the parsed configuration, the targets, the matrix, and running it."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from amlrun import secrets
from amlrun.config import RunConfig
from amlrun.errors import AmlrunError, ConfigError, TargetUnavailable, UsageError
from amlrun.gitinfo import GitInfo, in_repository, read_git
from amlrun.protocol import CANCELED, ERROR, FAILED, RunReport
from amlrun.snapshot import SnapshotStore
from amlrun.store import RunStore
from amlrun.targets.base import PreparedEnvironment, Target, TargetContext

if TYPE_CHECKING:
    from amlrun.freeze import EnvironmentRecorder
    from amlrun.snapshot import Snapshot
    from amlrun.terminal import TerminalReporter
    from amlrun.workdirs import WorkdirPool

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3, 4, 5


class Config:
    """The parsed command line, the project and the plugin manager of one invocation."""

    def __init__(self, options, project, pluginmanager):
        from amlrun.collection import Conftests

        self.options = options
        self.project = project
        self.pluginmanager = pluginmanager
        self.hook = pluginmanager.hook
        self.conftests = Conftests(self)
        self._target_types = None  # amlrun.targets.registry.TargetTypes, once asked for
        #: set when the session stops early (Ctrl-C, --maxfail); every target's context carries it
        self.stopping = threading.Event()

    def getoption(self, name: str, default: Any = None) -> Any:
        return getattr(self.options, name, default)

    @property
    def target_types(self):
        """``{type name: Target class}`` (amlrun.targets.registry.TargetTypes: classes import when looked up)."""
        if self._target_types is None:
            from amlrun.targets.registry import collect_target_types

            self._target_types = collect_target_types(self.pluginmanager)
        return self._target_types

    def extra_compute_keys(self) -> frozenset[str]:
        """The compute keys every registered type adds (imports every target class)."""
        keys: set[str] = set()
        for cls in self.target_types.values():
            keys |= set(getattr(cls, "compute_keys", ()))
        return frozenset(keys)

    def compute_keys_of(self, kind: str) -> frozenset[str]:
        """The compute keys target type ``kind`` adds (imports only that type's class)."""
        try:
            cls = self.target_types.get(kind)
        except UsageError:
            return frozenset()  # a plugin's broken registration: make_target says so
        return frozenset(getattr(cls, "compute_keys", ())) if cls is not None else frozenset()

    def available_targets(self) -> list[str]:
        names = set(self.project.runconfig_names()) | set(self.project.compute_names()) | {"local"}
        return sorted(names)

    def make_target(self, runconfig: RunConfig) -> Target:
        project = self.project
        compute = project.compute_target(runconfig.target, self.compute_keys_of)
        if compute is None:
            where = runconfig.source or "-c"
            raise ConfigError(
                f"run configuration '{runconfig.name}' names target '{runconfig.target}', but there is no "
                f"aml_config/{runconfig.target}.compute (available: {', '.join(self.available_targets())})",
                where,
            )
        cls = self.target_types.get(compute.type)
        if cls is None:
            raise ConfigError(
                f"unknown compute target type '{compute.type}' (known: {', '.join(sorted(self.target_types))}; "
                "a plugin may provide more)",
                compute.source or compute.name,
            )
        from amlrun.envs import cache_dir

        context = TargetContext(
            project=project,
            cache_dir=cache_dir(),
            build_settings=dict(project.settings.extra.get("build", {}) or {}),
            stopping=self.stopping,
        )
        return cls(compute, context)

    def resolve_runconfig(self, name: str) -> RunConfig:
        found = self.hook.amlrun_resolve_runconfig(name=name, project=self.project, config=self)
        if found is None:
            from amlrun.diagnostics import nearest

            available = self.available_targets()
            close = nearest(name, available)
            hint = f"; did you mean '{close}'?" if close else ""
            raise UsageError(f"unknown target '{name}'{hint} (available: {', '.join(available)})")
        return found


class _Progress:
    """Preparation progress: status lines to the terminal, every line to the log."""

    def __init__(self, target_name: str, terminal, sink):
        self.target_name = target_name
        self.terminal = terminal
        self.sink = sink

    def status(self, message: str) -> None:
        if self.terminal is not None:
            self.terminal.progress(f"[{self.target_name}] {message}")
        if self.sink is not None:
            self.sink.note(f"[amlrun] {message}")

    def line(self, text: str) -> None:
        if self.terminal is not None:
            self.terminal.progress_detail(f"[{self.target_name}] {text}")
        if self.sink is not None:
            self.sink.note(text)


class _PrepareLog:
    """Preparation output kept until the target's first cell can put it in its log."""

    MAX_LINES = 5000

    def __init__(self):
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        if len(self.lines) < self.MAX_LINES:
            self.lines.append(line)


class Session:
    """One run command: its targets, its cells, their reports, and the state the run loop shares."""

    def __init__(self, config: Config, terminal: TerminalReporter | None = None):
        self.config = config
        self.terminal = terminal or config.pluginmanager.get_plugin("terminalreporter")
        self.project = config.project
        self.store = RunStore(self.project.state_dir)
        self.snapshots = SnapshotStore(self.project.state_dir)
        self.work_root = self.project.state_dir / "work"
        self.untracked_root = self.project.state_dir / "untracked"
        self.targets: dict[str, Target] = {}
        self.runconfigs: dict[str, RunConfig] = {}
        self.cells: list = []
        self.reports: list[RunReport] = []
        self.deselected: list = []
        self.collection_errors: list = []  # scripts whose declarations could not be read
        self.shouldstop: str | None = None
        self.interrupted = False
        self.timeout: float | None = config.getoption("timeout")
        self.seed = int(config.getoption("seed") or os.environ.get("AMLRUN_SEED") or 0)
        self._snapshot: Snapshot | None = None
        self._git: GitInfo | None = None
        self._git_thread: threading.Thread | None = None
        self._environments: EnvironmentRecorder | None = None
        self._workdirs: WorkdirPool | None = None
        self._prepared: dict[str, PreparedEnvironment | AmlrunError] = {}
        self._prepare_locks: dict[str, threading.Lock] = {}
        self._prepare_logs: dict[str, _PrepareLog] = {}
        self._jobs: set = set()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.reuse_plan: dict[str, Any] = {}  # cell id → RunRecord to reuse (filled by amlrun.cacheprovider)
        self.running: dict[str, float] = {}  # cell id → monotonic start, while running
        self.attempts: dict[str, int] = {}  # cell id → attempts started
        self.scheduler: Any = None  # the default run loop's Scheduler, while it runs
        self.stopping = config.stopping  # set on Ctrl-C and --maxfail; targets see it in their context

    # -- secrets -----------------------------------------------------------------------

    def redact(self, text: str) -> str:
        return secrets.redactor(text)

    def resolve_secret(self, value: str, where: str) -> str:
        return secrets.resolve(value, where)

    # -- lazily computed once per session -------------------------------------------------

    @property
    def snapshot(self):
        with self._lock:
            if self._snapshot is None:
                from amlrun.ownfiles import own_files

                self._snapshot = self.snapshots.take(self.project.root, exclude=own_files(self.project))
            return self._snapshot

    @property
    def workdirs(self):
        """The cells' working directories (:mod:`amlrun.workdirs`), laid out once per session."""
        snapshot = self.snapshot
        with self._lock:
            if self._workdirs is None:
                from amlrun.protocol import RUNTIME_SOURCE
                from amlrun.targets.base import RUNTIME_DIRNAME
                from amlrun.workdirs import WorkdirPool, layout_of

                self._workdirs = WorkdirPool(
                    self.work_root, layout_of(self.snapshots, snapshot, RUNTIME_SOURCE, RUNTIME_DIRNAME)
                )
            return self._workdirs

    @property
    def environments(self):
        """The package lists of this session's environments (:mod:`amlrun.freeze`), read once per environment."""
        with self._lock:
            if self._environments is None:
                from amlrun.freeze import EnvironmentRecorder

                self._environments = EnvironmentRecorder(self.project.state_dir, self.work_root)
            return self._environments

    def start_reading_git(self) -> None:
        """Read the project's git state on a thread while the matrix is collected, so that
        ``git status`` and the diff of a large repository are not on the first cell's path."""
        if self._git is None and self._git_thread is None and in_repository(self.project.root):
            self._git_thread = threading.Thread(target=self._read_git, name="amlrun-git", daemon=True)
            self._git_thread.start()

    def _read_git(self) -> None:
        self._git = read_git(self.project.root)

    @property
    def git(self) -> GitInfo:
        if self._git_thread is not None:
            self._git_thread.join()
        if self._git is None:  # not started, or it failed: read here, where an error belongs
            self._git = read_git(self.project.root)
        return self._git

    def environment_digest(self, target_name: str) -> str | None:
        found = self._prepared.get(target_name)
        if isinstance(found, PreparedEnvironment):
            return found.digest
        try:
            return self.targets[target_name].environment_digest(self.runconfigs[target_name])
        except (AmlrunError, NotImplementedError):
            return None

    # -- targets -------------------------------------------------------------------------

    def setup_targets(self, names: list[str]) -> None:
        for name in names:
            if name in self.targets:
                continue
            runconfig = self.config.resolve_runconfig(name)
            self.runconfigs[name] = runconfig
            self.targets[name] = self.config.make_target(runconfig)
            self._prepare_locks[name] = threading.Lock()

    def environment_ready(self, target_name: str) -> bool:
        """Whether ``target_name``'s environment is prepared already (a run need not wait for it)."""
        return isinstance(self._prepared.get(target_name), PreparedEnvironment)

    def prepare(self, target_name: str, sink=None) -> PreparedEnvironment:
        """Prepare ``target_name``'s environment once; later cells reuse the result (or the error)."""
        with self._prepare_locks[target_name]:
            found = self._prepared.get(target_name)
            early = self._prepare_logs.get(target_name)
            if early is not None and sink is not None and sink is not early:
                del self._prepare_logs[target_name]
                for line in early.lines:  # prepared by the scheduler: the first cell's log gets the output
                    sink.note(line)
            if found is None:
                target = self.targets[target_name]
                runconfig = self.runconfigs[target_name]
                progress = _Progress(target_name, self.terminal, sink)
                try:
                    if not runconfig.prepare_environment and not target.is_prepared(runconfig):
                        raise UsageError(
                            f"target '{target_name}': its environment is not built and PrepareEnvironment is false "
                            f"in {runconfig.source or runconfig.name}; run: amlrun prepare -c {target_name}"
                        )
                    found = self.config.hook.amlrun_prepare_environment(
                        target=target, runconfig=runconfig, progress=progress
                    )
                except AmlrunError as exc:
                    found = exc
                self._prepared[target_name] = found
            if isinstance(found, AmlrunError):
                raise found
            return found

    # -- jobs and cancellation -------------------------------------------------------------

    def register_job(self, job) -> None:
        with self._lock:
            self._jobs.add(job)
            if self.interrupted or self.shouldstop:
                job.cancel.set()

    def unregister_job(self, job) -> None:
        with self._lock:
            self._jobs.discard(job)

    def cancel_running(self) -> None:
        with self._lock:
            for job in self._jobs:
                job.cancel.set()

    def stream_for(self, cell):
        return None if self.terminal is None else self.terminal.stream_for(cell, live=self.stream_live)

    @property
    def stream_live(self) -> bool:
        option = self.config.getoption("stream")
        return bool(option) or len(self.cells) == 1

    # -- running ---------------------------------------------------------------------------

    def cell_needs_environment(self, cell) -> bool:
        """Whether running ``cell`` needs its target's environment (skipped and reused cells don't)."""
        return cell.skip_mark() is None and cell.id not in self.reuse_plan

    def prepare_ahead(self, target_name: str) -> None:
        """Prepare before the target's first cell starts (the scheduler's gating); an error is
        remembered by :meth:`prepare` and each of the target's cells reports it."""
        log = self._prepare_logs[target_name] = _PrepareLog()
        try:
            self.prepare(target_name, log)
        except AmlrunError:
            pass

    def forget_unavailable(self, target_name: str) -> bool:
        """Before a retry: forget that a target was unreachable while preparing, so it is prepared again."""
        with self._prepare_locks.get(target_name, threading.Lock()):
            if isinstance(self._prepared.get(target_name), TargetUnavailable):
                del self._prepared[target_name]
                return True
        return False

    def run_cells(self) -> None:
        """Run every cell through the run loop (``amlrun_runloop``), then put the reports in
        matrix order and tear the targets down, whichever loop ran."""
        order = {id(cell): index for index, cell in enumerate(self.cells)}
        try:
            self.config.hook.amlrun_runloop(session=self)
        finally:
            self.reports.sort(key=lambda r: order.get(id(r.cell), len(order)))
            if self._workdirs is not None:
                self._workdirs.close()
            self.teardown_targets()

    def teardown_targets(self) -> None:
        for target in self.targets.values():
            try:
                target.teardown()
            except Exception as exc:  # teardown problems must not hide the results
                if self.terminal is not None:
                    self.terminal.progress(f"[{target.name}] teardown failed: {exc}")

    def queued(self) -> int:
        """Cells waiting to start (for the status line)."""
        return self.scheduler.queued() if self.scheduler is not None else len(self.cells)

    def will_retry(self, report: RunReport) -> bool:
        """For reporters: is this report an attempt that the scheduler is going to retry?"""
        return self.scheduler is not None and self.scheduler.should_retry(report)

    def stop(self, reason: str) -> None:
        """Stop dispatching (``--maxfail``, an internal error) and cancel the running cells."""
        self.shouldstop = self.shouldstop or reason
        self.stopping.set()
        self.cancel_running()

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: tell the plugins (``amlrun_keyboard_interrupt``) and cancel every run."""
        self.interrupted = True
        self.stopping.set()
        self.config.hook.amlrun_keyboard_interrupt(session=self)
        self.cancel_running()

    def exitstatus(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        outcomes = [r.outcome for r in self.reports]
        # an unreachable target or a broken configuration file is the user's to fix: exit 4
        if any(isinstance(p, (TargetUnavailable, ConfigError)) for p in self._prepared.values()):
            return EXIT_USAGE
        if any(o in (FAILED, ERROR, CANCELED) for o in outcomes) or getattr(self, "collection_errors", None):
            return EXIT_FAILED
        return EXIT_OK
