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

import hashlib
import json
import os
import time
from pathlib import Path

from amlrun.hookspec import hookimpl
from amlrun.protocol import CANCELED, ERROR, FAILED, PASSED, REUSED, RunReport

CACHE_DIRNAME = "cache"
LASTFAILED = "lastfailed.json"
LASTSESSION = "lastsession.json"


@hookimpl
def amlrun_addoption(parser, group):
    group = parser.add_argument_group("rerun and cache")
    group.add_argument("--lf", "--last-failed", dest="last_failed", action="store_true",
                       help="run only the cells that failed last time (all, if none failed)")
    group.add_argument("--ff", "--failed-first", dest="failed_first", action="store_true",
                       help="run the cells that failed last time first, then the rest")
    group.add_argument("--reuse", action="store_true",
                       help="don't run a cell whose code, environment, parameters, run configuration and target "
                            "equal a completed run's; report it as reused with that run's id")
    group.add_argument("--resume", action="store_true",
                       help="don't run cells already completed, with identical inputs, by the last (interrupted) session")


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


def read_lastfailed(project) -> dict[str, bool]:
    data = _read_json(cache_dir(project) / LASTFAILED, {})
    return data if isinstance(data, dict) else {}


# -- input keys and the run cache -----------------------------------------------------------


def code_digests(session) -> dict[str, str]:
    """script → digest of the snapshot as that script sees it (other experiments left out).

    The shared part is hashed once; each script adds only its own entry, so the cost stays
    linear in files + scripts (a 2,000-script project does not hash 2,000 manifests)."""
    scripts = {e.path for e in getattr(session, "experiments", ())} | {c.script for c in session.cells}
    entries = session.snapshot.entries
    base = [[e.path, e.digest, e.mode] for e in entries if e.path not in scripts]
    base_digest = hashlib.sha256(json.dumps(base, separators=(",", ":")).encode()).hexdigest()
    own = {e.path: [e.path, e.digest, e.mode] for e in entries if e.path in scripts}
    return {
        script: hashlib.sha256(json.dumps([base_digest, own.get(script)], separators=(",", ":")).encode()).hexdigest()
        for script in scripts
    }


