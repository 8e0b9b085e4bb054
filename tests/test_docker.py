"""The docker target against the real engine: environment images built, cached and
rebuilt by content hash; code mounted or copied per run; outputs, env vars, params;
failures, timeouts, Ctrl-C and kill -9 leaving no container; the missing engine.

Builds are few: one trivial environment image shared by most tests (no packages), two
pip builds (``six``, then ``six`` + ``tomli``), and small one-off images.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from dockerhelp import BASE, BUILD_ENV_VARS, HOST_CA, NOCERT_BASE, USER_BASE, derived_image, engine, owned_by

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client():
    return engine()


@pytest.fixture(autouse=True)
def _no_build_env(monkeypatch):
    for name in BUILD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)


@pytest.fixture
def throwaway_images(client):
    """Tags of images a test builds for itself; removed afterwards."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except Exception:
            pass


def compute(image: str = BASE, **keys) -> str:
    lines = ["type: docker", f"baseDockerImage: {image}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def image_tags(output: str) -> list[str]:
    return [w for line in output.splitlines() if "building environment image" in line
            for w in line.split() if w.startswith("amlrun/env:")]


def wait_for_line(proc, text: str, timeout: float = 120) -> list[str]:
    seen: list[str] = []
    done = threading.Event()

    def read():
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), f"never saw {text!r}:\n" + "".join(seen)
    return seen


SLEEPER = """
import time
print("started", flush=True)
time.sleep(120)
print("not reached")
"""


# -- environment images -------------------------------------------------------------------------


def test_first_build_cached_run_code_change_and_dependency_change(project, client, throwaway_images):
    """pip packages through a CA bundle setting (the base trusts only Debian's stock CAs)."""
    derived_image(client, NOCERT_BASE)
    token = f"amlrun-{uuid.uuid4().hex[:8]}.invalid"  # a fresh hash for this test: the first run must build
    project.write({
        "aml_config/docker.compute": compute(NOCERT_BASE, caBundle=HOST_CA, pipTrustedHost=token),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - python=3.11\n  - pip:\n    - six\n",
        "train.py": "import os, six\nprint('six', six.__version__, 'ca', os.environ.get('SSL_CERT_FILE'))\n",
    })
    first = project.run("-c", "docker", "train.py")
    assert first.returncode == 0, first.output
    built = image_tags(first.output)
    throwaway_images.extend(built)
    assert len(built) == 1, first.output
    assert "six 1." in first.output and "ca /opt/amlrun/ca-bundle.crt" in first.output
    image = client.images.get(built[0])
    assert image.labels["amlrun.managed"] == "1"
    assert {"train.py"}.isdisjoint(_image_files(client, built[0]))  # no project code in the image

    second = project.run("-c", "docker", "train.py")
    assert second.returncode == 0, second.output
    assert "building" not in second.output and "six 1." in second.output

    project.write({"train.py": "import six\nprint('edited code', six.__version__)\n"})
    third = project.run("-c", "docker", "train.py")
    assert third.returncode == 0, third.output
    assert "building" not in third.output and "edited code" in third.output

    project.write({
        "aml_config/conda_dependencies.yml": "dependencies:\n  - pip:\n    - six\n    - tomli\n",
        "train.py": "import six, tomli\nprint('tomli', tomli.loads('a = 1'))\n",
    })
    fourth = project.run("-c", "docker", "train.py")
    rebuilt = image_tags(fourth.output)
    throwaway_images.extend(rebuilt)
    assert fourth.returncode == 0, fourth.output
    assert len(rebuilt) == 1 and rebuilt != built, fourth.output
    assert "tomli {'a': 1}" in fourth.output


def _image_files(client, tag: str) -> set[str]:
    out = client.containers.run(tag, ["sh", "-c", "ls / /opt/amlrun /opt/amlrun/build"], remove=True)
    return set(out.decode().split())


