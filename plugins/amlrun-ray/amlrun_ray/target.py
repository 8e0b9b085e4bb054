"""The ``ray`` compute target: every cell is one Ray job, submitted to the cluster's job server.

The job's working directory is the project's snapshot, uploaded once per session and code
content (``package.py``); its entrypoint is ``python .amlrun_runtime/amlrun_ray_boot.py
ARGV`` with ARGV quoted for the shell Ray runs it with; the contract's variables travel in
one runtime env variable, base64-encoded JSON (Ray expands ``$VAR`` in ``env_vars``), except
secret ones, which travel in a package of the job's own (job descriptions, runtime env
included, are readable by anyone who can list jobs).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import secrets as _random
import shlex
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.process import alive, process_start
from amlrun.secrets import is_reference, resolve
from amlrun.targets.base import (
    RUNTIME_DIRNAME,
    Check,
    ExecResult,
    PreparedEnvironment,
    Target,
    contract_env,
)
from amlrun_ray.client import ACTIVE, TERMINAL, JobServer, JobServerError
from amlrun_ray.package import (
    BOOT_NAME,
    ENV_VARIABLE,
    MAX_PACKAGE_BYTES,
    Package,
    fingerprint,
    secrets_package,
    working_dir_package,
)
from amlrun_ray.reaper import Reaper
from amlrun_ray.settings import RAY_KEYS, RaySettings, parse_settings

PLACEHOLDER = "@AMLRUN_WORKDIR@"
OWNER_KEY = "amlrun_owner"
#: failures that are the cluster's, not the script's (ray.job_submission.JobErrorType)
INFRA_ERRORS = {
    "RUNTIME_ENV_SETUP_FAILURE": "the job's runtime environment could not be set up",
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT": "the job did not start in time",
    "JOB_SUPERVISOR_ACTOR_START_FAILURE": "the job's supervisor failed to start",
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE": "the job could not be scheduled",
    "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE": "the job's supervisor failed",
    "JOB_SUPERVISOR_ACTOR_DIED": "the job's supervisor died (its node died or ran out of memory)",
}
RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ \S+:\d+ -- ")
POLL_FIRST, POLL_MAX = 0.1, 0.5
#: how long a stopped job may take to be STOPPED on the cluster
STOP_SECONDS = 60.0
#: the timeout of one request while following a job: a frozen server is noticed in time
POLL_TIMEOUT = 10.0
#: how long the session's end waits for a lost server to take the stop of given-up jobs
FINAL_STOP_SECONDS = 10.0


class ServerLost(TargetUnavailable):
    """The job server stayed unreachable longer than ``serverLostSeconds`` while a job ran."""


class _Outage:
    """How long the job server has been unreachable while following one job, said once in
    the run's log when it starts and when it ends."""

    def __init__(self, sid: str, settings: RaySettings, sink):
        self.sid, self.settings, self.sink = sid, settings, sink
        self.since: float | None = None

    def still(self, exc: JobServerError) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.sink.write(f"[amlrun] {exc}; waiting up to {self.settings.lost_seconds:g} s for it")
        elif now - self.since > self.settings.lost_seconds:
            raise ServerLost(
                f"lost the Ray job server {self.settings.address} for {now - self.since:.0f} s while "
                f"job {self.sid} ran ({exc}); the job is asked to stop once the server answers again"
            )

    def over(self) -> None:
        if self.since is not None:
            self.sink.write(f"[amlrun] the Ray job server answers again after {time.monotonic() - self.since:.0f} s")
            self.since = None


