"""Workbench-compatible configuration: ``aml_config/*.compute``, ``*.runconfig``,
``conda_dependencies.yml`` and ``spark_dependencies.yml``, read as Workbench wrote them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.diagnostics import warn_unknown_keys
from amlrun.errors import ConfigError
from amlrun.yamlfile import read_mapping

#: Compute-file keys every target type understands (DESIGN.md section 2).
COMPUTE_KEYS = frozenset(
    {
        "type",
        "baseDockerImage",
        "address",
        "port",
        "username",
        "password",
        "privateKeyFile",
        "passphrase",
        "sharedVolumes",
        "nvidiaDocker",
        "nativeSharedDirectory",
        "pythonLocation",
        "sparkSubmitLocation",
        "sparkMaster",
        "yarnDeployMode",
        "userManagedEnvironment",
        "maxParallel",
    }
)

#: Run-configuration keys. ``UseSampling``, ``DataSourceSettings`` and ``DataSourceSubstitutions``
#: are Workbench's Data Prep settings: they reach ``azureml.dataprep`` in the run.
RUNCONFIG_KEYS = frozenset(
    {
        "ArgumentVector",
        "Target",
        "EnvironmentVariables",
        "Framework",
        "CondaDependenciesFile",
        "SparkDependenciesFile",
        "PrepareEnvironment",
        "TrackedRun",
        "UseSampling",
        "DataSourceSettings",
        "DataSourceSubstitutions",
    }
)

FRAMEWORKS = ("Python", "PySpark")
DEFAULT_CONDA_FILE = "aml_config/conda_dependencies.yml"
DEFAULT_SPARK_FILE = "aml_config/spark_dependencies.yml"


_BOOL_WORDS = ("true", "yes", "1", "false", "no", "0")


def _bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(f"'{key}' must be true or false, got {value!r}", where)


@dataclass(frozen=True)
class ComputeTarget:
    """One ``aml_config/<name>.compute`` file (or an implicit default)."""

    name: str
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    def flag(self, key: str, default: bool = False) -> bool:
        if key not in self.settings:
            return default
        return _bool(self.settings[key], key, self.source or self.name)

    @property
    def address(self) -> str | None:
        return self.settings.get("address")


@dataclass(frozen=True)
class RunConfig:
    """One ``aml_config/<name>.runconfig`` file: how scripts run on a target."""

    name: str
    target: str
    argument_vector: tuple[str, ...] = ("$file",)
    environment_variables: dict[str, str] = field(default_factory=dict)
    framework: str = "Python"
    conda_dependencies_file: str | None = DEFAULT_CONDA_FILE
    spark_dependencies_file: str | None = DEFAULT_SPARK_FILE
    prepare_environment: bool = True
    tracked_run: bool = True
    source: str | None = None
    #: pip requirements amlrun adds to a managed environment (a notebook's executor)
    extra_requirements: tuple[str, ...] = ()
    #: Workbench's Data Prep settings (UseSampling, DataSourceSettings, DataSourceSubstitutions)
    data_prep: dict[str, Any] = field(default_factory=dict)


# -- the values of compute-file keys, checked where the file is read -----------------------
#
# A wrong value is the user's mistake: one line naming the file and the key, exit 4, before
# any cell runs (not a failed cell, not an engine error at run time). Keys of every type
# and the built-in targets' own keys are listed; a plugin's keys are its own to check.

_SIZE = re.compile(r"^\d+(\.\d+)?\s*[bkmgt]?i?b?$", re.IGNORECASE)


def _check_text(value: Any) -> str | None:
    if isinstance(value, (dict, list)):
        return "a single value"
    if "\0" in str(value):
        return "text without NUL bytes"
    return None


def _check_bool(value: Any) -> str | None:
    if isinstance(value, bool) or isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return None
    return "true or false"


def _check_port(value: Any) -> str | None:
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 0 < int(str(value)) < 65536:
        return "a port number (1-65535)"
    return None


def _check_count(value: Any) -> str | None:
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value)) < 1:
        return "a whole number of at least 1"
    return None


def _check_cpus(value: Any) -> str | None:
    try:
        ok = not isinstance(value, bool) and float(str(value)) > 0 and float(str(value)) != float("inf")
    except ValueError:
        ok = False
    return None if ok else "a positive number of CPUs (e.g. 2 or 0.5)"


def _check_size(value: Any) -> str | None:
    if isinstance(value, bool) or not _SIZE.match(str(value).strip()):
        return "a size such as 512m, 2g or a number of bytes"
    return None


_TEXT_KEYS = (
    "type",
    "baseDockerImage",
    "address",
    "username",
    "password",
    "privateKeyFile",
    "passphrase",
    "nativeSharedDirectory",
    "pythonLocation",
    "sparkSubmitLocation",
    "sparkMaster",
    "yarnDeployMode",
    "remoteWorkspace",
    "knownHostsFile",
    "dockerSocket",
    "sparkMasterUI",
)
COMPUTE_VALUE_CHECKS = {
    **{key: _check_text for key in _TEXT_KEYS},
    **{key: _check_bool for key in ("sharedVolumes", "nvidiaDocker", "userManagedEnvironment", "packEnvironment")},
    "port": _check_port,
    "maxParallel": _check_count,
    "cpus": _check_cpus,
    "memory": _check_size,
    "shmSize": _check_size,
}


def check_compute_values(data: dict, shown: str) -> None:
    """Raise a ConfigError naming ``shown`` and the key for the first value of a wrong kind."""
    for key, check in COMPUTE_VALUE_CHECKS.items():
        value = data.get(key)
        if value is None or value == "":
            continue
        expected = check(value)
        if expected is not None:
            raise ConfigError(f"'{key}' must be {expected}, got {value!r}", shown)


def load_compute(
    path: Path, project_root: Path, extra_keys: frozenset[str] | Callable[[str], frozenset[str]] = frozenset()
) -> ComputeTarget:
    """A ``.compute`` file; ``extra_keys``: keys plugins add (or a function of the file's type giving them)."""
    shown = _display(path, project_root)
    data = read_mapping(path, display=shown)
    kind = data.get("type")
    if callable(extra_keys):
        extra_keys = extra_keys(kind) if isinstance(kind, str) else frozenset()
    warn_unknown_keys(shown, data, COMPUTE_KEYS | extra_keys)
    if not kind or not isinstance(kind, str):
        raise ConfigError("missing 'type' (local, docker, remotedocker, remote, cluster)", shown)
    check_compute_values(data, shown)
    return ComputeTarget(name=path.stem, type=kind, settings=dict(data), source=shown)


def _env_name_problem(name: str) -> str | None:
    if not name:
        return "an empty name"
    if "=" in name or "\0" in name:
        return "'=' or a NUL byte in its name"
    return None


def _dependency_file(data: dict, key: str, default: str, shown: str) -> str | None:
    value = data.get(key, default)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise ConfigError(f"'{key}' must be one file name (a path relative to the project), got {value!r}", shown)
    return value


def load_runconfig(path: Path, project_root: Path) -> RunConfig:
    shown = _display(path, project_root)
    data = read_mapping(path, display=shown)
    warn_unknown_keys(shown, data, RUNCONFIG_KEYS)
    argv = data.get("ArgumentVector", ["$file"])
    if isinstance(argv, str):
        argv = [argv]
    if not isinstance(argv, list) or not all(isinstance(a, (str, int, float)) for a in argv):
        raise ConfigError("'ArgumentVector' must be a list of strings", shown)
    env = data.get("EnvironmentVariables") or {}
    if not isinstance(env, dict):
        raise ConfigError("'EnvironmentVariables' must be a mapping", shown)
    for name, value in env.items():
        problem = _env_name_problem(str(name))
        if problem is None and isinstance(value, (dict, list)):
            problem = "a value that is not a single value"
        if problem is None and "\0" in _env_text(value):
            problem = "a NUL byte in its value"
        if problem is not None:
            raise ConfigError(f"'EnvironmentVariables': variable {str(name)!r} has {problem}", shown)
    if any("\0" in str(a) for a in argv):
        raise ConfigError("'ArgumentVector' must not contain NUL bytes", shown)
    target = data.get("Target")
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"'Target' must be the name of a compute target, got {target!r}", shown)
    framework = str(data.get("Framework", "Python"))
    canonical = {f.lower(): f for f in FRAMEWORKS}
    if framework.lower() not in canonical:
        raise ConfigError(f"'Framework' must be one of {', '.join(FRAMEWORKS)}, got {framework!r}", shown)
    return RunConfig(
        name=path.stem,
        target=str(data.get("Target") or path.stem),
        argument_vector=tuple(str(a) for a in argv),
        environment_variables={str(k): _env_text(v) for k, v in env.items()},
        framework=canonical[framework.lower()],
        conda_dependencies_file=_dependency_file(data, "CondaDependenciesFile", DEFAULT_CONDA_FILE, shown),
        spark_dependencies_file=_dependency_file(data, "SparkDependenciesFile", DEFAULT_SPARK_FILE, shown),
        prepare_environment=_bool(data.get("PrepareEnvironment", True), "PrepareEnvironment", shown),
        tracked_run=_bool(data.get("TrackedRun", True), "TrackedRun", shown),
        source=shown,
        data_prep=_data_prep_settings(data, shown),
    )


