"""The Spark ``cluster`` target against a real standalone master and worker on 127.0.0.1.

Spark jobs cost ~15-20 s each, so each test here checks several things of one job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, Project, require_service
from spark_fixture import SPARK_ENV, free_port, require_spark

pytestmark = pytest.mark.spark

SPARK_RUNCONFIG = """
ArgumentVector: ["$file"]
Target: spark
Framework: PySpark
"""

# Reads back what spark-submit was given: conf on the driver and on an executor, the
# run's variables on an executor, a project module imported on an executor (--py-files).
CONF_SCRIPT = """
import os, sys
from pyspark.sql import SparkSession
from amlrun_client import log

spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
conf = sc.getConf()
log("executor_memory", conf.get("spark.executor.memory"))
log("app_name", conf.get("spark.app.name"))
log("shuffle_partitions", conf.get("spark.sql.shuffle.partitions"))

def on_executor(_):
    import helpers.scale
    return (helpers.scale.double(21), os.environ.get("AMLRUN_PARAM_NOTE"), os.environ.get("AMLRUN_RUN_ID"),
            os.environ.get("PLAIN_VAR"), os.environ.get("SECRET_VAR"), sys.executable)

doubled, note, run_id, plain, secret, python = sc.parallelize([0], 1).map(on_executor).collect()[0]
log("executor_double", doubled)
log("executor_note", note)
log("executor_run_id", run_id)
log("executor_plain", plain)
log("executor_secret_missing", secret is None)
log("driver_secret_ok", os.environ.get("SECRET_VAR") == "s3cr3t-value")
log("same_python", os.path.realpath(python) == os.path.realpath(sys.executable))
os.makedirs("outputs/nested", exist_ok=True)
with open("outputs/nested/argv.txt", "w") as fh:
    fh.write("\\n".join(sys.argv[1:]))