def test_failing_build_is_the_cells_error_with_the_build_log_tail(project, client):
    """Without the CA bundle pip cannot reach the index from the stock-CA base image."""
    derived_image(client, NOCERT_BASE)
    project.write({
        "aml_config/docker.compute": compute(NOCERT_BASE, pipTrustedHost=f"x{uuid.uuid4().hex[:6]}.invalid"),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - pip:\n    - six\n",
        "a.py": "print('never')\n", "b.py": "print('never')\n",
    })
    result = project.run("-c", "docker", "-c", "local", "a.py", "b.py", env={"PIP_DEFAULT_TIMEOUT": "5"})
    assert result.returncode == 1, result.output
    assert "ERROR a.py::docker" in result.output and "ERROR b.py::docker" in result.output
    assert "building the environment image failed: pip install failed (six)" in result.output
    assert "No matching distribution found for six" in result.output  # pip's own words, from the tail
    assert "PASSED a.py::local" in result.output
    assert "Traceback" not in result.output


def test_conda_packages_on_an_image_without_conda_are_a_clear_error(project, client):
    project.write({
        "aml_config/docker.compute": compute(),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - numpy=1.26\n  - pip:\n    - six\n",
        "a.py": "print('never')\n",
    })
    result = project.run("-c", "docker", "a.py")
    assert result.returncode == 1, result.output
    assert "conda packages (numpy=1.26) need conda, mamba or micromamba" in result.output
    assert BASE in result.output


