"""The ``remote`` and ``remotedocker`` targets against a real sshd on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest


pytestmark = pytest.mark.ssh

HOSTILE = ["a b", "it's", '"dq"', "$HOME", "x;echo pwned", "`id`", "é☃ ünï", "back\\slash", "--", "*", "new\nline"]

ECHO_SCRIPT = """
import json, os, sys
from amlrun_client import log
os.makedirs("outputs", exist_ok=True)
with open("outputs/args.json", "w", encoding="utf-8") as fh:
    json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("HOSTILE")},
               "cwd": os.getcwd(), "prefix": sys.prefix, "outputs": os.environ["AMLRUN_OUTPUTS_DIR"]}, fh)
os.makedirs("outputs/sub", exist_ok=True)
open("outputs/sub/model.bin", "wb").write(bytes(range(256)) * 10)
log("accuracy", 0.93)
print("done", len(sys.argv))
"""


def attach(project, server, *args, password=False):
    cmd = ["attach", *args, "--address", "127.0.0.1", "--port", str(server.port), "--username", server.user,
           "--known-hosts-file", str(server.known_hosts)]
    if password:
        return project.run(*cmd, "--password-stdin", input=server.password + "\n")
    return project.run(*cmd, "--private-key-file", str(server.key_file))


def grep_tree(root: Path, needle: str) -> list[str]:
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def test_attach_password_doctor_and_run(project, sshd):
    project.write({"train.py": ECHO_SCRIPT})
    result = attach(project, sshd, "remote", "-n", "remotevm", password=True)
    assert result.returncode == 0, result.output
    compute = (project.root / "aml_config" / "remotevm.compute").read_text()
    assert "password: secret:" in compute and sshd.password not in compute
    assert (project.root / "aml_config" / "remotevm.runconfig").is_file()
    creds = Path(os.environ["AMLRUN_CREDENTIALS"])
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and sshd.password in creds.read_text()

    listed = project.run("targets")
    assert listed.returncode == 0, listed.output
    line = next(line for line in listed.stdout.splitlines() if line.startswith("remotevm"))
    assert "remote" in line and f"127.0.0.1:{sshd.port}" in line

    doctor = project.run("doctor", "-c", "remotevm")
    assert doctor.returncode == 0, doctor.output
    for name in ("ssh login", "PATH (non-interactive shell)", "free disk", "python"):
        assert f"ok   {name}" in doctor.stdout, doctor.stdout

    ran = project.run("-c", "remotevm", "train.py")
    assert ran.returncode == 0, ran.output
    (record,) = project.records()
    assert record["status"] == "completed" and record["metrics"]["accuracy"] == 0.93
    assert record["extra"]["remote_host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    outputs = project.run_dir(record) / "outputs"
    assert (outputs / "sub" / "model.bin").read_bytes() == bytes(range(256)) * 10
    assert json.loads((outputs / "args.json").read_text())["cwd"].startswith(str(sshd.home))
    # the password is nowhere in the project (config, history, logs) nor in amlrun's output
    assert grep_tree(project.root, sshd.password) == []
    assert sshd.password not in ran.output + doctor.output + result.output + listed.output
    # the run's folder on the VM is gone
    assert not Path(record["extra"]["remote_run_dir"]).exists()


def test_attach_refuses_password_in_files_and_bad_input(project, sshd):
    result = attach(project, sshd, "remote", "-n", "bad name")
    assert result.returncode == 4 and "-n" in result.stderr and "Traceback" not in result.output
    result = project.run("attach", "remote", "-n", "vm", "--address", "h", "--username", "u", "--password")
    assert result.returncode == 4 and "--password-stdin" in result.stderr   # no tty to prompt on


def test_unknown_host_key_is_refused_with_the_command_to_accept_it(project, sshd, tmp_path):
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    project.write({"aml_config/vm.compute": sshd.compute_yaml().replace(str(sshd.known_hosts), str(known)),
                   "train.py": "print('hi')\n"})
    doctor = project.run("doctor", "-c", "vm")
    assert doctor.returncode == 1
    assert "unknown host key ssh-ed25519 SHA256:" in doctor.stdout
    ran = project.run("-c", "vm", "train.py")
    assert ran.returncode != 0 and "unknown host key" in ran.output
    assert known.read_text() == ""                          # never trusted silently
    command = doctor.stdout.split("accept it with: ", 1)[1].splitlines()[0]
    subprocess.run(["sh", "-c", command], check=True)
    doctor = project.run("doctor", "-c", "vm")
    assert doctor.returncode == 0, doctor.output
    # a different key for the same host is a mismatch, refused too
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    doctor = project.run("doctor", "-c", "vm")
    assert doctor.returncode == 1 and "HOST KEY MISMATCH" in doctor.stdout


def test_wrong_password_is_not_retried_and_not_printed(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(auth="password"), "train.py": "print('hi')\n"})
    started = time.monotonic()
    doctor = project.run("doctor", "-c", "vm", env={"AMLRUN_TEST_SSH_PASSWORD": "wrong-password-123"})
    assert doctor.returncode == 1 and "login refused (password)" in doctor.stdout
    assert "wrong-password-123" not in doctor.output and time.monotonic() - started < 20


def test_key_login_hostile_arguments_and_environment(project, sshd):
    env_values = {f"HOSTILE_{i}": v for i, v in enumerate(HOSTILE)}
    project.write({
        "aml_config/vm.compute": sshd.compute_yaml(),
        "aml_config/vm.runconfig": "Target: vm\nArgumentVector:\n  - $file\n"
        + "".join(f"  - {json.dumps(a)}\n" for a in HOSTILE)
        + "EnvironmentVariables:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in env_values.items()),
        "train.py": ECHO_SCRIPT,
    })
    ran = project.run("-c", "vm", "train.py")
    assert ran.returncode == 0, ran.output
    (record,) = project.records()
    data = json.loads((project.run_dir(record) / "outputs" / "args.json").read_text())
    assert data["argv"] == HOSTILE
    assert data["env"] == env_values
    assert not (sshd.home / "pwned").exists()


def test_incremental_transfer_sends_only_the_changed_file(project, sshd):
    big = os.urandom(3 << 20)
    (project.root / "data").mkdir()
    (project.root / "data" / "big.bin").write_bytes(big)
    project.write({"aml_config/vm.compute": sshd.compute_yaml(), "train.py": "import os; print('GONE', os.path.exists('gone.py'))\n",
                   "helper.py": "X = 1\n", "gone.py": "print('bye')\n"})
    assert project.run("-c", "vm", "train.py").returncode == 0
    project.write({"helper.py": "X = 2  # changed\n"})
    (project.root / "gone.py").unlink()
    second = project.run("-c", "vm", "train.py")
    assert second.returncode == 0, second.output
    first_t, second_t = (r["extra"]["transfer"] for r in project.records())
    assert first_t["bytes_sent"] > 3_000_000
    assert second_t["files_sent"] == 1 and second_t["files_absent"] == 1, second_t
    assert "GONE False" in second.output or "GONE False" in (project.run_dir(project.records()[1]) / "log.txt").read_text()
    assert second_t["bytes_sent"] < 4096
    mirror = Path(project.records()[1]["extra"]["remote_run_dir"]).parents[1] / "files"
    assert (mirror / "helper.py").read_text() == "X = 2  # changed\n"
    assert (mirror / "data" / "big.bin").read_bytes() == big


def test_managed_environment_on_the_vm_is_cached(project, sshd):
    project.write({
        "aml_config/vm.compute": sshd.compute_yaml(extra="userManagedEnvironment: false\n"),
        "aml_config/conda_dependencies.yml": "dependencies:\n  - pip:\n",
        "train.py": "import sys; print('PREFIX', sys.prefix)\n",
    })
    first = project.run("-c", "vm", "train.py", "-v")
    assert first.returncode == 0, first.output
    second = project.run("-c", "vm", "train.py", "-v")
    assert second.returncode == 0, second.output
    prefixes = [(project.run_dir(r) / "log.txt").read_text().split("PREFIX ")[1].split()[0] for r in project.records()]
    assert prefixes[0] == prefixes[1] and prefixes[0].startswith(f"{sshd.home}/.amlrun/envs/")
    assert "built environment" in first.output and "built environment" not in second.output


COUNTER = """
import sys, time
for i in range(60):
    print(f"line {i}", flush=True)
    time.sleep(0.15)
