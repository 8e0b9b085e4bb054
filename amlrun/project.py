"""Finding the project and reading amlrun's own settings (``[tool.amlrun]``)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.config import (
    ComputeTarget,
    CondaDependencies,
    RunConfig,
    SparkDependencies,
    default_runconfig,
    load_compute,
    load_conda_dependencies,
    load_runconfig,
    load_spark_dependencies,
)
from amlrun.diagnostics import warn_unknown_keys
from amlrun.errors import ConfigError

STATE_DIR = ".amlrun"
DEFAULT_BASELINE_FILE = "amlrun-baseline.yml"
CONFIG_DIR = "aml_config"


@dataclass(frozen=True)
class Settings:
    """``[tool.amlrun]`` in ``pyproject.toml``."""

    experiment_paths: tuple[str, ...] = ()
    experiment_files: tuple[str, ...] = ("*.py",)
    notebook_files: tuple[str, ...] = ("*.ipynb",)
    norecursedirs: tuple[str, ...] = (
        ".*",
        "_*",
        "__pycache__",
        "outputs",
        "aml_config",
        "venv",
        "env",
        "node_modules",
        "build",
        "dist",
    )
    default_targets: tuple[str, ...] = ("local",)
    extra: dict[str, Any] = field(default_factory=dict)


_SETTING_KEYS = {"experiment_paths", "experiment_files", "notebook_files", "norecursedirs", "default_targets"}
#: keys other parts of amlrun read from ``[tool.amlrun]`` (tolerances, build settings ...)
EXTRA_SETTING_KEYS = {"tolerances", "build", "baseline_file", "seed", "mlflow"}


def _str_tuple(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"[tool.amlrun] '{key}' must be a list of strings", where)


def toml_parser():
    """tomllib, or tomli on Python 3.10; imported only when a pyproject.toml mentions amlrun."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib


def load_settings(pyproject: Path) -> Settings | None:
    if not pyproject.is_file():
        return None
    text = pyproject.read_text(encoding="utf-8")
    if "amlrun" not in text:  # no [tool.amlrun] in any spelling: not worth a TOML parser's import
        return None
    tomllib = toml_parser()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", pyproject.name) from None
    table = data.get("tool", {}).get("amlrun")
    if table is None:
        return None
    warn_unknown_keys("pyproject.toml [tool.amlrun]", table, _SETTING_KEYS | EXTRA_SETTING_KEYS)
    defaults = Settings()
    return Settings(
        experiment_paths=_str_tuple(table.get("experiment_paths", []), "experiment_paths", pyproject.name),
        experiment_files=_str_tuple(
            table.get("experiment_files", list(defaults.experiment_files)), "experiment_files", pyproject.name
        ),
        notebook_files=_str_tuple(
            table.get("notebook_files", list(defaults.notebook_files)), "notebook_files", pyproject.name
        ),
        norecursedirs=_str_tuple(
            table.get("norecursedirs", list(defaults.norecursedirs)), "norecursedirs", pyproject.name
        ),
        default_targets=_str_tuple(
            table.get("default_targets", list(defaults.default_targets)), "default_targets", pyproject.name
        ),
        extra={k: v for k, v in table.items() if k in EXTRA_SETTING_KEYS},
    )


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` with ``aml_config/`` or ``[tool.amlrun]``."""
    start = start.resolve()
    if start.is_file():
        start = start.parent
    for candidate in (start, *start.parents):
        if (candidate / CONFIG_DIR).is_dir():
            return candidate
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.amlrun" in pyproject.read_text(encoding="utf-8", errors="replace"):
            return candidate
    return None


@dataclass(frozen=True)
class Project:
    """A project folder: its configuration files and its run history location."""

    root: Path
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def discover(cls, start: Path, fallback: Path) -> Project:
        root = find_root(start) or fallback.resolve()
        return cls(root=root, settings=load_settings(root / "pyproject.toml") or Settings())

    @property
    def config_dir(self) -> Path:
        return self.root / CONFIG_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    # -- configuration files ----------------------------------------------------------

    def compute_names(self) -> list[str]:
        return sorted(p.stem for p in self.config_dir.glob("*.compute"))

    def runconfig_names(self) -> list[str]:
        return sorted(p.stem for p in self.config_dir.glob("*.runconfig"))

    def compute_target(
        self, name: str, extra_keys: frozenset[str] | Callable[[str], frozenset[str]] = frozenset()
    ) -> ComputeTarget | None:
        path = self.config_dir / f"{name}.compute"
        if path.is_file():
            return load_compute(path, self.root, extra_keys)
        if name == "local":
            return ComputeTarget(name="local", type="local", source=None)
        return None

    def runconfig(self, name: str) -> RunConfig | None:
        path = self.config_dir / f"{name}.runconfig"
        if path.is_file():
            return load_runconfig(path, self.root)
        return None

    def resolve_runconfig(self, name: str) -> RunConfig | None:
        """``-c NAME``: a runconfig first, then a compute target with a default runconfig."""
        found = self.runconfig(name)
        if found is not None:
            return found
        if (self.config_dir / f"{name}.compute").is_file() or name == "local":
            return default_runconfig(name)
        return None

    def conda_dependencies(self, runconfig: RunConfig) -> CondaDependencies | None:
        """The run's dependency file, plus what amlrun adds (``runconfig.extra_requirements``)."""
        deps = self._conda_file(runconfig)
        extra = [r for r in runconfig.extra_requirements if deps is None or r not in deps.pip_packages]
        if not extra:
            return deps
        if deps is None:
            return CondaDependencies(pip_packages=tuple(extra), source=runconfig.source)
        return dataclasses.replace(deps, pip_packages=(*deps.pip_packages, *extra))

    def _conda_file(self, runconfig: RunConfig) -> CondaDependencies | None:
        if not runconfig.conda_dependencies_file:
            return None
        path = self.root / runconfig.conda_dependencies_file
        if not path.is_file():
            named = runconfig.conda_dependencies_file != "aml_config/conda_dependencies.yml"
            if runconfig.source is not None and named:
                raise ConfigError(
                    f"'CondaDependenciesFile' names {runconfig.conda_dependencies_file}, which does not exist",
                    runconfig.source,
                )
            return None
        return load_conda_dependencies(path, self.root)

    def spark_dependencies(self, runconfig: RunConfig) -> SparkDependencies | None:
        if not runconfig.spark_dependencies_file:
            return None
        path = self.root / runconfig.spark_dependencies_file
        if not path.is_file():
            return None
        return load_spark_dependencies(path, self.root)


def baseline_path(project: Project) -> Path:
    """The project's baseline file (``[tool.amlrun] baseline_file``), kept out of its snapshots."""
    name = project.settings.extra.get("baseline_file") or DEFAULT_BASELINE_FILE
    if not isinstance(name, str):
        raise ConfigError("[tool.amlrun] 'baseline_file' must be a path (a string)", "pyproject.toml")
    return project.root / name