def test_two_processes_never_build_the_same_image_at_once(project, client, throwaway_images):
    project.write({"aml_config/docker.compute": compute(pipTrustedHost=f"p{uuid.uuid4().hex[:6]}.invalid")})
    procs = [project.popen("prepare", "-c", "docker") for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    joined = "\n".join(outputs)
    throwaway_images.extend(image_tags(joined))
    assert joined.count("building environment image") == 1, joined
    assert joined.count("cached)") == 1, joined


def test_prepare_environment_false_fails_fast_until_prepare_builds(project, client, throwaway_images):
    project.write({
        "aml_config/gpu.compute": compute(pipTrustedHost=f"q{uuid.uuid4().hex[:6]}.invalid"),
        "aml_config/gpu.runconfig": "Target: gpu\nPrepareEnvironment: false\n",
        "a.py": "print('ran')\n",
    })
    started = time.monotonic()
    result = project.run("-c", "gpu", "a.py")
    assert result.returncode != 0 and time.monotonic() - started < 30, result.output
    assert "run: amlrun prepare -c gpu" in result.output and "building" not in result.output

    prepared = project.run("prepare", "-c", "gpu")
    throwaway_images.extend(image_tags(prepared.output))
    assert prepared.returncode == 0 and "built in" in prepared.output, prepared.output
    again = project.run("prepare", "-c", "gpu")
    assert again.returncode == 0 and "cached" in again.output, again.output
    ran = project.run("-c", "gpu", "a.py")
    assert ran.returncode == 0 and "ran" in ran.output, ran.output


def test_prepare_reports_a_bad_target_and_exits_4(project):
    result = project.run("prepare", "-c", "nosuch")
    assert result.returncode == 4 and "unknown target 'nosuch'" in result.output


# -- runs ---------------------------------------------------------------------------------------


OWNERSHIP_SCRIPT = """
import os, pathlib
os.makedirs("outputs/sub", exist_ok=True)
pathlib.Path("outputs/sub/result.txt").write_text(f"uid={os.getuid()} cwd={os.getcwd()}")
print("outputs env", os.environ["AMLRUN_OUTPUTS_DIR"])
"""


@pytest.mark.parametrize("shared", [True, False], ids=["mounted", "copied"])
def test_code_delivery_and_outputs_owned_by_the_invoking_user(project, client, shared):
    """The base image's user is 1234: mounted runs run as the invoking user, copied runs'
    files are re-owned on the way back; either way nothing lands in the project tree."""
    derived_image(client, USER_BASE)
    project.write({"aml_config/docker.compute": compute(USER_BASE, sharedVolumes=shared), "own.py": OWNERSHIP_SCRIPT})
    result = project.run("-c", "docker", "own.py")
    assert result.returncode == 0, result.output
    assert "outputs env /amlrun/run/outputs" in result.output
    [record] = project.records()
    produced = project.run_dir(record) / "outputs" / "sub" / "result.txt"
    text = produced.read_text()
    expected_uid = os.getuid() if shared else 1234
    assert text == f"uid={expected_uid} cwd=/amlrun/run"
    assert produced.stat().st_uid == os.getuid() and produced.parent.stat().st_uid == os.getuid()
    assert not (project.root / "outputs").exists()
    assert [a["path"] for a in record["artifacts"]] == ["outputs/sub/result.txt"], record["artifacts"]


ENV_SCRIPT = """
import argparse, os
from amlrun_client import log
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
args = parser.parse_args()
print("FOO", os.environ.get("FOO"), "lr", args.lr, "env lr", os.environ.get("AMLRUN_PARAM_LR"),
      "share", os.environ.get("AZUREML_NATIVE_SHARE_DIRECTORY"), "run", os.environ.get("AMLRUN_RUN_ID"))
log("loss", 1.0 - args.lr)
os.makedirs("outputs", exist_ok=True)
open("outputs/lr.txt", "w").write(str(args.lr))
share = os.environ.get("AMLRUN_SHARE_DIRECTORY")
if share:
    open(os.path.join(share, "seen-" + str(args.lr)), "w").write("x")
"""


def test_same_sweep_on_local_and_docker_with_env_vars_params_and_share(project, client, tmp_path):
    share = tmp_path / "share"
    project.write({
        "aml_config/docker.compute": compute(nativeSharedDirectory=str(share)),
        "aml_config/docker.runconfig": "Target: docker\nEnvironmentVariables:\n  FOO: bar\n",
        "aml_config/local.runconfig": "Target: local\nEnvironmentVariables:\n  FOO: bar\n",
        "experiments/sweep.py": ENV_SCRIPT,
    })
    result = project.run("-c", "local", "-c", "docker", "experiments/", "-p", "lr=0.1,0.2")
    assert result.returncode == 0, result.output
    assert result.output.count("PASSED") == 4, result.output
    found = project.records()
    assert sorted((r["target"], float(r["params"]["lr"])) for r in found) == [
        ("docker", 0.1), ("docker", 0.2), ("local", 0.1), ("local", 0.2)]
    for record in found:
        run_dir = project.run_dir(record)
        lr = float(record["params"]["lr"])
        assert record["status"] == "completed" and record["metrics"]["loss"] == pytest.approx(1 - lr)
        assert (run_dir / "outputs" / "lr.txt").read_text() == str(lr)
        log = (run_dir / "log.txt").read_text()
        assert f"FOO bar lr {lr} env lr {record['params']['lr']}" in log
        if record["target"] == "docker":
            assert f"share /amlrun/share/ run {record['run_id']}" in log   # Workbench's name ends with a slash
    assert sorted(p.name for p in (share / "proj" / "docker").iterdir()) == ["seen-0.1", "seen-0.2"]


BIG_OUTPUTS = """
import os, sys
os.makedirs("outputs/big", exist_ok=True)
block = os.urandom(1 << 20)
for n in range(3):
    with open(f"outputs/big/part{n}.bin", "wb") as fh:
        for _ in range(100):
            fh.write(block)
sys.stdout.write("x" * 40000 + "\\n")        # stored by the engine as three stamped entries
sys.stdout.write("y" * (8 << 20) + "\\n")    # one 8 MiB line
print("done")
"""

#: runs amlrun (argv) and prints the peak resident size of its process, in KiB
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def test_copied_outputs_and_long_lines_stream_through_a_small_amlrun(project, client):
    """``sharedVolumes: false``: 300 MiB of outputs come back to disk, and long lines through
    the log, while amlrun's own peak RSS stays far below either."""
    project.write({"aml_config/docker.compute": compute(sharedVolumes=False), "big.py": BIG_OUTPUTS})
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "amlrun", "-c", "docker",
                           "big.py"], cwd=project.root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    peak_mib = int(proc.stdout.rsplit("peak-rss-kib", 1)[1].split()[0]) / 1024
    [record] = project.records()
    run_dir = project.root / ".amlrun" / "runs" / record["run_id"]
    sizes = [(run_dir / "outputs" / "big" / f"part{n}.bin").stat().st_size for n in range(3)]
    assert sizes == [100 << 20] * 3
    print(f"amlrun peak RSS {peak_mib:.0f} MiB for 300 MiB of outputs")
    assert peak_mib < 150, f"amlrun's peak RSS was {peak_mib:.0f} MiB"
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert "x" * 40000 in lines, "the 40000-character line was not delivered whole"
    assert sum(len(line) for line in lines if line and set(line) == {"y"}) == 8 << 20