def owner_label() -> str:
    """``host pid start``: this amlrun process, put in each job's metadata."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {process_start(pid) or 0}"


def owner_gone(label: str) -> bool:
    """Whether ``label`` names a process of this machine that no longer runs."""
    parts = label.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False  # another machine's amlrun: not ours to judge
    return not alive(int(parts[1]), "" if parts[2] == "0" else parts[2])


class RayTarget(Target):
    type_name = "ray"
    compute_keys = RAY_KEYS
    default_parallel = 4

    def __init__(self, compute, context):
        super().__init__(compute, context)
        self.settings: RaySettings = parse_settings(compute)
        self._server: JobServer | None = None
        self._lock = threading.Lock()
        self._packages: dict[tuple, Package] = {}
        self._swept = False
        self.reaper = Reaper(self.server)

    # -- settings ---------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.compute.source or self.name

    def server(self) -> JobServer:
        if self._server is None:
            headers = {name: resolve(value, self.where) for name, value in self.settings.headers.items()}
            self._server = JobServer(self.settings.address, headers)
        return self._server

    def describe(self) -> str:
        return f"ray {self.settings.address}"

    def runtime_env_base(self, runconfig) -> dict[str, Any]:
        """The runtime env every job of ``runconfig`` gets: the compute file's ``runtimeEnv``
        with the dependency file's packages (``pip``, or ``conda`` when it lists conda packages)."""
        env = json.loads(json.dumps(self.settings.runtime_env))
        deps = self.project.conda_dependencies(runconfig)
        if deps is None:
            return env
        if deps.conda_packages:
            if "pip" in env:
                raise ConfigError(
                    "'runtimeEnv.pip' cannot be combined with the conda packages of "
                    f"{deps.source}: Ray takes either pip or conda",
                    self.where,
                )
            dependencies: list[Any] = [f"python={deps.python_version}"] if deps.python_version else []
            dependencies += list(deps.conda_packages)
            if deps.pip_packages:
                dependencies.append({"pip": list(deps.pip_packages)})
            env["conda"] = {"channels": list(deps.channels), "dependencies": dependencies}
        elif deps.pip_packages:
            pip = env.get("pip")
            if isinstance(pip, dict):
                pip = dict(pip, packages=[*pip.get("packages", []), *deps.pip_packages])
            else:
                pip = [*(pip or []), *deps.pip_packages]
            env["pip"] = pip
        return env

    def environment_digest(self, runconfig) -> str:
        spec = json.dumps(
            [self.settings.address, self.settings.python, self.runtime_env_base(runconfig)], sort_keys=True
        )
        return hashlib.sha256(spec.encode()).hexdigest()[:20]

    # -- prepare ----------------------------------------------------------------------

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        progress.status(f"contacting the Ray job server {self.settings.address}")
        version = self.server().version()
        self.sweep_orphans(progress.status)
        details = {"ray_version": version.get("ray_version"), "runtime_env": self.runtime_env_base(runconfig)}
        return PreparedEnvironment(self.environment_digest(runconfig), python=self.settings.python, details=details)

    def sweep_orphans(self, note=None) -> list[str]:
        """Once per session: stop jobs still running for an amlrun of this machine that is gone."""
        with self._lock:
            if self._swept:
                return []
            self._swept = True
        stopped = []
        for job in self.server().jobs():
            owner = (job.get("metadata") or {}).get(OWNER_KEY)
            sid = job.get("submission_id")
            if not owner or not sid or job.get("status") not in ACTIVE or not owner_gone(owner):
                continue
            try:
                self.server().stop(sid)
                stopped.append(sid)
            except JobServerError:
                continue
        if stopped and note is not None:
            note(f"stopped {len(stopped)} Ray job(s) left by an amlrun that is gone: {', '.join(stopped)}")
        return stopped

    # -- execute ----------------------------------------------------------------------

    def working_dir(self, job, sink) -> Package:
        """The job's working-directory package, uploaded unless the cluster has it."""
        key = fingerprint(job.workdir)
        with self._lock:
            found = self._packages.get(key)
            if found is not None:
                return found
            package = working_dir_package(job.workdir)
            if len(package.data) >= MAX_PACKAGE_BYTES:
                raise ConfigError(
                    f"the project's snapshot zips to {len(package.data) / 2**20:.0f} MiB, more than a "
                    "Ray package may hold: keep data out of the project (.gitignore) and read it "
                    "from storage",
                    self.where,
                )
            server = self.server()
            if not server.package_exists(package.uri):
                sink.write(
                    f"[amlrun] uploading the snapshot to Ray as {package.uri} ({len(package.data) / 1e6:.2f} MB)"
                )
                server.upload_package(package.uri, package.data)
            self._packages[key] = found = Package(package.uri)
            return found

    def job_environment(self, job) -> tuple[dict[str, str], dict[str, str]]:
        """(the runtime env's variables, the secret variables), paths relative to the node's
        working directory (``PLACEHOLDER``)."""
        share = f"{self.settings.share}/{self.project.root.name}/{self.name}" if self.settings.share else None
        env = contract_env(job, workdir=PLACEHOLDER, outputs=f"{PLACEHOLDER}/outputs", share=share)
        env["AMLRUN_RAY_PYTHONPATH"] = env.pop("PYTHONPATH")
        raw = job.runconfig.environment_variables
        secret = {name: env.pop(name) for name in list(env) if name in raw and is_reference(raw[name])}
        return env, secret

    def outputs_spec(self, job, token: str) -> tuple[str, Path | None]:
        """Where the job puts ``outputs/`` (``AMLRUN_RAY_OUTPUTS``), and the local folder it
        lands in when that is this machine's file system."""
        storage = self.settings.outputs_storage
        if storage is None:
            landing = job.outputs_dir.parent / f".ray-outputs-{token}"
            landing.mkdir(parents=True, exist_ok=True)
            return f"shared:{landing}", landing / "outputs"
        location = f"{storage.rstrip('/')}/{self.project.root.name}/{job.run_id}"
        if "://" in storage and not storage.startswith("file://"):
            return f"fsspec:{location}", None
        path = location.removeprefix("file://")
        return f"path:{path}", Path(path)

    def submission(self, job, prepared, sink) -> tuple[dict[str, Any], str, Path | None, list[Package]]:
        token = _random.token_hex(4)
        runtime_env = json.loads(
            json.dumps(prepared.details.get("runtime_env") or self.runtime_env_base(job.runconfig))
        )
        env, secret = self.job_environment(job)
        uploads = []
        if secret:
            package = secrets_package(secret)
            uploads.append(package)
            runtime_env["py_modules"] = [package.uri]
            env["AMLRUN_RAY_SECRETS"] = package.name
        spec, landing = self.outputs_spec(job, token)
        env["AMLRUN_RAY_OUTPUTS"] = spec
        # Ray expands $VAR and ${VAR} in env_vars on the node: the contract's values travel
        # base64-encoded (no '$' in that alphabet) and the boot script puts them in place
        encoded = base64.b64encode(json.dumps(env).encode("ascii")).decode("ascii")
        runtime_env["env_vars"] = {
            **{k: str(v) for k, v in (runtime_env.get("env_vars") or {}).items()},
            ENV_VARIABLE: encoded,
        }
        runtime_env["working_dir"] = self.working_dir(job, sink).uri
        python = prepared.python or self.settings.python
        entrypoint = shlex.join([python, f"{RUNTIME_DIRNAME}/{BOOT_NAME}", *job.command(python)])
        request = {
            "entrypoint": entrypoint,
            "submission_id": f"amlrun-{job.run_id}-{token}",
            "runtime_env": runtime_env,
            "metadata": {
                OWNER_KEY: owner_label(),
                "amlrun_run_id": job.run_id,
                "amlrun_cell_id": job.cell_id,
                "amlrun_project": self.project.root.name,
                "amlrun_target": self.name,
            },
            **self.settings.resources.request_fields(),
        }
        return request, spec, landing, uploads

    def execute(self, job, prepared, sink) -> ExecResult:
        server = self.server()
        self.sweep_orphans(lambda text: sink.write(f"[amlrun] {text}"))
        request, spec, landing, uploads = self.submission(job, prepared, sink)
        for package in uploads:
            server.package_exists(package.uri)  # pins it until the job holds it, as Ray's client does
            server.upload_package(package.uri, package.data)
        sid = request["submission_id"]
        extra: dict[str, Any] = {
            "ray_address": self.settings.address,
            "ray_submission_id": sid,
            "ray_dashboard": f"{self.settings.address}/#/jobs/{sid}",
            "ray_working_dir": request["runtime_env"]["working_dir"],
            "ray_entrypoint": request["entrypoint"],
        }
        if job.cancel.is_set():
            return ExecResult("canceled", None, "canceled", extra=extra)
        try:
            server.submit(request)
        except JobServerError as exc:
            if exc.status is None:  # no answer: the job may exist all the same
                self.reaper.add(sid)
            raise
        try:
            info, why = self._follow(job, sid, sink)
        except ServerLost as lost:
            self.reaper.add(sid)
            return ExecResult("failed", None, str(lost), infrastructure_error=True, extra=extra)
        finally:
            if landing is not None or spec.startswith("fsspec:"):
                self._collect_outputs(job, spec, landing, sink)
        extra.update(_job_facts(info))
        return self._result(job, info, why, extra)

    def _follow(self, job, sid: str, sink) -> tuple[dict[str, Any], str]:
        """Poll the job until it ends, writing its log as it grows; stop it on cancel or
        timeout. Returns the last job info and why amlrun stopped it ('' if it did not);
        raises :class:`ServerLost` when the job server stays unreachable too long."""
        server = dataclasses.replace(self.server(), timeout=POLL_TIMEOUT)
        started = time.monotonic()
        log = _LogFollower(sink, sid)
        lost = _Outage(sid, self.settings, sink)
        interval = POLL_FIRST
        why = ""
        info: dict[str, Any] = {}
        while True:
            if job.cancel.is_set():
                why = "canceled"
            elif job.timeout is not None and time.monotonic() - started > job.timeout:
                why = f"timed out after {job.timeout:g}s"
            if why:
                return self._stop(sid, log, why), why
            try:
                info = server.info(sid) or {}
                status = info.get("status")
                if status == "RUNNING" or status in TERMINAL:
                    log.fetch(server, final=status in TERMINAL)
                lost.over()
            except JobServerError as exc:
                lost.still(exc)  # raises ServerLost once the bound is passed
                status = None
            if status in TERMINAL:
                return info, why
            job.cancel.wait(interval)
            interval = min(POLL_MAX, interval * 1.5)

    def _stop(self, sid: str, log: _LogFollower, why: str) -> dict[str, Any]:
        """Stop the job and wait until the cluster says STOPPED (or it ended anyway). A job
        the server could not be asked to stop is left to the reaper."""
        server = dataclasses.replace(self.server(), timeout=POLL_TIMEOUT)
        deadline = time.monotonic() + STOP_SECONDS
        info: dict[str, Any] = {}
        asked = False
        while time.monotonic() < deadline:
            try:
                if not asked:
                    server.stop(sid)
                    asked = True
                info = server.info(sid) or {}
                if info.get("status") in TERMINAL:
                    log.fetch(server, final=True)
                    return info
            except JobServerError:
                pass
            time.sleep(0.2)
        if not asked:
            self.reaper.add(sid)
            return dict(
                info,
                amlrun_stop_problem=f"the Ray job server did not answer: job {sid} is asked to stop "
                "once it answers again",
            )
        return dict(info, amlrun_stop_problem=f"job {sid} was asked to stop but is still {info.get('status')}")

    def teardown(self) -> None:
        """Last tries to stop the jobs of runs given up; what still cannot be asked is said."""
        if not self.reaper.pending():
            return
        left = self.reaper.finish(within=FINAL_STOP_SECONDS)
        if left:
            raise TargetUnavailable(
                f"the Ray job server {self.settings.address} still does not answer: job(s) "
                f"{', '.join(left)} may still run (the next session stops them)"
            )

    def _result(self, job, info: dict[str, Any], why: str, extra: dict[str, Any]) -> ExecResult:
        status = info.get("status")
        code = info.get("driver_exit_code")
        if why:
            problem = info.get("amlrun_stop_problem")
            return ExecResult("canceled", code, f"{why}; {problem}" if problem else why, extra=extra)
        if status == "SUCCEEDED":
            return ExecResult("completed", 0, extra=extra)
        if status == "STOPPED":
            return ExecResult("canceled", code, "the Ray job was stopped on the cluster", extra=extra)
        error = info.get("error_type") or ""
        message = _last_line(info.get("message") or "")
        node = extra.get("ray_node_ip") or extra.get("ray_node_id") or "?"
        if error == "JOB_ENTRYPOINT_COMMAND_ERROR" and isinstance(code, int):
            if code == -9 or code == 137:
                return ExecResult(
                    "failed",
                    code,
                    f"killed by SIGKILL on Ray node {node} (out of memory?)",
                    infrastructure_error=True,
                    extra=extra,
                )
            if code < 0:
                return ExecResult("failed", code, f"killed by signal {-code}", extra=extra)
            return ExecResult("failed", code, f"exited with code {code}", extra=extra)
        if error == "JOB_ENTRYPOINT_COMMAND_START_ERROR":
            return ExecResult("failed", code, f"the entrypoint could not start: {message}", extra=extra)
        reason = INFRA_ERRORS.get(error, f"the Ray job failed ({error or 'no error type'})")
        return ExecResult(
            "failed", code, f"{reason}: {message}" if message else reason, infrastructure_error=True, extra=extra
        )

    def _collect_outputs(self, job, spec: str, landing: Path | None, sink) -> None:
        """Bring what the job delivered into ``job.outputs_dir`` and clean the way it took."""
        try:
            if spec.startswith("fsspec:"):
                from amlrun_ray.storage import fetch

                fetch(spec.removeprefix("fsspec:"), job.outputs_dir, lambda line: sink.write(f"[amlrun] {line}"))
                return
            if landing is None:
                return
            if landing.is_dir():
                from amlrun.targets.local import move_outputs

                move_outputs(landing, job.outputs_dir)
        finally:
            if spec.startswith("shared:") and landing is not None:
                shutil.rmtree(landing.parent, ignore_errors=True)
            elif spec.startswith("path:") and landing is not None:
                shutil.rmtree(landing, ignore_errors=True)

    # -- doctor -----------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        server = self.server()
        try:
            version = server.version()
        except TargetUnavailable as exc:
            return [Check("job server", False, str(exc))]
        checks = [Check("job server", True, f"{self.settings.address} answers, Ray {version.get('ray_version')}")]
        try:
            nodes = [n for n in server.nodes() if n.get("state") == "ALIVE"]
        except TargetUnavailable as exc:
            checks.append(Check("cluster", False, str(exc)))
            return checks
        total: dict[str, float] = {}
        for node in nodes:
            for name, amount in (node.get("resources_total") or {}).items():
                if not name.startswith("node:"):
                    total[name] = total.get(name, 0) + float(amount)
        shown = ", ".join(_resource_text(k, v) for k, v in sorted(total.items()))
        checks.append(
            Check("cluster", bool(nodes), f"{len(nodes)} node(s) alive: {shown}" if nodes else "no node is alive")
        )
        checks.append(self._probe(server))
        return checks

    def _probe(self, server: JobServer) -> Check:
        """A one-second job, as a cell's would run (same Python and resources, no snapshot)."""
        sid = f"amlrun-doctor-{_random.token_hex(4)}"
        marker = "amlrun-doctor-ok"
        code = f"import sys, time; time.sleep(1); print({marker!r}, sys.version.split()[0])"
        started = time.monotonic()
        try:
            server.submit(
                {
                    "entrypoint": shlex.join([self.settings.python, "-c", code]),
                    "submission_id": sid,
                    "metadata": {OWNER_KEY: owner_label()},
                    **self.settings.resources.request_fields(),
                }
            )
            info: dict[str, Any] = {}
            while time.monotonic() - started < 180:
                info = server.info(sid) or {}
                if info.get("status") in TERMINAL:
                    break
                time.sleep(0.25)
            else:
                server.stop(sid)
                return Check(
                    "test job",
                    False,
                    f"a one-second job did not end in 180 s (still {info.get('status')}: not enough free resources?)",
                )
            logs = server.logs(sid)
        except TargetUnavailable as exc:
            return Check("test job", False, str(exc))
        found = [line for line in logs.splitlines() if line.startswith(marker)]
        if info.get("status") != "SUCCEEDED" or not found:
            return Check("test job", False, f"{info.get('status')}: {_last_line(info.get('message') or '')}")
        return Check(
            "test job",
            True,
            f"ran in {time.monotonic() - started:.1f} s, Python {found[-1].split()[-1]} ({self.settings.python})",
        )


