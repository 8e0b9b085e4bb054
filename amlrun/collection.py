"""Collecting experiments: walk paths, find scripts by pattern, read their parameter
and mark declarations statically. A script is never imported here: its packages may
exist only inside a target's environment.

Declaration format (module-level literals, read with ``ast``)::

    AMLRUN_PARAMS = {"lr": [0.1, 0.01], "depth": [3, 5]}   # a grid: the cartesian product
    AMLRUN_PARAMS = [{"lr": 0.1, "depth": 3}, {"lr": 0.01}]  # or explicit sets
    AMLRUN_MARKS = ["slow", {"name": "skip", "targets": ["docker"], "reason": "needs a GPU"}]
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.errors import ConfigError, UsageError
from amlrun.hookspec import hookimpl
from amlrun.matrix import Mark, grid_product

CONFTEST = "amlrunconf.py"
_ALWAYS_SKIPPED = {CONFTEST, "__init__.py", "setup.py", "conftest.py"}


@dataclass(frozen=True)
class Experiment:
    """One collected script."""

    path: str  # relative to the project root, with forward slashes
    fspath: Path
    params: tuple[dict, ...] = ()
    marks: tuple[Mark, ...] = field(default=())


@dataclass(frozen=True)
class CollectionError:
    """A script whose declarations cannot be read (pytest's "ERROR collecting"): reported,
    counted as a failure, and the other scripts still run."""

    path: str
    message: str


# -- static declarations ----------------------------------------------------------------

#: a module-level declaration, found in the text when the host's Python cannot parse the
#: script (it may be valid only on the target's newer Python)
_DECLARATION = re.compile(rb"^(AMLRUN_PARAMS|AMLRUN_MARKS)\s*[:=]", re.MULTILINE)


def _literal(node: ast.expr, name: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"{name} must be a literal (numbers, strings, lists, dicts)", where, node.lineno) from None


def _params_from(value: Any, where: str, line: int) -> tuple[dict, ...]:
    if isinstance(value, dict):
        grid = {str(k): (v if isinstance(v, (list, tuple)) else [v]) for k, v in value.items()}
        return tuple(grid_product(grid)) if grid else ()
    if isinstance(value, (list, tuple)) and all(isinstance(v, dict) for v in value):
        return tuple({str(k): v for k, v in entry.items()} for entry in value)
    raise ConfigError("AMLRUN_PARAMS must be a dict of lists (a grid) or a list of dicts", where, line)


def marks_from(value: Any, where: str, line: int | None = None) -> tuple[Mark, ...]:
    if isinstance(value, (str, dict)):
        value = [value]
    marks = []
    for entry in value if isinstance(value, (list, tuple)) else [None]:
        if isinstance(entry, str):
            marks.append(Mark(entry))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            targets = entry.get("targets") or ()
            marks.append(Mark(entry["name"], str(entry.get("reason", "")), tuple(targets)))
        else:
            raise ConfigError("AMLRUN_MARKS must be a list of names or {name, reason, targets} dicts", where, line)
    return tuple(marks)


def read_declarations(path: Path, shown: str) -> tuple[tuple[dict, ...], tuple[Mark, ...]]:
    """``AMLRUN_PARAMS`` and ``AMLRUN_MARKS`` of a script, without importing it."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", shown) from None
    if shown.endswith(".ipynb"):
        from amlrun.notebooks import read_notebook_declarations

        return read_notebook_declarations(source, shown)
    return parse_declarations(source, shown)


def parse_declarations(source: bytes, shown: str) -> tuple[tuple[dict, ...], tuple[Mark, ...]]:
    """``AMLRUN_PARAMS`` and ``AMLRUN_MARKS`` of Python source (a script, a notebook's cell)."""
    if b"AMLRUN_" not in source:
        return (), ()
    try:
        tree = ast.parse(source, filename=shown)
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
        declared = _DECLARATION.search(source)
        if declared is None:
            return (), ()  # declares nothing: collected as is, the target's Python decides
        line = getattr(exc, "lineno", None)
        raise ConfigError(
            f"cannot read {declared.group(1).decode()}: the host's Python {sys.version_info[0]}.{sys.version_info[1]} "
            f"finds a syntax error: {getattr(exc, 'msg', exc)}",
            shown,
            line,
        ) from None
    params: tuple[dict, ...] = ()
    marks: tuple[Mark, ...] = ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        if name == "AMLRUN_PARAMS":
            params = _params_from(_literal(value, name, shown), shown, node.lineno)
        elif name == "AMLRUN_MARKS":
            marks = marks_from(_literal(value, name, shown), shown, node.lineno)
    return params, marks


class DefaultCollector:
    """The built-in ``amlrun_collect_file``: every matching file is an experiment."""

    @hookimpl(trylast=True)
    def amlrun_collect_file(self, file_path, config):
        shown = config.project.relative(file_path)
        params, marks = read_declarations(file_path, shown)
        return Experiment(path=shown, fspath=file_path, params=params, marks=marks)

    @hookimpl(tryfirst=True)
    def amlrun_collection_modifyitems(self, session, items):
        """Targets that run a notebook get its executor in their managed environment (first:
        later implementations, e.g. the rerun cache, see the environment's final digest)."""
        if any(item.script.endswith(".ipynb") for item in items):
            from amlrun.notebooks import with_executor

            with_executor(session, items)


# -- amlrunconf.py -------------------------------------------------------------------------


