"""The ``slurm`` target plugin against a real single-node SLURM cluster (tests/slurm_fixture.py).

One cluster for the whole session. Slowest test: the time-limit one (SLURM's limit is
whole minutes, and it checks it every 30 s: about 75 s).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

SWEEP = """
import os, sys
from amlrun_client import log
lr = float(os.environ["AMLRUN_PARAM_LR"])
print("cell", os.environ["AMLRUN_CELL_ID"], "job", os.environ.get("SLURM_JOB_ID"), "secret-set",
      os.environ.get("API_TOKEN") == "tok-" + "s3cr3t-value", "cwd-is-run", os.path.basename(os.getcwd()) == "work")
log("loss", 1.0 / lr)
os.makedirs("outputs", exist_ok=True)
with open("outputs/result.txt", "w") as fh:
    fh.write(str(lr))
"""

SLEEPER = """
import sys, time
print("started", flush=True)
time.sleep(float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 300)
print("woke")
"""

SECRET = "tok-s3cr3t-value"


def runs(project) -> list[dict]:
    root = project.root / ".amlrun" / "runs"
    found = [json.loads(p.read_text()) for p in root.glob("*/record.json")]
    return sorted(found, key=lambda r: r.get("created") or 0)


def _slurm_project(project, cluster, tmp_path, extra: str = "", files: dict | None = None):
    project.write({"aml_config/slurm.compute": cluster.compute_yaml(tmp_path / "ws", extra), **(files or {})})
    return project


def _wait_for(proc, text: str, timeout: float = 120) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def test_a_20_cell_sweep_is_one_job_array_with_20_records(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path, files={
        "aml_config/slurm.runconfig": "Target: slurm\nEnvironmentVariables:\n  API_TOKEN: secret:API_TOKEN\n",
        "sweep.py": SWEEP})
    lrs = ",".join(f"{0.05 * (i + 1):.2f}" for i in range(20))
    # no -n: a queue-backed target gets its cells at once (maxParallel, default 100), as one array
    result = project.run("-c", "slurm", "sweep.py", "-p", f"lr={lrs}", env={"API_TOKEN": SECRET})
    assert result.returncode == 0, result.output
    records = runs(project)
    assert len(records) == 20 and {r["status"] for r in records} == {"completed"}
    extras = [r["extra"] for r in records]
    # one submission: every cell is a task of the same job array, with its own index and record
    assert len({e["slurm_array_job_id"] for e in extras}) == 1, extras
    assert sorted(e["slurm_array_index"] for e in extras) == list(range(20))
    assert len({e["slurm_job_id"] for e in extras}) == 20
    for record in records:
        extra = record["extra"]
        assert extra["slurm_job_id"] == f"{extra['slurm_array_job_id']}_{extra['slurm_array_index']}"
        assert extra["slurm_partition"] == "debug" and extra["slurm_node"] == slurm_cluster.node
        assert extra["slurm_state"] == "COMPLETED"
        assert extra["slurm_queue_seconds"] >= 0 and extra["slurm_run_seconds"] >= 0
        folder = project.root / ".amlrun" / "runs" / record["run_id"]
        log = (folder / "log.txt").read_text()
        lr = float(record["params"]["lr"])
        assert "secret-set True cwd-is-run True" in log, log
        assert f"job {extra['slurm_task_job_id']}" in log
        assert "in the queue" in log and "running" in log          # queue time and run time shown
        assert (folder / "outputs" / "result.txt").read_text() == str(lr)
        assert record["metrics"]["loss"] == pytest.approx(1.0 / lr)
    # the secret reached the runs, but not SLURM's saved job descriptions (scripts, environments)
    for path in (slurm_cluster.root / "state").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.output
    # nothing left behind in the workspace's run and batch folders
    projects = list((tmp_path / "ws" / "projects").iterdir())
    assert [p.name for p in (projects[0] / "runs").iterdir()] == []
    assert [p.name for p in (projects[0] / "batches").iterdir()] == []


def test_a_job_over_its_time_limit_is_reported_as_slurms_time_limit(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path, 'sbatchArguments: ["--time=0:10"]\n', {"sleeper.py": SLEEPER})
    result = project.run("-c", "slurm", "sleeper.py", timeout=400)
    assert result.returncode == 1, result.output
    [record] = runs(project)
    assert record["status"] == "failed"
    assert record["reason"] == "killed by SLURM: time limit (TIMEOUT)"
    assert record["extra"]["slurm_state"] == "TIMEOUT"
    assert "time limit" in result.output
    log = (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    assert "started" in log and "woke" not in log


def test_ctrl_c_scancels_pending_and_running_jobs(project, slurm_cluster, tmp_path):
    # 12 cells on 8 CPUs of 1 node, maxParallel 12: some run, some pend
    _slurm_project(project, slurm_cluster, tmp_path, "maxParallel: 12\nsbatchArguments: [\"--cpus-per-task=2\"]\n",
                   {"sleeper.py": SLEEPER})
    proc = project.popen("-c", "slurm", "sleeper.py", "-p", "k=" + ",".join(str(i) for i in range(12)), "-n", "12",
                         "--stream")
    try:
        _wait_for(proc, "] started")
        states = {row["state"] for row in slurm_cluster.queue() if row["name"] == "amlrun:sleeper.py"}
        assert {"RUNNING", "PENDING"} <= states, states
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    assert slurm_cluster.wait_queue_empty() == []
    records = runs(project)
    assert len(records) == 12 and {r["status"] for r in records} == {"canceled"}, [r["status"] for r in records]


def test_timeout_and_exitfirst_scancel_the_jobs(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path, files={
        "sleeper.py": SLEEPER,
        "fails.py": "import sys, os, time\nif os.environ['AMLRUN_PARAM_K'] == '0':\n    sys.exit(3)\n"
                    "time.sleep(300)\n"})
    timed = project.run("-c", "slurm", "sleeper.py", "--timeout", "3")
    assert timed.returncode == 1 and "timed out after 3s" in timed.output, timed.output
    assert slurm_cluster.wait_queue_empty() == []
    first = project.run("-c", "slurm", "fails.py", "-p", "k=0,1,2", "-n", "3", "-x")
    assert first.returncode == 1, first.output
    assert slurm_cluster.wait_queue_empty() == []
    statuses = sorted(r["status"] for r in runs(project)[1:])
    assert statuses == ["canceled", "canceled", "failed"], statuses
    failed = [r for r in runs(project) if r["status"] == "failed"][0]
    assert failed["exit_code"] == 3 and failed["reason"] == "exited with code 3"


def test_after_kill_9_the_next_session_cancels_the_orphaned_jobs(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path, files={"sleeper.py": SLEEPER})
    proc = project.popen("-c", "slurm", "sleeper.py", "-p", "k=1,2", "-n", "2", "--stream")
    try:
        _wait_for(proc, "] started")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    orphans = [r for r in slurm_cluster.queue() if r["name"] == "amlrun:sleeper.py"]
    assert len(orphans) == 2 and all(r["comment"].startswith("amlrun owner=") for r in orphans), orphans
    again = project.run("-c", "slurm", "sleeper.py", "-p", "seconds=0")
    assert again.returncode == 0, again.output
    assert "left by an amlrun that is gone" in again.output or "left by an amlrun that is gone" in _logs(project)
    assert slurm_cluster.wait_queue_empty() == []


FLAKY = """
import os, sys, time
if os.environ["AMLRUN_PARAM_MODE"] == "fail":
    sys.exit(3)