open("outputs/done.txt", "w").write("complete")
"""


def _wait_for(proc, text: str, timeout: float = 60) -> list[str]:
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


def _drop_connection_mid_run(project, sshd, wait_timeout: float, run_timeout: float) -> tuple[dict, list[str]]:
    """Run COUNTER on target ``vm``, stop sshd after line 5, start it again; return the
    finished run's record and log lines (the run must pass)."""
    proc = project.popen("-c", "vm", "count.py", "--stream")
    try:
        _wait_for(proc, "line 5", timeout=wait_timeout)
        sshd.stop()
        time.sleep(2.5)
        sshd.start()
        out, _ = proc.communicate(timeout=run_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        sshd.start() if not sshd.pidfile.exists() else None
    assert proc.returncode == 0, out
    (record,) = project.records()
    log = (project.run_dir(record) / "log.txt").read_text().splitlines()
    assert [l for l in log if l.startswith("line ")] == [f"line {i}" for i in range(60)]
    assert (project.run_dir(record) / "outputs" / "done.txt").read_text() == "complete"
    return record, log


def test_run_survives_a_dropped_connection(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(), "count.py": COUNTER})
    record, _ = _drop_connection_mid_run(project, sshd, wait_timeout=60, run_timeout=120)
    assert record["extra"]["reconnects"] >= 1