def test_failing_script_fails_its_cell(project, client):
    project.write({"aml_config/docker.compute": compute(sharedVolumes=False),
                   "bad.py": "import sys\nprint('about to fail')\nsys.exit(3)\n"})
    result = project.run("-c", "docker", "bad.py")
    assert result.returncode == 1, result.output
    assert "FAILED bad.py::docker" in result.output and "about to fail" in result.output
    [record] = project.records()
    assert record["status"] == "failed" and record["exit_code"] == 3 and record["reason"] == "exited with code 3"


def test_resources_and_run_arguments_reach_the_container(project, client):
    script = """
import os
def read(*paths):
    for p in paths:
        if os.path.exists(p):
            return open(p).read().split()[0]
print("mem", read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
print("quota", read("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
st = os.statvfs("/dev/shm"); print("shm", st.f_blocks * st.f_frsize)
print("extra", os.environ.get("EXTRA"))
"""
    project.write({
        "aml_config/docker.compute": compute(cpus=1.5, memory="256m", shmSize="64m",
                                             dockerRunArguments=["--cap-add", "SYS_PTRACE", "-e", "EXTRA=yes"]),
        "res.py": script,
    })
    result = project.run("-c", "docker", "res.py")
    assert result.returncode == 0, result.output
    assert f"mem {256 * 2**20}" in result.output and "quota 150000" in result.output
    assert f"shm {64 * 2**20}" in result.output and "extra yes" in result.output
    assert "unknown key" not in result.output.lower()


SECRET_SCRIPT = """
import hashlib, os, time
os.makedirs("outputs", exist_ok=True)
open("outputs/seen.txt", "w").write(hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest()
                                    + " " + os.environ["PLAIN"] + " " + str(os.path.exists("/amlrun/secrets/env")))
print("started", flush=True)
time.sleep(float(os.environ["HOLD"]))
"""


@pytest.mark.parametrize("shared,user", [(True, ""), (False, ""), (False, "nobody"), (False, "4321:4321")],
                         ids=["mounted", "copied", "copied-named-user", "copied-numeric-user"])
def test_secrets_reach_the_script_but_not_the_containers_configuration(project, client, shared, user):
    """``docker inspect`` of the running container shows no secret value, on a container of
    the image's user, a named user and a numeric one, code mounted or copied."""
    args = {"dockerRunArguments": ["--user", user]} if user else {}
    assert_secret_stays_out_of_inspect(project, client, compute(sharedVolumes=shared, **args))


@pytest.mark.ssh
@pytest.mark.parametrize("shared", [True, False], ids=["synced", "copied"])
def test_remotedocker_secrets_stay_out_of_the_containers_configuration(project, client, sshd, shared):
    """The same on the VM's engine over SSH (the VM is this machine: its engine is ``client``)."""
    text = sshd.compute_yaml("remotedocker", extra=f"baseDockerImage: {BASE}\nsharedVolumes: {str(shared).lower()}\n")
    assert_secret_stays_out_of_inspect(project, client, text)


