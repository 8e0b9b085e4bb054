"""The reproducibility baseline: reviewed metrics and artifact digests, one entry per cell.

Kept in the project as YAML (``amlrun-baseline.yml``, or ``[tool.amlrun] baseline_file``)
so changes are reviewed like code. Tolerances map a metric name or an artifact path
(or a glob of them) to ``{abs: X, rel: Y}`` — a value passes when
``|new - old| <= max(abs, rel * |old|)`` — or to ``any`` (not compared: declared
non-deterministic). Without a tolerance a metric must be exactly equal and an artifact
must have the same sha256. Lookup order: the cell's own ``tolerances``, the file's
``tolerances``, then ``[tool.amlrun] tolerances``.

    version: 1
    tolerances:
      accuracy: {abs: 0.01}
      outputs/*.png: any
    cells:
      train.py::local[lr=0.1]:
        run: 20261128-001200-ab12cd
        metrics: {accuracy: 0.93, loss: 0.21}
        artifacts: {outputs/model.txt: 9f86d0...}
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.errors import ConfigError

ANY = "any"
NONDETERMINISTIC = "nondeterministic"
_REPEAT_SUFFIX = re.compile(r"#\d+$")

HEADER = """\
# amlrun reproducibility baseline: written by `amlrun baseline save`, checked by
# `amlrun --check-baseline`. Review changes like code. Tolerances: a metric name or an
# artifact path (globs allowed) -> {abs: X, rel: Y} (passes when |new - old| <=
# max(abs, rel * |old|)) or `any` (not compared). No tolerance: exact equality / same sha256.
"""


def base_cell_id(cell_id: str) -> str:
    """A cell id without its ``--repeat`` suffix (``...#2``)."""
    return _REPEAT_SUFFIX.sub("", cell_id)


# -- tolerances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How far a value may move: absolute and relative bounds, or not compared at all."""

    abs: float = 0.0
    rel: float = 0.0
    any: bool = False

    def allowed(self, reference: float) -> float:
        return max(self.abs, self.rel * abs(reference))

    def accepts(self, reference: float, value: float) -> bool:
        if self.any:
            return True
        if math.isnan(reference) or math.isnan(value):
            return math.isnan(reference) and math.isnan(value)
        if math.isinf(reference) or math.isinf(value):
            return reference == value
        allowed = self.allowed(reference)
        if allowed == 0:
            return value == reference
        return abs(value - reference) <= allowed * (1 + 1e-9)

    def describe(self) -> str:
        if self.any:
            return ANY
        parts = []
        if self.abs:
            parts.append(f"abs {self.abs:g}")
        if self.rel:
            parts.append(f"rel {self.rel:g}")
        return " or ".join(parts) or "exact"

    def to_yaml(self) -> Any:
        if self.any:
            return ANY
        data = {}
        if self.abs:
            data["abs"] = self.abs
        if self.rel:
            data["rel"] = self.rel
        return data


EXACT = Tolerance()


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
        raise ConfigError(f"tolerance '{key}' must be a non-negative number, got {value!r}", where)
    return float(value)


def parse_tolerance(name: str, value: Any, where: str) -> Tolerance:
    """``0.01`` (absolute), ``"5%"`` (relative), ``{abs: .., rel: ..}`` or ``any``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (ANY, NONDETERMINISTIC):
            return Tolerance(any=True)
        if text.endswith("%"):
            try:
                return Tolerance(rel=_number(float(text[:-1]) / 100, where, name))
            except ValueError:
                pass
        try:
            return Tolerance(abs=_number(float(text), where, name))
        except ValueError:
            raise ConfigError(
                f"tolerance for '{name}': expected a number, 'N%', {{abs: X, rel: Y}} or 'any', got {value!r}", where
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Tolerance(abs=_number(value, where, name))
    if isinstance(value, dict):
        unknown = set(value) - {"abs", "rel"}
        if unknown:
            raise ConfigError(f"tolerance for '{name}': unknown key '{sorted(unknown)[0]}' (expected abs, rel)", where)
        return Tolerance(
            abs=_number(value.get("abs", 0), where, f"{name}.abs"),
            rel=_number(value.get("rel", 0), where, f"{name}.rel"),
        )
    raise ConfigError(
        f"tolerance for '{name}': expected a number, 'N%', {{abs: X, rel: Y}} or 'any', got {value!r}", where
    )


@dataclass(frozen=True)
class Tolerances:
    """Name or glob → Tolerance; exact names win over globs, earlier globs over later ones."""

    rules: tuple[tuple[str, Tolerance], ...] = ()

    @classmethod
    def parse(cls, data: Any, where: str) -> Tolerances:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("'tolerances' must be a mapping of metric names or artifact paths to tolerances", where)
        return cls(tuple((str(k), parse_tolerance(str(k), v, where)) for k, v in data.items()))

    def find(self, name: str) -> Tolerance | None:
        for pattern, tolerance in self.rules:
            if pattern == name:
                return tolerance
        for pattern, tolerance in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                return tolerance
        return None

    def to_yaml(self) -> dict:
        return {name: tol.to_yaml() for name, tol in self.rules}

    def __bool__(self) -> bool:
        return bool(self.rules)


def lookup(name: str, *layers: Tolerances) -> Tolerance:
    for layer in layers:
        found = layer.find(name)
        if found is not None:
            return found
    return EXACT


# -- comparing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Movement:
    """One metric or artifact that moved beyond its tolerance."""

    name: str
    kind: str  # "metric" or "artifact"
    expected: Any
    actual: Any
    tolerance: Tolerance = EXACT
    note: str = ""  # "missing", "changed", "new type"

    @property
    def diff(self) -> float | None:
        if _is_number(self.expected) and _is_number(self.actual):
            return float(self.actual) - float(self.expected)
        return None

    @property
    def rel(self) -> float | None:
        diff = self.diff
        if diff is None or not self.expected:
            return None
        return diff / abs(float(self.expected))

    def short(self) -> str:
        if self.note == "missing":
            return f"{self.name} (missing, expected {_fmt(self.expected)})"
        if self.kind == "artifact":
            return f"{self.name} (sha256 {_fmt(self.expected)} -> {_fmt(self.actual)})"
        diff = self.diff
        delta = f", {diff:+.4g}" if diff is not None else ""
        return f"{self.name} ({_fmt(self.expected)} -> {_fmt(self.actual)}{delta})"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "expected": self.expected,
            "actual": self.actual,
            "diff": self.diff,
            "rel": self.rel,
            "tolerance": self.tolerance.describe(),
            "note": self.note,
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values_match(expected: Any, actual: Any, tolerance: Tolerance) -> bool:
    if tolerance.any:
        return True
    if _is_number(expected) and _is_number(actual):
        return tolerance.accepts(float(expected), float(actual))
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return all(_values_match(e, a, tolerance) for e, a in zip(expected, actual, strict=True))
    return expected == actual


def compare_metrics(expected: dict, actual: dict, *layers: Tolerances) -> list[Movement]:
    """Metrics of ``expected`` that are missing from ``actual`` or moved beyond tolerance.

    Metrics only in ``actual`` are not movements (a baseline lists what is checked)."""
    moved = []
    for name in expected:
        tolerance = lookup(name, *layers)
        if tolerance.any:
            continue
        if name not in actual:
            moved.append(Movement(name, "metric", expected[name], None, tolerance, "missing"))
        elif not _values_match(expected[name], actual[name], tolerance):
            moved.append(Movement(name, "metric", expected[name], actual[name], tolerance))
    return moved


def compare_artifacts(expected: dict, actual: dict, *layers: Tolerances) -> list[Movement]:
    """Artifacts (path → sha256) that are missing or differ, unless declared non-deterministic."""
    moved = []
    for path, digest in expected.items():
        tolerance = lookup(path, *layers)
        if tolerance.any or digest in (ANY, NONDETERMINISTIC):
            continue
        if path not in actual:
            moved.append(Movement(path, "artifact", digest, None, tolerance, "missing"))
        elif actual[path] != digest:
            moved.append(Movement(path, "artifact", digest, actual[path], tolerance, "changed"))
    return moved


def reason_line(what: str, moved: list[Movement]) -> str:
    """One line naming every moved metric and artifact (the failure message)."""
    metrics = [m for m in moved if m.kind == "metric"]
    artifacts = [m for m in moved if m.kind == "artifact"]
    parts = []
    if metrics:
        parts.append(
            f"metric{'s' * (len(metrics) != 1)} moved beyond tolerance vs {what}: "
            + "; ".join(m.short() for m in metrics)
        )
    if artifacts:
        parts.append(
            f"artifact{'s' * (len(artifacts) != 1)} changed vs {what}: " + "; ".join(m.short() for m in artifacts)
        )
    return " | ".join(parts)


def table(moved: list[Movement], expected_label: str = "expected") -> list[str]:
    """An aligned table of what moved and by how much."""
    from tabulate import tabulate

    rows = []
    for m in moved:
        if m.kind == "artifact":
            rows.append(
                [m.name, _fmt(m.expected), _fmt(m.actual), m.note, "", "sha256" if not m.tolerance.any else ANY]
            )
            continue
        diff, rel = m.diff, m.rel
        rows.append(
            [
                m.name,
                _fmt(m.expected),
                "(missing)" if m.note == "missing" else _fmt(m.actual),
                "" if diff is None else f"{diff:+.6g}",
                "" if rel is None else f"{rel * 100:+.3g}%",
                m.tolerance.describe(),
            ]
        )
    text = tabulate(
        rows,
        headers=["metric/artifact", expected_label, "actual", "diff", "rel", "tolerance"],
        tablefmt="simple",
        disable_numparse=True,
    )
    return text.splitlines()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return text[:12]
    return text if len(text) <= 40 else text[:37] + "..."


# -- the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One cell's reviewed values."""

    cell_id: str
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    tolerances: Tolerances = Tolerances()
    run: str | None = None
    saved: str | None = None

    def to_yaml(self) -> dict:
        data: dict[str, Any] = {}
        if self.run:
            data["run"] = self.run
        if self.saved:
            data["saved"] = self.saved
        data["metrics"] = dict(sorted(self.metrics.items()))
        if self.artifacts:
            data["artifacts"] = dict(sorted(self.artifacts.items()))
        if self.tolerances:
            data["tolerances"] = self.tolerances.to_yaml()
        return data


@dataclass(frozen=True)
class Baseline:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    tolerances: Tolerances = Tolerances()
    exists: bool = True

    def get(self, cell_id: str) -> Entry | None:
        return self.entries.get(base_cell_id(cell_id))

    def with_entries(self, entries: list[Entry]) -> Baseline:
        merged = dict(self.entries)
        for entry in entries:
            merged[entry.cell_id] = entry
        return Baseline(self.path, dict(sorted(merged.items())), self.tolerances, self.exists)

    def dumps(self) -> str:
        import yaml

        data: dict[str, Any] = {"version": 1}
        if self.tolerances:
            data["tolerances"] = self.tolerances.to_yaml()
        data["cells"] = {cid: e.to_yaml() for cid, e in sorted(self.entries.items())}
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
        return HEADER + body

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        os.replace(tmp, self.path)


def project_tolerances(project) -> Tolerances:
    return Tolerances.parse(project.settings.extra.get("tolerances"), "pyproject.toml [tool.amlrun] tolerances")


def load(path: Path, display: str | None = None) -> Baseline:
    """Read a baseline file; a missing file is an empty baseline with ``exists=False``."""
    from amlrun.yamlfile import read_mapping

    shown = display or path.name
    if not path.is_file():
        return Baseline(path, exists=False)
    data = read_mapping(path, display=shown)
    unknown = set(data) - {"version", "tolerances", "cells"}
    if unknown:
        raise ConfigError(f"unknown key '{sorted(unknown)[0]}' (expected version, tolerances, cells)", shown)
    if data.get("version", 1) != 1:
        raise ConfigError(f"unsupported baseline version {data.get('version')!r} (this amlrun reads version 1)", shown)
    cells = data.get("cells") or {}
    if not isinstance(cells, dict):
        raise ConfigError("'cells' must be a mapping of cell ids to entries", shown)
    entries = {}
    for cell_id, raw in cells.items():
        where = f"{shown} (cell {cell_id})"
        raw = raw or {}
        if not isinstance(raw, dict):
            raise ConfigError("a cell's entry must be a mapping (run, metrics, artifacts, tolerances)", where)
        unknown = set(raw) - {"run", "saved", "metrics", "artifacts", "tolerances"}
        if unknown:
            raise ConfigError(
                f"unknown key '{sorted(unknown)[0]}' (expected run, saved, metrics, artifacts, tolerances)", where
            )
        metrics = raw.get("metrics") or {}
        artifacts = raw.get("artifacts") or {}
        if not isinstance(metrics, dict) or not isinstance(artifacts, dict):
            raise ConfigError("'metrics' and 'artifacts' must be mappings", where)
        entries[str(cell_id)] = Entry(
            cell_id=str(cell_id),
            metrics={str(k): v for k, v in metrics.items()},
            artifacts={str(k): str(v) for k, v in artifacts.items()},
            tolerances=Tolerances.parse(raw.get("tolerances"), where),
            run=str(raw["run"]) if raw.get("run") else None,
            saved=str(raw["saved"]) if raw.get("saved") else None,
        )
    return Baseline(path, entries, Tolerances.parse(data.get("tolerances"), shown), True)


def entry_from_record(record, previous: Entry | None = None) -> Entry:
    """A baseline entry from a run record, keeping a previous entry's hand-written tolerances
    and artifacts declared non-deterministic."""
    artifacts = {a["path"]: a["sha256"] for a in record.artifacts if a.get("sha256")}
    if previous is not None:
        for path, digest in previous.artifacts.items():
            if digest in (ANY, NONDETERMINISTIC) and path in artifacts:
                artifacts[path] = digest
    return Entry(
        cell_id=base_cell_id(record.cell_id),
        metrics=dict(record.metrics),
        artifacts=artifacts,
        tolerances=previous.tolerances if previous is not None else Tolerances(),
        run=record.run_id,
        saved=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
