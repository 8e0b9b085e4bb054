"""The run contract every compute target keeps, as a test class a plugin author subclasses.

The kit runs the real ``amlrun`` command against the real target in a throw-away project
and reads what the run history recorded. It is cheap: one session runs a probe script that
reports on most promises at once (and a failing script beside it); only the timeout and the
cancel need sessions of their own. Every failure names the broken promise.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from amlrun.testing import probe
from amlrun.testing.runner import KitRun, KitSession, local_processes, run_amlrun, run_and_interrupt, write_tree

PROBE_SCRIPT, FAIL_SCRIPT = "kit_probe.py", "kit_fail.py"
SECRET_VARIABLE = "AMLRUN_KIT_SECRET"
UNSUPPORTED = "unsupported by target"

#: check name -> the promise it verifies (the names ``unsupported`` may list)
CHECKS: dict[str, str] = {
    "workdir_snapshot": "the working directory is a snapshot of the project, not the user's tree",
    "params": "$file is substituted and parameters arrive as --name value arguments",
    "run_variables": "AMLRUN_RUN_ID, AMLRUN_CELL_ID, AMLRUN_TARGET, AMLRUN_SEED, AMLRUN_OUTPUTS_DIR and "
    "AMLRUN_PARAM_<NAME> are set",
    "share_directory": "AMLRUN_SHARE_DIRECTORY and AZUREML_NATIVE_SHARE_DIRECTORY name a writable shared folder",
    "hostile_values": "hostile values arrive byte-for-byte in argv and in the environment (nothing is shell-evaluated)",
    "outputs": "outputs/ comes back: nested folders, a binary file, a big file, an empty folder",
    "outputs_symlink": "a link in outputs/ pointing outside is not followed",
    "metric": "a ##amlrun-metric line becomes a metric",
    "output_order": "stdout and stderr lines arrive in the order they were written",
    "non_utf8": "output with non-UTF-8 bytes survives (undecodable bytes replaced, the line kept)",
    "exit_code": "a non-zero exit is a failed run with its exit code",
    "timeout": "job.timeout cancels the run within a few seconds",
    "cancel": "job.cancel set mid-run cancels the run within a few seconds",
    "process_listing": "nothing is left running on the target after a timeout or a cancel",
    "secret_argv": "a secret: reference's value reaches the run's environment but no process's argv",
}


class TargetConformance:
    """Subclass as ``class TestMyTarget(TargetConformance)``, set ``target_name`` and give a
    ``target_files`` fixture; every ``test_*`` method here then checks one promise.
    """

    #: the name given to ``amlrun -c``: a compute file (or run configuration) in ``target_files``
    target_name: ClassVar[str] = ""
    #: check name (see :data:`CHECKS`) -> why this target cannot keep it; those are skipped with the reason
    unsupported: ClassVar[dict[str, str]] = {}
    #: size of the big file in ``outputs/``
    big_output_mb: ClassVar[int] = probe.BIG_OUTPUT_BYTES >> 20
    #: the ``--timeout`` of the timeout check
    timeout_seconds: ClassVar[float] = 4.0
    #: how long a canceled or timed-out run may take to end, and its processes to go
    stop_within: ClassVar[float] = 30.0
    #: how long one amlrun session of the kit may take (environment builds included)
    session_timeout: ClassVar[float] = 1200.0
    #: ``nativeSharedDirectory`` set when the compute file has none (None: a folder under the test's temp dir)
    share_directory: ClassVar[str | None] = None
    #: extra arguments of every amlrun call (e.g. ``("-p", "myplugin")``)
    amlrun_args: ClassVar[tuple[str, ...]] = ()

    @pytest.fixture
    def target_files(self) -> dict[str, str]:
        """Relative path -> text of the files the target needs: ``aml_config/<target_name>.compute``
        at least. Override it (it may use other fixtures, e.g. a server's)."""
        pytest.fail(
            f"{type(self).__name__} must define a target_files fixture returning "
            f"{{'aml_config/{self.target_name or 'NAME'}.compute': ...}}",
            pytrace=False,
        )

    def amlrun_env(self) -> dict[str, str]:
        """Extra environment variables of the amlrun process (e.g. ``AMLRUN_PLUGINS``)."""
        return {}

    def leftover_processes(self, marker: str) -> list[str]:
        """Processes still running on the target whose argv holds ``marker``, one line each.
        Default: this machine's; override for a target whose processes run elsewhere."""
        return local_processes(marker)

    # -- sessions, each run once per class and shared by its checks ---------------------------

    @pytest.fixture
    def kit_project(
        self, request: pytest.FixtureRequest, target_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory
    ) -> Path:
        def make() -> Path:
            root = tmp_path_factory.mktemp(f"kit-{self.target_name}")
            project = root / "project"
            (project / "aml_config").mkdir(parents=True)
            write_tree(project, target_files)
            self._write_kit_files(project, root)
            return project

        return self._once(request, "project", make)

    @pytest.fixture
    def probe_session(self, request: pytest.FixtureRequest, kit_project: Path) -> KitSession:
        return self._once(request, "probe", lambda: self._amlrun(kit_project, PROBE_SCRIPT, FAIL_SCRIPT))

    @pytest.fixture
    def probe_run(self, probe_session: KitSession) -> KitRun:
        run = probe_session.run_of(PROBE_SCRIPT)
        self._require(
            run is not None,
            "workdir_snapshot",
            "the probe script left no run in the history\n" + probe_session.tail(),
            promise="a run of the probe script is recorded",
        )
        assert run is not None
        self._require(
            run.record.get("status") == "completed",
            "workdir_snapshot",
            f"the probe run did not complete: {run.describe()}\n{run.log[-3000:]}",
            promise="a script that exits 0 completes",
        )
        return run

    @pytest.fixture
    def report(self, probe_run: KitRun) -> dict[str, Any]:
        found = probe.read_report(probe_run.log)
        self._require(
            found is not None,
            "workdir_snapshot",
            f"the probe's ##kit-report line is not in the run's log:\n{probe_run.log[-3000:]}",
            promise="the run's output reaches its log",
        )
        assert found is not None
        return found

    @pytest.fixture
    def timeout_session(self, request: pytest.FixtureRequest, kit_project: Path) -> tuple[KitSession, str]:
        def run() -> tuple[KitSession, str]:
            marker = self._sleeper(kit_project)
            return self._amlrun(kit_project, f"{marker}.py", "--timeout", f"{self.timeout_seconds:g}"), marker

        return self._once(request, "timeout", run)

    @pytest.fixture
    def cancel_session(self, request: pytest.FixtureRequest, kit_project: Path) -> tuple[KitSession, str]:
        def run() -> tuple[KitSession, str]:
            marker = self._sleeper(kit_project)
            session = run_and_interrupt(
                kit_project,
                self._args(f"{marker}.py", "--stream"),
                self._env(),
                when_seen="kit-sleeper started",
                wait_first=1.0,
                timeout=self.session_timeout,
            )
            return session, marker

        return self._once(request, "cancel", run)

    # -- the checks ------------------------------------------------------------------------------

    def test_workdir_is_a_snapshot(self, report: dict[str, Any], kit_project: Path) -> None:
        self._skip_unsupported("workdir_snapshot")
        self._require(
            report.get("snapshot_text") == probe.SNAPSHOT_TEXT,
            "workdir_snapshot",
            f"{probe.SNAPSHOT_FILE} in the run's folder holds {report.get('snapshot_text')!r}",
        )
        user_copy = (kit_project / probe.SNAPSHOT_FILE).read_text(encoding="utf-8")
        self._require(
            user_copy == probe.SNAPSHOT_TEXT,
            "workdir_snapshot",
            f"the run changed the user's {probe.SNAPSHOT_FILE}: {user_copy!r}",
        )
        self._require(
            not (kit_project / "kit-written-by-run.txt").exists(),
            "workdir_snapshot",
            "a file the run wrote into its working folder appeared in the user's project",
        )
        cwd = str(report.get("cwd"))
        self._require(
            os.path.realpath(cwd) != os.path.realpath(kit_project),
            "workdir_snapshot",
            f"the run's working directory is the user's project {cwd}",
        )

    def test_file_and_params_in_argv(self, report: dict[str, Any]) -> None:
        self._skip_unsupported("params")
        argv = [str(a) for a in report.get("argv", [])]
        self._require(
            bool(argv) and os.path.basename(argv[0]) == PROBE_SCRIPT,
            "params",
            f"argv[0] is not the script ($file): {argv[:1]}",
        )
        rest = argv[1:]
        self._require(
            rest[: len(probe.RUNCONFIG_ARGS)] == list(probe.RUNCONFIG_ARGS),
            "params",
            f"the runconfig's ArgumentVector after $file is missing: argv[1:] = {rest!r}",
        )
        given = rest[len(probe.RUNCONFIG_ARGS) :]
        # a dangling name (odd count) is dropped here and caught by the check below
        pairs = dict(zip(given[::2], given[1::2], strict=False))
        self._require(
            set(pairs) == {"--msg", "--count"} and pairs.get("--count") == "3",
            "params",
            f"parameters msg and count are not passed as --name value: argv[1:] = {rest!r}",
        )

    def test_run_variables(self, report: dict[str, Any], probe_run: KitRun) -> None:
        self._skip_unsupported("run_variables")
        env = report.get("env", {})
        record = probe_run.record
        expected = {
            "AMLRUN_RUN_ID": record.get("run_id"),
            "AMLRUN_CELL_ID": record.get("cell_id"),
            "AMLRUN_TARGET": self.target_name,
            "AMLRUN_PARAM_COUNT": "3",
        }
        wrong = {k: env.get(k) for k, v in expected.items() if env.get(k) != v}
        self._require(not wrong, "run_variables", f"expected {expected}, the run saw {wrong}")
        self._require(
            str(env.get("AMLRUN_SEED", "")).lstrip("-").isdigit(),
            "run_variables",
            f"AMLRUN_SEED is {env.get('AMLRUN_SEED')!r}",
        )
        self._require(
            bool(env.get("AMLRUN_OUTPUTS_DIR")) and (probe_run.outputs / "via-env.txt").is_file(),
            "run_variables",
            "a file written into $AMLRUN_OUTPUTS_DIR did not come back in outputs/ "
            f"(AMLRUN_OUTPUTS_DIR={env.get('AMLRUN_OUTPUTS_DIR')!r})",
        )

    def test_share_directory_variables(self, report: dict[str, Any]) -> None:
        self._skip_unsupported("share_directory")
        env = report.get("env", {})
        share = env.get("AMLRUN_SHARE_DIRECTORY")
        self._require(
            bool(share),
            "share_directory",
            "AMLRUN_SHARE_DIRECTORY is not set although the compute file sets nativeSharedDirectory",
        )
        workbench = str(env.get("AZUREML_NATIVE_SHARE_DIRECTORY", ""))
        self._require(
            workbench.rstrip("/") == str(share).rstrip("/"),
            "share_directory",
            f"AZUREML_NATIVE_SHARE_DIRECTORY={workbench!r} but AMLRUN_SHARE_DIRECTORY={share!r}",
        )
        self._require(
            report.get("share_roundtrip") is True,
            "share_directory",
            f"the shared folder is not writable by the run: {report.get('share_roundtrip')!r}",
        )

    def test_hostile_values_arrive_unchanged(self, report: dict[str, Any]) -> None:
        self._skip_unsupported("hostile_values")
        argv = [str(a) for a in report.get("argv", [])]
        env = report.get("env", {})
        self._require(
            probe.HOSTILE in argv,
            "hostile_values",
            f"the parameter value {probe.HOSTILE!r} is not one argv element: {argv[1:]!r}",
        )
        self._require(
            probe.RUNCONFIG_ARGS[1] in argv,
            "hostile_values",
            f"the runconfig argument {probe.RUNCONFIG_ARGS[1]!r} is not one argv element: {argv[1:]!r}",
        )
        for name in ("AMLRUN_PARAM_MSG", "KIT_HOSTILE"):
            self._require(
                env.get(name) == probe.HOSTILE,
                "hostile_values",
                f"{name} is {env.get(name)!r}, expected {probe.HOSTILE!r}",
            )

    def test_outputs_come_back(self, probe_run: KitRun) -> None:
        self._skip_unsupported("outputs")
        out = probe_run.outputs
        leaf = out / "nested" / "deeper" / "deepest" / "leaf.txt"
        self._require(
            leaf.is_file() and leaf.read_text() == "leaf\n",
            "outputs",
            f"nested file {leaf.relative_to(probe_run.folder)} did not come back intact",
        )
        binary = out / "binary.bin"
        self._require(
            binary.is_file() and binary.read_bytes() == bytes(range(256)) * 4,
            "outputs",
            "binary.bin (every byte value) did not come back byte-for-byte",
        )
        big = out / "big.bin"
        size = big.stat().st_size if big.is_file() else None
        self._require(
            size == self.big_output_mb << 20,
            "outputs",
            f"big.bin came back with {size} bytes, expected {self.big_output_mb << 20}",
        )
        self._require(_sha256(big) == _big_digest(self.big_output_mb), "outputs", "big.bin's content changed")
        self._require((out / "empty").is_dir(), "outputs", "the empty folder outputs/empty did not come back")

    def test_outputs_links_pointing_outside_are_not_followed(self, probe_run: KitRun) -> None:
        self._skip_unsupported("outputs_symlink")
        out = probe_run.outputs
        problems = []
        for path in sorted(out.rglob("*")) if out.is_dir() else ():
            if path.is_symlink():
                resolved = path.resolve()
                if resolved != out.resolve() and out.resolve() not in resolved.parents:
                    problems.append(f"{path.relative_to(out)} is a link to {os.readlink(path)}")
            elif path.is_file() and path.name.startswith("link-"):
                problems.append(f"{path.relative_to(out)} is a copy of the file its link pointed to")
        self._require(not problems, "outputs_symlink", "; ".join(problems))

    def test_metric_line_becomes_a_metric(self, probe_run: KitRun) -> None:
        self._skip_unsupported("metric")
        metrics = probe_run.record.get("metrics") or {}
        self._require(metrics.get("kit_metric") == 0.25, "metric", f"the run's metrics are {metrics}")

    def test_stdout_and_stderr_arrive_in_order(self, probe_run: KitRun) -> None:
        self._skip_unsupported("output_order")
        lines = [line.strip() for line in probe_run.log.splitlines() if line.strip().startswith("kit-order ")]
        expected = [f"kit-order {i:02d} {'out' if i % 2 == 0 else 'err'}" for i in range(probe.ORDER_LINES)]
        self._require(lines == expected, "output_order", f"the log has {lines}")

    def test_non_utf8_output_survives(self, probe_run: KitRun) -> None:
        self._skip_unsupported("non_utf8")
        lines = [line for line in probe_run.log.splitlines() if line.startswith("kit-bytes ")]
        self._require(
            len(lines) == 1 and lines[0].rstrip().endswith(" end"),
            "non_utf8",
            f"the line 'kit-bytes \\xff\\xfe\\xfd end' arrived as {lines!r}",
        )

    def test_nonzero_exit_fails_with_its_code(self, probe_session: KitSession) -> None:
        self._skip_unsupported("exit_code")
        run = probe_session.run_of(FAIL_SCRIPT)
        self._require(run is not None, "exit_code", "the failing script left no run\n" + probe_session.tail())
        assert run is not None
        self._require(
            run.record.get("status") == "failed" and run.record.get("exit_code") == probe.EXIT_CODE,
            "exit_code",
            f"a script exiting {probe.EXIT_CODE} gave {run.describe()}",
        )
        self._require(
            probe_session.returncode == 1,
            "exit_code",
            f"amlrun exited {probe_session.returncode} (1 when a run failed)\n{probe_session.tail()}",
        )

    def test_timeout_cancels_the_run(self, timeout_session: tuple[KitSession, str]) -> None:
        self._skip_unsupported("timeout")
        session, marker = timeout_session
        run = self._stopped_run(session, marker, "timeout")
        self._require(
            "timed out" in str(run.record.get("reason")),
            "timeout",
            f"the reason does not say it timed out: {run.describe()}",
        )

    def test_timeout_leaves_nothing_running(self, timeout_session: tuple[KitSession, str]) -> None:
        self._skip_unsupported("process_listing")
        self._no_leftovers(timeout_session, "timeout")

    def test_cancel_cancels_the_run(self, cancel_session: tuple[KitSession, str]) -> None:
        self._skip_unsupported("cancel")
        session, marker = cancel_session
        self._stopped_run(session, marker, "cancel")
        self._require(
            session.returncode == 2,
            "cancel",
            f"amlrun exited {session.returncode} after SIGTERM (2: interrupted)\n{session.tail()}",
        )

    def test_cancel_leaves_nothing_running(self, cancel_session: tuple[KitSession, str]) -> None:
        self._skip_unsupported("process_listing")
        self._no_leftovers(cancel_session, "cancel")

    def test_secret_is_in_the_environment_not_in_argv(self, report: dict[str, Any], probe_run: KitRun) -> None:
        self._skip_unsupported("secret_argv")
        secret = self._secret()
        self._require(
            report.get("secret_sha256") == hashlib.sha256(secret.encode()).hexdigest(),
            "secret_argv",
            "KIT_SECRET (a secret: reference in the runconfig) did not reach the run's environment",
        )
        self._require(
            report.get("proc_visible") is True,
            "secret_argv",
            "the probe cannot list processes on the target (no /proc); declare 'secret_argv' unsupported",
        )
        self._require(
            not report.get("secret_in_argv_of_pids"),
            "secret_argv",
            f"the secret's value is in the argv of process(es) {report.get('secret_in_argv_of_pids')} on the target",
        )
        for name in ("log.txt", "record.json"):
            path = probe_run.folder / name
            self._require(
                secret not in path.read_text(encoding="utf-8", errors="replace"),
                "secret_argv",
                f"the secret's value is written into the run's {name}",
            )

    # -- helpers -------------------------------------------------------------------------------

    def _require(self, ok: bool, check: str, detail: str, *, promise: str | None = None) -> None:
        if not ok:
            pytest.fail(
                f"target '{self.target_name}' breaks the promise [{check}]: {promise or CHECKS[check]}\n  {detail}",
                pytrace=False,
            )

    def _skip_unsupported(self, check: str) -> None:
        reason = self.unsupported.get(check)
        unknown = sorted(set(self.unsupported) - set(CHECKS))
        if unknown:
            pytest.fail(
                f"{type(self).__name__}.unsupported names unknown checks {unknown} (known: {', '.join(CHECKS)})",
                pytrace=False,
            )
        if reason:
            pytest.skip(f"{UNSUPPORTED} '{self.target_name}' ({check}): {reason}")

    def _once(self, request: pytest.FixtureRequest, kind: str, make: Callable[[], Any]) -> Any:
        """Run ``make`` once per test class (the checks share its result), failures included."""
        cache = request.config.stash.setdefault(_CACHE_KEY, {})
        key = (request.node.nodeid.split("::")[0], type(self).__qualname__, kind)
        if key not in cache:
            try:
                cache[key] = ("ok", make())
            except BaseException as exc:  # noqa: BLE001 - replayed to every check that needs it
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                cache[key] = ("error", exc)
        state, value = cache[key]
        if state == "error":
            raise value
        return value

    def _secret(self) -> str:
        return _SECRETS.setdefault(type(self).__qualname__, "kit-secret-" + secrets.token_hex(12))

    def _env(self) -> dict[str, str]:
        env = os.environ.copy()
        env.update(self.amlrun_env())
        env[SECRET_VARIABLE] = self._secret()
        return env

    def _args(self, *rest: str) -> list[str]:
        return ["-c", self.target_name, *self.amlrun_args, *rest]

    def _amlrun(self, project: Path, *rest: str) -> KitSession:
        return run_amlrun(project, self._args(*rest), self._env(), self.session_timeout)

    def _write_kit_files(self, project: Path, root: Path) -> None:
        files = {
            PROBE_SCRIPT: probe.probe_script(self.big_output_mb),
            FAIL_SCRIPT: probe.fail_script(),
            probe.SNAPSHOT_FILE: probe.SNAPSHOT_TEXT,
        }
        for rel, text in files.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_text(text, encoding="utf-8")
        runconfig = _yaml(project / "aml_config" / f"{self.target_name}.runconfig")
        runconfig.setdefault("Target", self.target_name)
        runconfig["ArgumentVector"] = ["$file", *probe.RUNCONFIG_ARGS]
        variables = dict(runconfig.get("EnvironmentVariables") or {})
        variables.update({"KIT_HOSTILE": probe.HOSTILE, "KIT_SECRET": f"secret:{SECRET_VARIABLE}"})
        runconfig["EnvironmentVariables"] = variables
        _write_yaml(project / "aml_config" / f"{self.target_name}.runconfig", runconfig)
        compute_path = project / "aml_config" / f"{runconfig['Target']}.compute"
        compute = _yaml(compute_path)
        if compute and not compute.get("nativeSharedDirectory"):
            compute["nativeSharedDirectory"] = self.share_directory or str(root / "share")
            if self.share_directory is None:
                (root / "share").mkdir(mode=0o777, exist_ok=True)
                os.chmod(root / "share", 0o777)
            _write_yaml(compute_path, compute)

    def _sleeper(self, project: Path) -> str:
        """Write a sleeping script whose name is a fresh marker; return the marker."""
        marker = "kit_sleep_" + secrets.token_hex(8)
        (project / f"{marker}.py").write_text(probe.sleeper_script(), encoding="utf-8")
        return marker

    def _stopped_run(self, session: KitSession, marker: str, check: str) -> KitRun:
        run = session.run_of(f"{marker}.py")
        self._require(run is not None, check, "the sleeping script left no run\n" + session.tail())
        assert run is not None
        self._require(run.record.get("status") == "canceled", check, f"the run was not canceled: {run.describe()}")
        started, ended = run.record.get("started"), run.record.get("ended")
        limit = (self.timeout_seconds if check == "timeout" else 1.0) + self.stop_within
        if isinstance(started, (int, float)) and isinstance(ended, (int, float)):
            self._require(
                ended - started < limit + 30,
                check,
                f"the run took {ended - started:.1f}s to end (allowed: {limit:g}s plus start-up)",
            )
        return run

    def _no_leftovers(self, stopped: tuple[KitSession, str], check: str) -> None:
        session, marker = stopped
        deadline = time.monotonic() + self.stop_within
        left = self.leftover_processes(marker)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.leftover_processes(marker)
        self._require(
            not left,
            "process_listing",
            f"after the {check}, still running {self.stop_within:g}s later:\n  " + "\n  ".join(left),
        )


_CACHE_KEY = pytest.StashKey[dict]()
_SECRETS: dict[str, str] = {}


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(data) if isinstance(data, dict) else {}


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _big_digest(mb: int) -> str:
    block = hashlib.sha256(b"kit").digest() * 32768
    digest = hashlib.sha256()
    for _ in range(mb):
        digest.update(block)
    return digest.hexdigest()
