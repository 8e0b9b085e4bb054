"""``amlrun history diff RUN RUN``: what changed between two runs.

Target, code (snapshot manifests: added/removed/changed files and a unified diff of
changed text files), parameters, environment (the recorded package lists), metrics and
artifacts — so a failing reproducibility check says whether the code, the packages or
the target moved. Reads ``.amlrun/`` directly, like the rest of ``amlrun history``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.cli import ArgumentParser
from amlrun.errors import UsageError
from amlrun.freeze import RUN_FILE, Freeze, describe_change, package_changes

MAX_DIFF_BYTES = 1 << 20  # larger files are listed, not diffed


def build_parser(prog: str) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Show what changed between two runs: target, code, parameters, "
        "environment packages, metrics and artifacts.",
    )
    p.add_argument("runs", nargs=2, metavar="RUN", help="run id, unique prefix, or 'last'")
    p.add_argument("--project", metavar="DIR", help="the project folder (default: found from the current folder)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--name-only", action="store_true", help="list changed files without their unified diff")
    p.add_argument("-U", "--context", type=int, default=3, metavar="N", help="lines of context in code diffs")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the runs differ (as git diff --exit-code)")
    return p


@dataclass
class RunDiff:
    a: Any
    b: Any
    target: list[tuple[str, Any, Any]] = field(default_factory=list)
    code: dict[str, Any] = field(default_factory=dict)
    params: list[tuple[str, Any, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, Any, Any]] = field(default_factory=list)
    artifacts: list[tuple[str, Any, Any]] = field(default_factory=list)

    def changed(self) -> list[str]:
        what = []
        if self.target:
            what.append("target")
        if self.code.get("changed"):
            what.append("code")
        if self.params:
            what.append("parameters")
        if self.environment.get("changed"):
            what.append("environment")
        if self.metrics:
            what.append("metrics")
        if self.artifacts:
            what.append("artifacts")
        return what


def main(argv: list[str], prog: str = "amlrun history diff") -> int:
    from amlrun.project import Project
    from amlrun.secrets import redactor
    from amlrun.snapshot import SnapshotStore
    from amlrun.store import RunStore

    options = build_parser(prog).parse_args(argv)
    start = Path(options.project or Path.cwd())
    if not start.exists():
        raise UsageError(f"--project {start}: no such folder")
    project = Project.discover(start, start)
    store = RunStore(project.state_dir)
    a, b = (store.resolve(ref) for ref in options.runs)
    from amlrun.project import baseline_path

    ignored = {project.relative(baseline_path(project))}
    diff = compare(
        a,
        b,
        store,
        SnapshotStore(project.state_dir),
        context=options.context,
        with_patch=not options.name_only,
        ignored=ignored,
    )
    if options.format == "json":
        text = json.dumps(to_json(diff), indent=2, default=str)
    else:
        text = "\n".join(render(diff))
    print(redactor(text))
    return 1 if options.exit_code and diff.changed() else 0


# -- comparing ----------------------------------------------------------------------------


def _pairs(a: dict, b: dict, ignore=()) -> list[tuple[str, Any, Any]]:
    return [
        (k, a.get(k), b.get(k))
        for k in sorted(set(a) | set(b), key=str)
        if k not in ignore and (k not in a or k not in b or a[k] != b[k])
    ]


def compare(
    a, b, store, snapshots, *, context: int = 3, with_patch: bool = True, ignored: AbstractSet[str] = frozenset()
) -> RunDiff:
    """``ignored``: project files left out of the code comparison (the baseline file itself)."""
    diff = RunDiff(a, b)
    for name in ("target", "target_type", "runconfig", "host", "amlrun_version"):
        va, vb = getattr(a, name), getattr(b, name)
        if va != vb:
            diff.target.append((name, va, vb))
    diff.code = code_diff(a, b, snapshots, context, with_patch, ignored)
    diff.params = _pairs(a.params or {}, b.params or {})
    diff.environment = environment_diff(a, b, store)
    diff.metrics = _pairs(a.metrics or {}, b.metrics or {})
    arts_a = {x["path"]: x.get("sha256") for x in a.artifacts}
    arts_b = {x["path"]: x.get("sha256") for x in b.artifacts}
    diff.artifacts = _pairs(arts_a, arts_b)
    return diff


def _read_object(snapshots, digest: str) -> str | None:
    path = snapshots.object_path(digest)
    try:
        if path.stat().st_size > MAX_DIFF_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def code_diff(
    a, b, snapshots, context: int, with_patch: bool, ignored: AbstractSet[str] = frozenset()
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "a": a.snapshot_digest,
        "b": b.snapshot_digest,
        "changed": False,
        "git": [a.git_commit, b.git_commit] if a.git_commit != b.git_commit else None,
        "added": [],
        "removed": [],
        "modified": [],
        "patch": [],
    }
    if a.snapshot_digest == b.snapshot_digest:
        return result
    result["changed"] = True
    try:
        sa, sb = snapshots.load(a.snapshot_digest), snapshots.load(b.snapshot_digest)
    except (OSError, ValueError, TypeError):
        result["unavailable"] = "a snapshot manifest is missing (removed by 'amlrun history gc'?)"
        return result
    fa = {e.path: e for e in sa.entries if e.path not in ignored}
    fb = {e.path: e for e in sb.entries if e.path not in ignored}
    result["added"] = sorted(set(fb) - set(fa))
    result["removed"] = sorted(set(fa) - set(fb))
    result["modified"] = sorted(
        p for p in set(fa) & set(fb) if fa[p].digest != fb[p].digest or fa[p].mode != fb[p].mode
    )
    result["changed"] = bool(result["added"] or result["removed"] or result["modified"])
    if not with_patch:
        return result
    patch: list[str] = []
    for path in sorted(set(result["added"]) | set(result["removed"]) | set(result["modified"])):
        old = _read_object(snapshots, fa[path].digest) if path in fa else ""
        new = _read_object(snapshots, fb[path].digest) if path in fb else ""
        if old is None or new is None:
            patch.append(f"Binary or large file {path} differs")
            continue
        if old == new:
            patch.append(f"mode of {path}: {oct(fa[path].mode)} -> {oct(fb[path].mode)}")
            continue
        patch.extend(
            line.rstrip("\n")
            for line in difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"a/{path}" if path in fa else "/dev/null",
                tofile=f"b/{path}" if path in fb else "/dev/null",
                n=context,
            )
        )
    result["patch"] = patch
    return result


def _freeze_of(record, store) -> Freeze | None:
    path = store.run_dir(record.run_id) / RUN_FILE
    try:
        return Freeze(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def environment_diff(a, b, store) -> dict[str, Any]:
    result: dict[str, Any] = {
        "a": a.environment_digest,
        "b": b.environment_digest,
        "changed": False,
        "packages": [],
        "header": [],
    }
    fa, fb = _freeze_of(a, store), _freeze_of(b, store)
    if fa is None or fb is None:
        missing = [r.run_id for r, f in ((a, fa), (b, fb)) if f is None]
        result["unavailable"] = f"no recorded package list for run {', '.join(missing)}"
        result["changed"] = a.environment_digest != b.environment_digest
        return result
    result["header"] = _pairs(fa.header, fb.header)
    result["packages"] = package_changes(fa.packages, fb.packages)
    result["changed"] = bool(result["packages"] or result["header"])
    return result


# -- output -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _pair_lines(items) -> list[str]:
    """``name: a -> b`` for each changed value."""
    return [f"{name}: {_fmt(va)} -> {_fmt(vb)}" for name, va, vb in items]


def _code_lines(code: dict[str, Any]) -> list[str]:
    if not code["changed"]:
        same = "same snapshot" if code["a"] == code["b"] else "same files (only the baseline file differs)"
        return [f"{same} {(code['a'] or '?')[:12]}"]
    lines = [f"snapshot {(code['a'] or '?')[:12]} -> {(code['b'] or '?')[:12]}"]
    if code.get("git"):
        lines.append(f"git commit {code['git'][0] or '?'} -> {code['git'][1] or '?'}")
    if code.get("unavailable"):
        lines.append(code["unavailable"])
    lines.extend(f"added    {p}" for p in code["added"])
    lines.extend(f"removed  {p}" for p in code["removed"])
    lines.extend(f"modified {p}" for p in code["modified"])
    if code["patch"]:
        lines.append("")
        lines.extend(code["patch"])
    return lines


def _environment_lines(env: dict[str, Any]) -> list[str]:
    if env.get("unavailable"):
        return [
            env["unavailable"],
            f"environment digest {env['a']} -> {env['b']}" if env["changed"] else f"same environment digest {env['a']}",
        ]
    if not env["changed"]:
        return ["same packages" + (f" (environment {env['a']})" if env["a"] else "")]
    lines = [f"environment digest {env['a']} -> {env['b']}"] if env["a"] != env["b"] else []
    lines.extend(_pair_lines(env["header"]))
    lines.extend(describe_change(*change) for change in env["packages"])
    return lines


def _metric_lines(metrics) -> list[str]:
    """A table of changed metrics, with the difference and relative change of numeric ones."""
    from tabulate import tabulate

    if not metrics:
        return ["same"]
    rows = []
    for name, va, vb in metrics:
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        delta = f"{vb - va:+.6g}" if numeric else ""
        rel = f"{(vb - va) / abs(va) * 100:+.3g}%" if numeric and va else ""
        rows.append([name, _fmt(va), _fmt(vb), delta, rel])
    return tabulate(rows, headers=["metric", "a", "b", "diff", "rel"], disable_numparse=True).splitlines()


def _artifact_lines(artifacts) -> list[str]:
    lines = []
    for path, da, db in artifacts:
        if da is None:
            lines.append(f"added    {path}")
        elif db is None:
            lines.append(f"removed  {path}")
        else:
            lines.append(f"changed  {path} (sha256 {da[:12]} -> {db[:12]})")
    return lines


def render(diff: RunDiff) -> list[str]:
    """The diff for a terminal: a summary line, then one section per aspect (target and artifacts only if changed)."""
    a, b = diff.a, diff.b
    lines = [f"a: {a.run_id}  {a.cell_id}  ({a.status})", f"b: {b.run_id}  {b.cell_id}  ({b.status})"]
    changed = diff.changed()
    lines.append(
        "changed: "
        + (
            ", ".join(changed)
            if changed
            else "nothing (same target, code, parameters, environment, metrics and artifacts)"
        )
    )
    sections = [
        ("target", _pair_lines(diff.target) if diff.target else None),
        ("code", _code_lines(diff.code)),
        ("parameters", _pair_lines(diff.params) or ["same"]),
        ("environment", _environment_lines(diff.environment)),
        ("metrics", _metric_lines(diff.metrics)),
        ("artifacts", _artifact_lines(diff.artifacts) if diff.artifacts else None),
    ]
    for title, body in sections:
        if body is not None:
            lines.extend(["", f"== {title}", *body])
    return lines


def to_json(diff: RunDiff) -> dict[str, Any]:
    pairs = lambda items: [{"name": n, "a": va, "b": vb} for n, va, vb in items]  # noqa: E731
    env = dict(diff.environment)
    env["header"] = pairs(env.get("header", []))
    env["packages"] = [{"name": n, "a": va, "b": vb} for n, va, vb in env.get("packages", [])]
    return {
        "a": diff.a.run_id,
        "b": diff.b.run_id,
        "changed": diff.changed(),
        "target": pairs(diff.target),
        "code": diff.code,
        "parameters": pairs(diff.params),
        "environment": env,
        "metrics": pairs(diff.metrics),
        "artifacts": pairs(diff.artifacts),
    }
