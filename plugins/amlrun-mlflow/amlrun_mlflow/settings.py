"""Whether MLflow export is on, and its settings: ``MLFLOW_TRACKING_URI`` or
``[tool.amlrun.mlflow]`` in ``pyproject.toml``. Read with the standard library only:
a session with export off must not pay for importing mlflow."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from amlrun.diagnostics import warn_unknown_keys
from amlrun.errors import ConfigError

WHERE = "pyproject.toml [tool.amlrun.mlflow]"
KEYS = ("tracking_uri", "experiment", "max_artifact_size", "enabled")
DEFAULT_MAX_ARTIFACT_SIZE = 100 * 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    experiment: str
    max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE  # bytes uploaded per run; what does not fit is listed

    @property
    def is_http(self) -> bool:
        return urlsplit(self.tracking_uri).scheme in ("http", "https")

    @property
    def loopback(self) -> bool:
        """Whether the server is on this machine's loopback (unreachable from containers and other hosts)."""
        host = urlsplit(self.tracking_uri).hostname or ""
        if host == "localhost":
            return True
        import ipaddress  # only when export is on: this module loads with every amlrun command

        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def shown_uri(self) -> str:
        """The URI without a password, for messages."""
        parts = urlsplit(self.tracking_uri)
        if parts.password is None:
            return self.tracking_uri
        netloc = f"{parts.username}:*****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()


def parse_size(value: object, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"'{key}' must be a size such as 100MB or a number of bytes, not {value!r}", WHERE)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"'{key}' must be 0 or more", WHERE)
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"'{key}' must be a size such as 100MB or a number of bytes, not {value!r}", WHERE)
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None])


def _string(table: dict, key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"'{key}' must be a non-empty string", WHERE)
    return value.strip()


def read_settings(project) -> MlflowSettings | None:
    """The settings, or None when export is off (no tracking URI, or ``enabled = false``)."""
    table = project.settings.extra.get("mlflow", {})
    if not isinstance(table, dict):
        raise ConfigError("must be a table", WHERE)
    warn_unknown_keys(WHERE, table, KEYS)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("'enabled' must be true or false", WHERE)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip() or _string(table, "tracking_uri")
    if not enabled or not uri:
        return None
    if "://" not in uri and ":" not in uri:  # a bare folder: what mlflow itself would read as file:
        uri = (project.root / uri).resolve().as_uri()
    experiment = (
        os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or _string(table, "experiment") or project.root.name
    )
    size = parse_size(table.get("max_artifact_size", DEFAULT_MAX_ARTIFACT_SIZE), "max_artifact_size")
    return MlflowSettings(tracking_uri=uri, experiment=experiment, max_artifact_size=size)
