"""Hook specifications: the whole surface a plugin (built-in, installed, or an
``amlrunconf.py``) can implement.

Every compute target, the built-in ``local`` one included, arrives through
``amlrun_register_targets``; the run protocol itself is the default
implementation of ``amlrun_run_cell`` so a plugin can wrap or replace it.

"Do the thing" hooks are ``firstresult``; notifications are plain 1:N calls.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("amlrun")
hookimpl = pluggy.HookimplMarker("amlrun")


# -- start-up -----------------------------------------------------------------


@hookspec(historic=True)
def amlrun_addoption(parser, group) -> None:
    """Add command-line options for the run command.

    ``parser`` is the ``argparse.ArgumentParser`` of the run command and
    ``group`` an argument group titled after the plugins; add options to the group.
    Only options of plugins known before parsing (installed plugins, ``-p`` plugins,
    and the project root's ``amlrunconf.py``) can be added.
    """


@hookspec(historic=True)
def amlrun_configure(config) -> None:
    """Called once the command line is parsed and the project is found.

    ``config`` is an :class:`amlrun.session.Config`; register further plugins here.
    """


@hookspec
def amlrun_register_targets() -> dict:
    """Return ``{type_name: TargetClass}`` for the compute target types a plugin provides.

    Each class derives from :class:`amlrun.targets.base.Target`. Aliases (such as
    Workbench's ``localdocker`` for ``docker``) are listed in the class's ``aliases``.
    """


@hookspec
def amlrun_report_header(config) -> list[str] | str | None:
    """Return extra lines for the session header."""


# -- collection -----------------------------------------------------------------


@hookspec(firstresult=True)
def amlrun_collect_file(file_path, config):
    """Return an :class:`amlrun.collection.Experiment` for ``file_path``, or None.

    Called for every file under the collected paths that matches the project's
    experiment patterns (and for every file named explicitly). The default
    implementation reads ``AMLRUN_PARAMS`` / ``AMLRUN_MARKS`` statically with ``ast``;
    it never imports the script. Only ``amlrunconf.py`` files in the file's
    directory and its parents take part.
    """


@hookspec
def amlrun_generate_params(experiment, config) -> list[dict] | None:
    """Return extra parameter sets (a list of ``{name: value}``) for ``experiment``.

    Results of all implementations are concatenated after the script's own
    declaration. Only ``amlrunconf.py`` files in the experiment's directory and its
    parents take part.
    """


@hookspec
def amlrun_collection_modifyitems(session, config, items) -> None:
    """Filter, reorder or re-mark the matrix in place.

    ``items`` is the list of :class:`amlrun.matrix.Cell` after ``-k``/``-m``
    selection; replace entries with ``cell.with_mark(...)`` to add a mark, e.g.
    ``Mark("skip", reason="...")`` to skip one.
    """


# -- running --------------------------------------------------------------------


@hookspec(firstresult=True)
def amlrun_resolve_runconfig(name, project, config):
    """Return the :class:`amlrun.config.RunConfig` that ``-c name`` means, or None.

    The default looks up ``aml_config/<name>.runconfig`` first, then a compute
    target called ``name`` with a default run configuration.
    """


@hookspec(firstresult=True)
def amlrun_prepare_environment(target, runconfig, progress):
    """Build (or find cached) the execution environment for ``runconfig`` on ``target``.

    Returns an :class:`amlrun.targets.base.PreparedEnvironment`. Called once per
    target and run configuration in a session, before its cells run.
    """


@hookspec(firstresult=True)
def amlrun_runloop(session):
    """Run every cell of ``session``; return True (non-None) when done.

    The default (:mod:`amlrun.scheduler`) runs them with ``-n`` workers, per-target
    limits, prepare gating, retries and ``--maxfail``; a plugin may replace it.
    """


@hookspec(firstresult=True)
def amlrun_run_cell(cell, session):
    """Run one cell through the whole protocol and return its :class:`RunReport`.

    The default: create the run record, materialise the snapshot, call
    ``amlrun_execute``, ``amlrun_collect_artifacts``, record, report.
    """


@hookspec(firstresult=True)
def amlrun_execute(target, job, prepared, sink):
    """Execute ``job`` on ``target`` and return an :class:`ExecResult`.

    The default calls ``target.execute``; a wrapper can time, trace or retry it.
    """


@hookspec
def amlrun_collect_artifacts(job, run_dir) -> list | None:
    """Return :class:`amlrun.artifacts.Artifact` entries for files a run produced.

    The default lists ``outputs/`` in ``run_dir`` with sizes and sha256.
    """


@hookspec
def amlrun_runreport(report) -> None:
    """Notification: a cell finished (passed, failed, error, skipped or canceled)."""


@hookspec
def amlrun_sessionstart(session) -> None:
    """Notification: collection is done and cells are about to run."""


@hookspec
def amlrun_keyboard_interrupt(session) -> None:
    """Notification: Ctrl-C (or SIGTERM) stopped the session; running cells are being canceled."""


@hookspec
def amlrun_sessionfinish(session, exitstatus) -> None:
    """Notification: the session ended with ``exitstatus``."""
