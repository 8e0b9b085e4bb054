"""The matrix: experiments × parameter sets × targets, as cells with stable ids."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from amlrun.errors import UsageError
from amlrun.expression import Expression


@dataclass(frozen=True, slots=True)
class Mark:
    """A label on an experiment or cell; ``skip`` skips it, other names select with ``-m``."""

    name: str
    reason: str = ""
    targets: tuple[str, ...] = ()  # empty: every target

    def applies_to(self, target: str) -> bool:
        return not self.targets or target in self.targets


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class ParamSet:
    """One parameter set: ordered ``(name, value)`` pairs."""

    items: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ParamSet:
        return cls(tuple((str(k), v) for k, v in values.items()))

    @property
    def id(self) -> str:
        return "-".join(f"{k}={format_value(v)}" for k, v in self.items)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True, slots=True)
class Cell:
    """One (experiment, parameter set, target) of the matrix.

    Slotted, and sharing its parameter pairs with its neighbours: a 10^6-cell matrix is
    held in memory at once (``--collect-only``)."""

    experiment: Any  # amlrun.collection.Experiment
    params: ParamSet
    target: str
    marks: tuple[Mark, ...] = field(default=())

    @property
    def id(self) -> str:
        suffix = f"[{self.params.id}]" if self.params else ""
        return f"{self.experiment.path}::{self.target}{suffix}"

    @property
    def script(self) -> str:
        return self.experiment.path

    def with_mark(self, mark: Mark) -> Cell:
        return dataclasses.replace(self, marks=(*self.marks, mark))

    def skip_mark(self) -> Mark | None:
        for mark in self.marks:
            if mark.name == "skip" and mark.applies_to(self.target):
                return mark
        return None

    def mark_names(self) -> set[str]:
        return {m.name for m in self.marks if m.applies_to(self.target)}


def parse_param_options(options: Sequence[str]) -> dict[str, list[str]]:
    """``-p lr=0.1,0.01 -p depth=3`` → ``{"lr": ["0.1", "0.01"], "depth": ["3"]}``."""
    grid: dict[str, list[str]] = {}
    for option in options:
        name, sep, values = option.partition("=")
        name = name.strip()
        if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"-p {option!r}: expected NAME=VALUE[,VALUE...]")
        grid.setdefault(name, []).extend(values.split(","))
    return grid


def split_scoped(options: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``-p SCRIPT::NAME=V1,V2`` scopes a sweep to one script: (unscoped options, script → its options)."""
    plain: list[str] = []
    scoped: dict[str, list[str]] = {}
    for option in options:
        head, sep, _ = option.partition("=")
        script, colons, name = head.rpartition("::")
        if sep and colons:
            if not script.strip():
                raise UsageError(f"-p {option!r}: expected SCRIPT::NAME=VALUE[,VALUE...]")
            scoped.setdefault(script.strip(), []).append(option[len(script) + 2 :])
        else:
            plain.append(option)
    return plain, scoped


def grid_product(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def combine(declared: Sequence[Mapping[str, Any]], cli_grid: Mapping[str, Sequence[Any]]) -> list[ParamSet]:
    """Declared sets, each overridden by every combination of the command-line grid.

    The ``(name, value)`` pairs are made once per value and shared by every set that has
    them; duplicates are looked for only where there can be some."""
    bases = list(declared) or [{}]
    seen: set = set()
    result = []
    cli_pairs = [[(str(name), value) for value in values] for name, values in cli_grid.items()]
    cli_names = {str(name) for name in cli_grid}
    # one base and no repeated command-line value: every set differs, no need to remember them
    unique = len(bases) == 1 and all(len({repr(v) for v in values}) == len(values) for values in cli_grid.values())
    for base in bases:
        base_pairs = tuple((str(k), v) for k, v in base.items() if str(k) not in cli_names)
        overridden = {str(k) for k in base} & cli_names
        for combo in itertools.product(*cli_pairs):
            if overridden:  # keep the declared order of the names a command line overrides
                values = dict(combo)
                items = tuple(
                    (k, values[k]) if k in values else (k, v) for k, v in ((str(k), v) for k, v in base.items())
                ) + tuple(p for p in combo if p[0] not in base)
            else:
                items = base_pairs + combo
            if unique:
                result.append(ParamSet(items))
                continue
            key = tuple((k, repr(v)) for k, v in items)
            if key not in seen:
                seen.add(key)
                result.append(ParamSet(items))
    return result


def expand(
    experiments: Iterable[Any],
    targets: Sequence[str],
    cli_grid: Mapping[str, Sequence[Any]],
    scoped: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
) -> list[Cell]:
    """Every experiment × its parameter sets × every target, in that nesting order.

    ``scoped``: script path → a grid for that script only (``-p SCRIPT::NAME=...``)."""
    cells = []
    for experiment in experiments:
        grid = {**cli_grid, **(scoped or {}).get(experiment.path, {})}
        for params in combine(experiment.params, grid):
            for target in targets:
                cells.append(Cell(experiment=experiment, params=params, target=target, marks=experiment.marks))
    return cells


def undeclared_params(experiment: Any, names: Iterable[str]) -> list[tuple[str, str | None]]:
    """(name, nearest declared name) for each of ``names`` that ``experiment`` does not
    declare; empty when the script declares no parameters (then any name may be right)."""
    from amlrun.diagnostics import nearest

    declared = sorted({k for params in experiment.params for k in params})
    if not declared:
        return []
    return [(n, nearest(n, declared)) for n in names if n not in declared]


def select(cells: Iterable[Cell], keyword: str | None, markexpr: str | None) -> tuple[list[Cell], list[Cell]]:
    """Split cells into (selected, deselected) by ``-k`` and ``-m``."""
    kexpr = Expression(keyword, "-k") if keyword else None
    mexpr = Expression(markexpr, "-m") if markexpr else None
    selected: list[Cell] = []
    deselected: list[Cell] = []
    for cell in cells:
        ok = True
        if kexpr is not None:
            lowered = cell.id.lower()
            names = {n.lower() for n in cell.mark_names()}
            ok = kexpr.evaluate(lambda word: word.lower() in lowered or word.lower() in names)  # noqa: B023 (called here)
        if ok and mexpr is not None:
            names = cell.mark_names()
            ok = mexpr.evaluate(lambda word: word in names)  # noqa: B023 (called here)
        (selected if ok else deselected).append(cell)
    return selected, deselected
