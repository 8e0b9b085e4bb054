"""``dockerRunArguments``: a documented subset of ``docker run`` options, translated into
docker-py ``containers.create`` keyword arguments."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from amlrun.errors import ConfigError
from amlrun.targets.docker.image import docker_sdk

_SIZE = re.compile(r"^-?\d+(\.\d+)?\s*[bkmg]?b?$", re.IGNORECASE)  # -1: unlimited swap

_VALUED = frozenset(
    {
        "--cap-add",
        "--cap-drop",
        "--device",
        "--dns",
        "--security-opt",
        "--group-add",
        "--network",
        "--net",
        "--ipc",
        "--pid",
        "--hostname",
        "-h",
        "--shm-size",
        "--memory",
        "-m",
        "--memory-swap",
        "--pids-limit",
        "--user",
        "-u",
        "--cpuset-cpus",
        "--runtime",
        "--cpus",
        "-e",
        "--env",
        "-v",
        "--volume",
        "--add-host",
        "--tmpfs",
        "--ulimit",
        "--label",
        "-l",
    }
)
_FLAGS = {"--privileged": "privileged", "--init": "init", "--read-only": "read_only"}
_LISTED = {
    "--cap-add": "cap_add",
    "--cap-drop": "cap_drop",
    "--device": "devices",
    "--dns": "dns",
    "--security-opt": "security_opt",
    "--group-add": "group_add",
}
_SINGLE = {
    "--network": "network_mode",
    "--net": "network_mode",
    "--ipc": "ipc_mode",
    "--pid": "pid_mode",
    "--hostname": "hostname",
    "-h": "hostname",
    "--shm-size": "shm_size",
    "--memory": "mem_limit",
    "-m": "mem_limit",
    "--memory-swap": "memswap_limit",
    "--pids-limit": "pids_limit",
    "--user": "user",
    "-u": "user",
    "--cpuset-cpus": "cpuset_cpus",
    "--runtime": "runtime",
}


def parse_run_arguments(args: Any, where: str) -> dict[str, Any]:
    """Translate ``dockerRunArguments`` (docker run options) into docker-py ``create`` kwargs."""
    if args in (None, ""):
        return {}
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list):
        raise ConfigError("'dockerRunArguments' must be a list of docker run options", where)
    tokens = [
        part for arg in map(str, args) for part in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])
    ]
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        opt = tokens[i]
        if opt in _FLAGS:
            out[_FLAGS[opt]] = True
            i += 1
            continue
        if opt not in _VALUED:
            raise ConfigError(
                f"'dockerRunArguments': unsupported option {opt} (supported: {', '.join(sorted([*_FLAGS, *_VALUED]))})",
                where,
            )
        if i + 1 >= len(tokens):
            raise ConfigError(f"'dockerRunArguments': {opt} needs a value", where)
        value = tokens[i + 1]
        i += 2
        try:
            _add(out, opt, value)
        except ValueError:
            raise ConfigError(f"'dockerRunArguments': {opt} {value!r} is not a valid value", where) from None
    return out


def _add(out: dict[str, Any], opt: str, value: str) -> None:
    """Put one ``OPTION VALUE`` into ``out``; ValueError for a value of the wrong kind."""
    if opt in _LISTED:
        out.setdefault(_LISTED[opt], []).append(value)
    elif opt in _SINGLE:
        out[_SINGLE[opt]] = int(value) if opt == "--pids-limit" else value
        if opt in ("--memory", "-m", "--shm-size", "--memory-swap") and not _SIZE.match(value.strip()):
            raise ValueError(value)
    elif opt == "--cpus":
        out["nano_cpus"] = int(float(value) * 1e9)
        if out["nano_cpus"] <= 0:
            raise ValueError(value)
    elif opt in ("-e", "--env"):
        name, _, val = value.partition("=")
        out.setdefault("environment", {})[name] = val if _ else os.environ.get(name, "")
    elif opt in ("-v", "--volume"):
        out.setdefault("volumes", []).append(value)
    elif opt == "--add-host":
        host, _, ip = value.partition(":")
        out.setdefault("extra_hosts", {})[host] = ip
    elif opt == "--tmpfs":
        path, _, options = value.partition(":")
        out.setdefault("tmpfs", {})[path] = options
    elif opt == "--ulimit":
        docker = docker_sdk()
        name, _, limits = value.partition("=")
        soft, _, hard = limits.partition(":")
        out.setdefault("ulimits", []).append(docker.types.Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
    elif opt == "--label" or opt == "-l":
        key, _, val = value.partition("=")
        out.setdefault("labels", {})[key] = val