SLEEP_TOKEN = f"301.{os.getpid()}"    # unique to this test session: the test user may be shared
SLEEPER = f"""
import subprocess, sys, time
child = subprocess.Popen(["sleep", "{SLEEP_TOKEN}"])
print("started", flush=True)
time.sleep(300)
"""


def _sleepers(sshd) -> list[str]:
    return [p for p in sshd.user_processes() if f"sleep {SLEEP_TOKEN}" in p]


def test_ctrl_c_and_timeout_stop_the_remote_process(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(), "sleeper.py": SLEEPER})
    proc = project.popen("-c", "vm", "sleeper.py", "--stream")
    try:
        _wait_for(proc, "started")
        assert _sleepers(sshd)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    assert _sleepers(sshd) == [], out
    timed = project.run("-c", "vm", "sleeper.py", "--timeout", "4")
    assert timed.returncode != 0 and "timed out" in timed.output
    assert _sleepers(sshd) == []
    assert [r["status"] for r in project.records()] == ["canceled", "canceled"]


def test_safe_extract_refuses_hostile_members(tmp_path):
    from amlrun.targets.ssh.transfer import safe_extract

    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, data=b"x", **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        add("ok/fine.txt", b"fine")
        add("/etc/evil", b"abs")
        add("../escape.txt", b"up")
        add("ok/../../escape2.txt", b"up")
        add("link_out", type=tarfile.SYMTYPE, linkname="../../etc/passwd")
        add("abs_link", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("hard_out", type=tarfile.LNKTYPE, linkname="../outside")
        add("dev", type=tarfile.CHRTYPE)
        add("ok/inner_link", type=tarfile.SYMTYPE, linkname="fine.txt")
    dest = tmp_path / "dest"
    refused = safe_extract(archive, dest)
    assert (dest / "ok" / "fine.txt").read_bytes() == b"fine"
    assert os.readlink(dest / "ok" / "inner_link") == "fine.txt"
    assert sorted(r.split(":")[0] for r in refused) == sorted(
        ["/etc/evil", "../escape.txt", "ok/../../escape2.txt", "link_out", "abs_link", "hard_out", "dev"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "dest"]
    assert sorted(p.name for p in dest.iterdir()) == ["ok"]


# -- remotedocker: the VM's Docker engine through the SSH connection --------------------------


@pytest.fixture(scope="module")
def docker_client():
    from dockerhelp import engine

    return engine()


def _containers_of(client, record) -> list:
    return client.containers.list(all=True, filters={"label": f"amlrun.run-id={record['run_id']}"})


def test_remotedocker_attach_doctor_matrix_with_docker_and_incremental(project, sshd, docker_client):
    from dockerhelp import BASE

    result = attach(project, sshd, "remotedocker", "-n", "remotevm", "--base-docker-image", BASE)
    assert result.returncode == 0, result.output
    doctor = project.run("doctor", "-c", "remotevm")
    assert doctor.returncode == 0, doctor.output
    for name in ("ssh login", "docker engine", "base image"):
        assert f"ok   {name}" in doctor.stdout, doctor.stdout
    assert "the Docker engine of 127.0.0.1 over SSH" in doctor.stdout
    argv = "".join(f"  - {json.dumps(a)}\n" for a in HOSTILE)
    project.write({
        "aml_config/docker.compute": f"type: docker\nbaseDockerImage: {BASE}\n",
        "aml_config/remotevm.runconfig": f"Target: remotevm\nArgumentVector:\n  - $file\n{argv}",
        "aml_config/docker.runconfig": f"Target: docker\nArgumentVector:\n  - $file\n{argv}",
        "train.py": ECHO_SCRIPT, "helper.py": "X = 1\n",
    })
    ran = project.run("-c", "docker", "-c", "remotevm", "train.py", timeout=900)
    assert ran.returncode == 0, ran.output
    records = {r["target"]: r for r in project.records()}
    assert set(records) == {"docker", "remotevm"}
    for record in records.values():
        assert record["status"] == "completed" and record["metrics"]["accuracy"] == 0.93
        outputs = project.run_dir(record) / "outputs"
        assert json.loads((outputs / "args.json").read_text())["argv"] == HOSTILE
        assert (outputs / "sub" / "model.bin").read_bytes() == bytes(range(256)) * 10
        assert _containers_of(docker_client, record) == []
    remote = records["remotevm"]
    assert remote["extra"]["remote_host"] == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert json.loads((project.run_dir(remote) / "outputs" / "args.json").read_text())["cwd"] == "/amlrun/run"
    project.write({"helper.py": "X = 2\n"})
    again = project.run("-c", "remotevm", "train.py", timeout=600)
    assert again.returncode == 0, again.output
    latest = project.records()[-1]
    assert latest["extra"]["transfer"]["files_sent"] == 1 and latest["extra"]["transfer"]["bytes_sent"] < 4096
    assert grep_tree(project.root, sshd.password) == []


def test_remotedocker_survives_a_dropped_connection_and_cancels_for_real(project, sshd, docker_client):
    from dockerhelp import BASE

    project.write({"aml_config/vm.compute": sshd.compute_yaml("remotedocker", extra=f"baseDockerImage: {BASE}\n"),
                   "count.py": COUNTER, "sleeper.py": SLEEPER})
    record, log = _drop_connection_mid_run(project, sshd, wait_timeout=600, run_timeout=180)
    assert record["extra"]["reconnects"] >= 1, "\n".join(l for l in log if not l.startswith("line "))

    proc = project.popen("-c", "vm", "sleeper.py", "--stream")
    try:
        _wait_for(proc, "started", timeout=300)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    canceled = project.records()[-1]
    assert canceled["status"] == "canceled"
    assert _containers_of(docker_client, canceled) == []


def test_sync_tree_gives_each_tree_exactly_and_resends_nothing_unchanged(sshd, tmp_path):
    """Two trees sharing a workspace (a run's and, e.g., a freeze job's) never resend each other."""
    from amlrun.targets.ssh.connection import SSHSession, SSHSettings
    from amlrun.targets.ssh.transfer import sync_tree

    session = SSHSession(SSHSettings("127.0.0.1", sshd.user, sshd.port, key_file=str(sshd.key_file),
                                     known_hosts=str(sshd.known_hosts)))
    big, small = tmp_path / "big", tmp_path / "small"
    names = ["a.py", "-dash.txt", "sp ace/é.txt", "d/x;y.bin", "x" * 120 + "/y"]
    for i, name in enumerate(names):
        (big / name).parent.mkdir(parents=True, exist_ok=True)
        (big / name).write_bytes(os.urandom(50_000 + i))
    (big / "a.py").chmod(0o755)
    (small / "only").mkdir(parents=True)
    (small / "only" / "one.txt").write_text("one")
    ws = f"{sshd.home}/.amlrun/workspaces/synctest"
    try:
        first = sync_tree(session, big, ws, copy_to=f"{ws}/runs/1")
        other = sync_tree(session, small, ws, copy_to=f"{ws}/runs/2")
        again = sync_tree(session, big, ws, copy_to=f"{ws}/runs/3")
        assert (first.files_sent, other.files_sent, again.files_sent) == (5, 1, 0)
        for run, tree in (("1", big), ("2", small), ("3", big)):
            copy = Path(ws) / "runs" / run
            got = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
            want = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
            assert got == want, run
            for rel in want:
                assert (copy / rel).read_bytes() == (tree / rel).read_bytes()
        assert os.stat(Path(ws) / "runs" / "3" / "a.py").st_mode & 0o111
    finally:
        session.run(f"rm -rf '{ws}'")
        session.close()


def test_secrets_travel_in_a_private_file_never_in_the_remote_command_line(project, sshd):
    secret = "s3cr3t-" + os.urandom(6).hex()
    project.write({
        "aml_config/vm.compute": sshd.compute_yaml(),
        "aml_config/vm.runconfig": "Target: vm\nEnvironmentVariables:\n  API_TOKEN: secret:AMLRUN_TEST_API_TOKEN\n",
        "leak.py": "import os, time\nprint('token', os.environ['API_TOKEN'], flush=True)\n"
                   "print('ready', flush=True)\ntime.sleep(4)\n",
    })
    proc = project.popen("-c", "vm", "leak.py", "--stream", env={"AMLRUN_TEST_API_TOKEN": secret})
    try:
        seen = _wait_for(proc, "ready")
        cmdlines = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == pwd_uid(sshd.user):
                    cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                pass
        assert cmdlines and not any(secret.encode() in c for c in cmdlines)
        assert not list(sshd.home.glob(".amlrun/workspaces/*/runs/*/env"))      # sourced, then deleted
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert secret not in "".join(seen) + out
    assert grep_tree(project.root, secret) == []


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_remotedocker_without_shared_volumes_copies_code_in(project, sshd, docker_client):
    from dockerhelp import BASE

    project.write({
        "aml_config/vm.compute": sshd.compute_yaml("remotedocker", extra=f"baseDockerImage: {BASE}\nsharedVolumes: false\n"),
        "train.py": ECHO_SCRIPT,
    })
    ran = project.run("-c", "vm", "train.py", timeout=600)
    assert ran.returncode == 0, ran.output
    (record,) = project.records()
    assert "transfer" not in record["extra"]              # copied into the container, not synced
    outputs = project.run_dir(record) / "outputs"
    assert (outputs / "sub" / "model.bin").read_bytes() == bytes(range(256)) * 10
    assert _containers_of(docker_client, record) == []


def test_plain_password_in_a_compute_file_works_with_a_warning_and_is_redacted(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(auth="password").replace(
        "secret:AMLRUN_TEST_SSH_PASSWORD", sshd.password)})
    doctor = project.run("doctor", "-c", "vm")
    assert doctor.returncode == 0, doctor.output
    assert "'password' holds the secret itself" in doctor.stderr
    assert sshd.password not in doctor.output


def test_a_run_left_by_a_killed_amlrun_is_stopped_by_the_next_session(project, sshd):
    project.write({"aml_config/vm.compute": sshd.compute_yaml(), "sleeper.py": SLEEPER, "quick.py": "print('hi')\n"})
    proc = project.popen("-c", "vm", "sleeper.py", "--stream")
    try:
        _wait_for(proc, "started")
        proc.kill()                      # kill -9: amlrun cannot clean up
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _sleepers(sshd)               # detached: it survives its amlrun
    before = sshd.user_processes()
    again = project.run("-c", "vm", "quick.py")
    assert again.returncode == 0, again.output
    assert _sleepers(sshd) == [], (before, sshd.user_processes(), again.output)
    runs_dirs = list(sshd.home.glob(".amlrun/workspaces/*/runs/*"))
    assert not any((d / "owner").exists() and "sleeper.py" in str(list(d.rglob("sleeper.py"))) for d in runs_dirs)