class _LogFollower:
    """Turns the job's whole log (as the job server returns it) into new lines for the sink.
    Ray's own lines (runtime-env setup, the entrypoint it runs) are marked ``[ray]``."""

    def __init__(self, sink, sid: str):
        self.sink = sink
        self.seen = 0
        self.started = False
        self.failed = False
        self.sid = sid
        self.entry_line = f"Running entrypoint for job {sid}: "

    def fetch(self, server: JobServer, final: bool) -> None:
        """Feed the job's log as the server has it. A server that answers but cannot give
        the log (an HTTP error) is said once; it does not stop the following of the job."""
        try:
            text = server.logs(self.sid)
        except JobServerError as exc:
            if exc.status is None:
                raise
            if not self.failed:
                self.failed = True
                self.sink.write(f"[amlrun] cannot read the job's log: {exc}")
            return
        self.feed(text, final)

    def feed(self, text: str, final: bool) -> None:
        if len(text) < self.seen:
            self.seen = 0  # the log was replaced (the job restarted): start over
        fresh = text[self.seen :]
        if not final:
            cut = fresh.rfind("\n")
            if cut < 0:
                return
            fresh = fresh[: cut + 1]
        self.seen += len(fresh)
        for line in fresh.splitlines():
            if not self.started:
                if line.startswith(self.entry_line):
                    self.started = True
                    self.sink.write(f"[ray] {line}")
                    continue
                if RAY_LINE.match(line):
                    self.sink.write(f"[ray] {line}")
                    continue
                self.started = True
            self.sink.write(line)


def _job_facts(info: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {"ray_status": info.get("status")}
    driver = info.get("driver_info") or {}
    if info.get("job_id") or driver.get("id"):
        facts["ray_job_id"] = info.get("job_id") or driver.get("id")
    if info.get("driver_node_id"):
        facts["ray_node_id"] = info["driver_node_id"]
    address = info.get("driver_agent_http_address") or ""
    node_ip = driver.get("node_ip_address") or re.sub(r"^\w+://|:\d+$", "", address)
    if node_ip:
        facts["ray_node_ip"] = node_ip
    if info.get("error_type"):
        facts["ray_error_type"] = info["error_type"]
    return facts


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _resource_text(name: str, amount: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{amount / 2**30:.1f} GiB {name}"
    return f"{amount:g} {name}"
