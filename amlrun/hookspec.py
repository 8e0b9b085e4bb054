"""Hook specifications: the whole surface a plugin (built-in, installed, or an
``amlrunconf.py``) can implement. This module is the reference; the design document's
list follows it.

Every compute target, the built-in ``local`` one included, arrives through
``amlrun_register_targets``. The pieces a plugin may want to replace are hooks too, as
in pytest: the run loop (``amlrun_runloop``), one cell's protocol (``amlrun_run_cell``),
the making of its report (``amlrun_make_report``), and the terminal reporter (a plugin
named ``terminalreporter``, which listens to these hooks and asks
``amlrun_terminal_summary`` for other plugins' sections).

"Do the thing" hooks are ``firstresult`` (the first non-None result wins; the built-in
implementation comes last); notifications are plain 1:N calls; cross-cutting concerns
use new-style ``wrapper=True`` implementations.

Threads: the session calls every hook on its own thread, except those marked
**called on worker threads** below, which ``-n N`` calls concurrently for different
cells. Implementations of those must be thread-safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from amlrun.artifacts import Artifact
    from amlrun.collection import Experiment
    from amlrun.config import RunConfig
    from amlrun.matrix import Cell
    from amlrun.project import Project
    from amlrun.protocol import CellRun, RunReport
    from amlrun.session import Config, Session
    from amlrun.sink import RunSink
    from amlrun.store import RunRecord
    from amlrun.targets.base import ExecResult, Job, PreparedEnvironment, Progress, Target
    from amlrun.terminal import TerminalReporter

hookspec = pluggy.HookspecMarker("amlrun")
hookimpl = pluggy.HookimplMarker("amlrun")


# -- start-up -----------------------------------------------------------------


@hookspec(historic=True)
def amlrun_addoption(parser: argparse.ArgumentParser, group: argparse._ArgumentGroup) -> None:
    """Add command-line options for the run command.

    :param parser: the run command's ``argparse.ArgumentParser``; a plugin may add its
        own argument group to it.
    :param group: an argument group titled "plugins", for a few options.

    Only plugins known before parsing (built-in, installed, ``-p`` plugins and the
    project root's ``amlrunconf.py``) can add options.
    """


@hookspec(historic=True)
def amlrun_configure(config: Config) -> None:
    """The command line is parsed and the project found; register further plugins here.

    :param config: the invocation's configuration (options, project, plugin manager).
    """


@hookspec
def amlrun_register_targets() -> dict[str, type[Target]] | None:
    """The compute target types a plugin provides.

    :return: ``{type_name: TargetClass}``; each class derives from
        :class:`amlrun.targets.base.Target`. Aliases (Workbench's ``localdocker`` for
        ``docker``) are listed in the class's ``aliases``.
    """


@hookspec
def amlrun_report_header(config: Config) -> list[str] | str | None:
    """Extra lines for the session header.

    :param config: the invocation's configuration.
    :return: a line, a list of lines, or None.
    """


# -- collection -----------------------------------------------------------------


@hookspec(firstresult=True)
def amlrun_collect_file(file_path: Path, config: Config) -> Experiment | None:
    """Make an experiment of ``file_path``, or decline.

    Called for every file under the collected paths that matches the project's
    experiment patterns (and every file named explicitly). Only ``amlrunconf.py``
    files in the file's folder and its parents take part.

    :param file_path: the candidate file (absolute).
    :param config: the invocation's configuration.
    :return: an :class:`amlrun.collection.Experiment`, or None to let the next
        implementation decide. The default reads ``AMLRUN_PARAMS`` / ``AMLRUN_MARKS``
        statically with ``ast``; it never imports the script.
    """


@hookspec
def amlrun_generate_params(experiment: Experiment, config: Config) -> list[dict[str, Any]] | None:
    """Extra parameter sets for ``experiment``.

    Results of all implementations are concatenated after the script's own
    declaration. Only ``amlrunconf.py`` files in the experiment's folder and its
    parents take part.

    :param experiment: the collected experiment.
    :param config: the invocation's configuration.
    :return: a list of ``{name: value}`` parameter sets, or None.
    """


@hookspec
def amlrun_collection_modifyitems(session: Session, config: Config, items: list[Cell]) -> None:
    """Filter, reorder or re-mark the matrix in place.

    :param session: the session (``session.deselected`` takes cells left out).
    :param config: the invocation's configuration.
    :param items: the cells after ``-k``/``-m`` selection; replace entries with
        ``cell.with_mark(...)`` to add a mark, e.g. ``Mark("skip", reason="...")``.
    """


@hookspec
def amlrun_collection_finish(session: Session) -> None:
    """Notification: the matrix is final (``session.cells``); the terminal prints its header
    here, and with ``--collect-only`` the plan.

    :param session: the session.
    """


# -- running --------------------------------------------------------------------


@hookspec
def amlrun_sessionstart(session: Session) -> None:
    """Notification: cells are about to run.

    :param session: the session, with its targets and its cells.
    """


@hookspec(firstresult=True)
def amlrun_resolve_runconfig(name: str, project: Project, config: Config) -> RunConfig | None:
    """The run configuration that ``-c name`` means.

    :param name: the name given with ``-c`` (or a default target).
    :param project: the project.
    :param config: the invocation's configuration.
    :return: a :class:`amlrun.config.RunConfig`, or None. The default looks up
        ``aml_config/<name>.runconfig`` first, then a compute target called ``name``
        with a default run configuration.
    """


@hookspec(firstresult=True)
def amlrun_runloop(session: Session) -> bool | None:
    """Run every cell of ``session`` (pytest's ``pytest_runtestloop``).

    Call ``amlrun_run_cell`` for each cell and append each report to
    ``session.reports``; stop early when ``session.shouldstop`` or
    ``session.interrupted`` is set. The session sorts the reports into matrix order
    and tears the targets down afterwards, whichever loop ran.

    :param session: the session.
    :return: True (any non-None value) when the cells were run. The default,
        :class:`amlrun.scheduler.Scheduler`, runs them with ``-n`` workers, per-target
        limits, prepare gating, ``--retries`` and ``--maxfail``.
    """


@hookspec(firstresult=True)
def amlrun_prepare_environment(target: Target, runconfig: RunConfig, progress: Progress) -> PreparedEnvironment | None:
    """Build (or find cached) the execution environment for ``runconfig`` on ``target``.

    **Called on worker threads** (once per target in a session, before its cells run).

    :param target: the compute target.
    :param runconfig: the target's run configuration.
    :param progress: where to report status lines and build output.
    :return: a :class:`amlrun.targets.base.PreparedEnvironment`; the default calls
        ``target.prepare``. Raise an :class:`amlrun.errors.AmlrunError` when it cannot
        be built: each of the target's cells reports it as an error.
    """


@hookspec(firstresult=True)
def amlrun_run_cell(cell: Cell, session: Session) -> RunReport | None:
    """Run one cell through the whole protocol.

    **Called on worker threads**, concurrently for different cells.

    :param cell: the cell to run.
    :param session: the session.
    :return: the cell's :class:`amlrun.protocol.RunReport`, after calling
        ``amlrun_runreport`` with it. The default creates the run record, prepares the
        environment, materialises the snapshot, calls ``amlrun_execute`` and
        ``amlrun_collect_artifacts``, then ``amlrun_make_report``, and records.
    """


@hookspec(firstresult=True)
def amlrun_execute(target: Target, job: Job, prepared: PreparedEnvironment, sink: RunSink) -> ExecResult | None:
    """Execute ``job`` on ``target``.

    **Called on worker threads**, concurrently for different cells.

    :param target: the compute target.
    :param job: the run: argv, environment, work folder, timeout, ``cancel`` event.
    :param prepared: the target's prepared environment.
    :param sink: where every output line goes (``write``; ``note`` for log-only lines).
    :return: an :class:`amlrun.targets.base.ExecResult`; the default calls
        ``target.execute``. A wrapper can time, trace or retry it.
    """


@hookspec
def amlrun_run_environment(cell: Cell, record: RunRecord, target: Target, session: Session) -> dict[str, str] | None:
    """Extra environment variables for a run (e.g. a tracker's run id).

    **Called on worker threads**, after the run record is created and before the run
    executes: a tracker creates its run here and passes its id, so the script's own
    tracker calls land in it.

    :return: ``{name: value}``; results are merged in plugin order; ``AMLRUN_*`` names
        are amlrun's and are not replaced.
    """


@hookspec
def amlrun_collect_artifacts(job: Job, run_dir: Path) -> list[Artifact] | None:
    """Files a run produced.

    **Called on worker threads.**

    :param job: the run that ended.
    :param run_dir: the run's folder (its ``outputs/`` came back there).
    :return: :class:`amlrun.artifacts.Artifact` entries (all implementations'
        are kept); the default lists ``outputs/`` with sizes and sha256.
    """


@hookspec(firstresult=True)
def amlrun_make_report(cell: Cell, job: Job | None, result: ExecResult, run: CellRun | None) -> RunReport | None:
    """Turn how a cell's run ended into its report (pytest's ``pytest_runtest_makereport``).

    **Called on worker threads**, concurrently for different cells. A wrapper may
    change the verdict (the reproducibility checks fail a completed run whose results
    moved); the protocol records the report's ``record`` afterwards.

    :param cell: the cell.
    :param job: the job that ran, or None when none was made (a skipped cell, an
        environment that could not be prepared).
    :param result: how it ended; ``status`` is ``completed``, ``failed``,
        ``canceled``, ``skipped`` or ``error`` (the environment could not be prepared).
    :param run: the protocol's state of the run (record, run folder, sink, artifacts),
        or None for a skipped cell (no run).
    :return: the :class:`amlrun.protocol.RunReport`, its ``record`` the run record as it
        is to be saved (None for an untracked or skipped run).
    """


@hookspec
def amlrun_runreport(report: RunReport) -> None:
    """Notification: a cell finished (passed, failed, error, skipped, canceled or reused).

    **Called on worker threads**, concurrently for different cells.

    :param report: the cell's report. A report of an infrastructure failure may be
        followed by another for the same cell when ``--retries`` runs it again
        (``session.will_retry(report)`` tells).
    """


@hookspec
def amlrun_keyboard_interrupt(session: Session) -> None:
    """Notification: Ctrl-C (or SIGTERM) stopped the session; running cells are being canceled.

    :param session: the session (``session.interrupted`` is set).
    """


@hookspec
def amlrun_sessionfinish(session: Session, exitstatus: int) -> None:
    """Notification: the session ended; the terminal prints its summary first.

    :param session: the session, ``session.reports`` in matrix order.
    :param exitstatus: the exit code the run command will return.
    """


@hookspec
def amlrun_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int, session: Session) -> None:
    """Add a section to the terminal summary (before the short summary and the final line).

    :param terminalreporter: write lines with ``terminalreporter.write_line`` (and
        ``sep`` for a titled rule).
    :param exitstatus: the exit code the run command will return.
    :param session: the session.
    """


@hookspec
def amlrun_register_exporters() -> dict[str, Any] | None:
    """Exporters for ``amlrun history export NAME [RUN ...]``.

    :return: ``{name: export}``; ``export(config: Config, store: RunStore,
        records: list[RunRecord]) -> int`` gets the finished runs to export, prints its
        own summary and returns the exit status. Exporting twice must add nothing the
        second time.
    """
