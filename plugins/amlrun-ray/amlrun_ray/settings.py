"""The ``type: ray`` compute file, validated where it is read: one ConfigError per mistake,
naming the file and the key."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from amlrun.config import ComputeTarget
from amlrun.errors import ConfigError

DEFAULT_DASHBOARD_PORT = 8265
#: the keys this target type adds to the common ones (address, maxParallel, pythonLocation,
#: nativeSharedDirectory)
RAY_KEYS = frozenset({"resources", "runtimeEnv", "headers", "outputsStorage", "serverLostSeconds"})
#: how long the job server may stay unreachable while a job runs before its run is given up
DEFAULT_LOST_SECONDS = 60.0
#: runtime-env keys amlrun sets itself
OWN_RUNTIME_ENV_KEYS = ("working_dir", "py_modules")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
}


@dataclass(frozen=True)
class Resources:
    """Per-cell resources: the job's entrypoint resources."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    custom: dict[str, float] = field(default_factory=dict)

    def request_fields(self) -> dict[str, Any]:
        return {
            "entrypoint_num_cpus": self.num_cpus,
            "entrypoint_num_gpus": self.num_gpus,
            "entrypoint_memory": self.memory,
            "entrypoint_resources": dict(self.custom) or None,
        }


@dataclass(frozen=True)
class RaySettings:
    address: str  # http(s)://host:port of the job server
    given_address: str
    resources: Resources = Resources()
    runtime_env: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # values: literal or secret references
    outputs_storage: str | None = None
    python: str = "python"
    share: str | None = None
    lost_seconds: float = DEFAULT_LOST_SECONDS


def parse_settings(compute: ComputeTarget) -> RaySettings:
    where = compute.source or compute.name
    get = compute.settings.get
    address = get("address")
    if not address or not isinstance(address, str):
        raise ConfigError("a 'ray' target needs 'address': its job server, e.g. http://127.0.0.1:8265", where)
    python = get("pythonLocation") or "python"
    if not isinstance(python, str):
        raise ConfigError(f"'pythonLocation' must be a string, got {python!r}", where)
    share = get("nativeSharedDirectory")
    if share is not None and not isinstance(share, str):
        raise ConfigError(f"'nativeSharedDirectory' must be a path on the cluster's nodes, got {share!r}", where)
    storage = get("outputsStorage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise ConfigError(f"'outputsStorage' must be a folder or a URI (s3://bucket/prefix), got {storage!r}", where)
    if "maxParallel" in compute.settings:
        parallel = get("maxParallel")
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError(f"'maxParallel' must be a whole number of at least 1, got {parallel!r}", where)
    lost = get("serverLostSeconds", DEFAULT_LOST_SECONDS)
    if isinstance(lost, bool) or not isinstance(lost, (int, float)) or lost <= 0:
        raise ConfigError(f"'serverLostSeconds' must be a number of seconds above 0, got {lost!r}", where)
    return RaySettings(
        address=job_server_url(address, where),
        given_address=address,
        resources=parse_resources(get("resources"), where),
        runtime_env=parse_runtime_env(get("runtimeEnv"), where),
        headers=parse_headers(get("headers"), where),
        outputs_storage=storage.strip() if storage else None,
        python=python,
        share=share.rstrip("/") if share else None,
        lost_seconds=float(lost),
    )


def job_server_url(address: str, where: str) -> str:
    """``http(s)://host:port`` of the job server; ``host[:port]`` means http (port 8265 when
    none is given, https: 443), and a Ray client address ``ray://host:10001`` means the
    dashboard of that head (port 8265)."""
    text = address.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"'address' has an invalid port: {address!r}", where) from None
    if scheme not in ("http", "https", "ray") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"'address' must be the Ray job server, e.g. http://HOST:8265 (got {address!r})", where)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if scheme == "ray":
        return f"http://{host}:{DEFAULT_DASHBOARD_PORT}"
    path = parts.path.rstrip("/")
    if scheme == "https" and port is None:
        return f"https://{host}{path}"  # a TLS proxy in front of the dashboard: port 443
    return f"{scheme}://{host}:{port or DEFAULT_DASHBOARD_PORT}{path}"


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"'resources.{key}' must be a number of at least 0, got {value!r}", where)
    return float(value) if isinstance(value, float) else value


def parse_memory(value: Any, where: str) -> int:
    """Bytes: a number, or a text such as ``512MiB``, ``2G``, ``1.5 GB``."""
    if isinstance(value, bool):
        raise ConfigError(f"'resources.memory' must be bytes or a size such as 2GiB, got {value!r}", where)
    if isinstance(value, (int, float)) and value >= 0:
        return int(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"'resources.memory' must be bytes or a size such as 2GiB, got {value!r}", where)
    return int(float(match.group(1)) * _UNITS[unit])


def parse_resources(value: Any, where: str) -> Resources:
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise ConfigError("'resources' must be a mapping, e.g. {num_cpus: 1, memory: 2GiB, my_accelerator: 1}", where)
    custom: dict[str, float] = {}
    found: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        if key in ("num_cpus", "num_gpus"):
            found[key] = _number(item, key, where)
        elif key == "memory":
            found[key] = parse_memory(item, where)
        elif key in ("CPU", "GPU", "memory_bytes", "cpus", "gpus"):
            raise ConfigError(f"'resources.{key}': write num_cpus, num_gpus or memory", where)
        else:
            custom[key] = float(_number(item, key, where))
    return Resources(found.get("num_cpus"), found.get("num_gpus"), found.get("memory"), custom)


def parse_runtime_env(value: Any, where: str) -> dict[str, Any]:
    """Extra runtime-env settings, merged into each job's (``pip``, ``env_vars``, ``conda``, ...)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("'runtimeEnv' must be a mapping of Ray runtime-env settings", where)
    for key in value:
        if key in OWN_RUNTIME_ENV_KEYS:
            raise ConfigError(f"'runtimeEnv.{key}' is set by amlrun (the project's snapshot); remove it", where)
    env_vars = value.get("env_vars")
    if env_vars is not None and (
        not isinstance(env_vars, dict)
        or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in env_vars.values())
    ):
        raise ConfigError("'runtimeEnv.env_vars' must map names to text", where)
    pip = value.get("pip")
    if pip is not None and not (
        isinstance(pip, list)
        and all(isinstance(p, str) for p in pip)
        or isinstance(pip, dict)
        and isinstance(pip.get("packages"), list)
    ):
        raise ConfigError("'runtimeEnv.pip' must be a list of requirements (or {packages: [...]})", where)
    for key, item in (env_vars or {}).items():
        from amlrun.secrets import is_reference

        if is_reference(item):
            raise ConfigError(
                f"'runtimeEnv.env_vars.{key}' is a secret reference: put it in the run "
                "configuration's EnvironmentVariables (job descriptions are readable)",
                where,
            )
    return {str(k): v for k, v in value.items()}


def parse_headers(value: Any, where: str) -> dict[str, str]:
    """HTTP headers for the job server (``Authorization: secret:RAY_TOKEN``)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(
            "'headers' must map header names to text or secret references (Authorization: secret:RAY_TOKEN)", where
        )
    for name in value:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", str(name)):
            raise ConfigError(f"'headers': {name!r} is not a valid header name", where)
    return {str(k): v for k, v in value.items()}