def assert_secret_stays_out_of_inspect(project, client, compute_text: str) -> None:
    token = "tok-" + uuid.uuid4().hex
    project.write({
        "aml_config/docker.compute": compute_text,
        "aml_config/secure.runconfig": "Target: docker\nEnvironmentVariables:\n  API_TOKEN: secret:MY_TOKEN\n"
                                       "  PLAIN: visible\n  HOLD: '8'\n",
        "s.py": SECRET_SCRIPT,
    })
    proc = project.popen("-c", "secure", "s.py", env={"MY_TOKEN": token})
    try:
        seen = wait_for_line(proc, "started", timeout=300)
        [container] = owned_by(client, proc.pid)
        described = json.dumps(container.attrs)
        assert token not in described and "API_TOKEN" not in described, described
        assert "PLAIN=visible" in container.attrs["Config"]["Env"]
        assert proc.wait(300) == 0, "".join(seen) + proc.stdout.read()
    finally:
        proc.kill()
    [record] = project.records()
    seen_file = project.root / ".amlrun" / "runs" / record["run_id"] / "outputs" / "seen.txt"
    assert seen_file.read_text() == hashlib.sha256(token.encode()).hexdigest() + " visible False"


def test_nvidia_docker_requests_gpus_from_the_engine(project, client):
    """No GPU here: the engine refuses the device request, which proves it was made."""
    project.write({"aml_config/docker.compute": compute(nvidiaDocker=True), "g.py": "print('gpu')\n"})
    result = project.run("-c", "docker", "g.py")
    assert result.returncode == 1, result.output
    assert "the engine cannot provide GPUs (nvidiaDocker: true)" in result.output
    assert "[[gpu]]" in result.output


