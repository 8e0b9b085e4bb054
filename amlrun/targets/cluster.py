"""The ``cluster`` compute target: PySpark experiments submitted with ``spark-submit``.

From this machine (no ``address``) or, like Workbench on HDInsight, from a head/edge
node over SSH (``address``). ``Framework: PySpark`` submits the script to
``sparkMaster``; ``Framework: Python`` runs it with plain Python on the node.
pyspark is never imported here: spark-submit runs as a process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from amlrun import spark
from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.process import run_streaming
from amlrun.secrets import is_reference
from amlrun.targets.base import Check, ExecResult, PreparedEnvironment, Target, contract_env
from amlrun.targets.local import move_outputs, share_directory

#: variables of the run that executors get too (``spark.executorEnv.*``); secrets never
EXECUTOR_ENV_PREFIXES = ("AMLRUN_", "AZUREML_")


class ClusterTarget(Target):
    type_name = "cluster"
    #: ``sparkMasterUI``: a standalone master's web UI (default http://<master host>:8080),
    #: used to verify that a canceled application is gone
    compute_keys = frozenset({"sparkMasterUI"})
    default_parallel = 1

    # -- settings ----------------------------------------------------------------------

    @property
    def remote(self) -> bool:
        return bool(self.compute.address)

    def master(self) -> str:
        value = self.compute.get("sparkMaster")
        if value:
            return str(value).strip()
        return "yarn" if self.remote else "local[*]"

    def deploy_mode(self) -> str | None:
        value = self.compute.get("yarnDeployMode")
        if value is None or spark.is_local(self.master()):
            return None
        mode = str(value).strip().lower()
        if mode not in spark.DEPLOY_MODES:
            raise ConfigError(f"'yarnDeployMode' must be client or cluster, got {value!r}",
                              self.compute.source or self.name)
        return mode

    def master_ui(self) -> str | None:
        configured = self.compute.get("sparkMasterUI")
        if configured:
            return str(configured).rstrip("/")
        return spark.default_master_ui(self.master())

    def _managed(self) -> bool:
        return not self.compute.flag("userManagedEnvironment", default=False)

    def _interpreter(self) -> str:
        configured = self.compute.get("pythonLocation")
        if configured:
            return shutil.which(str(configured)) or str(configured)
        return "python3" if self.remote else sys.executable

    def spark_submit(self) -> str:
        """The spark-submit program: ``sparkSubmitLocation`` (a file or a Spark home/bin
        folder), else ``spark-submit`` on PATH, else ``$SPARK_HOME/bin/spark-submit``."""
        configured = self.compute.get("sparkSubmitLocation")
        if configured:
            path = Path(os.path.expanduser(str(configured)))
            for candidate in (path, path / "spark-submit", path / "bin" / "spark-submit"):
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return str(candidate)
            raise TargetUnavailable(
                f"target '{self.name}': sparkSubmitLocation {configured} is not an executable spark-submit "
                f"({self.compute.source or self.name})"
            )
        found = shutil.which("spark-submit")
        if found:
            return found
        home = os.environ.get("SPARK_HOME")
        if home and os.access(Path(home) / "bin" / "spark-submit", os.X_OK):
            return str(Path(home) / "bin" / "spark-submit")
        raise TargetUnavailable(
            f"target '{self.name}': spark-submit not found on PATH; install Spark (pip install pyspark) "
            f"or set sparkSubmitLocation in {self.compute.source or self.name}"
        )

    def describe(self) -> str:
        where = f" via {self.compute.address}" if self.remote else ""
        return f"cluster {self.master()}{where}"

    # -- environment ---------------------------------------------------------------------

    def environment_digest(self, runconfig) -> str:
        parts = [self.master(), str(self.deploy_mode())]
        deps = self.project.conda_dependencies(runconfig) if self._managed() else None
        if deps is not None:
            from amlrun.envs import venv_key

            parts.append(venv_key(deps, self._interpreter()))
        else:
            parts.append(f"user-managed:{self._interpreter()}")
        sdeps = self.project.spark_dependencies(runconfig) if runconfig.framework == "PySpark" else None
        if sdeps is not None:
            parts.append(json.dumps([sorted(sdeps.configuration.items()), sdeps.packages, sdeps.repositories]))
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]

    def is_prepared(self, runconfig) -> bool:
        if not self._managed() or self.project.conda_dependencies(runconfig) is None:
            return True
        from amlrun.envs import COMPLETE_MARKER, cache_dir, venv_key

        deps = self.project.conda_dependencies(runconfig)
        return (cache_dir() / "envs" / venv_key(deps, self._interpreter()) / COMPLETE_MARKER).exists()

    def check_master(self) -> None:
        """Raise TargetUnavailable when no endpoint of the master accepts a connection."""
        master = self.master()
        endpoints = spark.master_endpoints(master)
        if not endpoints:
            return  # yarn, local[*]: nothing to dial here
        problems = []
        for host, port in endpoints:
            problem = spark.tcp_check(host, port)
            if problem is None:
                return
            problems.append(f"{host}:{port} {problem}")
        raise TargetUnavailable(
            f"target '{self.name}': Spark master {master} does not answer ({'; '.join(problems)})"
        )

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        details: dict = {}
        if runconfig.framework == "PySpark":
            self.deploy_mode()
            details["spark_submit"] = self.spark_submit()
            progress.status(f"checking Spark master {self.master()}")
            self.check_master()
        python = self._interpreter()
        built = False
        if self._managed():
            deps = self.project.conda_dependencies(runconfig)
            if deps is not None:
                from amlrun.envs import ensure_venv

                built_python, built = ensure_venv(deps, progress, interpreter=python if self.compute.get(
                    "pythonLocation") else None)
                python = str(built_python)
        return PreparedEnvironment(self.environment_digest(runconfig), python=python, built=built, details=details)

    # -- running ---------------------------------------------------------------------------

    def execute(self, job, prepared, sink) -> ExecResult:
        if job.runconfig.framework != "PySpark":
            return self._execute_python(job, prepared, sink)
        return self._execute_spark(job, prepared, sink)

    def _execute_python(self, job, prepared, sink) -> ExecResult:
        outputs = job.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        env = os.environ.copy()
        env.update(contract_env(job, workdir=str(job.workdir), outputs=str(outputs), share=share_directory(self)))
        try:
            outcome = run_streaming(job.command(prepared.python), cwd=job.workdir, env=env, sink=sink,
                                    cancel=job.cancel, timeout=job.timeout)
        except (FileNotFoundError, PermissionError) as exc:
            return ExecResult("failed", None, f"cannot start {exc.filename}: {exc.strerror}")
        finally:
            move_outputs(outputs, job.outputs_dir)
        return _result(outcome, job)

    def submission(self, job, prepared, *, spark_submit: str, workdir: Path) -> spark.Submission:
        """The spark-submit call for ``job`` (paths as seen from where it runs)."""
        if not job.argv or not job.argv[0].endswith(".py"):
            raise ConfigError(
                "Framework PySpark needs an ArgumentVector that starts with the script ($file), got "
                f"{' '.join(job.argv)!r}", job.runconfig.source or job.runconfig.name,
            )
        sdeps = self.project.spark_dependencies(job.runconfig)
        user_conf = dict(sdeps.configuration) if sdeps else {}
        # conf, not PYSPARK_PYTHON: pip's spark-submit script locates Spark by running
        # $PYSPARK_DRIVER_PYTHON, and the run's environment need not contain pyspark
        ours: dict[str, str] = {"spark.pyspark.python": prepared.python,
                                "spark.pyspark.driver.python": prepared.python}
        mode = self.deploy_mode()
        master = self.master()
        for name, value in self._shareable_env(job).items():
            ours[f"spark.executorEnv.{name}"] = value
            if mode == "cluster" and master == "yarn":
                ours[f"spark.yarn.appMasterEnv.{name}"] = value
            elif mode == "cluster" and master.startswith("k8s://"):
                ours[f"spark.kubernetes.driverEnv.{name}"] = value
        zipped = spark.pack_py_files(workdir, workdir / ".amlrun_runtime" / spark.PY_FILES_NAME)
        return spark.Submission(
            spark_submit=spark_submit, master=master, deploy_mode=mode,
            script=job.argv[0], args=tuple(job.argv[1:]),
            conf=spark.merge_conf(ours, user_conf),      # the user's Spark settings win
            packages=sdeps.packages if sdeps else (), repositories=sdeps.repositories if sdeps else (),
            py_files=(str(zipped),) if zipped else (),
        )

    @staticmethod
    def _shareable_env(job) -> dict[str, str]:
        """Run variables safe to put on a command line: AMLRUN_*/AZUREML_* and runconfig
        variables that are not secret references."""
        raw = job.runconfig.environment_variables
        shared = {}
        for name, value in job.env.items():
            if name in raw:
                if is_reference(raw[name]):
                    continue
            elif not name.startswith(EXECUTOR_ENV_PREFIXES):
                continue
            shared[name] = value
        return shared

    def _execute_spark(self, job, prepared, sink) -> ExecResult:
        outputs = job.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        submit = prepared.details.get("spark_submit") or self.spark_submit()
        submission = self.submission(job, prepared, spark_submit=submit, workdir=job.workdir)
        env = os.environ.copy()
        env.update(contract_env(job, workdir=str(job.workdir), outputs=str(outputs), share=share_directory(self)))
        driver = spark.DriverLog(sink)
        try:
            outcome = run_streaming(submission.argv(), cwd=job.workdir, env=env, sink=driver, cancel=job.cancel,
                                    timeout=job.timeout, on_stop=lambda: self._stop_cluster_app(driver, submit))
        except (FileNotFoundError, PermissionError) as exc:
            return ExecResult("failed", None, f"cannot start {exc.filename}: {exc.strerror}")
        finally:
            move_outputs(outputs, job.outputs_dir)
        extra = self._extra(driver, submission)
        result = _result(outcome, job, extra)
        if outcome.canceled or outcome.timed_out:
            problem = self._ensure_app_stopped(driver)
            if problem:
                sink.write(f"[amlrun] {problem}")
                result = ExecResult(result.status, result.exit_code, f"{result.reason}; {problem}", extra=extra)
        return result

    def _extra(self, driver: spark.DriverLog, submission: spark.Submission) -> dict:
        extra = {"spark_master": submission.master}
        if submission.deploy_mode:
            extra["spark_deploy_mode"] = submission.deploy_mode
        ui = self.master_ui()
        if ui:
            extra["spark_master_ui"] = ui
        extra.update(driver.found)
        extra["spark_submit"] = submission.command_line()
        return extra

    def _stop_cluster_app(self, driver: spark.DriverLog, submit: str) -> None:
        """Before the local spark-submit dies: in cluster deploy mode the driver runs on
        the cluster and would outlive it, so ask the cluster manager to kill it."""
        if self.deploy_mode() != "cluster":
            return
        master = self.master()
        found = driver.found
        if master == "yarn" and driver.app_id and shutil.which("yarn"):
            _quiet([shutil.which("yarn"), "application", "-kill", driver.app_id])
        elif master.startswith("k8s://") and found.get("spark_driver_pod"):
            pod = found["spark_driver_pod"]
            if found.get("spark_namespace"):
                pod = f"{found['spark_namespace']}:{pod}"
            _quiet([submit, "--master", master, "--kill", pod])
        elif found.get("spark_submission_id"):
            _quiet([submit, "--master", master, "--kill", found["spark_submission_id"]])

    def _ensure_app_stopped(self, driver: spark.DriverLog) -> str | None:
        """After a cancel: a standalone master must not list the application as running."""
        ui = self.master_ui()
        if not (driver.app_id and ui and spark.is_standalone(self.master())):
            return None
        return spark.MasterUI(ui).ensure_stopped(driver.app_id)

    # -- doctor ------------------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        checks: list[Check] = []
        try:
            submit = self.spark_submit()
            checks.append(Check("spark-submit", True, submit))
        except TargetUnavailable as exc:
            return [Check("spark-submit", False, str(exc))]
        master = self.master()
        try:
            self.check_master()
        except TargetUnavailable as exc:
            return checks + [Check("master", False, str(exc))]
        ui = self.master_ui()
        if spark.is_standalone(master) and ui:
            try:
                state = spark.MasterUI(ui).state()
            except Exception as exc:  # the RPC port answers; the UI is only for cancel checks
                checks.append(Check("master", True, f"{master} answers; its web UI {ui} does not ({exc}); "
                                                    "set sparkMasterUI so canceled applications can be verified"))
            else:
                alive = int(state.get("aliveworkers", 0))
                if state.get("status") != "ALIVE" or alive == 0:
                    return checks + [Check("master", False, f"{master} is {state.get('status')} with {alive} alive "
                                                              "workers: applications would wait forever")]
                checks.append(Check("master", True, f"{master} ALIVE, {alive} worker(s), {state.get('cores')} cores"))
        else:
            checks.append(Check("master", True, f"{master} (reachability checked at submission)"))
        checks.append(self._probe_python(submit, master))
        return checks

    def _probe_python(self, submit: str, master: str) -> Check:
        """Submit a tiny application that reports the driver's and executors' Python."""
        import subprocess
        import tempfile

        from amlrun.config import default_runconfig

        runconfig = default_runconfig(self.name)
        python = self._interpreter()
        if self._managed() and self.is_prepared(runconfig):
            deps = self.project.conda_dependencies(runconfig)
            if deps is not None:
                from amlrun.envs import cache_dir, venv_key, venv_python

                python = str(venv_python(cache_dir() / "envs" / venv_key(deps, self._interpreter())))
        sdeps = self.project.spark_dependencies(runconfig)
        conf = spark.merge_conf({"spark.pyspark.python": python, "spark.pyspark.driver.python": python},
                                dict(sdeps.configuration) if sdeps else {})
        with tempfile.TemporaryDirectory(prefix="amlrun-doctor-") as tmp:
            script = Path(tmp) / "amlrun_probe.py"
            script.write_text(spark.PROBE_SCRIPT, encoding="utf-8")
            argv = spark.Submission(submit, master, str(script), deploy_mode=None, conf=conf).argv()
            try:
                proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                return Check("python", False, f"the probe application on {master} did not finish in 300 s")
        match = None
        for line in proc.stdout.splitlines():
            match = spark.PROBE_LINE.search(line) or match
        if match is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return Check("python", False, f"the probe application failed (exit {proc.returncode}): {tail}")
        driver, executors = match.group(1), [v for v in match.group(2).split(",") if v]
        if any(v.split(".")[:2] != driver.split(".")[:2] for v in executors):
            return Check("python", False, f"driver Python {driver} but executors run {', '.join(executors)}")
        return Check("python", True, f"driver and executors run Python {driver} ({python})")


def _result(outcome, job, extra: dict | None = None) -> ExecResult:
    extra = extra or {}
    if outcome.canceled:
        return ExecResult("canceled", outcome.exit_code, "canceled", extra=extra)
    if outcome.timed_out:
        return ExecResult("canceled", outcome.exit_code, f"timed out after {job.timeout:g}s", extra=extra)
    if outcome.exit_code == 0:
        return ExecResult("completed", 0, extra=extra)
    return ExecResult("failed", outcome.exit_code, f"exited with code {outcome.exit_code}", extra=extra)


def _quiet(cmd: list[str]) -> None:
    import subprocess

    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass


@hookimpl
def amlrun_register_targets():
    return {"cluster": ClusterTarget}
