"""The ``local`` target through the real CLI: argv and environment, snapshots, output
streaming and capture, failures, timeouts and Ctrl-C (process groups)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path


TRICKY = ["two words", "it's \"quoted\"", "$HOME and ${PATH}", "a;b && c | d", "naïve 日本語 ✓", "--not-an-option", "*"]


def _read_until(proc: subprocess.Popen, needle: str, timeout: float = 60) -> str:
    """Read ``proc.stdout`` until a line contains ``needle`` (fails after ``timeout``)."""
    seen = []
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"{needle!r} not seen within {timeout}s; output so far:\n{''.join(seen)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


# -- argv and environment -----------------------------------------------------------------------


def test_param_values_arrive_unchanged(project):
    project.write({"echo.py": """
        import json, os, sys
        print("ARGV=" + json.dumps(sys.argv[1:], ensure_ascii=True))
        print("ENV=" + json.dumps(os.environ["AMLRUN_PARAM_MSG"], ensure_ascii=True))
    """})
    assert not any("," in v for v in TRICKY)  # a comma separates sweep values
    result = project.run("-c", "local", "echo.py", "--stream", "-p", "msg=" + ",".join(TRICKY))
    assert result.returncode == 0, result.output
    assert f"{len(TRICKY)} passed" in result.stdout
    for value in TRICKY:
        assert "ARGV=" + json.dumps(["--msg", value]) in result.stdout, value
        assert "ENV=" + json.dumps(value) in result.stdout, value


def test_argument_vector_values_arrive_unchanged(project):
    vector = ["$file", *TRICKY, "$file.bak"]
    project.write({
        "aml_config/local.runconfig": json.dumps({"ArgumentVector": vector, "Target": "local",
                                                  "EnvironmentVariables": {"FANCY": TRICKY[4], "DOLLAR": "$HOME"}},
                                                 ensure_ascii=False),
        "echo.py": """
            import json, os, sys
            print("ARGV=" + json.dumps(sys.argv, ensure_ascii=True))
            print("ENV=" + json.dumps([os.environ["FANCY"], os.environ["DOLLAR"]], ensure_ascii=True))
        """,
    })
    result = project.run("-c", "local", "echo.py")
    assert result.returncode == 0, result.output
    assert "ARGV=" + json.dumps(["echo.py", *TRICKY, "$file.bak"]) in result.stdout
    assert "ENV=" + json.dumps([TRICKY[4], "$HOME"]) in result.stdout


def test_param_names_become_env_vars_and_arguments(project):
    project.write({"e.py": """
        import os, sys
        print("ARGS", sys.argv[1:])
        print("RUNID", os.environ["AMLRUN_RUN_ID"])
        print("OUT", os.environ["AMLRUN_OUTPUTS_DIR"])
        print("LR", os.environ["AMLRUN_PARAM_LEARNING_RATE"], os.environ["AMLRUN_PARAM_MAX_DEPTH"])
        print("CWD", os.getcwd())
    """})
    result = project.run("e.py", "-p", "learning_rate=0.5", "-p", "max-depth=3")
    assert result.returncode == 0, result.output
    assert "ARGS ['--learning_rate', '0.5', '--max-depth', '3']" in result.stdout
    assert "LR 0.5 3" in result.stdout
    (record,) = project.records()
    run = project.run_dir(record)
    assert f"RUNID {run.name}" in result.stdout
    cwd = next(line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("CWD "))
    assert f"OUT {cwd}/outputs" in result.stdout
    assert Path(cwd) != project.root and Path(cwd).name == run.name


# -- snapshots ------------------------------------------------------------------------------------


def test_runs_in_a_snapshot_not_the_working_tree(project):
    project.write({
        ".gitignore": "data/big.bin\n*.log\n",
        "data/big.bin": "ignored by git",
        "data/small.csv": "1,2\n",
        "debug.log": "ignored",
        "outputs/old.txt": "previous local outputs",
        "src/util.py": "VALUE = 42\n",
        "exp/job.py": """
            import json, os, sys
            files = []
            for dirpath, dirnames, filenames in os.walk("."):
                for name in filenames:
                    files.append(os.path.relpath(os.path.join(dirpath, name), ".").replace(os.sep, "/"))
            os.makedirs("outputs", exist_ok=True)
            with open("outputs/files.json", "w") as fh:
                json.dump(sorted(files), fh)
            # a script writing next to itself and editing project files
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "written.txt"), "w") as fh:
                fh.write("x")
            with open("src/util.py", "a") as fh:
                fh.write("VALUE = 0\\n")
            print("CWD=" + os.getcwd())
        """,
    })
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    subprocess.run(["git", "-C", str(project.root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(project.root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
                   check=True)
    before = {p: p.read_bytes() for p in project.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    result = project.run("exp/job.py")
    assert result.returncode == 0, result.output
    (record,) = project.records()
    run = project.run_dir(record)
    files = json.loads((run / "outputs" / "files.json").read_text())
    assert "exp/job.py" in files and "src/util.py" in files and "data/small.csv" in files and ".gitignore" in files
    for excluded in ("data/big.bin", "debug.log", "outputs/old.txt"):
        assert excluded not in files
    assert not any(f.startswith((".git/", ".amlrun/")) for f in files)
    # the working tree is untouched
    assert not (project.root / "exp" / "written.txt").exists()
    after = {p: p.read_bytes() for p in project.root.rglob("*")
             if p.is_file() and ".git" not in p.parts and ".amlrun" not in p.parts}
    assert after == before
    cwd = next(line[4:] for line in result.stdout.splitlines() if line.startswith("CWD="))
    assert not Path(cwd).exists()  # the work copy is removed afterwards


def test_snapshot_without_git_still_skips_state_and_outputs(project):
    project.write({
        "outputs/old.txt": "x",
        "job.py": "import os\nprint([sorted(os.listdir('.')), os.listdir('outputs')])\n",
    })
    project.run("job.py")  # creates .amlrun
    result = project.run("job.py")
    assert result.returncode == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("["))
    names, outputs = eval(line)
    assert "job.py" in names and ".amlrun" not in names
    assert outputs == []  # the run starts with an empty outputs/, not the project's


# -- output: live, captured, --stream, log -----------------------------------------------------------


def test_single_cell_streams_live(project, tmp_path):
    go = tmp_path / "go"
    project.write({"live.py": f"""
        import os, time
        print("first line", flush=True)
        deadline = time.time() + 60
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.05)
        print("second line")
    """})
    proc = project.popen("live.py")
    try:
        seen = _read_until(proc, "first line")  # arrives while the script still waits
        assert "second line" not in seen
        go.write_text("")
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "second line" in rest
    (record,) = project.records()
    run = project.run_dir(record)
    log = (run / "log.txt").read_text()
    assert "first line" in log and "second line" in log


def test_several_cells_capture_output_and_show_the_failures_tail(project):
    project.write({"c.py": """
        import sys
        AMLRUN_PARAMS = {"n": [1, 2]}
        n = sys.argv[sys.argv.index("--n") + 1]
        for i in range(40):
            print(f"cell {n} line {i}")
        if n == "2":
            print("about to fail")
            sys.exit(3)
    """})
    result = project.run("c.py")
    assert result.returncode == 1, result.output
    assert "cell 1 line" not in result.stdout          # a passing cell's output is not shown
    assert "about to fail" in result.stdout             # the failure's last lines are
    assert "cell 2 line 39" in result.stdout
    assert "cell 2 line 0\n" not in result.stdout         # ... only the last lines
    assert "FAILED c.py::local[n=2]" in result.stdout
    assert "exited with code 3" in result.stdout
    assert "1 passed, 1 failed" in result.stdout
    logs = {r["cell_id"]: (project.run_dir(r) / "log.txt").read_text() for r in project.records()}
    assert "cell 1 line 39" in logs["c.py::local[n=1]"]  # always saved
    assert "cell 2 line 0\n" in logs["c.py::local[n=2]"]
    assert {r["cell_id"]: r["status"] for r in project.records()} == {
        "c.py::local[n=1]": "completed", "c.py::local[n=2]": "failed"}


def test_stream_prefixes_lines_with_cell_id(project):
    project.write({"s.py": 'AMLRUN_PARAMS = {"n": [1, 2]}\nimport sys\nprint("hello from", sys.argv[-1])\n'})
    result = project.run("s.py", "--stream")
    assert result.returncode == 0, result.output
    assert "[s.py::local[n=1]] hello from 1" in result.stdout
    assert "[s.py::local[n=2]] hello from 2" in result.stdout


def test_single_failing_cell_streams_without_repeating(project):
    project.write({"f.py": "print('boom line')\nraise SystemExit(7)\n"})
    result = project.run("f.py")
    assert result.returncode == 1
    assert result.stdout.count("boom line") == 1
    assert "exited with code 7" in result.stdout
    (record,) = project.records()
    assert record["status"] == "failed" and record["exit_code"] == 7


# -- stopping: -x, --maxfail, --timeout, Ctrl-C ---------------------------------------------------


def test_exitfirst_and_maxfail(project):
    project.write({"m.py": 'AMLRUN_PARAMS = {"n": [1, 2, 3, 4]}\nraise SystemExit(1)\n'})
    result = project.run("m.py", "-x")
    assert result.returncode == 1
    assert "1 failed" in result.stdout and "stopping after 1 failure" in result.stdout
    assert len(project.records()) == 1
    result = project.run("m.py", "--maxfail", "2")
    assert result.returncode == 1
    assert "2 failed" in result.stdout and "stopping after 2 failures" in result.stdout


SPAWNER = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.environ["PIDFILE"], "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    print("spawned", flush=True)
    time.sleep(300)
"""


