"""The rerun cache (pytest's ``cacheprovider``): the options that decide *which* cells run.

- ``--lf`` / ``--ff``: the cells that failed last time (only / first), from
  ``.amlrun/cache/lastfailed.json`` (kept like pytest's cache: a cell stays there
  until it passes).
- ``--reuse``: a cell whose inputs (the code it sees, environment digest, parameters,
  run configuration, target) equal those of a completed run is not run; it is reported
  ``reused`` with that run's id. The run cache (a table of the history index) maps an input key
  to the run that produced it, as DVC's run cache does.
- ``--resume``: the same, restricted to runs of the last session (the interrupted one).

The code a cell sees is the project snapshot without the *other* collected experiment
scripts, so editing one script invalidates only that script's cells, while editing a
shared module invalidates every cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amlrun.hookspec import hookimpl
from amlrun.imports import visible_python
from amlrun.protocol import CANCELED, ERROR, FAILED, PASSED, REUSED, RunReport

CACHE_DIRNAME = "cache"
LASTFAILED = "lastfailed.json"
LASTSESSION = "lastsession.json"
CELLINPUTS = "cellinputs.json"  # cell id → the inputs of its last completed run


@hookimpl
def amlrun_addoption(parser, group):
    group = parser.add_argument_group("rerun and cache")
    group.add_argument(
        "--lf",
        "--last-failed",
        dest="last_failed",
        action="store_true",
        help="run only the cells that failed last time (all, if none failed)",
    )
    group.add_argument(
        "--ff",
        "--failed-first",
        dest="failed_first",
        action="store_true",
        help="run the cells that failed last time first, then the rest",
    )
    group.add_argument(
        "--reuse",
        action="store_true",
        help="don't run a cell whose code, environment, parameters, run configuration and target "
        "equal a completed run's; report it as reused with that run's id",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="don't run cells already completed, with identical inputs, by the last (interrupted) session",
    )


@hookimpl
def amlrun_configure(config):
    if config.pluginmanager.get_plugin("rerun-cache") is None:
        config.pluginmanager.register(RerunCache(config), name="rerun-cache")


# -- the files under .amlrun/ -------------------------------------------------------------


def cache_dir(project) -> Path:
    return project.state_dir / CACHE_DIRNAME


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_lastfailed(project) -> dict:
    """cell id → the failed cell's script, target and parameters (``True`` in older files)."""
    data = _read_json(cache_dir(project) / LASTFAILED, {})
    return data if isinstance(data, dict) else {}


# -- input keys and the run cache -----------------------------------------------------------


def _sha(data) -> str:
    return hashlib.sha256(json.dumps(data, separators=(",", ":"), sort_keys=True, default=repr).encode()).hexdigest()


def code_digests(session) -> dict[str, str]:
    """script → digest of the code that script can see (:mod:`amlrun.imports`): every
    non-Python file of the snapshot and the Python files it imports. It depends on the
    snapshot only, never on the paths typed; the shared part is hashed once."""
    scripts = {c.script for c in session.cells}
    snapshot = session.snapshot
    by_path = {e.path: e for e in snapshot.entries}
    python = frozenset(p for p in by_path if p.endswith(".py"))
    base = _sha([[e.path, e.digest, e.mode] for e in snapshot.entries if not e.path.endswith(".py")])
    everything = _sha([[p, by_path[p].digest, by_path[p].mode] for p in sorted(python)])
    objects = session.snapshots

    def read(path: str) -> bytes | None:
        entry = by_path.get(path)
        try:
            return objects.object_path(entry.digest).read_bytes() if entry else None
        except OSError:
            return None

    memo: dict = {}
    digests = {}
    for script in scripts:
        seen = visible_python(script, python, read, memo)
        own = everything if seen is None else _sha([[p, by_path[p].digest, by_path[p].mode] for p in sorted(seen)])
        digests[script] = _sha([base, own])
    return digests


#: compute-file keys that change how many cells run at once, not what a run computes
_COMPUTE_KEYS_WITHOUT_EFFECT = frozenset({"maxParallel"})


def runconfig_digest(runconfig, compute) -> str:
    """The run configuration and compute file *as written*, not just their names."""
    settings = {
        k: v
        for k, v in (compute.settings if compute is not None else {}).items()
        if k not in _COMPUTE_KEYS_WITHOUT_EFFECT
    }
    fields = dataclasses.asdict(runconfig)
    fields.pop("source", None)
    return _sha({"runconfig": fields, "compute": settings, "type": getattr(compute, "type", None)})