print("conf job done")
spark.stop()
"""


def spark_project(project: Project, cluster, compute_extra: dict | None = None, files: dict | None = None) -> Project:
    project.write({
        "aml_config/spark.compute": cluster.compute_yaml(userManagedEnvironment="true", **(compute_extra or {})),
        "aml_config/spark.runconfig": SPARK_RUNCONFIG,
        **(files or {}),
    })
    return project


# -- submission building (no Spark needed) ---------------------------------------------------

def test_submission_argv_quoting_and_driver_log_parsing(tmp_path):
    from amlrun.targets.cluster import spark

    sub = spark.Submission(
        "/opt/spark/bin/spark-submit", "yarn", "train.py", ("--note", "it's a b", "$HOME"), deploy_mode="cluster",
        conf=spark.merge_conf({"spark.pyspark.python": "/env/bin/python", "spark.app.name": "ours"},
                              {"spark.app.name": "user's app"}),
        packages=("com.example:lib_2.13:1.0", "org.x:y:2"), repositories=("https://repo.example/maven",),
        py_files=("/w/deps.zip",),
    )
    argv = sub.argv()
    assert argv[:5] == ["/opt/spark/bin/spark-submit", "--master", "yarn", "--deploy-mode", "cluster"]
    assert argv[argv.index("--packages") + 1] == "com.example:lib_2.13:1.0,org.x:y:2"
    assert argv[argv.index("--repositories") + 1] == "https://repo.example/maven"
    assert argv[argv.index("--py-files") + 1] == "/w/deps.zip"
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert confs == ["spark.pyspark.python=/env/bin/python", "spark.app.name=user's app"]   # user wins, once
    assert argv[-4:] == ["train.py", "--note", "it's a b", "$HOME"]
    # through a shell (the SSH path) the words survive unchanged
    echoed = subprocess.run(["bash", "-c", "printf '%s\\n' " + sub.command_line()[len("/opt/spark/bin/spark-submit"):]],
                            capture_output=True, text=True).stdout.splitlines()
    assert echoed == argv[1:]

    lines = []
    log = spark.DriverLog(type("S", (), {"write": lambda self, line: lines.append(line)})())
    for line in ["26/11/28 00:25:49 INFO JettyUtils: Start Jetty 127.0.0.1:4040 for SparkUI",
                 "26/11/28 00:25:49 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID "
                 "app-20261128002549-0000",
                 "26/11/28 00:25:50 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-other"]:
        log.write(line)
    assert len(lines) == 3 and log.app_id == "app-20261128002549-0000"
    assert log.found["spark_ui"] == "http://127.0.0.1:4040"
    yarn = spark.DriverLog(type("S", (), {"write": lambda self, line: None})())
    yarn.write("INFO Client: Submitted application application_1700000000000_0042")
    yarn.write("\t tracking URL: http://rm.example:8088/proxy/application_1700000000000_0042/")
    assert yarn.app_id == "application_1700000000000_0042"
    assert yarn.found["spark_tracking_url"].startswith("http://rm.example:8088/proxy/")

    assert spark.master_endpoints("spark://h1:7077,h2:7078") == [("h1", 7077), ("h2", 7078)]
    assert spark.master_endpoints("k8s://https://api.example:6443") == [("api.example", 6443)]
    assert spark.master_endpoints("yarn") == [] and spark.is_local("local[*]")

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/mod.py").write_text("X = 1\n")
    (tmp_path / "top.py").write_text("")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs/skip.py").write_text("")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden/skip.py").write_text("")
    (tmp_path / "venv2/lib").mkdir(parents=True)
    (tmp_path / "venv2/pyvenv.cfg").write_text("")
    (tmp_path / "venv2/lib/skip.py").write_text("")
    zipped = spark.pack_py_files(tmp_path, tmp_path / ".amlrun_runtime" / "deps.zip")
    assert sorted(zipfile.ZipFile(zipped).namelist()) == ["pkg/__init__.py", "pkg/mod.py", "top.py"]


# -- real Spark -------------------------------------------------------------------------------

def test_local_mode_smoke(project):
    """``sparkMaster: local[1]``: spark-submit without a cluster; params reach the script."""
    require_spark()
    project.write({
        "aml_config/sparklocal.compute": "type: cluster\nsparkMaster: local[1]\nuserManagedEnvironment: true\n",
        "aml_config/sparklocal.runconfig": SPARK_RUNCONFIG.replace("Target: spark", "Target: sparklocal"),
        "job.py": """
            import sys
            from pyspark.sql import SparkSession
            from amlrun_client import log
            spark = SparkSession.builder.getOrCreate()
            log("total", spark.sparkContext.parallelize(range(10)).sum())
            log("master", spark.sparkContext.master)
            log("argv", sys.argv[1:])
            spark.stop()
        """,
    })
    result = project.run("-c", "sparklocal", "job.py", "-p", "n=3", env=SPARK_ENV)
    assert result.returncode == 0, result.output
    (rec,) = project.records()
    assert rec["metrics"] == {"total": 45, "master": "local[1]", "argv": ["--n", "3"]}
    assert rec["extra"]["spark_master"] == "local[1]" and "--master 'local[1]'" in rec["extra"]["spark_submit"]


def test_framework_python_runs_plain_python(project, spark_cluster):
    """``Framework: Python`` on a cluster target: no spark-submit, plain Python on the node."""
    spark_project(project, spark_cluster, files={
        "aml_config/plain.runconfig": "Target: spark\nFramework: Python\n",
        "plain.py": """
            import os, sys
            from amlrun_client import log
            log("has_pyspark_submit", "SPARK_ENV_LOADED" in os.environ)
            log("args", sys.argv[1:])
            os.makedirs("outputs", exist_ok=True)
            open("outputs/x.txt", "w").write("x")
        """,
    })
    result = project.run("-c", "plain", "plain.py", "-p", "a=1")
    assert result.returncode == 0, result.output
    (rec,) = project.records()
    assert rec["metrics"] == {"has_pyspark_submit": False, "args": ["--a", "1"]}
    assert (project.run_dir(rec) / "outputs/x.txt").read_text() == "x"
    assert "spark_submit" not in rec["extra"]


def test_configuration_parameters_outputs_and_app_id(project, spark_cluster):
    spark_project(project, spark_cluster, files={
        "aml_config/spark.runconfig": SPARK_RUNCONFIG + (
            "EnvironmentVariables:\n  PLAIN_VAR: plain value\n  SECRET_VAR: env:AMLRUN_TEST_SPARK_SECRET\n"),
        "aml_config/spark_dependencies.yml": """
            configuration:
              spark.executor.memory: 600m
              spark.app.name: amlrun-conf-check
              spark.sql.shuffle.partitions: 3
        """,
        "helpers/__init__.py": "",
        "helpers/scale.py": "def double(x):\n    return 2 * x\n",
        "jobs/conf.py": CONF_SCRIPT,
    })
    result = project.run("-c", "spark", "jobs/conf.py", "-p", "note=it's a b;$HOME",
                         env={**SPARK_ENV, "AMLRUN_TEST_SPARK_SECRET": "s3cr3t-value"})
    assert result.returncode == 0, result.output
    (rec,) = project.records()
    assert rec["status"] == "completed"
    assert rec["metrics"] == {
        "executor_memory": "600m", "app_name": "amlrun-conf-check", "shuffle_partitions": "3",
        "executor_double": 42, "executor_note": "it's a b;$HOME", "executor_run_id": rec["run_id"],
        "executor_plain": "plain value", "executor_secret_missing": True, "driver_secret_ok": True,
        "same_python": True,
    }
    folder = project.run_dir(rec)
    assert (folder / "outputs/nested/argv.txt").read_text().splitlines() == ["--note", "it's a b;$HOME"]
    extra = rec["extra"]
    app_id = extra["spark_app_id"]
    assert re.fullmatch(r"app-\d{14}-\d{4}", app_id)
    assert extra["spark_master"] == spark_cluster.master and extra["spark_master_ui"] == spark_cluster.ui
    assert "s3cr3t" not in extra["spark_submit"] and "s3cr3t" not in (folder / "log.txt").read_text()
    # the master saw the configuration too
    app = spark_cluster.app(app_id)
    assert app is not None and app["name"] == "amlrun-conf-check" and app["memoryperexecutor"] == 600
    assert app["state"] == "FINISHED"
    assert "Connected to Spark cluster with app ID" in (folder / "log.txt").read_text()   # driver log kept


def test_packed_environment_reaches_the_executors_as_an_archive(project, spark_cluster):
    """packEnvironment: the managed venv goes to the executors with --archives (made once, cached)."""
    spark_project(project, spark_cluster, files={
        "aml_config/spark.compute": spark_cluster.compute_yaml(packEnvironment="true"),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - python\n",
        "env.py": """
            import os, sys
            from pyspark.sql import SparkSession
            from amlrun_client import log
            spark = SparkSession.builder.getOrCreate()
            log("driver_prefix", sys.prefix)
            log("executor", spark.sparkContext.parallelize([0], 1).map(lambda _: sys.executable).collect()[0])
            spark.stop()
        """,
    })
    result = project.run("-c", "spark", "env.py", env=SPARK_ENV)
    assert result.returncode == 0, result.output
    (rec,) = project.records()
    cache = Path(os.environ["AMLRUN_CACHE_DIR"]) / "envs"
    venvs = [p for p in cache.iterdir() if (p / "pyvenv.cfg").exists()]
    venv = next(v for v in venvs if str(v) == rec["metrics"]["driver_prefix"])
    assert (cache / (venv.name + ".tar.gz")).is_file()
    assert rec["metrics"]["executor"].endswith("/amlrun_env/bin/python")
    assert f"--archives '{venv}.tar.gz#amlrun_env'" in rec["extra"]["spark_submit"]


def test_failing_job_is_failed_with_the_executor_error(project, spark_cluster):
    spark_project(project, spark_cluster, files={"fail.py": """
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.config("spark.task.maxFailures", "1").getOrCreate()
        def boom(x):
            raise ValueError("bad row %d" % x)
        spark.sparkContext.parallelize([7], 1).map(boom).collect()
    """})
    result = project.run("-c", "spark", "fail.py", env=SPARK_ENV)
    assert result.returncode == 1, result.output
    assert "FAILED fail.py::spark" in result.stdout
    (rec,) = project.records()
    assert rec["status"] == "failed" and rec["exit_code"] not in (0, None)
    assert rec["extra"]["spark_app_id"].startswith("app-")
    assert "ValueError: bad row 7" in (project.run_dir(rec) / "log.txt").read_text()
    assert spark_cluster.active_apps() == []


def test_ctrl_c_leaves_no_running_application(project, spark_cluster):
    spark_project(project, spark_cluster, files={"slow.py": """
        import time
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.appName("amlrun-cancel-check").getOrCreate()
        print("job starting", flush=True)
        spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(600)).collect()
    """})
    proc = project.popen("-c", "spark", "slow.py", env=SPARK_ENV)
    app_id = None
    lines = []
    deadline = time.monotonic() + 180
    try:
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"app ID (app-\S+)", line)
            if found:
                app_id = found.group(1)
            if app_id and "job starting" in line:
                break
            assert time.monotonic() < deadline, "".join(lines[-30:])
        assert app_id, "".join(lines[-30:])
        # the task is running on the worker: the application holds the only core
        wait_until(lambda: any(a["id"] == app_id and a["state"] == "RUNNING" for a in spark_cluster.active_apps()))
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, "".join(lines[-20:]) + rest
    assert spark_cluster.active_apps() == []
    assert spark_cluster.app(app_id)["state"] in ("FINISHED", "KILLED")
    (rec,) = project.records()
    assert rec["status"] == "canceled" and rec["extra"]["spark_app_id"] == app_id


def test_master_ui_kill_stops_an_application_whose_driver_lingers(spark_cluster, tmp_path):
    """The fallback after a cancel: the app is still active, so amlrun kills it on the master."""
    from amlrun.targets.cluster.spark import MasterUI

    script = tmp_path / "linger.py"
    script.write_text("import time\nfrom pyspark.sql import SparkSession\n"
                      "spark = SparkSession.builder.appName('linger').getOrCreate()\n"
                      "spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(600)).collect()\n")
    proc = subprocess.Popen(["spark-submit", "--master", spark_cluster.master, str(script)], cwd=tmp_path,
                            env={**os.environ, **SPARK_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        app_id = None
        for line in proc.stdout:
            found = re.search(r"app ID (app-\S+)", line)
            if found:
                app_id = found.group(1)
                break
        assert app_id
        ui = MasterUI(spark_cluster.ui)
        assert ui.app_state(app_id) in ("RUNNING", "WAITING")
        assert ui.ensure_stopped(app_id, wait=3) is None
        assert all(a["id"] != app_id for a in spark_cluster.active_apps())
        proc.wait(60)   # the master told the driver: its application was killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()


def test_unreachable_master_is_one_line_and_other_targets_still_run(project):
    require_spark()
    port = free_port()
    project.write({
        "aml_config/spark.compute": f"type: cluster\nsparkMaster: spark://127.0.0.1:{port}\n",
        "aml_config/spark.runconfig": SPARK_RUNCONFIG,
        "ok.py": "print('fine')\n",
    })
    result = project.run("-c", "spark", "-c", "local", "ok.py", env=SPARK_ENV, timeout=120)
    assert result.returncode == 4, result.output
    assert f"Spark master spark://127.0.0.1:{port} does not answer" in result.output
    assert "Traceback" not in result.output
    assert "PASSED ok.py::local" in result.stdout
    statuses = {r["target"]: r["status"] for r in project.records()}
    assert statuses == {"spark": "failed", "local": "completed"}

    bad = project.run("doctor", "-c", "spark")
    assert bad.returncode == 1 and "FAIL master" in bad.stdout and "does not answer" in bad.stdout


def test_doctor_checks_submit_master_and_python_versions(project, spark_cluster):
    spark_project(project, spark_cluster)
    result = project.run("doctor", "-c", "spark", env=SPARK_ENV, timeout=300)
    assert result.returncode == 0, result.output
    out = result.stdout
    assert "ok   spark-submit:" in out
    assert f"ok   master: {spark_cluster.master} ALIVE, 1 worker(s)" in out
    version = "%d.%d.%d" % sys.version_info[:3]
    assert f"ok   python: driver and executors run Python {version}" in out


def test_example_sweep_trains_pyspark_ml_model_on_the_cluster(tmp_path, spark_cluster):
    """examples/spark: pyspark.ml on the project's CSV, a sweep of two values → two Spark apps."""
    root = tmp_path / "spark-example"
    shutil.copytree(REPO / "examples/spark", root, ignore=shutil.ignore_patterns(".amlrun", "outputs", "__pycache__"))
    compute = (root / "aml_config/spark.compute").read_text()
    compute = compute.replace("spark://127.0.0.1:7077", spark_cluster.master).replace(
        "http://127.0.0.1:8080", spark_cluster.ui)
    (root / "aml_config/spark.compute").write_text(compute)
    proj = Project(root)
    result = proj.run("-c", "spark", "experiments/", env=SPARK_ENV, timeout=900)
    assert result.returncode == 0, result.output
    recs = proj.records()
    assert sorted(r["cell_id"] for r in recs) == ["experiments/train.py::spark[reg=0.0]",
                                                  "experiments/train.py::spark[reg=1.0]"]
    app_ids = {r["extra"]["spark_app_id"] for r in recs}
    assert len(app_ids) == 2
    for rec in recs:
        assert rec["status"] == "completed"
        assert 0.5 < rec["metrics"]["accuracy"] <= 1.0
        folder = proj.run_dir(rec)
        assert (folder / "outputs/model/metadata").is_dir()
        assert list((folder / "outputs/model/stages").iterdir())
        summary = json.loads((folder / "outputs/summary.json").read_text())
        assert summary["app_id"] == rec["extra"]["spark_app_id"] and summary["reg"] == rec["params"]["reg"]
        app = spark_cluster.app(rec["extra"]["spark_app_id"])
        assert app["name"] == "machines-logreg" and app["memoryperexecutor"] == 512
    # the managed environment (numpy for pyspark.ml) was built once and reused
    assert len({r["environment_digest"] for r in recs}) == 1


#: a pyspark copy readable by the test sshd's user (root's site-packages is not); .ci/services/spark.sh
SHARED_SPARK = Path("/opt/amlrun-spark/pyspark")

SSH_SCRIPT = """
import os, sys
from pyspark.sql import SparkSession
from amlrun_client import log
spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
log("executor_memory", sc.getConf().get("spark.executor.memory"))
log("user", os.environ.get("USER") or os.getlogin())
log("squares", sc.parallelize(range(4), 2).map(lambda x: x * x).sum())
os.makedirs("outputs", exist_ok=True)
with open("outputs/argv.txt", "w") as fh:
    fh.write("\\n".join(sys.argv[1:]))
spark.stop()
"""


def _headnode_files(spark_cluster, sshd) -> dict[str, str]:
    """A ``headnode`` cluster target reached over the test sshd, submitting with the
    Spark copy every user can run."""
    if not (SHARED_SPARK / "bin" / "spark-submit").exists():
        require_service("spark for the ssh user", f"no {SHARED_SPARK} (.ci/services/spark.sh installs it)")
    extra = (f"sparkMaster: {spark_cluster.master}\nsparkMasterUI: {spark_cluster.ui}\n"
             f"sparkSubmitLocation: {SHARED_SPARK}\npythonLocation: /usr/bin/python3\nuserManagedEnvironment: true\n")
    return {
        "aml_config/headnode.compute": sshd.compute_yaml("cluster", extra=extra),
        "aml_config/headnode.runconfig": SPARK_RUNCONFIG.replace("Target: spark", "Target: headnode")
        + "EnvironmentVariables:\n  SPARK_LOCAL_IP: 127.0.0.1\n",
    }