def test_processes_left_running_by_a_finished_script_are_stopped(project, tmp_path):
    pidfile = tmp_path / "pid"
    project.write({"bg.py": f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; print('bg alive', flush=True); time.sleep(300)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        print("script done", flush=True)
    """})
    started = time.monotonic()
    result = project.run("bg.py", timeout=120)
    assert result.returncode == 0, result.output
    assert time.monotonic() - started < 60
    assert _wait_dead(int(pidfile.read_text())), "a background process outlived its run"
    (record,) = project.records()
    run = project.run_dir(record)
    assert "stopping the processes it left running" in (run / "log.txt").read_text()


def test_timeout_kills_the_process_group(project, tmp_path):
    pidfile = tmp_path / "pids"
    project.write({"slow.py": SPAWNER})
    started = time.monotonic()
    result = project.run("slow.py", "--timeout", "2", env={"PIDFILE": str(pidfile)}, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.output
    assert "timed out after 2s" in result.stdout
    assert elapsed < 60
    parent, child = map(int, pidfile.read_text().split())
    assert _wait_dead(parent) and _wait_dead(child), "the grandchild survived the timeout"
    (record,) = project.records()
    assert record["status"] == "canceled"


def _signal_spawner(project, tmp_path, sig: int) -> tuple[int, str, int, int]:
    """Start SPAWNER under amlrun, send ``sig`` to amlrun once the run has spawned its
    grandchild; return (amlrun's exit code, its output, the script's pid, the grandchild's pid)."""
    pidfile = tmp_path / "pids"
    project.write({"slow.py": SPAWNER})
    proc = project.popen("slow.py", env={"PIDFILE": str(pidfile)})
    try:
        _read_until(proc, "spawned")
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    parent, child = map(int, pidfile.read_text().split())
    return proc.returncode, out, parent, child


def test_ctrl_c_kills_group_marks_canceled_exits_2(project, tmp_path):
    code, out, parent, child = _signal_spawner(project, tmp_path, signal.SIGINT)
    assert code == 2, out
    assert "interrupted" in out
    assert "Traceback" not in out
    assert _wait_dead(parent) and _wait_dead(child), "Ctrl-C left the run's processes behind"
    (record,) = project.records()
    assert record["status"] == "canceled"


def test_runs_of_a_killed_amlrun_are_stopped_by_the_next_amlrun(project, tmp_path):
    code, out, parent, child = _signal_spawner(project, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL, out
    assert _alive(parent) and _alive(child), "kill -9 of amlrun should leave its run orphaned"
    try:
        listed = project.run("--collect-only", "slow.py")
        assert listed.returncode == 0, listed.output
        assert _wait_dead(parent) and _wait_dead(child), "the next amlrun left the orphaned run running"
        (record,) = project.records()
        run = project.run_dir(record)
        history = project.run("history", "show", run.name, "--format", "json")
        assert json.loads(history.stdout)["record"]["status"] == "failed", history.output
    finally:
        for pid in (parent, child):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_is_handled_like_ctrl_c(project, tmp_path):
    """A canceled CI job or ``timeout`` sends SIGTERM: the runs must not outlive amlrun."""
    code, out, parent, child = _signal_spawner(project, tmp_path, signal.SIGTERM)
    assert code == 2, out
    assert _wait_dead(parent) and _wait_dead(child), "SIGTERM left the run's processes behind"
    (record,) = project.records()
    assert record["status"] == "canceled"


def test_ctrl_c_with_several_cells_stops_everything(project, tmp_path):
    project.write({"w.py": f"""
        import os, sys, time
        AMLRUN_PARAMS = {{"n": [1, 2, 3]}}
        n = sys.argv[-1]
        open(os.path.join({str(tmp_path)!r}, "started-" + n), "w").write(str(os.getpid()))
        time.sleep(300)
    """})
    proc = project.popen("w.py", "-n", "2")
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(tmp_path.glob("started-*"))) == 2
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    for marker in tmp_path.glob("started-*"):
        assert _wait_dead(int(marker.read_text()))
    assert not (tmp_path / "started-3").exists()  # the queued cell never started
    statuses = sorted(r["status"] for r in project.records())
    assert statuses == ["canceled", "canceled"]