if os.path.exists(MARKER):
    print("second attempt")
    sys.exit(0)
open(MARKER, "w").close()
print("started", flush=True)
time.sleep(300)
"""


def _struck_while_running(project, cluster, tmp_path, strike) -> tuple[str, list[dict]]:
    """Cells mode=fail (exits 3: the script's own failure) and mode=sleep (struck by
    ``strike()`` while it runs; its retry succeeds), with ``--retries 1``: the output and records."""
    _slurm_project(project, cluster, tmp_path, files={"flaky.py": f"MARKER = {str(tmp_path / 'marker')!r}\n" + FLAKY})
    proc = project.popen("-c", "slurm", "flaky.py", "-p", "mode=fail,sleep", "--retries", "1", "--stream",
                         env={"AMLRUN_RETRY_DELAY": "0"})
    try:
        seen = _wait_for(proc, "] started")
        deadline = time.monotonic() + 60
        while not any(r["params"]["mode"] == "fail" and r["status"] == "failed" for r in runs(project)):
            assert time.monotonic() < deadline, "the failing cell never ended"
            time.sleep(0.3)
        strike()
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cluster.wait_queue_empty() == []
    return "".join(seen) + out, runs(project)


def _assert_retried_as_infrastructure_error(output: str, records: list[dict], state: str, what: str) -> None:
    assert "RETRY flaky.py::slurm" in output and output.count("RETRY ") == 1, output
    fail = [r for r in records if r["params"]["mode"] == "fail"]
    assert [(r["status"], r["exit_code"], r["reason"]) for r in fail] == [("failed", 3, "exited with code 3")], fail
    struck, again = [r for r in records if r["params"]["mode"] == "sleep"]
    assert struck["status"] == "failed" and struck["reason"] == f"killed by SLURM: {what} ({state})", struck
    assert struck["extra"]["slurm_state"] == state
    assert again["status"] == "completed" and again["extra"]["slurm_job_id"] != struck["extra"]["slurm_job_id"]


def test_a_node_failure_is_an_infrastructure_error_and_retried(project, slurm_cluster, tmp_path):
    def node_fails():
        try:
            slurm_cluster.set_node("down", "amlrun test: node failure")
            assert slurm_cluster.wait_node(("down", "down*")) in ("down", "down*")
        finally:
            slurm_cluster.set_node("resume")

    try:
        output, records = _struck_while_running(project, slurm_cluster, tmp_path, node_fails)
    finally:
        slurm_cluster.wait_node()
    assert output.count("killed by SLURM: node failure (NODE_FAIL)") >= 1, output
    _assert_retried_as_infrastructure_error(output, records, "NODE_FAIL", "node failure")


def test_a_preempted_job_is_an_infrastructure_error_and_retried(project, slurm_cluster, tmp_path):
    def preempted():   # a job of the higher-tier partition wants the whole node: SLURM cancels ours
        slurm_cluster.command("sbatch", f"--partition={slurm_cluster.urgent_partition}", "--exclusive",
                              "--job-name=urgent-test", "--output=/dev/null", "--wrap=sleep 1")

    output, records = _struck_while_running(project, slurm_cluster, tmp_path, preempted)
    _assert_retried_as_infrastructure_error(output, records, "PREEMPTED", "preemption")


def _logs(project) -> str:
    return "".join(p.read_text() for p in (project.root / ".amlrun" / "runs").glob("*/log.txt"))


def test_through_the_login_node_over_ssh(project, slurm_cluster, sshd, tmp_path):
    project.write({
        "aml_config/login.compute": sshd.compute_yaml(
            "slurm", extra=f"partition: debug\nslurmEnvironment:\n  SLURM_CONF: {slurm_cluster.conf}\n"),
        "aml_config/login.runconfig": "Target: login\nEnvironmentVariables:\n  API_TOKEN: secret:API_TOKEN\n",
        "sweep.py": SWEEP})
    result = project.run("-c", "login", "sweep.py", "-p", "lr=0.5,0.25,0.125", "-n", "3", env={"API_TOKEN": SECRET})
    assert result.returncode == 0, result.output
    records = runs(project)
    assert len(records) == 3 and len({r["extra"]["slurm_array_job_id"] for r in records}) == 1
    for record in records:
        assert record["extra"]["slurm_login"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
        folder = project.root / ".amlrun" / "runs" / record["run_id"]
        assert (folder / "outputs" / "result.txt").read_text() == str(float(record["params"]["lr"]))
        assert "secret-set True" in (folder / "log.txt").read_text()
    # the jobs ran as the login user, in its home (the default workspace)
    assert (sshd.home / ".amlrun" / "slurm" / "projects").is_dir()
    doctor = project.run("doctor", "-c", "login")
    assert doctor.returncode == 0, doctor.output
    assert "python on a compute node" in doctor.output


def test_doctor_checks_commands_partition_workspace_and_python(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path)
    good = project.run("doctor", "-c", "slurm")
    assert good.returncode == 0, good.output
    for name in ("sbatch, squeue, scancel", "partition debug", "workspace writable", "python on a compute node"):
        assert name in good.output
    project.write({"aml_config/bad.compute": slurm_cluster.compute_yaml(tmp_path / "ws").replace("debug", "nosuch")})
    bad = project.run("doctor", "-c", "bad")
    assert bad.returncode != 0
    assert "partition nosuch" in bad.output and "does not exist" in bad.output


@pytest.mark.parametrize("line, message", [
    ("sbatchArguments: --mem=1G", "'sbatchArguments' must be a list of strings"),
    ('sbatchArguments: ["--array=0-3"]', "--array is not allowed"),
    ('sbatchArguments: ["-o", "x.log"]', "-o is not allowed"),
    ('sbatchArguments: ["mem=1G"]', "is not an option"),
    ("maxParallel: 0", "'maxParallel' must be a whole number"),
    ("workspace: relative/path", "'workspace' must be an absolute path"),
    ("partition: [a, b]", "'partition' must be a partition name"),
    ("slurmEnvironment: [SLURM_CONF]", "'slurmEnvironment' must be a mapping"),
])
def test_compute_file_mistakes_are_one_line_errors(project, line, message):
    project.write({"aml_config/slurm.compute": f"type: slurm\n{line}\n", "t.py": "print(1)\n"})
    result = project.run("-c", "slurm", "t.py")
    assert result.returncode == 4, result.output
    assert message in result.output and "aml_config/slurm.compute" in result.output
    assert "Traceback" not in result.output


def test_a_refused_submission_names_sbatchs_reason(project, slurm_cluster, tmp_path):
    _slurm_project(project, slurm_cluster, tmp_path, files={"t.py": "print(1)\n"})
    project.write({"aml_config/slurm.compute": slurm_cluster.compute_yaml(tmp_path / "ws").replace("debug", "nosuch")})
    result = project.run("-c", "slurm", "t.py")
    assert result.returncode == 1, result.output
    [record] = runs(project)
    assert record["status"] == "failed" and "sbatch refused the job" in record["reason"]
    assert "nosuch" in record["reason"] or "partition" in record["reason"].lower()


def test_slurm_kill_states_map_to_reasons_and_infrastructure_errors():
    """Beside the real TIMEOUT test above: the other states SLURM kills with."""
    from amlrun_slurm.jobscript import classify

    oom = classify("OUT_OF_MEMORY", None, False)
    assert (oom.status, oom.reason, oom.infrastructure_error) == \
        ("failed", "killed by SLURM: out of memory (OUT_OF_MEMORY)", False)
    for state, what in (("NODE_FAIL", "node failure"), ("PREEMPTED", "preemption")):
        ending = classify(state, None, False)
        assert ending.status == "failed" and ending.infrastructure_error, ending
        assert ending.reason == f"killed by SLURM: {what} ({state})"
    assert classify(None, 0, False).status == "completed"
    assert classify("COMPLETED", 2, False).reason == "exited with code 2"
    assert classify("CANCELLED", None, True).status == "canceled"
    assert classify("TIMEOUT", None, True).reason == "killed by SLURM: time limit (TIMEOUT)"


def test_the_plugin_is_registered_through_the_entry_point_group(project):
    from importlib.metadata import entry_points

    assert {ep.name: ep.value for ep in entry_points(group="amlrun")}.get("slurm") == "amlrun_slurm"
    project.write({"aml_config/slurm.compute": "type: slurm\n", "t.py": "print(1)\n"})
    blocked = project.run("-p", "no:slurm", "-c", "slurm", "t.py")
    assert blocked.returncode == 4 and "unknown compute target type 'slurm'" in blocked.output, blocked.output


def test_one_tick_follows_2000_tasks_files_and_logs(tmp_path):
    """The tick's task list travels on stdin (2,000 tasks once overflowed sh's argv): every
    started/exit file and every log's new bytes come back from one real sh command."""
    from amlrun_slurm.login import LocalShell
    from amlrun_slurm.tracker import Task, Tracker, run_capturing

    lines: dict[int, list[str]] = {}
    tasks = []
    for i in range(2000):
        run = f"20261202-000000-{i:08x}"
        (tmp_path / run).mkdir()
        (tmp_path / run / "log").write_text(f"line of {i}\npartial")
        if i % 2:
            (tmp_path / run / "started").write_text(f"1796190000.5 node{i} debug 9_{i}\n")
        tasks.append(Task(run, run, lambda line, i=i: lines.setdefault(i, []).append(line), lambda note: None,
                          array_id="9", index=i))
    (tmp_path / tasks[7].run_dir / "exit").write_text("0 1796190001.0 0\n")
    login = LocalShell()
    tracker = Tracker(lambda script, stdin=b"": run_capturing(login, script, stdin), str(tmp_path))
    tracker._last_query = time.monotonic()   # no squeue in this tick: no cluster here
    tracker._tick(tasks)
    assert all(lines[i][0] == f"line of {i}" for i in range(2000)), sorted(set(range(2000)) - set(lines))[:5]
    assert [t.node for t in tasks if t.started] == [f"node{i}" for i in range(1, 2000, 2)]
    assert tasks[7].ended.is_set() and tasks[7].ending.status == "completed" and lines[7] == ["line of 7", "partial"]
    assert not tasks[8].ended.is_set() and tasks[8].partial == b"partial"


def test_a_tracker_bug_ends_the_runs_instead_of_leaving_them_waiting():
    from amlrun_slurm.tracker import Task, Tracker

    scripts = []

    def broken(script, stdin=b""):
        scripts.append(script)
        if script.startswith("scancel"):
            return b""
        raise ValueError("a parsing bug")

    tracker = Tracker(broken, "/nonexistent")
    task = Task("r1", "r1", lambda line: None, lambda note: None, array_id="7", index=0)
    tracker.add([task])
    assert task.ended.wait(20)
    assert task.ending.status == "failed" and "SLURM tracker failed: ValueError('a parsing bug')" in task.ending.reason
    assert any(s.startswith("scancel 7_0") for s in scripts), scripts