@dataclass(frozen=True)
class CellInputs:
    """What the run cache keys a cell on, part by part (so a miss can say which part changed)."""

    code: str
    environment: str | None
    params: str
    runconfig: str
    target: str
    script: str
    script_args: tuple[str, ...] = ()  # after '--' on the command line

    @property
    def key(self) -> str | None:
        """None when the environment's digest is unknown (never reused)."""
        return _sha(dataclasses.asdict(self)) if self.environment else None

    def changed_since(self, before: dict) -> list[str]:
        names = {
            "code": "code it sees",
            "environment": "environment",
            "params": "parameters",
            "runconfig": "run configuration",
            "target": "target",
            "script": "script",
            "script_args": "script arguments",
        }
        before = {**before, "script_args": tuple(before.get("script_args") or ())}
        return [names[k] for k, v in dataclasses.asdict(self).items() if before.get(k) != v]


class RunCache:
    """Input key → the id of the last completed run with those inputs: a table of the
    history's SQLite index (shared safely by several amlrun processes, no file per run)."""

    def __init__(self, state_dir: Path):
        from amlrun.store import RunStore

        self.store = RunStore(state_dir)

    def get(self, key: str) -> str | None:
        return self.store.cached_run(key)

    def put(self, key: str, run_id: str) -> None:
        self.store.remember_run(key, run_id)


