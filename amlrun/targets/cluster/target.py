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

from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.process import run_streaming
from amlrun.secrets import is_reference
from amlrun.targets.base import RUNTIME_DIRNAME, Check, ExecResult, PreparedEnvironment, Target, contract_env
from amlrun.targets.cluster import spark
from amlrun.targets.local import execute_here, move_outputs, result_of, share_directory
from amlrun.targets.ssh.connection import q, retrying
from amlrun.targets.ssh.detached import start_detached
from amlrun.targets.ssh.host import (
    SSH_COMPUTE_KEYS,
    SSHTargetMixin,
    cleanup,
    fetch_outputs,
    follow,
    kill_run,
    owner_line,
    send_job,
)

#: variables of the run that executors get too (``spark.executorEnv.*``); secrets never
EXECUTOR_ENV_PREFIXES = ("AMLRUN_", "AZUREML_")


class ClusterTarget(SSHTargetMixin, Target):
    type_name = "cluster"
    #: ``sparkMasterUI``: a standalone master's web UI (default http://<master host>:8080),
    #: used to verify that a canceled application is gone; plus the SSH keys of ``remote``
    #: ``packEnvironment``: ship the managed venv to the executors as an ``--archives``
    #: tarball instead of pointing them at its path on this machine
    compute_keys = frozenset({"sparkMasterUI", "packEnvironment"}) | SSH_COMPUTE_KEYS
    default_parallel = 1
    requires_address = False  # without one, spark-submit runs on this machine

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
            raise ConfigError(
                f"'yarnDeployMode' must be client or cluster, got {value!r}", self.compute.source or self.name
            )
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
            return str(configured) if self.remote else shutil.which(str(configured)) or str(configured)
        return "python3" if self.remote else sys.executable

    def spark_submit(self) -> str:
        """The spark-submit program: ``sparkSubmitLocation`` (a file or a Spark home/bin
        folder), else ``spark-submit`` on PATH, else ``$SPARK_HOME/bin/spark-submit``."""
        configured = self.compute.get("sparkSubmitLocation")
        if self.remote:
            return self._remote_spark_submit(configured)
        if configured:
            path = Path(os.path.expanduser(str(configured)))
            for candidate in (path, path / "spark-submit", path / "bin" / "spark-submit"):
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return str(candidate)
            raise TargetUnavailable(
                f"target '{self.name}': sparkSubmitLocation {configured} is not an executable spark-submit "
                f"({self.compute.source or self.name})"
            )
        found = spark.find_spark_submit()
        if found:
            return found
        raise TargetUnavailable(
            f"target '{self.name}': spark-submit not found on PATH; install Spark (pip install pyspark) "
            f"or set sparkSubmitLocation in {self.compute.source or self.name}"
        )

    def _remote_spark_submit(self, configured) -> str:
        if configured:
            loc = str(configured)
            if loc == "~" or loc.startswith("~/"):
                loc = self.home() + loc[1:]
            script = (
                f"for c in {q(loc)} {q(loc + '/spark-submit')} {q(loc + '/bin/spark-submit')}; do "
                '[ -f "$c" ] && [ -x "$c" ] && { echo "$c"; exit 0; }; done; exit 1'
            )
        else:
            script = (
                'command -v spark-submit || { [ -n "$SPARK_HOME" ] && [ -x "$SPARK_HOME/bin/spark-submit" ] '
                '&& echo "$SPARK_HOME/bin/spark-submit"; } || exit 1'
            )
        found = self.ssh().run(script, timeout=30)
        if found.ok and found.stdout.strip():
            return found.stdout.strip().splitlines()[-1]
        where = (
            f"sparkSubmitLocation {configured} is not an executable spark-submit on"
            if configured
            else "spark-submit is not found by the non-interactive shell of"
        )
        raise TargetUnavailable(
            f"target '{self.name}': {where} {self.compute.address} "
            f"(set sparkSubmitLocation in {self.compute.source or self.name})"
        )

    def describe(self) -> str:
        where = f" via {self.compute.address}" if self.remote else ""
        return f"cluster {self.master()}{where}"

    # -- environment ---------------------------------------------------------------------

    def environment_digest(self, runconfig) -> str:
        parts = [self.master(), str(self.deploy_mode()), str(self.compute.flag("packEnvironment"))]
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
        if self.remote:
            return self._remote_env_helper().is_prepared(runconfig)
        from amlrun.envs import COMPLETE_MARKER, cache_dir, venv_key

        deps = self.project.conda_dependencies(runconfig)
        assert deps is not None  # checked above
        return (cache_dir() / "envs" / venv_key(deps, self._interpreter()) / COMPLETE_MARKER).exists()

    def _managed_python(self, runconfig) -> str:
        """The interpreter of the (already built) managed environment."""
        if self.remote:
            helper = self._remote_env_helper()
            return f"{helper.venv_dir(runconfig)}/bin/python"
        from amlrun.envs import cache_dir, venv_key, venv_python

        deps = self.project.conda_dependencies(runconfig)
        assert deps is not None  # a managed environment is built only from a dependency file
        return str(venv_python(cache_dir() / "envs" / venv_key(deps, self._interpreter())))

    def _remote_env_helper(self):
        """A ``remote`` target on the same node and connection: builds managed venvs there."""
        import dataclasses

        from amlrun.targets.remote import RemoteTarget

        settings = {**self.compute.settings, "userManagedEnvironment": False}
        helper = RemoteTarget(dataclasses.replace(self.compute, settings=settings), self.context)
        helper.adopt_connection(self.ssh())
        return helper

    def check_master(self) -> None:
        """Raise TargetUnavailable when no endpoint of the master accepts a connection."""
        master = self.master()
        endpoints = spark.master_endpoints(master)
        if not endpoints:
            return  # yarn, local[*]: nothing to dial here
        problems = []
        for host, port in endpoints:
            problem = self._remote_tcp_check(host, port) if self.remote else spark.tcp_check(host, port)
            if problem is None:
                return
            problems.append(f"{host}:{port} {problem}")
        where = f" from {self.compute.address}" if self.remote else ""
        raise TargetUnavailable(
            f"target '{self.name}': Spark master {master} does not answer{where} ({'; '.join(problems)})"
        )

    def _remote_tcp_check(self, host: str, port: int) -> str | None:
        """The TCP check, run on the head node (the master may be reachable only from there)."""
        dial = q(f"exec 3<>/dev/tcp/{host}/{int(port)}")
        result = self.ssh().run(f"timeout 5 bash -c {dial} 2>&1", timeout=30)
        if result.ok:
            return None
        detail = (result.stdout.strip().splitlines() or ["timed out" if result.exit_code == 124 else "refused"])[-1]
        return detail.rsplit(": ", 1)[-1].lower()

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        details: dict = {}
        if runconfig.framework == "PySpark":
            self.deploy_mode()
            details["spark_submit"] = self.spark_submit()
            progress.status(f"checking Spark master {self.master()}")
            self.check_master()
        python = self._interpreter()
        built = False
        if self.remote:
            return self._prepare_remote_python(runconfig, progress, details)
        if self._managed():
            deps = self.project.conda_dependencies(runconfig)
            if deps is not None:
                from amlrun.envs import ensure_venv

                built_python, built = ensure_venv(
                    deps, progress, interpreter=python if self.compute.get("pythonLocation") else None
                )
                python = str(built_python)
                if runconfig.framework == "PySpark" and self.compute.flag("packEnvironment"):
                    venv = built_python.parent.parent
                    archive, made = spark.pack_environment(venv, venv.with_name(venv.name + ".tar.gz"))
                    if made:
                        progress.status(
                            f"packed environment {venv.name} for the executors ({archive.stat().st_size / 1e6:.1f} MB)"
                        )
                    details["env_archive"] = str(archive)
        return PreparedEnvironment(self.environment_digest(runconfig), python=python, built=built, details=details)

    def _prepare_remote_python(self, runconfig, progress, details: dict) -> PreparedEnvironment:
        """On the head node: ``pythonLocation``/python3, or a managed venv built there
        exactly as the ``remote`` target builds it (same cache folder on the node)."""
        digest = self.environment_digest(runconfig)
        if self.compute.flag("packEnvironment"):
            raise ConfigError(
                "'packEnvironment' works only when submitting from this machine (without 'address')",
                self.compute.source or self.name,
            )
        if not self._managed() or self.project.conda_dependencies(runconfig) is None:
            return PreparedEnvironment(digest, python=self._interpreter(), details=details)
        env = self._remote_env_helper().prepare(runconfig, progress)
        return PreparedEnvironment(digest, python=env.python, built=env.built, details={**details, **env.details})

    # -- running ---------------------------------------------------------------------------

    def execute(self, job, prepared, sink) -> ExecResult:
        if self.remote:
            return self._execute_remote(job, prepared, sink)
        if job.runconfig.framework != "PySpark":
            return self._execute_python(job, prepared, sink)
        return self._execute_spark(job, prepared, sink)

    def _execute_python(self, job, prepared, sink) -> ExecResult:
        return execute_here(self, job, prepared.python, sink)

    def submission(self, job, prepared, *, spark_submit: str, node_workdir: str | None = None) -> spark.Submission:
        """The spark-submit call for ``job``; ``node_workdir``: where the job's folder is on
        the node that runs spark-submit (default: ``job.workdir`` here)."""
        if not job.argv or not job.argv[0].endswith(".py"):
            raise ConfigError(
                "Framework PySpark needs an ArgumentVector that starts with the script ($file), got "
                f"{' '.join(job.argv)!r}",
                job.runconfig.source or job.runconfig.name,
            )
        sdeps = self.project.spark_dependencies(job.runconfig)
        user_conf = dict(sdeps.configuration) if sdeps else {}
        # conf, not PYSPARK_PYTHON: pip's spark-submit script locates Spark by running
        # $PYSPARK_DRIVER_PYTHON, and the run's environment need not contain pyspark
        ours: dict[str, str] = {"spark.pyspark.python": prepared.python, "spark.pyspark.driver.python": prepared.python}
        mode = self.deploy_mode()
        archives: tuple[str, ...] = ()
        if prepared.details.get("env_archive"):
            archives = (f"{prepared.details['env_archive']}#{spark.ENV_ARCHIVE_ALIAS}",)
            ours["spark.pyspark.python"] = f"./{spark.ENV_ARCHIVE_ALIAS}/bin/python"
            if mode == "cluster":
                ours["spark.pyspark.driver.python"] = f"./{spark.ENV_ARCHIVE_ALIAS}/bin/python"
        master = self.master()
        for name, value in self._shareable_env(job).items():
            ours[f"spark.executorEnv.{name}"] = value
            if mode == "cluster" and master == "yarn":
                ours[f"spark.yarn.appMasterEnv.{name}"] = value
            elif mode == "cluster" and master.startswith("k8s://"):
                ours[f"spark.kubernetes.driverEnv.{name}"] = value
        packed = spark.pack_py_files(job.workdir, job.workdir / RUNTIME_DIRNAME / spark.PY_FILES_NAME)
        zipped = f"{node_workdir}/{RUNTIME_DIRNAME}/{spark.PY_FILES_NAME}" if packed and node_workdir else packed
        return spark.Submission(
            spark_submit=spark_submit,
            master=master,
            deploy_mode=mode,
            script=job.argv[0],
            args=tuple(job.argv[1:]),
            conf=spark.merge_conf(ours, user_conf),  # the user's Spark settings win
            packages=sdeps.packages if sdeps else (),
            repositories=sdeps.repositories if sdeps else (),
            py_files=(str(zipped),) if zipped else (),
            archives=archives,
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
        submission = self.submission(job, prepared, spark_submit=submit)
        env = os.environ.copy()
        env.update(contract_env(job, workdir=str(job.workdir), outputs=str(outputs), share=share_directory(self)))
        driver = spark.DriverLog(sink)
        try:
            outcome = run_streaming(
                submission.argv(),
                cwd=job.workdir,
                env=env,
                sink=driver,
                cancel=job.cancel,
                timeout=job.timeout,
                on_stop=lambda: self._stop_cluster_app(driver, submit),
            )
        except (FileNotFoundError, PermissionError) as exc:
            return ExecResult("failed", None, f"cannot start {exc.filename}: {exc.strerror}")
        finally:
            move_outputs(outputs, job.outputs_dir)
        extra = self._extra(driver, submission)
        result = result_of(outcome, job, extra)
        if outcome.canceled or outcome.timed_out:
            problem = self._ensure_app_stopped(driver)
            if problem:
                sink.write(f"[amlrun] {problem}")
                result = ExecResult(result.status, result.exit_code, f"{result.reason}; {problem}", extra=extra)
        return result

    def _execute_remote(self, job, prepared, sink) -> ExecResult:
        """Over SSH, as the ``remote`` target: sync the job's folder to the head node, start
        spark-submit (or python) detached there, stream its log, fetch ``outputs/``."""
        session = self.ssh()
        self.sweep_once(sink)
        run_dir = f"{self.workspace()}/runs/{job.run_id}"
        work = f"{run_dir}/work"
        pyspark = job.runconfig.framework == "PySpark"
        submission = None
        if pyspark:
            submit = prepared.details.get("spark_submit") or self.spark_submit()
            submission = self.submission(job, prepared, spark_submit=submit, node_workdir=work)
            argv = submission.argv()
        else:
            argv = job.command(prepared.python)
        stats = send_job(self, job, work, sink)
        share = self.remote_share()
        env = contract_env(job, workdir=work, outputs=f"{work}/outputs", share=share)
        prelude = f"mkdir -p {q(work)}/outputs" + (f" {q(share)}" if share else "")
        pgid = retrying(
            session,
            lambda: start_detached(session, run_dir, argv, cwd=work, env=env, prelude=prelude, owner=owner_line()),
        )
        extra = {
            "remote_host": session.settings.label,
            "remote_run_dir": run_dir,
            "remote_pgid": pgid,
            "transfer": stats.to_json(),
        }
        driver = spark.DriverLog(sink)

        def kill() -> bool:
            if submission is not None:
                self._stop_cluster_app(driver, submission.spark_submit, session)
            return kill_run(session, run_dir)

        result = follow(session, run_dir, job, driver, extra, kill=kill)
        fetch_outputs(self, job, f"{work}/outputs", sink, extra)
        if result.status != "failed" or not result.infrastructure_error:
            cleanup(session, run_dir)
        if submission is not None:
            extra.update(self._extra(driver, submission))
        extra.update(result.extra)
        reason = result.reason
        if pyspark and result.status == "canceled":
            problem = self._ensure_app_stopped(driver)
            if problem:
                sink.write(f"[amlrun] {problem}")
                reason = f"{reason}; {problem}"
        return ExecResult(result.status, result.exit_code, reason, result.infrastructure_error, extra)

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

    def _stop_cluster_app(self, driver: spark.DriverLog, submit: str, session=None) -> None:
        """Before the local spark-submit dies: in cluster deploy mode the driver runs on
        the cluster and would outlive it, so ask the cluster manager to kill it."""
        if self.deploy_mode() != "cluster":
            return
        master = self.master()
        found = driver.found
        if master == "yarn" and driver.app_id:
            _quiet(["yarn", "application", "-kill", driver.app_id], session)
        elif master.startswith("k8s://") and found.get("spark_driver_pod"):
            pod = found["spark_driver_pod"]
            if found.get("spark_namespace"):
                pod = f"{found['spark_namespace']}:{pod}"
            _quiet([submit, "--master", master, "--kill", pod], session)
        elif found.get("spark_submission_id"):
            _quiet([submit, "--master", master, "--kill", found["spark_submission_id"]], session)

    def _ensure_app_stopped(self, driver: spark.DriverLog) -> str | None:
        """After a cancel: a standalone master must not list the application as running."""
        ui = self.master_ui()
        if not (driver.app_id and ui and spark.is_standalone(self.master())):
            return None
        return spark.MasterUI(ui).ensure_stopped(driver.app_id)

    # -- doctor ------------------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        checks: list[Check] = []
        if self.remote:
            checks = self.ssh_checks()
            if not checks or not checks[0].ok:
                return checks
        try:
            submit = self.spark_submit()
            checks.append(Check("spark-submit", True, submit))
        except TargetUnavailable as exc:
            return checks + [Check("spark-submit", False, str(exc))]
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
                checks.append(
                    Check(
                        "master",
                        True,
                        f"{master} answers; its web UI {ui} does not ({exc}); "
                        "set sparkMasterUI so canceled applications can be verified",
                    )
                )
            else:
                alive = int(state.get("aliveworkers", 0))
                if state.get("status") != "ALIVE" or alive == 0:
                    return checks + [
                        Check(
                            "master",
                            False,
                            f"{master} is {state.get('status')} with {alive} alive "
                            "workers: applications would wait forever",
                        )
                    ]
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
        if self._managed() and self.project.conda_dependencies(runconfig) is not None and self.is_prepared(runconfig):
            python = self._managed_python(runconfig)
        sdeps = self.project.spark_dependencies(runconfig)
        conf = spark.merge_conf(
            {"spark.pyspark.python": python, "spark.pyspark.driver.python": python},
            dict(sdeps.configuration) if sdeps else {},
        )
        argv = spark.Submission(submit, master, "amlrun_probe.py", deploy_mode=None, conf=conf).argv()
        if self.remote:
            script = (
                'd=$(mktemp -d) && cat > "$d/amlrun_probe.py" && cd "$d" && '
                + " ".join(q(a) for a in argv)
                + '; code=$?; rm -rf "$d"; exit $code'
            )
            try:
                done = self.ssh().run(script, stdin=spark.PROBE_SCRIPT.encode(), timeout=300)
            except TargetUnavailable as exc:
                return Check("python", False, f"the probe application could not run: {exc}")
            code, stdout, stderr = done.exit_code, done.stdout, done.stderr
        else:
            with tempfile.TemporaryDirectory(prefix="amlrun-doctor-") as tmp:
                (Path(tmp) / "amlrun_probe.py").write_text(spark.PROBE_SCRIPT, encoding="utf-8")
                try:
                    proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=300)
                except subprocess.TimeoutExpired:
                    return Check("python", False, f"the probe application on {master} did not finish in 300 s")
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        match = None
        for line in stdout.splitlines():
            match = spark.PROBE_LINE.search(line) or match
        if match is None:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            return Check("python", False, f"the probe application failed (exit {code}): {tail}")
        driver, executors = match.group(1), [v for v in match.group(2).split(",") if v]
        if any(v.split(".")[:2] != driver.split(".")[:2] for v in executors):
            return Check("python", False, f"driver Python {driver} but executors run {', '.join(executors)}")
        return Check("python", True, f"driver and executors run Python {driver} ({python})")


def _quiet(cmd: list[str], session=None) -> None:
    """Run a best-effort command here, or on the node over ``session``."""
    import subprocess

    if session is not None:
        try:
            session.run(" ".join(q(c) for c in cmd) + " >/dev/null 2>&1", timeout=60)
        except TargetUnavailable:
            pass
        return
    if shutil.which(cmd[0]) is None:
        return
    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass
