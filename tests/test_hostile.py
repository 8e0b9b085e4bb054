"""Hostile scripts and damaged state (issue 18): what a script leaves behind is never
trusted, secrets stay masked in every spelling, damaged history is rebuilt, and a user's
mistake is one line with exit code 4."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.parse
from pathlib import Path

import pytest

from amlrun.secrets import MASK, Redactor

# -- outputs/ links ------------------------------------------------------------------------

LINK_SCRIPTS = {
    "exp/replace_outputs.py": """
        import os, shutil, sys
        shutil.rmtree("outputs", ignore_errors=True)
        os.symlink(sys.argv[2], "outputs")
    """,
    "exp/links_inside.py": """
        import os, sys
        os.makedirs("outputs/sub", exist_ok=True)
        os.symlink(sys.argv[2], "outputs/host")
        os.symlink(os.path.join(sys.argv[2], "host.txt"), "outputs/host.txt")
        os.symlink("/proc/self", "outputs/proc")
        os.mkfifo("outputs/fifo")
        open("outputs/sub/real.txt", "w").write("mine")
    """,
    "exp/proc_outputs.py": """
        import os, shutil
        shutil.rmtree("outputs", ignore_errors=True)
        os.symlink("/proc/self", "outputs")
    """,
}


def _host_folder(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    host.mkdir()
    (host / "host.txt").write_text("the host's file")
    return host


def test_links_in_outputs_are_never_followed_and_proc_does_not_hang(project, tmp_path):
    host = _host_folder(tmp_path)
    project.write(LINK_SCRIPTS)
    result = project.run("exp", "-p", f"dir={host}", timeout=120)
    assert result.returncode == 0, result.output
    records = {r["script"]: r for r in json.loads(project.run("history", "list", "--format", "json").stdout)}
    assert records["exp/replace_outputs.py"]["artifacts"] == []
    assert records["exp/proc_outputs.py"]["artifacts"] == []
    assert [a["path"] for a in records["exp/links_inside.py"]["artifacts"]] == ["outputs/sub/real.txt"]
    for script in ("exp/replace_outputs.py", "exp/proc_outputs.py"):
        run_dir = project.root / ".amlrun" / "runs" / records[script]["run_id"]
        assert not (run_dir / "outputs").is_symlink() and not (run_dir / "outputs").exists()
    for script, record in records.items():
        dest = tmp_path / f"dl-{Path(script).stem}"
        download = project.run("history", "download", record["run_id"], "-d", str(dest), timeout=60)
        assert download.returncode == 0, download.output
        got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) if dest.exists() else []
        assert got == (["sub/real.txt"] if script == "exp/links_inside.py" else []), script
    assert (host / "host.txt").read_text() == "the host's file"


# -- secrets ---------------------------------------------------------------------------------

PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
       "k1Zq9u0Qp3Xh7W2sYd8fLmN4bVc6tRe\n"
       "AB==\n"
       "-----END PRIVATE KEY-----\n")
CREDENTIAL = json.dumps({"type": "service_account", "private_key_id": "c0ffee-4711-beef"}, indent=2)

SECRET_SCRIPT = """
    import base64, json, os, sys, urllib.parse
    from amlrun_client import log
    for name in ("PEM", "CRED"):
        value = os.environ[name]
        print(value)
        print(value, file=sys.stderr)
        print(base64.b64encode(value.encode()).decode())
        print(urllib.parse.quote(value, safe=""))
        print(json.dumps(value))
        log("leak_" + name, value)
    raise SystemExit("failing with " + os.environ["PEM"])