def test_create_options_carry_the_device_request_and_resources(project):
    """The request itself (beside the real-engine test above)."""
    import docker.types

    from amlrun.config import ComputeTarget, RunConfig
    from amlrun.project import Project
    from amlrun.targets.base import Job, PreparedEnvironment, TargetContext
    from amlrun.targets.docker.secretfile import unwrap
    from amlrun.targets.docker.target import DockerTarget

    target = DockerTarget(
        ComputeTarget("d", "docker", {"baseDockerImage": BASE, "nvidiaDocker": True, "cpus": 2, "shmSize": "1g",
                                      "sharedVolumes": False}),
        TargetContext(Project(project.root), project.root / "cache"))
    job = Job("r1", "a.py::d", project.root, ("a.py",), {"X": "1"}, project.root / "out", RunConfig("d", "d"))
    opts = target.create_options(job, PreparedEnvironment("d", python="/opt/amlrun/bin/python", image="img"))
    assert opts["device_requests"] == [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert opts["nano_cpus"] == 2_000_000_000 and opts["shm_size"] == "1g"
    assert opts["command"][:2] == ["/bin/sh", "-c"] and unwrap(opts["command"]) == ["/opt/amlrun/bin/python", "a.py"]
    assert "user" not in opts and opts["volumes"] == []
    assert opts["labels"]["amlrun.run-id"] == "r1" and opts["labels"]["amlrun.owner-pid"] == str(os.getpid())


def test_code_is_mounted_by_default_only_from_a_local_engine(project, monkeypatch):
    from amlrun.project import Project
    from amlrun.targets.base import TargetContext
    from amlrun.targets.docker.target import DockerTarget

    target = DockerTarget(_compute(), TargetContext(Project(project.root), project.root / "cache"))
    assert target.shared_volumes() is True
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert target.shared_volumes() is False
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert target.shared_volumes() is True


# -- stopping ------------------------------------------------------------------------------------


def test_timeout_cancels_and_removes_the_container(project, client):
    project.write({"aml_config/docker.compute": compute(sharedVolumes=False), "sleep.py": SLEEPER})
    started = time.monotonic()
    result = project.run("-c", "docker", "--timeout", "3", "sleep.py")
    assert time.monotonic() - started < 60, result.output
    assert result.returncode == 1 and "timed out after 3s" in result.output, result.output
    [record] = project.records()
    assert record["status"] == "canceled"
    assert not client.containers.list(all=True, filters={"label": f"amlrun.run-id={record['run_id']}"})


def test_ctrl_c_stops_the_container_and_exits_2(project, client):
    project.write({"aml_config/docker.compute": compute(), "sleep.py": SLEEPER})
    proc = project.popen("-c", "docker", "sleep.py")
    try:
        wait_for_line(proc, "started")
        assert owned_by(client, proc.pid), "the run's container should be running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 2
    finally:
        proc.kill()
    assert owned_by(client, proc.pid) == []
    [record] = project.records()
    assert record["status"] == "canceled"


def test_ctrl_c_during_a_build_abandons_it_at_once(project, client):
    """pip without the CA bundle retries for many seconds: Ctrl-C must not wait for it."""
    derived_image(client, NOCERT_BASE)
    project.write({
        "aml_config/docker.compute": compute(NOCERT_BASE, pipTrustedHost=f"c{uuid.uuid4().hex[:6]}.invalid"),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - pip:\n    - six\n",
        "a.py": "print('never')\n",
    })
    proc = project.popen("-c", "docker", "-v", "a.py")
    try:
        wait_for_line(proc, "amlrun: pip install")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        assert proc.wait(30) == 2
        assert time.monotonic() - interrupted < 15  # pip alone retries for far longer; the margin is for a loaded machine
    finally:
        proc.kill()
    def building():
        return [c for c in client.containers.list(all=True)
                if "/opt/amlrun/build/install.sh" in " ".join(c.attrs["Config"].get("Cmd") or [])]

    deadline = time.monotonic() + 15  # the engine removes the killed step's container (forcerm)
    while building() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert building() == []


@pytest.mark.parametrize("command", [("-c", "local", "--collect-only"), ("history", "list"), ("targets",),
                                     ("doctor", "-c", "local")], ids=["collect-only", "history", "targets", "doctor"])
def test_kill_9_then_any_amlrun_command_removes_the_leftover(project, client, command):
    project.write({"aml_config/docker.compute": compute(), "sleep.py": SLEEPER})
    proc = project.popen("-c", "docker", "sleep.py")
    wait_for_line(proc, "started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert len(owned_by(client, proc.pid)) == 1  # the container outlived amlrun
    result = project.run(*command)
    assert result.returncode in (0, 1, 5), result.output
    assert owned_by(client, proc.pid) == []


def test_docker_target_start_up_removes_leftovers_of_dead_amlrun_processes(project, client):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = client.containers.create(BASE, ["sleep", "60"], labels={
        "amlrun.managed": "1", "amlrun.owner-pid": str(dead.pid), "amlrun.owner-start": "1"})
    project.write({"aml_config/docker.compute": compute(), "a.py": "print('ok')\n"})
    try:
        result = project.run("-c", "docker", "a.py")
        assert result.returncode == 0, result.output
        assert not client.containers.list(all=True, filters={"id": leftover.id})
    finally:
        try:
            leftover.remove(force=True)
        except Exception:
            pass


# -- no engine -----------------------------------------------------------------------------------


def test_missing_engine_is_one_line_exit_4_and_local_still_runs(project, tmp_path):
    dead = f"unix://{tmp_path}/no-engine.sock"
    project.write({"aml_config/docker.compute": compute(), "a.py": "print('ok')\n", "b.py": "print('ok')\n"})
    result = project.run("-c", "local", "-c", "docker", "a.py", "b.py", env={"DOCKER_HOST": dead})
    assert result.returncode == 4, result.output
    line = f"no Docker engine answers at DOCKER_HOST={dead}"
    assert line in result.output and "Traceback" not in result.output
    assert "PASSED a.py::local" in result.output and "PASSED b.py::local" in result.output
    assert "ERROR a.py::docker" in result.output and "ERROR b.py::docker" in result.output
    prepared = project.run("prepare", "-c", "docker", env={"DOCKER_HOST": dead})
    assert prepared.returncode == 4 and line in prepared.output and len(prepared.output.strip().splitlines()) == 1
    doctor = project.run("doctor", "-c", "docker", env={"DOCKER_HOST": dead})
    assert doctor.returncode != 0 and "FAIL docker engine" in doctor.output and line in doctor.output


def test_doctor_checks_engine_base_image_and_disk(project, client):
    project.write({"aml_config/docker.compute": compute(), "aml_config/gone.compute": compute("amlrun-test/gone:x")})
    ok = project.run("doctor", "-c", "docker")
    assert ok.returncode == 0, ok.output
    assert "ok   docker engine" in ok.output and f"ok   base image: {BASE}" in ok.output and "disk space" in ok.output
    missing = project.run("doctor", "-c", "gone")
    assert missing.returncode != 0 and "FAIL base image: amlrun-test/gone:x is not on the engine" in missing.output


# -- clean ---------------------------------------------------------------------------------------


def test_clean_removes_amlrun_images_and_stopped_containers_only(project, client):
    import io

    token = uuid.uuid4().hex[:8]
    client.images.build(fileobj=io.BytesIO(f"FROM {BASE}\nLABEL amlrun.managed=1 t={token}\n".encode()),
                        tag=f"amlrun/env:test{token}", rm=True)
    ours = client.containers.create(BASE, ["true"], labels={"amlrun.managed": "1"})
    theirs = client.containers.create(BASE, ["true"], labels={"someone.else": token})
    try:
        scoped = project.run("clean", "--dry-run", "--no-envs")  # none of them is this project's
        assert scoped.returncode == 0 and f"test{token}" not in scoped.output and ours.name not in scoped.output
        assert "nothing to clean of this project" in scoped.output
        listed = project.run("clean", "--all", "--dry-run", "--no-envs")
        assert listed.returncode == 0, listed.output
        assert f"would remove image amlrun/env:test{token}" in listed.output
        assert f"would remove container {ours.name}" in listed.output and theirs.name not in listed.output
        assert client.containers.list(all=True, filters={"id": ours.id})

        kept = project.run("clean", "--all", "--older-than", "30d", "--no-envs")
        assert kept.returncode == 0 and f"test{token}" not in kept.output, kept.output

        cleaned = project.run("clean", "--all", "--no-envs")
        assert cleaned.returncode == 0 and "freed" in cleaned.output, cleaned.output
        assert not client.containers.list(all=True, filters={"id": ours.id})
        assert client.containers.list(all=True, filters={"id": theirs.id})
        assert not client.images.list(filters={"label": f"t={token}"})
    finally:
        for container in (ours, theirs):
            try:
                container.remove(force=True)
            except Exception:
                pass


def test_clean_rejects_a_bad_age(project):
    result = project.run("clean", "--older-than", "soon")
    assert result.returncode == 4 and "--older-than" in result.output


# -- pieces without the engine (each beside a real-engine test of the same path) ---------------------


def _compute(**settings):
    from amlrun.config import ComputeTarget

    return ComputeTarget("docker", "docker", {"baseDockerImage": BASE, **settings}, "aml_config/docker.compute")


def test_image_hash_follows_base_dependencies_and_build_settings_only(tmp_path):
    from amlrun.config import CondaDependencies
    from amlrun.targets.docker.image import BuildSettings, plan_image

    deps = CondaDependencies(pip_packages=("six",))
    plain = BuildSettings()
    first = plan_image(BASE, "sha256:aaa", "", deps, plain)
    assert first.digest == plan_image("other-name:same-id", "sha256:aaa", "", deps, plain).digest
    assert first.digest != plan_image(BASE, "sha256:bbb", "", deps, plain).digest
    assert first.digest != plan_image(BASE, "sha256:aaa", "", CondaDependencies(pip_packages=("six==1.16",)), plain).digest
    ca = tmp_path / "ca.pem"
    ca.write_text("one")
    with_ca = plan_image(BASE, "sha256:aaa", "", deps, BuildSettings(ca_bundle=str(ca)))
    ca.write_text("two")
    assert with_ca.digest not in (first.digest, plan_image(BASE, "sha256:aaa", "", deps, BuildSettings(ca_bundle=str(ca))).digest)
    assert first.digest != plan_image(BASE, "sha256:aaa", "", deps, BuildSettings(pip_index_url="https://i/simple")).digest
    names = [name for name, _ in first.files]
    assert names == ["Dockerfile", "install.sh", "requirements.txt"]  # dependency files only


def test_build_settings_precedence_and_pip_environment(tmp_path):
    from amlrun.targets.docker.image import BuildSettings

    env = {"PIP_INDEX_URL": "https://env/simple", "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple",
           "PIP_TRUSTED_HOST": "a b"}
    from_env = BuildSettings.resolve(_compute(), {}, env)
    assert from_env.pip_index_url == "https://env/simple" and from_env.pip_trusted_hosts == ("a", "b")
    assert from_env.buildargs()["PIP_EXTRA_INDEX_URL"] == "https://a/simple https://b/simple"
    table = BuildSettings.resolve(_compute(), {"pip_index_url": "https://table/simple"}, env)
    assert table.pip_index_url == "https://table/simple"
    key = BuildSettings.resolve(_compute(pipIndexUrl="https://key/simple"), {"pip_index_url": "https://t/simple"}, env)
    assert key.pip_index_url == "https://key/simple"
    from amlrun import secrets

    secret_env = {"PIP_INDEX_URL": "secret:AMLRUN_TEST_INDEX"}
    os.environ["AMLRUN_TEST_INDEX"] = "https://me:hunter2pw@index.invalid/simple"
    try:
        with_secret = BuildSettings.resolve(_compute(), {}, secret_env)
    finally:
        del os.environ["AMLRUN_TEST_INDEX"]
    assert with_secret.pip_index_url == "https://me:hunter2pw@index.invalid/simple"
    assert "hunter2pw" not in secrets.redactor("Looking in indexes: https://me:hunter2pw@index.invalid/simple")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "corp.pem").write_text("pem")
    rel = BuildSettings.resolve(_compute(), {"ca_bundle": "certs/corp.pem"}, {}, project_root=tmp_path)
    assert rel.ca_bundle == str(tmp_path / "certs" / "corp.pem")
    from amlrun.errors import ConfigError

    with pytest.raises(ConfigError, match="aml_config/docker.compute: CA bundle /nope.pem"):
        BuildSettings.resolve(_compute(caBundle="/nope.pem"), {}, {})


def test_docker_run_arguments_subset_and_a_clear_error():
    from amlrun.errors import ConfigError
    from amlrun.targets.docker.runargs import parse_run_arguments

    opts = parse_run_arguments(["--network=host", "--cap-add", "SYS_PTRACE", "-e", "A=1", "-v", "/d:/d:ro",
                                "--ulimit", "nofile=1024:2048", "--privileged"], "f")
    assert opts["network_mode"] == "host" and opts["cap_add"] == ["SYS_PTRACE"] and opts["environment"] == {"A": "1"}
    assert opts["volumes"] == ["/d:/d:ro"] and opts["privileged"] is True and opts["ulimits"][0]["Hard"] == 2048
    assert parse_run_arguments("--ipc host", "f") == {"ipc_mode": "host"}
    with pytest.raises(ConfigError, match=r"f: 'dockerRunArguments': unsupported option --rm"):
        parse_run_arguments(["--rm"], "f")