def _data_prep_settings(data: dict[str, Any], shown: str) -> dict[str, Any]:
    """The runconfig's Data Prep settings, checked: ``UseSampling`` a boolean,
    ``DataSourceSettings`` ``{file: {Sampling: {Sample: name}}}``, ``DataSourceSubstitutions``
    ``{file: replacement}``."""
    settings: dict[str, Any] = {}
    if data.get("UseSampling") is not None:
        settings["UseSampling"] = _bool(data["UseSampling"], "UseSampling", shown)
    per_source = data.get("DataSourceSettings")
    if per_source is not None:
        if not isinstance(per_source, dict) or not all(isinstance(v, dict) for v in per_source.values()):
            raise ConfigError(
                "'DataSourceSettings' must map data source files to settings "
                "(e.g. my.dsource: {Sampling: {Sample: MySampleName}})",
                shown,
            )
        for name, value in per_source.items():
            sampling = value.get("Sampling")
            if sampling is not None and (not isinstance(sampling, dict) or not isinstance(sampling.get("Sample"), str)):
                raise ConfigError(f"'DataSourceSettings.{name}.Sampling' must be a mapping with a 'Sample' name", shown)
        settings["DataSourceSettings"] = {str(k): v for k, v in per_source.items()}
    substitutions = data.get("DataSourceSubstitutions")
    if substitutions is not None:
        if not isinstance(substitutions, dict) or not all(isinstance(v, str) for v in substitutions.values()):
            raise ConfigError("'DataSourceSubstitutions' must map data source files to replacement files", shown)
        settings["DataSourceSubstitutions"] = {str(k): v for k, v in substitutions.items()}
    return settings


