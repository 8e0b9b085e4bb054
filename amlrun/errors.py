"""The few named errors amlrun raises.

A user's mistake is one of these and is printed as a single line by the CLI;
anything else is an internal error and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class AmlrunError(Exception):
    """Base of every error that is reported as one line, not a traceback."""

    exit_code = 4


class UsageError(AmlrunError):
    """Bad command-line arguments or an impossible request."""


class ConfigError(AmlrunError):
    """A configuration file is malformed; names the file and, when known, the line."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{message}")


class TargetUnavailable(AmlrunError):
    """A compute target cannot be reached (no engine, no SSH, no master)."""


class EnvironmentBuildError(AmlrunError):
    """Preparing a target's execution environment failed; carries the build log's tail."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message)