def input_key(code_digest: str, env_digest: str | None, params: dict, runconfig: str, target: str,
              script: str, script_args: tuple[str, ...] = ()) -> str | None:
    """The run-cache key of a cell; None when the environment's digest is unknown (never reused)."""
    if not env_digest:
        return None
    inputs = {"code": code_digest, "env": env_digest, "params": params, "runconfig": runconfig,
              "target": target, "script": script}
    if script_args:  # (absent otherwise, so keys of runs without them stay what they were)
        inputs["script_args"] = list(script_args)
    payload = json.dumps(inputs, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()


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
    """Per-invocation state: the session, the keys of its cells, the reuse plan, the lastfailed file."""

    def __init__(self, config):
        self.config = config
        self.session = None
        self.header: list[str] = []
        self._code: dict[str, str] | None = None
        self._env: dict[str, str | None] = {}
        self.runcache = RunCache(config.project.state_dir)

    def option(self, name: str):
        return self.config.getoption(name)

    # -- keys ----------------------------------------------------------------------------

    def key_for(self, session, cell, env_digest: str | None = None) -> str | None:
        if self._code is None:
            self._code = code_digests(session)
        if env_digest is None:
            if cell.target not in self._env:
                self._env[cell.target] = session.environment_digest(cell.target)
            env_digest = self._env[cell.target]
        runconfig = session.runconfigs[cell.target]
        code = self._code.get(cell.script)
        if code is None:
            return None
        return input_key(code, env_digest, cell.params.as_dict(), runconfig.name, cell.target, cell.script,
                         tuple(self.option("script_args") or ()))

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
        hits = [c for c in items if c.id in failed]
        if not hits:
            if failed or only:
                self.header.append(f"{'run-last-failure' if only else 'failed-first'}: no previously failed cells "
                                   f"{'among those selected' if failed else 'recorded'}, running all")
            return
        rest = [c for c in items if c.id not in failed]
        if only:
            self.header.append(f"run-last-failure: rerun previous {len(hits)} failure{'s' * (len(hits) != 1)}"
                               f" (deselected {len(rest)})")
            deselected = getattr(session, "deselected", None)
            if isinstance(deselected, list):
                deselected.extend(rest)
            items[:] = hits
        else:
            self.header.append(f"failed-first: {len(hits)} previously failed cell{'s' * (len(hits) != 1)} first")
            items[:] = hits + rest

    def _plan(self, session, items) -> dict:
        """cell id → the completed RunRecord it may reuse."""
        allowed: set[str] | None = None
        if self.option("resume") and not self.option("reuse"):
            allowed = self._last_session_runs(session)
            if allowed is None:
                self.header.append("resume: no earlier session recorded, running all")
                return {}
        plan = {}
        store = session.store
        for cell in items:
            if cell.skip_mark() is not None:
                continue
            key = self.key_for(session, cell)
            run_id = self.runcache.get(key) if key else None
            if run_id is None or (allowed is not None and run_id not in allowed):
                continue
            record = store.get(run_id)
            if record is not None and record.status == "completed":
                plan[cell.id] = record
        if self.option("resume") and allowed is not None:
            self.header.append(f"resume: {len(plan)} of {len(items)} cells already completed by the last session")
        elif plan:
            self.header.append(f"reuse: {len(plan)} of {len(items)} cells have a completed run with identical inputs")
        return plan

    def _last_session_runs(self, session) -> set[str] | None:
        last = _read_json(cache_dir(session.project) / LASTSESSION, None)
        if not isinstance(last, dict) or "pid" not in last:
            return None
        runs = set(last.get("reused") or ())
        for record in session.store.list(reap=False):
            if record.created < last.get("started", 0) - 1:
                break  # newest first: older runs cannot be the last session's
            if (record.pid == last.get("pid") and record.host == last.get("host")
                    and record.pid_started == last.get("pid_started", record.pid_started)):
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
        _write_json(cache_dir(session.project) / LASTSESSION, {
            "pid": os.getpid(), "pid_started": process_start(os.getpid()), "host": HOST, "started": time.time(),
            "finished": False, "cells": len(session.cells),
            "reused": sorted(r.run_id for r in session.reuse_plan.values()),
        })

    @hookimpl(tryfirst=True)
    def amlrun_run_cell(self, cell, session):
        record = session.reuse_plan.get(cell.id)
        if record is None or cell.skip_mark() is not None:
            return None
        why = "completed by the interrupted session" if self.option("resume") else "identical inputs"
        report = RunReport(cell=cell, outcome=REUSED, record=record, reason=why, metrics=dict(record.metrics),
                           run_dir=session.store.run_dir(record.run_id))
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
            key = self.key_for(session, report.cell, record.environment_digest)
        except Exception:  # the cache is an optimisation; never fail a run over it
            return
        if key:
            self.runcache.put(key, record.run_id)

    @hookimpl
    def amlrun_sessionfinish(self, session, exitstatus):
        state = cache_dir(session.project)
        failed = read_lastfailed(session.project)
        stopped = bool(session.shouldstop or session.interrupted)
        for report in session.reports:
            if report.outcome in (FAILED, ERROR):
                failed[report.cell.id] = True
            elif report.outcome == CANCELED and not stopped:
                failed[report.cell.id] = True  # timed out
            elif report.outcome in (PASSED, REUSED):
                failed.pop(report.cell.id, None)
        if failed or (state / LASTFAILED).exists():
            _write_json(state / LASTFAILED, failed)
        last = _read_json(state / LASTSESSION, {})
        if isinstance(last, dict) and last.get("pid") == os.getpid():
            last.update(finished=not session.interrupted, exitstatus=exitstatus)
            _write_json(state / LASTSESSION, last)
