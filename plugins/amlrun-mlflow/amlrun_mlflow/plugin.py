"""The ``mlflow`` plugin: every finished run becomes an MLflow run.

Loaded through the ``amlrun`` entry-point group on every amlrun start, so this module
imports only the standard library and amlrun: with export off (no tracking URI) it does
nothing, and mlflow is never imported. With export on, a background thread imports the
client and probes the server while the session prepares its targets.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from amlrun.hookspec import hookimpl

if TYPE_CHECKING:
    from amlrun_mlflow.settings import MlflowSettings

SKIPPED_OUTCOMES = ("skipped", "reused")
LATER = "export them later with 'amlrun history export mlflow'"


class MlflowSession:
    """The export of one amlrun session; hooks arrive on worker threads."""

    def __init__(self, settings: MlflowSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._exporter: Any = None
        self._problem: str | None = None
        self._warned = False
        self._terminal: Any = None
        self._runs: dict[str, str] = {}  # amlrun run id → MLflow run id
        self.exported = 0

    def _connect(self) -> None:
        from amlrun_mlflow.export import Exporter, Unreachable, check_reachable, register_secrets

        try:
            register_secrets()
            check_reachable(self.settings)
            exporter = Exporter(self.settings)
            exporter.experiment_id  # noqa: B018 - fails now, not on every run, when the server says no
            self._exporter = exporter
        except Unreachable as exc:
            self._problem = str(exc)
        except Exception as exc:  # the client's own errors: one warning, the runs still pass
            first = str(exc).splitlines()[0] if str(exc) else ""
            self._problem = f"{self.settings.shown_uri}: {type(exc).__name__}: {first}"
        finally:
            self._ready.set()

    def _client(self):
        self._ready.wait()
        if self._problem is not None:
            self._warn()
            return None
        return self._exporter

    def _fail(self, exc: Exception) -> None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        with self._lock:
            if self._problem is None:
                self._problem = f"{self.settings.shown_uri}: {text}"
        self._warn()

    def _warn(self) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        line = f"warning: MLflow export stopped: {self._problem}; the runs are recorded locally, {LATER}"
        if self._terminal is not None:
            self._terminal.write_line(line)
        else:
            from amlrun.diagnostics import warn

            warn(line.removeprefix("warning: "))

    # -- hooks ------------------------------------------------------------------------------

    @hookimpl
    def amlrun_report_header(self, config):
        return f"mlflow: {self.settings.shown_uri}, experiment '{self.settings.experiment}'"

    @hookimpl
    def amlrun_sessionstart(self, session):
        self._terminal = session.terminal
        threading.Thread(target=self._connect, name="amlrun-mlflow-connect", daemon=True).start()

    @hookimpl
    def amlrun_run_environment(self, cell, record, target, session):
        if not session.runconfigs[cell.target].tracked_run:
            return None
        exporter = self._client()
        if exporter is None:
            return None
        try:
            mlflow_run_id = exporter.start(record)
            experiment_id = exporter.experiment_id
        except Exception as exc:
            self._fail(exc)
            return None
        with self._lock:
            self._runs[record.run_id] = mlflow_run_id
        if not self.reachable_from(target):
            return None
        return {
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri,
            "MLFLOW_RUN_ID": mlflow_run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
        }

    def reachable_from(self, target) -> bool:
        """A run sees the server when it runs on this machine's filesystem, or when the
        server has an address other machines and containers can use."""
        if getattr(target, "local_filesystem", False):
            return True
        return self.settings.is_http and not self.settings.loopback

    @hookimpl
    def amlrun_runreport(self, report):
        record = report.record
        if record is None or report.outcome in SKIPPED_OUTCOMES or report.run_dir is None:
            return
        with self._lock:
            mlflow_run_id = self._runs.pop(record.run_id, None)
        exporter = self._client()
        if exporter is None:
            return
        try:
            exporter.finish(record, report.run_dir, mlflow_run_id)
        except Exception as exc:
            self._fail(exc)
            return
        with self._lock:
            self.exported += 1

    @hookimpl
    def amlrun_sessionfinish(self, session, exitstatus):
        if self.exported and self._exporter is not None:
            url = f"{self.settings.tracking_uri.rstrip('/')}/#/experiments/{self._exporter.experiment_id}"
            shown = url if self.settings.is_http else self.settings.shown_uri
            session.terminal.progress(f"mlflow: {self.exported} run{'s' * (self.exported != 1)} exported to {shown}")


@hookimpl
def amlrun_configure(config) -> None:
    project = getattr(config, "project", None)
    if project is None:
        return
    if "mlflow" not in project.settings.extra and not os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return  # export off (what read_settings needs to turn it on is absent): settings are not even imported
    from amlrun_mlflow.settings import read_settings

    settings = read_settings(project)
    if settings is not None and not config.pluginmanager.has_plugin("mlflow-session"):
        config.pluginmanager.register(MlflowSession(settings), name="mlflow-session")


@hookimpl
def amlrun_register_exporters():
    from amlrun_mlflow.command import export_runs

    return {"mlflow": export_runs}