class RerunCache:
    """Per-invocation state: the session, the inputs of its cells, the reuse plan, the lastfailed file."""

    def __init__(self, config):
        self.config = config
        self.session = None
        self.header: list[str] = []
        self._code: dict[str, str] | None = None
        self._env: dict[str, str | None] = {}
        self._inputs: dict[str, dict] = {}  # cell id → inputs of the run it completed now
        self.not_reused: dict[str, str] = {}  # cell id → why its cached run was not reused
        self.runcache = RunCache(config.project.state_dir)

    def option(self, name: str):
        return self.config.getoption(name)

    # -- keys ----------------------------------------------------------------------------

    def inputs_for(self, session, cell, env_digest: str | None = None) -> CellInputs | None:
        if self._code is None:
            self._code = code_digests(session)
        if env_digest is None:
            if cell.target not in self._env:
                self._env[cell.target] = session.environment_digest(cell.target)
            env_digest = self._env[cell.target]
        code = self._code.get(cell.script)
        if code is None:
            return None
        target = session.targets.get(cell.target)
        runconfig = runconfig_digest(session.runconfigs[cell.target], getattr(target, "compute", None))
        return CellInputs(
            code=code,
            environment=env_digest,
            params=_sha(cell.params.as_dict()),
            runconfig=runconfig,
            target=cell.target,
            script=cell.script,
            script_args=tuple(self.option("script_args") or ()),
        )

    # -- collection: --lf, --ff, and the reuse plan ------------------------------------------

    @hookimpl(trylast=True)
    def amlrun_collection_modifyitems(self, session, config, items):
        self.session = session
        lf, ff = self.option("last_failed"), self.option("failed_first")
        if lf or ff:
            self._apply_lastfailed(session, items, lf)
        if self.option("reuse") or self.option("resume"):
            session.cells = items  # keys need the cells' scripts
            session.reuse_plan = self._plan(session, items)

    def _apply_lastfailed(self, session, items, only: bool) -> None:
        failed = read_lastfailed(session.project)
        if not self.option("params"):
            items.extend(self._failed_cells_not_selected(session, items, failed))
        hits = [c for c in items if c.id in failed]
        if not hits:
            if failed or only:
                self.header.append(
                    f"{'run-last-failure' if only else 'failed-first'}: no previously failed cells "
                    f"{'among those selected' if failed else 'recorded'}, running all"
                )
            return
        rest = [c for c in items if c.id not in failed]
        if only:
            self.header.append(
                f"run-last-failure: rerun previous {len(hits)} failure{'s' * (len(hits) != 1)} (deselected {len(rest)})"
            )
            deselected = getattr(session, "deselected", None)
            if isinstance(deselected, list):
                deselected.extend(rest)
            items[:] = hits
        else:
            self.header.append(f"failed-first: {len(hits)} previously failed cell{'s' * (len(hits) != 1)} first")
            items[:] = hits + rest

    def _failed_cells_not_selected(self, session, items, failed: dict) -> list:
        """The failed cells of earlier sweeps (their own parameters and targets), rebuilt from
        lastfailed.json, for the experiments collected now: ``--lf`` needs no retyped ``-p``."""
        from amlrun.matrix import Cell, ParamSet, select

        experiments = {e.path: e for e in getattr(session, "experiments", ())} or {
            c.script: c.experiment for c in items
        }
        present = {c.id for c in items}
        typed_targets = bool(self.option("compute"))
        found = []
        for cell_id, spec in failed.items():
            if cell_id in present or not isinstance(spec, dict):
                continue
            experiment = experiments.get(spec.get("script"))
            target, params = spec.get("target"), spec.get("params")
            if experiment is None or not isinstance(target, str) or not isinstance(params, dict):
                continue
            if target not in session.targets:
                if typed_targets:
                    continue
                try:
                    session.setup_targets([target])
                except Exception:  # the target is gone from aml_config/: nothing to rerun there
                    continue
            cell = Cell(experiment=experiment, params=ParamSet.of(params), target=target, marks=experiment.marks)
            if cell.id == cell_id:
                found.append(cell)
        selected, _ = select(found, self.option("keyword"), self.option("markexpr"))
        return selected

    def _plan(self, session, items) -> dict:
        """cell id → the completed RunRecord it may reuse (confirmed against the environment when it runs)."""
        allowed: set[str] | None = None
        if self.option("resume") and not self.option("reuse"):
            allowed = self._last_session_runs(session)
            if allowed is None:
                self.header.append("resume: no earlier session recorded, running all")
                return {}
        plan = {}
        store = session.store
        before = _read_json(cache_dir(session.project) / CELLINPUTS, {})
        for cell in items:
            if cell.skip_mark() is not None:
                continue
            inputs = self.inputs_for(session, cell)
            key = inputs.key if inputs else None
            run_id = self.runcache.get(key) if key else None
            record = store.get(run_id) if run_id and (allowed is None or run_id in allowed) else None
            if record is not None and record.status == "completed":
                plan[cell.id] = record
            elif isinstance(before.get(cell.id), dict) and inputs is not None:
                changed = inputs.changed_since(before[cell.id])
                self.not_reused[cell.id] = ("changed: " + ", ".join(changed)) if changed else "its run is gone"
        if self.option("collect_only") and plan:
            self._confirm_plan_now(session, plan)
        if self.option("resume") and allowed is not None:
            self.header.append(f"resume: {len(plan)} of {len(items)} cells already completed by the last session")
        elif plan:
            self.header.append(f"reuse: {len(plan)} of {len(items)} cells have a completed run with identical inputs")
        if self.option("collect_only"):
            shown = list(self.not_reused.items())
            for cell_id, why in shown[:20]:
                self.header.append(f"not reused: {cell_id}: {why}")
            if len(shown) > 20:
                self.header.append(f"not reused: ... and {len(shown) - 20} more")
        return plan

    def _confirm_plan_now(self, session, plan: dict) -> None:
        """``--collect-only``: check the planned runs against the environments that are ready."""
        for cell_id, record in list(plan.items()):
            target_name = record.target
            target = session.targets.get(target_name)
            if target is None or not target.is_prepared(session.runconfigs[target_name]):
                continue
            why = self._environment_changed(session, target_name, record)
            if why:
                del plan[cell_id]
                self.not_reused[cell_id] = why

    def _environment_changed(self, session, target_name: str, record) -> str | None:
        """Why the environment the cell would run in now is not the one ``record`` ran in
        (its package list, as ``environment.txt`` records it), or None when it is the same."""
        from amlrun.errors import AmlrunError
        from amlrun.freeze import RUN_FILE, Freeze, describe_change, package_changes

        try:
            prepared = session.prepare(target_name)
        except AmlrunError as exc:
            return f"environment not ready ({exc})"
        found = session.environments.record(session.targets[target_name], prepared, session.runconfigs[target_name])
        if not isinstance(found, Freeze):
            return f"environment unknown ({found})"
        if record.extra.get("environment_packages") == found.digest:
            return None
        try:
            old = Freeze((session.store.run_dir(record.run_id) / RUN_FILE).read_text(encoding="utf-8"))
        except OSError:
            return "environment changed (the earlier run recorded no package list)"
        changes = [describe_change(*c) for c in package_changes(old.packages, found.packages)]
        header = [f"{k} {old.header.get(k)} -> {v}" for k, v in found.header.items() if old.header.get(k) != v]
        detail = ", ".join((header + changes)[:3]) or "package list differs"
        return f"environment changed: {detail}"

    def _last_session_runs(self, session) -> set[str] | None:
        last = _read_json(cache_dir(session.project) / LASTSESSION, None)
        if not isinstance(last, dict) or "pid" not in last:
            return None
        runs = set(last.get("reused") or ())
        for record in session.store.list(reap=False):
            if record.created < last.get("started", 0) - 1:
                break  # newest first: older runs cannot be the last session's
            if (
                record.pid == last.get("pid")
                and record.host == last.get("host")
                and record.pid_started == last.get("pid_started", record.pid_started)
            ):
                runs.add(record.run_id)
        return runs

    @hookimpl
    def amlrun_report_header(self, config):
        return list(self.header)

    # -- running -------------------------------------------------------------------------

    @hookimpl
    def amlrun_sessionstart(self, session):
        from amlrun.process import process_start
        from amlrun.store import HOST

        self.session = session
        _write_json(
            cache_dir(session.project) / LASTSESSION,
            {
                "pid": os.getpid(),
                "pid_started": process_start(os.getpid()),
                "host": HOST,
                "started": time.time(),
                "finished": False,
                "cells": len(session.cells),
                "reused": sorted(r.run_id for r in session.reuse_plan.values()),
            },
        )

    @hookimpl(tryfirst=True)
    def amlrun_run_cell(self, cell, session):
        record = session.reuse_plan.get(cell.id)
        if record is None or cell.skip_mark() is not None:
            return None
        why_not = self._environment_changed(session, cell.target, record)
        if why_not:
            self.not_reused[cell.id] = why_not
            session.reuse_plan.pop(cell.id, None)
            return None  # run it: the environment is not the one the cached run saw
        why = "completed by the interrupted session" if self.option("resume") else "identical inputs"
        report = RunReport(
            cell=cell,
            outcome=REUSED,
            record=record,
            reason=f"{why}: reused run {record.run_id}",
            metrics=dict(record.metrics),
            run_dir=session.store.run_dir(record.run_id),
        )
        session.config.hook.amlrun_runreport(report=report)
        return report

    @hookimpl
    def amlrun_runreport(self, report):
        """Remember completed runs in the run cache (whether or not --reuse was given)."""
        session = self.session
        record = report.record
        if session is None or report.outcome != PASSED or record is None or record.status != "completed":
            return
        try:
            inputs = self.inputs_for(session, report.cell, record.environment_digest)
        except Exception:  # the cache is an optimisation; never fail a run over it
            return
        if inputs is not None and inputs.key:
            self.runcache.put(inputs.key, record.run_id)
            self._inputs[report.cell.id] = dataclasses.asdict(inputs)

    @hookimpl
    def amlrun_terminal_summary(self, terminalreporter, exitstatus, session):
        if self.not_reused and (self.option("reuse") or self.option("resume")):
            terminalreporter.sep("-", "not reused")
            for cell_id, why in list(self.not_reused.items())[:20]:
                terminalreporter.write_line(f"{cell_id}: {why}")

    @hookimpl
    def amlrun_sessionfinish(self, session, exitstatus):
        state = cache_dir(session.project)
        failed = read_lastfailed(session.project)
        stopped = bool(session.shouldstop or session.interrupted)
        for report in session.reports:
            cell = report.cell
            spec = {"script": cell.script, "target": cell.target, "params": _jsonable(cell.params.as_dict())}
            if report.outcome in (FAILED, ERROR):
                failed[cell.id] = spec
            elif report.outcome == CANCELED and not stopped:
                failed[cell.id] = spec  # timed out
            elif report.outcome in (PASSED, REUSED):
                failed.pop(cell.id, None)
        if failed or (state / LASTFAILED).exists():
            _write_json(state / LASTFAILED, failed)
        if self._inputs:
            known = _read_json(state / CELLINPUTS, {})
            known = known if isinstance(known, dict) else {}
            known.update(self._inputs)
            _write_json(state / CELLINPUTS, known)
        last = _read_json(state / LASTSESSION, {})
        if isinstance(last, dict) and last.get("pid") == os.getpid():
            last.update(finished=not session.interrupted, exitstatus=exitstatus)
            _write_json(state / LASTSESSION, last)


def _jsonable(params: dict) -> dict:
    """Parameters as JSON keeps them (str, int, float, bool); anything else as its text."""
    return {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in params.items()}
