"""How a run ended, decided in one place for every target.

- :func:`finished` maps an exit status, a stop reason or an OOM kill to an :class:`ExecResult`;
- :class:`StopWatch` says whether (and why) a running job must be stopped: canceled or timed out;
- :func:`lost_connection` decides whether an exception means the connection to the target
  (an engine, a host) dropped: an infrastructure error, not the script's failure.
"""

from __future__ import annotations

import time

from amlrun.errors import TargetUnavailable
from amlrun.targets.base import CANCELED, COMPLETED, FAILED, ExecResult, Job

OOM_REASON = "killed: out of memory (the container's memory limit)"
NO_EXIT_CODE = "the process ended without an exit code (killed on the host?)"


def finished(
    exit_code: int | None,
    *,
    stopped: str | None = None,
    oom: bool = False,
    extra: dict[str, object] | None = None,
    no_code_reason: str = NO_EXIT_CODE,
) -> ExecResult:
    """The result of a run that ended with ``exit_code`` (None: unknown), or was stopped
    because of ``stopped`` (a :class:`StopWatch` reason), or was killed for memory."""
    extra = dict(extra or {})
    if stopped:
        return ExecResult(CANCELED, exit_code, stopped, extra=extra)
    if exit_code == 0:
        return ExecResult(COMPLETED, 0, extra=extra)
    if oom:
        return ExecResult(FAILED, exit_code, OOM_REASON, infrastructure_error=True, extra=extra)
    if exit_code is None:
        return ExecResult(FAILED, None, no_code_reason, infrastructure_error=True, extra=extra)
    return ExecResult(FAILED, exit_code, f"exited with code {exit_code}", extra=extra)


def infrastructure_failure(reason: str, extra: dict[str, object] | None = None) -> ExecResult:
    """A run that could not start or be followed for a reason that is not the script's."""
    return ExecResult(FAILED, None, reason, infrastructure_error=True, extra=dict(extra or {}))


class StopWatch:
    """Whether a job must stop now, and the reason recorded when it does."""

    def __init__(self, job: Job):
        self.job = job
        self.deadline = time.monotonic() + job.timeout if job.timeout else None

    def reason(self) -> str | None:
        if self.job.cancel.is_set():
            return "canceled"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return f"timed out after {self.job.timeout:g}s"
        return None

    def should_stop(self) -> bool:
        return self.reason() is not None


#: packages whose exceptions mean "the other end went away" (HTTP to an engine, SSH)
_TRANSPORT_PACKAGES = ("requests", "urllib3", "paramiko")


class ConnectionLost(TargetUnavailable):
    """The connection to the target dropped and could not be re-established in time."""


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection to the target dropped (not a bug, not the script)."""
    if isinstance(exc, (ConnectionLost, ConnectionError, EOFError, TimeoutError)):  # socket.timeout is TimeoutError
        return True
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
        return True
    return type(exc).__module__.split(".")[0] in _TRANSPORT_PACKAGES