def test_submission_from_a_head_node_over_ssh(project, spark_cluster, sshd):
    """address set: the job goes to the node over SSH and spark-submit runs there, as its user."""
    project.write({
        **_headnode_files(spark_cluster, sshd),
        "aml_config/spark_dependencies.yml": "configuration:\n  spark.executor.memory: 512m\n",
        "job.py": SSH_SCRIPT,
    })
    result = project.run("-c", "headnode", "job.py", "-p", "note=it's $HOME; a b", timeout=600)
    assert result.returncode == 0, result.output
    (rec,) = project.records()
    assert rec["metrics"] == {"executor_memory": "512m", "user": sshd.user, "squares": 14}
    assert (project.run_dir(rec) / "outputs/argv.txt").read_text().splitlines() == ["--note", "it's $HOME; a b"]
    extra = rec["extra"]
    assert extra["spark_app_id"].startswith("app-") and extra["remote_host"].startswith(sshd.user)
    assert extra["spark_submit"].startswith(str(SHARED_SPARK / "bin" / "spark-submit"))
    assert spark_cluster.app(extra["spark_app_id"])["user"] == sshd.user

    doctor = project.run("doctor", "-c", "headnode", timeout=300)
    assert doctor.returncode == 0, doctor.output
    assert "ok   ssh login" in doctor.stdout and "ok   python: driver and executors run Python" in doctor.stdout