"""


def test_multiline_secrets_are_masked_line_by_line_and_in_encodings(project, tmp_path):
    project.write({
        "aml_config/secure.runconfig": "Target: local\nEnvironmentVariables:\n"
                                       "  PEM: secret:MY_PEM\n  CRED: env:MY_CRED\n",
        "leak.py": SECRET_SCRIPT,
    })
    env = {"MY_PEM": PEM, "MY_CRED": CREDENTIAL}
    report = tmp_path / "report.json"
    result = project.run("-c", "secure", "--stream", "--report-json", str(report), env=env)
    assert result.returncode == 1, result.output
    assert MASK in result.stdout
    history = [project.run("history", *args, env=env).output
               for args in (["show", "last"], ["logs", "last"], ["show", "last", "--format", "json"])]
    texts = [result.stdout, result.stderr, *history]
    texts += [p.read_text(errors="replace") for p in project.root.rglob("*") if p.is_file()]
    texts.append(report.read_text())
    secret_lines = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "k1Zq9u0Qp3Xh7W2sYd8fLmN4bVc6tRe", "AB==",
                    "c0ffee-4711-beef"]
    encodings = [base64.b64encode(v.encode()).decode() for v in (PEM, CREDENTIAL)]
    encodings += [urllib.parse.quote(v, safe="") for v in (PEM, CREDENTIAL)]
    for text in texts:
        for needle in secret_lines + encodings:
            assert needle not in text


def test_short_secrets_are_refused_in_one_line(project):
    project.write({
        "aml_config/secure.runconfig": "Target: local\nEnvironmentVariables:\n  PIN: secret:MY_PIN\n",
        "a.py": "print('hello')\n",
    })
    result = project.run("-c", "secure", env={"MY_PIN": "ab"})
    assert result.returncode == 4, result.output
    assert "Traceback" not in result.output
    assert "MY_PIN" in result.stderr and "shorter than 3" in result.stderr


def test_redactor_forms():
    redact = Redactor()
    redact.add(PEM)
    assert redact("x MIIEvQIBADANBgkqhkiG9w0BAQEFAASC y") == f"x {MASK} y"
    assert redact("-----END PRIVATE KEY-----") == MASK  # has letters: masked like any other line
    assert redact("}") == "}"
    redact.add("ab")
    assert redact("ab cd") == "ab cd"


# -- a damaged history index and snapshot manifest -------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "emptied":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "garbled":
        data[100:4000] = b"\xa5" * 3900
        path.write_bytes(bytes(data))
    elif how == "deleted":
        path.unlink()


@pytest.mark.parametrize("how", ["emptied", "truncated", "garbled", "deleted"])
def test_a_damaged_history_index_is_rebuilt_from_the_run_folders(project, how):
    project.write({f"exp/s{i}.py": f"print({i})\n" for i in range(3)})
    assert project.run("exp").returncode == 0
    before = json.loads(project.run("history", "list", "--format", "json").stdout)
    assert len(before) == 3
    state = project.root / ".amlrun"
    for suffix in ("-wal", "-shm"):
        Path(f"{state / 'history.sqlite'}{suffix}").unlink(missing_ok=True)
    _damage(state / "history.sqlite", how)
    listed = project.run("history", "list", "--format", "json")
    assert listed.returncode == 0, listed.output
    assert "Traceback" not in listed.output
    notes = [line for line in listed.stderr.splitlines() if "history index" in line]
    assert len(notes) == 1 and "rebuilt it from 3 run folders" in notes[0], listed.stderr
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == sorted(r["run_id"] for r in before)
    again = project.run("exp")  # a new run records into the rebuilt index, silently
    assert again.returncode == 0 and "history index" not in again.output, again.output
    assert len(json.loads(project.run("history", "list", "--format", "json").stdout)) == 6
    if how in ("truncated", "garbled"):
        assert list(state.glob("history.sqlite.damaged-*"))  # nothing on disk is lost


def test_history_rebuild_command_keeps_the_reuse_cache(project):
    project.write({"a.py": "print('a')\n"})
    assert project.run("a.py").returncode == 0
    rebuilt = project.run("history", "rebuild")
    assert rebuilt.returncode == 0 and "from 1 run folder" in rebuilt.stdout, rebuilt.output
    reused = project.run("a.py", "--reuse")
    assert reused.returncode == 0, reused.output
    assert "reused" in reused.output.lower() or "cached" in reused.output.lower(), reused.output


def test_a_damaged_snapshot_manifest_is_not_reused(project):
    project.write({"a.py": "print(open('data.txt').read())\n", "data.txt": "the data\n"})
    assert project.run("a.py").returncode == 0
    manifests = list((project.root / ".amlrun" / "snapshots").glob("*.json"))
    assert len(manifests) == 1
    manifests[0].write_text(manifests[0].read_text()[:20])  # truncated
    result = project.run("a.py", "--stream")
    assert result.returncode == 0, result.output
    assert "the data" in result.stdout
    restored = project.root.parent / "restored"
    assert project.run("history", "restore", "last", "-d", str(restored)).returncode == 0
    assert (restored / "data.txt").read_text() == "the data\n"


# -- collection errors -------------------------------------------------------------------------------

COLLECTION = {
    # valid only on a newer Python than the host's, and mentions AMLRUN_ as the README advises
    "exp/newer_python.py": """
        import os
        seed = os.environ["AMLRUN_SEED"]
        print("seed", seed)
        if False:
            exec("pass")
        def f(x):
            return x
        print(f(1) if True else (yield))
    """,
    "exp/bad_declaration.py": """
        AMLRUN_PARAMS = {"lr": [0.1, 0.01]}
        def broken(:
            pass
    """,
    "exp/not_literal.py": """
        AMLRUN_PARAMS = {"lr": compute()}
    """,
    "exp/good.py": """
        AMLRUN_PARAMS = {"n": [1, 2]}
        print("good")
    """,
}


def test_a_script_whose_declaration_cannot_be_read_is_its_own_collection_error(project):
    files = dict(COLLECTION)
    # a syntax error the host's Python reports; the script declares nothing, so it is
    # collected and the target's Python decides (here it fails, like any broken script)
    files["exp/newer_python.py"] = files["exp/newer_python.py"].replace('exec("pass")', "match = ;")
    project.write(files)
    result = project.run("exp")
    assert result.returncode == 1, result.output
    assert "Traceback (most recent call last)" not in result.stderr
    assert "ERROR collecting exp/bad_declaration.py" in result.stdout
    assert "ERROR collecting exp/not_literal.py" in result.stdout
    assert "PASSED exp/good.py::local[n=1]" in result.stdout and "PASSED exp/good.py::local[n=2]" in result.stdout
    assert "exp/newer_python.py::local" in result.stdout  # collected and run, not an error
    assert "2 errors" in result.stdout.splitlines()[-1]
    collect_only = project.run("exp", "--collect-only", "-q")
    assert collect_only.returncode == 1
    assert "ERROR collecting exp/bad_declaration.py" in collect_only.stdout
    assert "exp/good.py::local[n=1]" in collect_only.stdout
    only_bad = project.run("exp/bad_declaration.py")
    assert only_bad.returncode == 1 and "ERROR exp/bad_declaration.py" in only_bad.stdout, only_bad.output


# -- a user's mistake: one line, exit 4, never a traceback -------------------------------------------

MISTAKES = [
    # (files, command-line arguments, words the one-line error must contain)
    ({}, ["-p", ""], ["-p ''"]),
    ({}, ["-p", "no:"], ["-p 'no:'"]),
    ({}, ["-p", ".relative"], ["-p .relative"]),
    ({"aml_config/local.runconfig": "EnvironmentVariables:\n  A=B: x\n"}, ["-c", "local"],
     ["aml_config/local.runconfig", "'A=B'"]),
    ({"aml_config/local.runconfig": 'EnvironmentVariables:\n  A: "x\\0y"\n'}, ["-c", "local"],
     ["aml_config/local.runconfig", "NUL"]),
    ({"aml_config/local.runconfig": "EnvironmentVariables:\n  A: [1, 2]\n"}, ["-c", "local"],
     ["aml_config/local.runconfig", "'A'"]),
    ({"aml_config/local.runconfig": "CondaDependenciesFile: [a.yml, b.yml]\n"}, ["-c", "local"],
     ["aml_config/local.runconfig", "'CondaDependenciesFile'"]),
    ({"aml_config/local.runconfig": "SparkDependenciesFile: {a: 1}\n"}, ["-c", "local"],
     ["'SparkDependenciesFile'"]),
    ({"aml_config/local.runconfig": "Target: [a]\n"}, ["-c", "local"], ["'Target'"]),
    ({"aml_config/vm.compute": "type: remote\naddress: 127.0.0.1\nport: abc\nusername: u\npassword: env:P\n"},
     ["-c", "vm"], ["aml_config/vm.compute", "'port'", "abc"]),
    ({"aml_config/vm.compute": "type: remote\naddress: 127.0.0.1\nport: 70000\nusername: u\npassword: env:P\n"},
     ["-c", "vm"], ["'port'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\ncpus: abc\n"}, ["-c", "box"],
     ["aml_config/box.compute", "'cpus'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\nmemory: abc\n"}, ["-c", "box"],
     ["aml_config/box.compute", "'memory'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\nshmSize: lots\n"}, ["-c", "box"], ["'shmSize'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\nsharedVolumes: maybe\n"}, ["-c", "box"],
     ["aml_config/box.compute", "'sharedVolumes'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: [x]\n"}, ["-c", "box"], ["'baseDockerImage'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\ndockerRunArguments: [--pids-limit, abc]\n"},
     ["-c", "box"], ["aml_config/box.compute", "--pids-limit", "'abc'"]),
    ({"aml_config/box.compute": "type: docker\nbaseDockerImage: x\ndockerRunArguments: --memory=lots\n"},
     ["-c", "box"], ["--memory", "'lots'"]),
    ({"aml_config/loc.compute": "type: local\nmaxParallel: many\n"}, ["-c", "loc"], ["'maxParallel'"]),
    ({"aml_config/loc.compute": "type: local\nuserManagedEnvironment: perhaps\n"}, ["-c", "loc"],
     ["'userManagedEnvironment'"]),
    ({"aml_config/conda_dependencies.yml": "channels: conda-forge\ndependencies: [numpy]\n",
      "aml_config/managed.compute": "type: local\nuserManagedEnvironment: false\n"}, ["-c", "managed"],
     ["conda_dependencies.yml", "'channels'"]),
]


@pytest.mark.parametrize("files, args, words", MISTAKES, ids=[" ".join(m[1]) + " " + "".join(m[0]) for m in MISTAKES])
def test_a_users_mistake_is_one_line_with_exit_code_4(project, files, args, words):
    project.write({"a.py": "print('never runs')\n", **files})
    result = project.run(*args, "a.py", env={"P": "a-password"}, timeout=120)
    assert result.returncode == 4, result.output
    assert "Traceback" not in result.output
    # one line: amlrun's error, or (a mistake found while preparing a target) the cell's ERROR
    errors = [line for line in result.stderr.splitlines() if line.startswith("amlrun: error:")]
    errors = errors or [line for line in result.stdout.splitlines() if line.startswith("ERROR ") and " - " in line]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert "never runs" not in result.output


# -- leftovers: a run's whole process tree ends with it ---------------------------------------------

DOUBLE_FORK = """
    import os, sys, time
    keep_output = sys.argv[2] == "keep"
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            if not keep_output:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
            with open("{pidfile}", "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(300)
        os._exit(0)
    while not os.path.exists("{pidfile}"):
        time.sleep(0.01)
    print("started")
    if sys.argv[4] == "hang":
        time.sleep(300)
"""


def _gone(pid: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("output", ["keep", "detach"])
def test_a_setsid_double_fork_does_not_outlive_its_cell(project, tmp_path, output):
    pidfile = tmp_path / "grandchild.pid"
    project.write({"fork.py": DOUBLE_FORK.format(pidfile=pidfile)})
    result = project.run("fork.py", "-p", f"out={output}", "-p", "end=exit", timeout=120)
    assert result.returncode == 0, result.output
    pid = int(pidfile.read_text())
    try:
        assert _gone(pid), f"the setsid grandchild {pid} outlived its cell"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_the_tree_of_a_killed_amlrun_is_stopped_by_the_next_run(project, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    project.write({"fork.py": DOUBLE_FORK.format(pidfile=pidfile), "other.py": "print('x')\n"})
    proc = project.popen("fork.py", "-p", "out=detach", "-p", "end=hang")
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        proc.kill()
        proc.wait(30)
        assert not _gone(pid, wait=0.5)  # kill -9 gave amlrun no chance
        assert project.run("other.py").returncode == 0
        assert _gone(pid), "the next run did not stop what the killed session left"
    finally:
        proc.kill()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except OSError:
                pass


# -- resource caps -----------------------------------------------------------------------------------


def test_log_txt_is_capped_keeping_head_and_tail_and_saying_what_was_cut(project):
    project.write({"noisy.py": """
        import sys
        print("first line")
        chunk = ("z" * 99 + "\\n") * 1000
        for _ in range(100):
            sys.stdout.write(chunk)
        sys.stdout.write("y" * 300000 + "\\n")  # one line longer than the kept tail
        print("##amlrun-metric " + '{"name": "done", "value": 1}')
        print("last line")
    """})
    result = project.run("noisy.py", env={"AMLRUN_LOG_MAX_BYTES": "200k"})
    assert result.returncode == 0, result.output
    record = json.loads(project.run("history", "list", "--format", "json").stdout)[0]
    assert record["metrics"]["done"] == 1  # metrics see every line
    log = (project.root / ".amlrun" / "runs" / record["run_id"] / "log.txt").read_text()
    assert len(log.encode()) < 200 * 1024 + 1024
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines[0] == "first line" and lines[-1] == "last line"
    assert any("log.txt reached 102400 bytes" in line for line in lines)
    assert any(line.startswith("[amlrun] cut ") and "bytes) of output here" in line for line in lines)


def test_a_malformed_log_cap_is_a_usage_error(project):
    project.write({"a.py": "print(1)\n"})
    result = project.run("a.py", env={"AMLRUN_LOG_MAX_BYTES": "lots"})
    assert result.returncode == 4 and "AMLRUN_LOG_MAX_BYTES" in result.stderr, result.output
