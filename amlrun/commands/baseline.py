"""``amlrun baseline save|show``: the reviewed baseline that ``--check-baseline`` compares with.

``save`` selects cells exactly as a run does (paths, ``-c``, ``-k``, ``-m``, ``-p``) and
stores, for each, the metrics and artifact digests of its latest completed run in the
history (or of the runs named with ``--run``). Entries of other cells, the file's
tolerances and each entry's hand-written tolerances are kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from amlrun import baseline as bl
from amlrun.errors import UsageError
from amlrun.options import ArgumentParser
from amlrun.project import baseline_path


def build_parser(prog: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Save and show reproducibility baselines (amlrun-baseline.yml).")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=ArgumentParser)

    def common(p):
        p.add_argument("--project", metavar="DIR", help="the project folder (default: found from the current folder)")
        p.add_argument(
            "--file",
            metavar="PATH",
            help="the baseline file (default: [tool.amlrun] baseline_file, else amlrun-baseline.yml)",
        )

    save = sub.add_parser("save", help="store the latest completed runs of the selected cells as their baseline")
    save.add_argument("paths", nargs="*", help="experiment files or folders (as for a run)")
    save.add_argument("-c", "--compute", action="append", default=[], metavar="NAME", help="targets (as for a run)")
    save.add_argument("-k", dest="keyword", metavar="EXPR", help="select cells whose id matches EXPR")
    save.add_argument("-m", dest="markexpr", metavar="EXPR", help="select cells by marks")
    save.add_argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="parameter sets (as for a run)",
    )
    save.add_argument(
        "--run",
        dest="runs",
        action="append",
        default=[],
        metavar="RUN",
        help="save this run (id, prefix or 'last') as its cell's baseline instead (repeatable)",
    )
    common(save)

    show = sub.add_parser("show", help="print the baseline: tolerances and each cell's values")
    show.add_argument("-k", dest="keyword", metavar="EXPR", help="only cells whose id matches EXPR")
    show.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    common(show)
    return parser


def main(argv: list[str], prog: str = "amlrun baseline") -> int:
    parser = build_parser(prog)
    options = parser.parse_args(argv)
    if not options.action:
        parser.print_help()
        return 0
    if options.project:
        if not Path(options.project).is_dir():
            raise UsageError(f"--project {options.project}: no such folder")
        os.chdir(options.project)
    if options.action == "save":
        return save(options)
    return show(options)


def _baseline_file(project, given: str | None) -> Path:
    if given:
        path = Path(given)
        return path if path.is_absolute() else Path.cwd() / path
    return baseline_path(project)


# -- save -----------------------------------------------------------------------------------


def eligible(record) -> bool:
    """A run whose script succeeded (a run failed only by a reproducibility check counts)."""
    if record.status == "completed":
        return True
    repro = (record.extra or {}).get("repro") or {}
    return record.status == "failed" and record.exit_code == 0 and bool(repro.get("failed"))


def latest_run(store, cell):
    for record in store.list(script=cell.script, target=cell.target):
        if bl.base_cell_id(record.cell_id) == cell.id and eligible(record):
            return record
    return None


def selected_cells(options):
    from amlrun.options import make_config
    from amlrun.runner import build_matrix
    from amlrun.session import Session
    from amlrun.terminal import TerminalReporter

    argv = list(options.paths)
    for name in options.compute:
        argv += ["-c", name]
    for value in options.params:
        argv += ["--param", value]
    if options.keyword:
        argv += ["-k", options.keyword]
    if options.markexpr:
        argv += ["-m", options.markexpr]
    config = make_config(argv + ["--collect-only"])
    session = Session(config, TerminalReporter(config))
    build_matrix(session)
    return config, session


def save(options) -> int:
    from amlrun.project import Project
    from amlrun.store import RunStore

    found, missing = [], []
    if options.runs:
        if options.paths or options.compute or options.keyword or options.markexpr or options.params:
            raise UsageError("baseline save: --run names the runs itself; drop paths, -c, -k, -m and -p")
        project = Project.discover(Path.cwd(), Path.cwd())
        store = RunStore(project.state_dir)
        for ref in options.runs:
            record = store.resolve(ref)
            if not eligible(record):
                raise UsageError(
                    f"run {record.run_id} did not complete (status {record.status}); a baseline needs a successful run"
                )
            found.append(record)
    else:
        config, session = selected_cells(options)
        project, store = config.project, session.store
        if not session.cells:
            raise UsageError("baseline save: no cells selected")
        for cell in session.cells:
            if cell.skip_mark() is not None:
                continue
            record = latest_run(store, cell)
            (found.append(record) if record is not None else missing.append(cell.id))
    path = _baseline_file(project, options.file)
    shown = project.relative(path)
    current = bl.load(path, display=shown)
    entries = [bl.entry_from_record(r, current.get(r.cell_id)) for r in found]
    for cell_id in missing:
        print(f"no completed run of {cell_id} in the history: run it first (not saved)")
    if not entries:
        print(f"nothing saved to {shown}")
        return 1
    updated = current.with_entries(entries)
    updated.save()
    for entry in entries:
        verb = "updated" if entry.cell_id in current.entries else "added"
        print(
            f"{verb} {entry.cell_id}: run {entry.run}, {len(entry.metrics)} metrics, {len(entry.artifacts)} artifacts"
        )
    print(f"saved {len(entries)} cell{'s' * (len(entries) != 1)} to {shown}")
    return 0


# -- show -----------------------------------------------------------------------------------


def show(options) -> int:
    from amlrun.expression import Expression
    from amlrun.project import Project

    project = Project.discover(Path.cwd(), Path.cwd())
    path = _baseline_file(project, options.file)
    shown = project.relative(path)
    baseline = bl.load(path, display=shown)
    if not baseline.exists:
        raise UsageError(f"no baseline file {shown}; create it with 'amlrun baseline save'")
    entries = list(baseline.entries.values())
    if options.keyword:
        expr = Expression(options.keyword, "-k")
        entries = [e for e in entries if expr.evaluate(lambda word: word.lower() in e.cell_id.lower())]  # noqa: B023
    layers_project = bl.project_tolerances(project)
    if options.format == "json":
        data = {
            "file": str(path),
            "tolerances": baseline.tolerances.to_yaml(),
            "project_tolerances": layers_project.to_yaml(),
            "cells": {e.cell_id: e.to_yaml() for e in entries},
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    from tabulate import tabulate

    print(f"baseline: {shown} ({len(baseline.entries)} cells)")
    for title, layer in (("tolerances (file)", baseline.tolerances), ("tolerances ([tool.amlrun])", layers_project)):
        if layer:
            print(f"{title}: " + ", ".join(f"{name}: {tol.describe()}" for name, tol in layer.rules))
    for entry in entries:
        print()
        print(f"{entry.cell_id}" + (f"  (run {entry.run}, saved {entry.saved})" if entry.run else ""))
        layers = (entry.tolerances, baseline.tolerances, layers_project)
        rows = [[name, bl._fmt(value), bl.lookup(name, *layers).describe()] for name, value in entry.metrics.items()]
        rows += [
            [
                p,
                bl._fmt(d),
                bl.ANY
                if d in (bl.ANY, bl.NONDETERMINISTIC)
                else bl.lookup(p, *layers).describe()
                if bl.lookup(p, *layers).any
                else "sha256",
            ]
            for p, d in entry.artifacts.items()
        ]
        if rows:
            for line in tabulate(
                rows, headers=["metric/artifact", "value", "tolerance"], disable_numparse=True
            ).splitlines():
                print("  " + line)
        else:
            print("  (no metrics or artifacts)")
    return 0