def test_timeout_over_ssh_stops_the_application_and_python_framework_runs_on_the_node(project, spark_cluster, sshd):
    project.write({
        **_headnode_files(spark_cluster, sshd),
        "aml_config/nodepython.runconfig": "Target: headnode\nFramework: Python\n",
        "slow.py": """
            import time
            from pyspark.sql import SparkSession
            spark = SparkSession.builder.appName("amlrun-timeout-check").getOrCreate()
            spark.sparkContext.parallelize([0], 1).map(lambda x: time.sleep(600)).collect()
        """,
        "plain.py": """
            import os, sys
            from amlrun_client import log
            log("user", os.environ.get("USER"))
            log("python", sys.executable)
        """,
    })
    plain = project.run("-c", "nodepython", "plain.py", timeout=300)
    assert plain.returncode == 0, plain.output
    assert project.records()[0]["metrics"] == {"user": sshd.user, "python": "/usr/bin/python3"}

    started = time.monotonic()
    result = project.run("-c", "headnode", "slow.py", "--timeout", "45", timeout=400)
    assert result.returncode == 1, result.output
    rec = project.records()[-1]
    assert rec["status"] == "canceled" and "timed out after 45s" in rec["reason"], rec
    assert rec["extra"]["spark_app_id"].startswith("app-")
    assert time.monotonic() - started < 200
    assert spark_cluster.active_apps() == []
    assert spark_cluster.app(rec["extra"]["spark_app_id"])["state"] in ("FINISHED", "KILLED")
    # no spark-submit JVM left on the node (other sessions' remote tests may share the user: no broader match)
    assert not [p for p in sshd.user_processes() if "org.apache.spark.deploy.SparkSubmit" in p]


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)