class Conftests:
    """Loads ``amlrunconf.py`` files and scopes their hooks to their directory."""

    def __init__(self, config):
        self.config = config
        self._by_dir: dict[Path, object] = {}
        self._callers: dict[tuple[str, Path, int], Any] = {}

    def load(self, directory: Path) -> None:
        directory = directory.resolve()
        if directory in self._by_dir:
            return
        path = directory / CONFTEST
        module = None
        if path.is_file():
            module = _import_path(path, self.config.project.relative(path))
            self.config.pluginmanager.register(module, name=f"amlrunconf:{self.config.project.relative(path)}")
        self._by_dir[directory] = module

    def load_ancestors(self, directory: Path) -> None:
        """Load ``amlrunconf.py`` of ``directory`` and its parents up to the project root."""
        root = self.config.project.root
        directory = directory.resolve()
        chain = [directory]
        while directory != root and root in directory.parents:
            directory = directory.parent
            chain.append(directory)
        for folder in reversed(chain):
            self.load(folder)

    def hook(self, name: str, directory: Path):
        """The hook caller for ``name`` with only ``directory``'s own and parents' conftests."""
        # keyed by how many folders were seen too: a conftest loaded later (e.g. of a
        # sibling folder named after this one on the command line) must be excluded as well
        key = (name, directory, len(self._by_dir))
        caller = self._callers.get(key)
        if caller is None:
            foreign = [
                mod
                for folder, mod in self._by_dir.items()
                if mod is not None and folder != directory and folder not in directory.parents
            ]
            caller = self.config.pluginmanager.subset_hook_caller(name, remove_plugins=foreign)
            self._callers[key] = caller
        return caller


def _import_path(path: Path, shown: str):
    module_name = "amlrunconf_" + "_".join(Path(shown).parent.parts or ("root",)).replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # a .py path always has a source loader
        raise ConfigError(f"cannot load {shown}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's amlrunconf.py is user code: name it and the line
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        raise ConfigError(f"error while importing: {type(exc).__name__}: {exc}", shown, line) from exc
    return module


# -- the walk ------------------------------------------------------------------------------


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def iter_candidate_files(paths: list[Path], settings, conftests: Conftests):
    """Yield (file, explicitly_named) in a stable order, loading amlrunconf.py files on the way."""
    for path in paths:
        if path.is_file():
            conftests.load_ancestors(path.parent)
            yield path.resolve(), True
        elif path.is_dir():
            conftests.load_ancestors(path)
            yield from _walk(path.resolve(), settings, conftests)
        else:
            raise UsageError(
                f"file or directory not found: {path} (arguments for the scripts go after '--': "
                f"amlrun -c TARGET SCRIPT -- {path})"
            )


def _walk(directory: Path, settings, conftests: Conftests):
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise UsageError(f"cannot read directory {directory}: {exc.strerror}") from None
    subdirs = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if not _matches(entry.name, settings.norecursedirs):
                subdirs.append(Path(entry.path))
        elif entry.name == CONFTEST:
            conftests.load(directory)
    for entry in entries:
        if entry.is_file() and entry.name not in _ALWAYS_SKIPPED and not entry.name.startswith("_"):
            if _matches(entry.name, settings.experiment_files) or _matches(entry.name, settings.notebook_files):
                yield Path(entry.path), False
    for sub in subdirs:
        yield from _walk(sub, settings, conftests)


def collect(config, paths: list[Path], errors: list[CollectionError] | None = None) -> list[Experiment]:
    """Collect experiments under ``paths`` through ``amlrun_collect_file`` and ``amlrun_generate_params``.

    With ``errors``, a script whose declarations cannot be read is appended there and the
    others are still collected; without it, the first such error is raised."""
    conftests = config.conftests
    experiments: list[Experiment] = []
    seen: set[Path] = set()
    for file_path, _explicit in iter_candidate_files(paths, config.project.settings, conftests):
        if file_path in seen:
            continue
        seen.add(file_path)
        try:
            experiment = _collect_one(config, conftests, file_path)
        except ConfigError as exc:
            shown = config.project.relative(file_path)
            # the script's own declarations: its error; another file's (an amlrunconf.py's grid
            # file, say) is a configuration error of the project, reported as such (exit 4)
            if errors is None or not _names_script(exc, file_path, shown):
                raise
            errors.append(CollectionError(shown, str(exc)))
            continue
        if experiment is not None:
            experiments.append(experiment)
    return experiments


def _names_script(exc: ConfigError, file_path: Path, shown: str) -> bool:
    where = str(exc.path) if exc.path is not None else ""
    return any(where == name or where.startswith(name + " ") for name in (shown, str(file_path), file_path.name))


def _collect_one(config, conftests: Conftests, file_path: Path) -> Experiment | None:
    directory = file_path.parent
    experiment = conftests.hook("amlrun_collect_file", directory)(file_path=file_path, config=config)
    if experiment is None:
        return None
    generated = conftests.hook("amlrun_generate_params", directory)(experiment=experiment, config=config)
    extra = [ps for result in generated if result for ps in result]
    if extra:
        for ps in extra:
            if not isinstance(ps, dict):
                raise ConfigError(f"amlrun_generate_params returned {ps!r}, expected dicts", experiment.path)
        experiment = Experiment(experiment.path, experiment.fspath, (*experiment.params, *extra), experiment.marks)
    return experiment