def _env_text(value: Any) -> str:
    """A YAML scalar as the text a user wrote: ``true`` stays ``true``, not Python's ``True``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def default_runconfig(target: str) -> RunConfig:
    return RunConfig(name=target, target=target)


# -- dependency files ---------------------------------------------------------------

_PY_PIN = re.compile(r"^python\s*(?:=|==)?\s*([0-9][0-9.]*)")


@dataclass(frozen=True)
class CondaDependencies:
    """A conda environment file, reduced to what environment builders need."""

    python_version: str | None = None
    conda_packages: tuple[str, ...] = ()
    pip_packages: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    name: str | None = None
    source: str | None = None

    @property
    def digest(self) -> str:
        """A hash of the resolved spec: the cache key of environments built from it."""
        payload = json.dumps(
            [self.python_version, self.conda_packages, self.pip_packages, self.channels], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def load_conda_dependencies(path: Path, project_root: Path) -> CondaDependencies:
    shown = _display(path, project_root)
    data = read_mapping(path, display=shown)
    warn_unknown_keys(shown, data, {"name", "channels", "dependencies", "prefix", "variables"})
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise ConfigError("'dependencies' must be a list", shown)
    python_version = None
    conda: list[str] = []
    pip: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            if "pip" not in dep:
                raise ConfigError(f"unexpected entry in 'dependencies': {dep!r}", shown)
            entries = dep["pip"] or []
            if not isinstance(entries, list):
                raise ConfigError("'pip' must be a list of requirements", shown)
            pip.extend(str(e) for e in entries)
            continue
        text = str(dep).strip()
        match = _PY_PIN.match(text)
        if match and re.match(r"^python\b", text) and not text.startswith("python-"):
            python_version = match.group(1)
            continue
        if text == "python":
            continue
        if text == "pip" or text.startswith("pip=") or text.startswith("pip>"):
            continue
        conda.append(text)
    channels = data.get("channels") or []
    if not isinstance(channels, list):
        raise ConfigError("'channels' must be a list of channel names", shown)
    if data.get("name") is not None and not isinstance(data.get("name"), str):
        raise ConfigError(f"'name' must be a name, got {data.get('name')!r}", shown)
    return CondaDependencies(
        python_version=python_version,
        conda_packages=tuple(conda),
        pip_packages=tuple(pip),
        channels=tuple(str(c) for c in channels),
        name=data.get("name"),
        source=shown,
    )


@dataclass(frozen=True)
class SparkDependencies:
    """``spark_dependencies.yml``: Spark conf, Maven repositories and packages."""

    configuration: dict[str, str] = field(default_factory=dict)
    repositories: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    source: str | None = None


def load_spark_dependencies(path: Path, project_root: Path) -> SparkDependencies:
    shown = _display(path, project_root)
    data = read_mapping(path, display=shown, tabs=True)  # Workbench accepted TABs here
    warn_unknown_keys(shown, data, {"configuration", "repositories", "packages"})
    conf = data.get("configuration") or {}
    if not isinstance(conf, dict):
        raise ConfigError("'configuration' must be a mapping", shown)
    for key in ("packages", "repositories"):
        if not isinstance(data.get(key) or [], list):
            raise ConfigError(f"'{key}' must be a list", shown)
    packages = []
    for pkg in data.get("packages") or []:
        if isinstance(pkg, dict):
            missing = [k for k in ("group", "artifact", "version") if k not in pkg]
            if missing:
                raise ConfigError(f"package entry {pkg!r} lacks {', '.join(missing)}", shown)
            packages.append(f"{pkg['group']}:{pkg['artifact']}:{pkg['version']}")
        else:
            packages.append(str(pkg))
    repos = []
    for repo in data.get("repositories") or []:
        repos.append(str(repo["url"]) if isinstance(repo, dict) and "url" in repo else str(repo))
    return SparkDependencies(
        configuration={str(k): str(v) for k, v in conf.items()},
        repositories=tuple(repos),
        packages=tuple(packages),
        source=shown,
    )


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
