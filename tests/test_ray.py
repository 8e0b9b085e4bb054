"""The ``ray`` target (plugins/amlrun-ray) against a real Ray head on 127.0.0.1 (ray_fixture)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time

import pytest

SECRET = "ray-s3cret-Value-91"
HOSTILE = "a b;$(touch /tmp/amlrun-pwned) 'q' \"d\" `x` \\ \t ü\nnext"

PROBE = """
import hashlib, json, os, sys
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/sub/result.json", "w") as fh:
    json.dump({"argv": sys.argv[1:], "secret": hashlib.sha256(os.environ.get("TOKEN", "").encode()).hexdigest(),
               "plain": os.environ.get("PLAIN"), "cwd": os.getcwd(),
               "outputs_env": os.environ["AMLRUN_OUTPUTS_DIR"], "run": os.environ["AMLRUN_RUN_ID"]}, fh)
import amlrun_client  # the runtime client, on the import path
print("done", os.environ["AMLRUN_PARAM_I"])
print('##amlrun-metric {"name": "i", "value": %s}' % os.environ["AMLRUN_PARAM_I"])
"""


def _records(project) -> list[dict]:
    runs = project.root / ".amlrun" / "runs"
    return [json.loads((d / "record.json").read_text()) for d in sorted(runs.iterdir()) if (d / "record.json").exists()]


def _ray_project(project, head, compute: dict | None = None, runconfig: str = "Target: ray\n"):
    project.write({"aml_config/ray.compute": head.compute_yaml(**(compute or {})),
                   "aml_config/ray.runconfig": runconfig})
    return project


def _cell_jobs(head, pid: int) -> list[dict]:
    """The jobs of amlrun process ``pid`` that run cells (not its environment listing)."""
    return [j for j in head.jobs(pid) if j["metadata"].get("amlrun_cell_id") != "(environment)"]


def _wait_for(predicate, timeout: float, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def test_sweep_of_20_cells_with_max_parallel_4(project, ray_head):
    """20 cells, 4 at a time: 20 records with their Ray ids; argv byte-for-byte; secrets in the
    run's environment but in no job description; outputs/ and metrics back; one upload."""
    _ray_project(project, ray_head, {"maxParallel": 4},
                 "Target: ray\nEnvironmentVariables:\n  TOKEN: env:RAY_TEST_TOKEN\n  PLAIN: visible\n")
    project.write({"probe.py": PROBE})
    values = ",".join(str(i) for i in range(20))
    result = project.run("-c", "ray", "-n", "4", "probe.py", "-p", f"i={values}",
                         env={"RAY_TEST_TOKEN": SECRET}, timeout=600)
    assert result.returncode == 0, result.output
    assert "20 passed" in result.output
    records = _records(project)
    assert len(records) == 20
    ids = {r["extra"]["ray_submission_id"] for r in records}
    assert len(ids) == 20
    jobs = {j["submission_id"]: j for j in ray_head.jobs()}
    for record in records:
        extra = record["extra"]
        assert record["status"] == "completed" and record["exit_code"] == 0
        assert jobs[extra["ray_submission_id"]]["status"] == "SUCCEEDED"
        assert extra["ray_dashboard"] == f"{ray_head.address}/#/jobs/{extra['ray_submission_id']}"
        assert extra["ray_node_id"] and extra["ray_working_dir"].startswith("gcs://_ray_pkg_")
        assert record["metrics"]["i"] == int(record["params"]["i"])
        out = json.loads((project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "sub" /
                          "result.json").read_text())
        assert out["secret"] == hashlib.sha256(SECRET.encode()).hexdigest() and out["plain"] == "visible" and out["run"] == record["run_id"]
        assert out["outputs_env"] == out["cwd"] + "/outputs"
    # one snapshot package for the whole sweep, uploaded once
    assert len({r["extra"]["ray_working_dir"] for r in records}) == 1
    logs = "".join((project.root / ".amlrun" / "runs" / r["run_id"] / "log.txt").read_text() for r in records)
    assert logs.count("uploading the snapshot") <= 1
    # the secret is nowhere in what the job server tells about jobs, nor in amlrun's records
    listing = json.dumps(ray_head.get("/api/jobs/"))
    assert SECRET not in listing
    for record in records:
        assert SECRET not in json.dumps(ray_head.get(f"/api/jobs/{record['extra']['ray_submission_id']}"))
        assert SECRET not in (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
        assert SECRET not in json.dumps(record)


def test_hostile_argument_values_arrive_byte_for_byte(project, ray_head):
    """... and the compute file's runtimeEnv is merged into the job's (its env_vars beside the contract's)."""
    _ray_project(project, ray_head, {"runtimeEnv": {"env_vars": {"RAY_EXTRA": "merged"}}},
                 runconfig="Target: ray\nArgumentVector:\n  - $file\n  - --raw\n  - " + json.dumps(HOSTILE) + "\n")
    project.write({"echo.py": "import json, sys, os\nos.makedirs('outputs', exist_ok=True)\n"
                              "open('outputs/argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
                              "open('outputs/extra.txt', 'w').write(os.environ.get('RAY_EXTRA', 'missing'))\n"})
    result = project.run("-c", "ray", "echo.py", "-p", "v=" + json.dumps(HOSTILE).replace(",", "\\,"), timeout=300)
    (record,) = _records(project)
    assert result.returncode == 0, result.output
    argv = json.loads((project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "argv.json").read_text())
    assert argv[:2] == ["--raw", HOSTILE]
    assert argv[2] == "--v" and argv[3] == record["params"]["v"]
    assert (project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "extra.txt").read_text() == "merged"
    assert not os.path.exists("/tmp/amlrun-pwned")


ENV_HOSTILE = "$HOME ${PATH} $AMLRUN_RUN_ID 'q' \"d\" `x` ; ü\nnext"


def test_environment_values_arrive_byte_for_byte(project, ray_head):
    """Ray expands $VAR and ${VAR} in a runtime env's variables on the node: a parameter's and
    a run configuration's values must reach the script as written, not expanded."""
    _ray_project(project, ray_head,
                 runconfig="Target: ray\nEnvironmentVariables:\n  WEIRD: " + json.dumps(ENV_HOSTILE) + "\n")
    project.write({"env.py": "import json, os\nos.makedirs('outputs', exist_ok=True)\n"
                             "open('outputs/env.json', 'w').write(json.dumps("
                             "[os.environ['WEIRD'], os.environ['AMLRUN_PARAM_V']]))\n"})
    result = project.run("-c", "ray", "env.py", "-p", "v=" + ENV_HOSTILE.replace(",", "\\,"), timeout=300)
    (record,) = _records(project)
    assert result.returncode == 0, result.output
    assert record["params"]["v"] == ENV_HOSTILE
    seen = json.loads((project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "env.json").read_text())
    assert seen == [ENV_HOSTILE, ENV_HOSTILE]


def test_resources_reach_the_job(project, ray_head):
    """num_cpus/memory/custom resources become the job's entrypoint resources: the cluster
    holds the CPU and memory while the job runs (its usage report shows no custom
    resources), and two cells that each need the head's only
    ``amlrun_slot`` never overlap."""
    _ray_project(project, ray_head, {"maxParallel": 2,
                                     "resources": {"num_cpus": 0.5, "memory": "64MiB", "amlrun_slot": 1}})
    project.write({"span.py": "import os, time, json\nos.makedirs('outputs', exist_ok=True)\n"
                              "start = time.time(); time.sleep(4)\n"
                              "open('outputs/span.json', 'w').write(json.dumps([start, time.time()]))\n"})
    proc = project.popen("-c", "ray", "-n", "2", "span.py", "-p", "k=1,2")

    seen = []

    def held():
        usage = ray_head.get("/api/cluster_status")["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        seen.append({k: usage.get(k, [0])[0] for k in ("CPU", "memory")})
        return seen[-1] == {"CPU": 0.5, "memory": 64 * 2**20}

    try:
        _wait_for(held, 120, lambda: f"the cluster to hold 0.5 CPU and 64 MiB: {sorted(set(map(str, seen)))}")
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    spans = [json.loads((project.root / ".amlrun" / "runs" / r["run_id"] / "outputs" / "span.json").read_text())
             for r in _records(project)]
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert a_end <= b_start, "the two jobs ran at once although each held the only amlrun_slot"


def test_script_exit_code_is_the_cells_failure_and_cluster_failures_are_infrastructure(project, ray_head):
    _ray_project(project, ray_head)
    project.write({"fail.py": "import sys\nprint('about to fail')\nsys.exit(3)\n",
                   "aml_config/broken.compute": ray_head.compute_yaml(
                       runtimeEnv={"conda": {"dependencies": ["amlrun-no-such-package"]}}),
                   "ok.py": "print('never runs')\n"})
    result = project.run("-c", "ray", "fail.py", timeout=300)
    assert result.returncode == 1, result.output
    (record,) = _records(project)
    assert record["status"] == "failed" and record["exit_code"] == 3
    assert record["reason"] == "exited with code 3"
    assert "about to fail" in (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    result = project.run("-c", "broken", "ok.py", timeout=300)
    assert result.returncode == 1, result.output
    broken = [r for r in _records(project) if r["target"] == "broken"][0]
    assert broken["status"] == "failed" and broken["exit_code"] is None
    assert broken["extra"]["ray_error_type"] == "RUNTIME_ENV_SETUP_FAILURE"
    assert broken["reason"].startswith("the job's runtime environment could not be set up")
    assert "ERROR" in result.output


def test_a_script_killed_by_sigkill_is_an_infrastructure_error(project, ray_head):
    """What the kernel's (or Ray's) out-of-memory killer does to a script: SIGKILL. The run
    is an infrastructure error naming the node, not the script's failure."""
    _ray_project(project, ray_head)
    project.write({"victim.py": "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(600)\n"})
    proc = project.popen("-c", "ray", "victim.py")
    runs = project.root / ".amlrun" / "runs"

    def script_pid():
        for log in runs.glob("*/log.txt") if runs.is_dir() else ():
            for line in log.read_text().splitlines():
                if line.startswith("pid "):
                    return int(line.split()[1])
        return None

    try:
        os.kill(_wait_for(script_pid, 180, "the script to print its pid"), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    (record,) = _records(project)
    assert record["status"] == "failed" and record["exit_code"] in (-9, 137), record
    node = record["extra"]["ray_node_ip"]
    assert record["reason"] == f"killed by SIGKILL on Ray node {node} (out of memory?)"
    assert "ERROR" in out


def test_outputs_come_back_through_outputs_storage(project, ray_head, tmp_path):
    storage = tmp_path / "storage"
    _ray_project(project, ray_head, {"outputsStorage": str(storage)})
    project.write({"out.py": "import os\nos.makedirs('outputs/deep/er', exist_ok=True)\n"
                             "open('outputs/deep/er/x.txt', 'w').write('payload')\n"
                             "os.symlink('/etc/passwd', 'outputs/link')\n"})
    result = project.run("-c", "ray", "out.py", timeout=300)
    assert result.returncode == 0, result.output
    (record,) = _records(project)
    outputs = project.root / ".amlrun" / "runs" / record["run_id"] / "outputs"
    assert (outputs / "deep" / "er" / "x.txt").read_text() == "payload"
    assert not (outputs / "link").exists() and not (outputs / "link").is_symlink()
    assert "refused an output entry" in (outputs.parent / "log.txt").read_text()
    assert not (storage / project.root.name / record["run_id"]).exists()   # cleaned after the fetch


def test_ctrl_c_leaves_no_job_running_or_pending(project, ray_head):
    _ray_project(project, ray_head, {"maxParallel": 2})
    project.write({"sleep.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"})
    proc = project.popen("-c", "ray", "-n", "2", "sleep.py", "-p", "k=1,2,3")
    try:
        _wait_for(lambda: len([j for j in _cell_jobs(ray_head, proc.pid) if j["status"] == "RUNNING"]) == 2,
                  120, "two RUNNING jobs")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    assert not [j for j in ray_head.jobs(proc.pid) if j["status"] in ("RUNNING", "PENDING")]
    jobs = _cell_jobs(ray_head, proc.pid)
    assert len(jobs) == 2                                    # the third cell was never submitted
    assert {j["status"] for j in jobs} == {"STOPPED"}
    assert {r["status"] for r in _records(project) if r["status"] != "preparing"} <= {"canceled"}


def test_timeout_stops_the_job(project, ray_head):
    _ray_project(project, ray_head)
    project.write({"slow.py": "import time\ntime.sleep(600)\n"})
    result = project.run("-c", "ray", "--timeout", "8", "slow.py", timeout=300)
    assert result.returncode == 1, result.output
    (record,) = _records(project)
    assert record["status"] == "canceled" and record["reason"].startswith("timed out after 8s")
    assert ray_head.get(f"/api/jobs/{record['extra']['ray_submission_id']}")["status"] == "STOPPED"


def test_jobs_of_a_killed_amlrun_are_stopped_by_the_next_session(project, ray_head):
    _ray_project(project, ray_head)
    project.write({"sleep.py": "import time\ntime.sleep(600)\n", "quick.py": "print('quick')\n"})
    proc = project.popen("-c", "ray", "sleep.py")
    try:
        (orphan,) = _wait_for(lambda: [j for j in _cell_jobs(ray_head, proc.pid) if j["status"] == "RUNNING"],
                              120, "a RUNNING job")
    finally:
        proc.kill()                                          # kill -9: no chance to stop its job
        proc.communicate()
    assert ray_head.get(f"/api/jobs/{orphan['submission_id']}")["status"] == "RUNNING"
    result = project.run("-c", "ray", "quick.py", timeout=300)
    assert result.returncode == 0, result.output
    quick = [r for r in _records(project) if r["script"] == "quick.py"][0]
    log = (project.root / ".amlrun" / "runs" / quick["run_id"] / "log.txt").read_text()
    assert f"stopped 1 Ray job(s) left by an amlrun that is gone: {orphan['submission_id']}" in log, log
    _wait_for(lambda: ray_head.get(f"/api/jobs/{orphan['submission_id']}")["status"] == "STOPPED", 60,
              "the orphan to be STOPPED")


class Proxy:
    """A TCP relay on 127.0.0.1 to the head's job server that can be cut (listener and every
    connection closed, new ones refused) and restored on the same port: a job server that
    the network loses while a job runs."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_a_job_server_lost_longer_than_server_lost_seconds_fails_the_run_as_infrastructure(project, ray_head):
    """The job server stops answering while a job runs: after ``serverLostSeconds`` the cell is
    an ERROR naming the lost server (``--retries`` material), and the job left running there
    is stopped once the server answers again."""
    host, port = ray_head.address.removeprefix("http://").rsplit(":", 1)
    proxy = Proxy((host, int(port)))
    try:
        project.write({"aml_config/ray.compute": f"type: ray\naddress: http://127.0.0.1:{proxy.port}\n"
                                                 "serverLostSeconds: 5\n",
                       "aml_config/ray.runconfig": "Target: ray\n",
                       "sleep.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"})
        proc = project.popen("-c", "ray", "sleep.py")
        try:
            (job,) = _wait_for(lambda: [j for j in _cell_jobs(ray_head, proc.pid) if j["status"] == "RUNNING"],
                               120, "a RUNNING job")
            time.sleep(1)  # its log followed at least once
            proxy.cut()
            cut_at = time.monotonic()
            out, _ = proc.communicate(timeout=120)
            ended_after = time.monotonic() - cut_at
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, out
        assert 5 <= ended_after < 5 + 40, (ended_after, out)   # the window, a poll timeout, the session's end
        (record,) = [r for r in _records(project) if r["script"] == "sleep.py"]
        assert record["status"] == "failed", record
        assert f"lost the Ray job server http://127.0.0.1:{proxy.port}" in record["reason"], record["reason"]
        assert "ERROR sleep.py::ray" in out, out
        # the job still runs on the cluster; once the server answers, the next session stops it
        assert ray_head.get(f"/api/jobs/{job['submission_id']}")["status"] == "RUNNING"
        proxy.restore()
        project.write({"quick.py": "print('quick')\n"})
        result = project.run("-c", "ray", "quick.py", timeout=300)
        assert result.returncode == 0, result.output
        _wait_for(lambda: ray_head.get(f"/api/jobs/{job['submission_id']}")["status"] == "STOPPED", 60,
                  "the given-up job to be STOPPED")
    finally:
        proxy.cut()


def test_doctor_checks_server_version_resources_and_a_test_job(project, ray_head):
    _ray_project(project, ray_head)
    result = project.run("doctor", "-c", "ray", timeout=300)
    assert result.returncode == 0, result.output
    assert "ok   job server: " + ray_head.address + " answers, Ray 2." in result.output
    assert "ok   cluster: 1 node(s) alive: 2 CPU" in result.output and "1 amlrun_slot" in result.output
    assert "ok   test job: ran in" in result.output


def test_doctor_reports_a_job_server_that_does_not_answer(project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project.write({"aml_config/ray.compute": f"type: ray\naddress: 127.0.0.1:{port}\n"})
    result = project.run("doctor", "-c", "ray")
    assert result.returncode == 1
    assert "FAIL job server: Ray job server http://127.0.0.1:" in result.output and "does not answer" in result.output


@pytest.mark.parametrize("compute, message", [
    ("type: ray\n", "aml_config/ray.compute: a 'ray' target needs 'address'"),
    ("type: ray\naddress: ftp://x\n", "aml_config/ray.compute: 'address' must be the Ray job server"),
    ("type: ray\naddress: h:1\nmaxParallel: 0\n", "aml_config/ray.compute: 'maxParallel' must be a whole number"),
    ("type: ray\naddress: h:1\nresources: {num_cpus: -1}\n", "'resources.num_cpus' must be a number of at least 0"),
    ("type: ray\naddress: h:1\nresources: {memory: lots}\n", "'resources.memory' must be bytes or a size"),
    ("type: ray\naddress: h:1\nresources: {CPU: 1}\n", "'resources.CPU': write num_cpus, num_gpus or memory"),
    ("type: ray\naddress: h:1\nruntimeEnv: {working_dir: x}\n", "'runtimeEnv.working_dir' is set by amlrun"),
    ("type: ray\naddress: h:1\nruntimeEnv: {env_vars: {A: 'secret:X'}}\n", "'runtimeEnv.env_vars.A' is a secret"),
    ("type: ray\naddress: h:1\nruntimeEnv: [1]\n", "'runtimeEnv' must be a mapping"),
    ("type: ray\naddress: h:1\nheaders: [x]\n", "'headers' must map header names"),
    ("type: ray\naddress: h:1\noutputsStorage: 3\n", "'outputsStorage' must be a folder or a URI"),
    ("type: ray\naddress: h:1\nserverLostSeconds: 0\n", "'serverLostSeconds' must be a number of seconds"),
])
def test_configuration_mistakes_are_one_line_errors(project, compute, message):
    project.write({"aml_config/ray.compute": compute, "x.py": "print(1)\n"})
    result = project.run("-c", "ray", "x.py")
    assert result.returncode == 4, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_auth_headers_are_sent_and_never_shown(project, ray_head):
    """A header value given by secret reference reaches the server (here: Ray ignores it) and
    appears in no output or record."""
    token = "Bearer hdr-" + SECRET
    _ray_project(project, ray_head, {"headers": {"Authorization": "env:RAY_TEST_AUTH"}})
    project.write({"x.py": "print('with headers')\n"})
    result = project.run("-c", "ray", "x.py", env={"RAY_TEST_AUTH": token}, timeout=300)
    assert result.returncode == 0, result.output
    assert token not in result.output
    (record,) = _records(project)
    assert token not in json.dumps(record)


def test_dependency_file_becomes_the_jobs_pip_list(project, ray_head):
    """conda_dependencies.yml's pip packages are installed by Ray into the job's runtime env."""
    _ray_project(project, ray_head)
    project.write({"aml_config/conda_dependencies.yml": "dependencies:\n  - python=3.11\n  - pip:\n    - six\n",
                   "uses.py": "import six\nprint('six from', six.__file__)\n"})
    result = project.run("-c", "ray", "uses.py", timeout=600)
    assert result.returncode == 0, result.output
    (record,) = [r for r in _records(project) if r["script"] == "uses.py"]
    job = ray_head.get(f"/api/jobs/{record['extra']['ray_submission_id']}")
    pip = job["runtime_env"]["pip"]
    assert (pip["packages"] if isinstance(pip, dict) else pip) == ["six"]
    log = (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    assert "six from " in log and "/pip/" in log      # Ray's per-hash virtualenv, not the head's Python


@pytest.mark.parametrize("given, url", [
    ("http://head:8265", "http://head:8265"),
    ("head", "http://head:8265"),
    ("head:9000/", "http://head:9000"),
    ("ray://head:10001", "http://head:8265"),
    ("https://ray.example.com/proxy/", "https://ray.example.com/proxy"),
    ("https://ray.example.com:8443", "https://ray.example.com:8443"),
])
def test_address_forms(given, url):
    from amlrun_ray.settings import job_server_url

    assert job_server_url(given, "ray.compute") == url
