"""The scheduler and the rerun options: per-target limits and queues, preparation once per
target, deterministic order, whole output lines, -x, --timeout, --retries, --lf/--ff,
--reuse, --resume, the --collect-only plan and the live progress display."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import result_lines


# A script that records when it ran (for overlap checks) and sleeps a little.
TRACED = """
import os, sys, time
AMLRUN_PARAMS = {"i": [1, 2, 3]}
start = time.time()
time.sleep(float(os.environ.get("SLEEP", "0.4")))
trace = os.environ.get("TRACE_DIR")
if trace:
    with open(os.path.join(trace, os.environ["AMLRUN_RUN_ID"]), "w") as fh:
        fh.write(f"{os.environ['AMLRUN_TARGET']} {start} {time.time()}\\n")
print("done", sys.argv[1:])
"""

TWO_TARGETS = {
    "aml_config/one.compute": "type: local\nmaxParallel: 1\n",
    "aml_config/two.compute": "type: local\nmaxParallel: 2\n",
}


def spans(trace: Path) -> list[tuple[str, float, float]]:
    rows = []
    for path in trace.iterdir():
        target, start, end = path.read_text().split()
        rows.append((target, float(start), float(end)))
    return rows


def max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = level = 0
    for _, delta in events:
        level += delta
        best = max(best, level)
    return best


def test_per_target_limits_and_targets_side_by_side(project, tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    project.write({"exp/a.py": TRACED, "exp/b.py": TRACED, **TWO_TARGETS})
    result = project.run("-c", "one", "-c", "two", "-n", "3", env={"TRACE_DIR": str(trace)})
    assert result.returncode == 0, result.output
    assert "12 passed" in result.output
    rows = spans(trace)
    assert len(rows) == 12
    one = [(s, e) for t, s, e in rows if t == "one"]
    two = [(s, e) for t, s, e in rows if t == "two"]
    assert max_overlap(one) == 1, "target 'one' has maxParallel: 1"
    assert max_overlap(two) == 2, "target 'two' may run two cells at once"
    # cells of different targets ran side by side: 'one' was never idle while 'two' ran
    # (a worker never sat blocked on 'one' while 'two' had queued work)
    assert max_overlap(one + two) == 3


def test_n1_runs_in_matrix_order_and_summary_is_in_matrix_order(project):
    project.write({"exp/a.py": TRACED, "exp/b.py": TRACED, **TWO_TARGETS})
    plan = project.run("-c", "one", "-c", "two", "--collect-only")
    order = [line for line in plan.stdout.splitlines() if "::" in line]
    assert len(order) == 12
    runs = [project.run("-c", "one", "-c", "two", "-n", "1", env={"SLEEP": "0"}) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.output
        assert run.cell_ids() == order
    # with -n 4 lines come in completion order, but the JSON report lists matrix order
    report = project.root / "r.json"
    run = project.run("-c", "one", "-c", "two", "-n", "4", "--report-json", str(report), env={"SLEEP": "0"})
    assert run.returncode == 0, run.output
    assert [c["id"] for c in json.loads(report.read_text())["cells"]] == order


def test_preparation_error_fails_only_that_targets_cells(project):
    project.write({
        "exp/a.py": TRACED,
        "aml_config/conda_dependencies.yml": "dependencies:\n  - python=3.11\n  - pip:\n    - sampleproject==3.0.0\n",
        "aml_config/managed.compute": "type: local\nuserManagedEnvironment: false\n",
        "aml_config/managed.runconfig": "Target: managed\nPrepareEnvironment: false\n",
        "aml_config/plain.compute": "type: local\n",
    })
    result = project.run("-c", "managed", "-c", "plain", "-n", "2", env={"SLEEP": "0"})
    assert result.returncode == 1, result.output
    lines = result.result_lines()
    assert sorted(line.split()[0] for line in lines if "::managed" in line) == ["ERROR"] * 3
    assert sorted(line.split()[0] for line in lines if "::plain" in line) == ["PASSED"] * 3
    assert "PrepareEnvironment is false" in result.stdout
    assert "amlrun prepare -c managed" in result.stdout


def test_exitfirst_cancels_running_cells_and_stops_scheduling(project):
    project.write({
        "exp/a_fail.py": "import sys\nsys.exit(3)\n",
        "exp/b_slow.py": "import time\nprint('slow started', flush=True)\ntime.sleep(60)\n",
        "exp/c_more.py": "AMLRUN_PARAMS = {'i': [1, 2, 3]}\nprint('ran')\n",
    })
    started = time.monotonic()
    # b_slow starts beside a_fail; a_fail's failure cancels it; c_more's cells never start
    result = project.run("-n", "2", "-x", "exp/b_slow.py", "exp/a_fail.py", "exp/c_more.py")
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.output
    assert "FAILED exp/a_fail.py::local" in result.stdout
    assert "CANCELED exp/b_slow.py::local" in result.stdout
    assert "c_more" not in "\n".join(result.result_lines())
    assert "stopping after 1 failure" in result.stdout
    statuses = [json.loads(p.read_text())["status"] for p in (project.root / ".amlrun/runs").glob("*/record.json")]
    assert sorted(statuses) == ["canceled", "failed"]


def test_timeout_cancels_one_cell(project):
    project.write({"exp/slow.py": "import time\ntime.sleep(60)\n", "exp/quick.py": "print('ok')\n"})
    result = project.run("-n", "2", "--timeout", "1")
    assert result.returncode == 1, result.output
    result.fnmatch_lines(["CANCELED exp/slow.py::local *timed out after 1s*"])
    assert "PASSED exp/quick.py::local" in result.stdout


# A plugin that makes the first attempt of selected cells fail the way a lost connection
# does (an infrastructure error), beside the real local execution of the same cells.
FLAKY_CONF = """
import os
from pathlib import Path
from amlrun.hookspec import hookimpl
from amlrun.targets.base import ExecResult

@hookimpl(tryfirst=True)
def amlrun_execute(target, job, prepared, sink):
    log = Path(os.environ["ATTEMPTS"])
    with log.open("a") as fh:
        fh.write(job.cell_id + "\\n")
    seen = log.read_text().splitlines().count(job.cell_id)
    if "flaky" in job.cell_id and seen <= int(os.environ.get("BREAK_TIMES", "1")):
        sink.write("connection to the target lost")
        return ExecResult("failed", None, "connection lost", infrastructure_error=True)
    return None
"""


def test_retries_rerun_infrastructure_errors_only(project, tmp_path):
    project.write({
        "amlrunconf.py": FLAKY_CONF,
        "exp/flaky.py": "print('fine')\n",
        "exp/own_failure.py": "import sys\nsys.exit(2)\n",
    })
    attempts = tmp_path / "attempts.txt"
    env = {"ATTEMPTS": str(attempts), "AMLRUN_RETRY_DELAY": "0"}
    result = project.run("-n", "2", "--retries", "2", env=env)
    assert result.returncode == 1, result.output
    assert "RETRY exp/flaky.py::local" in result.stdout
    assert "PASSED exp/flaky.py::local" in result.stdout
    assert "FAILED exp/own_failure.py::local" in result.stdout
    counted = attempts.read_text().splitlines()
    assert counted.count("exp/flaky.py::local") == 2
    assert counted.count("exp/own_failure.py::local") == 1, "a script's own exit code is never retried"
    # more breakage than retries: the cell ends as an error, with the reason
    attempts.unlink()
    result = project.run("--retries", "1", "exp/flaky.py", env={**env, "BREAK_TIMES": "5"})
    assert result.returncode == 1, result.output
    assert attempts.read_text().splitlines().count("exp/flaky.py::local") == 2
    result.fnmatch_lines(["ERROR exp/flaky.py::local *connection lost*"])
    # without --retries nothing is retried
    attempts.unlink()
    result = project.run("exp/flaky.py", env=env)
    assert result.returncode == 1 and "RETRY" not in result.stdout
    assert attempts.read_text().splitlines().count("exp/flaky.py::local") == 1


def test_last_failed_and_failed_first(project):
    project.write({
        "exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2, 3]}\nimport sys\nsys.exit(1 if sys.argv[-1] == '2' else 0)\n",
        "exp/b.py": "print('b')\n",
    })
    first = project.run()
    assert first.returncode == 1 and "3 passed, 1 failed" in first.output
    again = project.run("--lf")
    assert again.returncode == 1, again.output
    assert again.cell_ids() == ["exp/a.py::local[i=2]"]
    assert "run-last-failure: rerun previous 1 failure" in again.stdout
    assert "1 failed, 3 deselected" in again.stdout
    ff = project.run("--ff", "-n", "1")
    assert ff.cell_ids()[0] == "exp/a.py::local[i=2]"
    assert len(ff.result_lines()) == 4
    # fixed: the failure leaves the cache, and --lf then runs everything
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2, 3]}\nprint('fixed')\n"})
    assert project.run("--lf").returncode == 0
    assert json.loads((project.root / ".amlrun/cache/lastfailed.json").read_text()) == {}
    everything = project.run("--lf")
    assert "no previously failed cells" in everything.stdout and "4 passed" in everything.stdout


def test_reuse_skips_identical_cells_and_reruns_a_changed_script(project):
    project.write({
        "exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2]}\nprint('a')\nprint('##amlrun-metric {\"name\": \"acc\", \"value\": 0.5}')\n",
        "exp/b.py": "AMLRUN_PARAMS = {'i': [1, 2]}\nprint('b')\n",
        "helper.txt": "shared\n",
    })
    first = project.run("-n", "2")
    assert first.returncode == 0, first.output
    first_ids = {line.split()[1]: line.split()[line.split().index("run") + 1] for line in first.result_lines()}
    runs_before = len(list((project.root / ".amlrun/runs").iterdir()))

    plan = project.run("--reuse", "--collect-only")
    assert "target local: 4 cells (0 to run, 4 reused from the cache), environment ready" in plan.stdout

    again = project.run("--reuse", "-n", "2")
    assert again.returncode == 0, again.output
    assert "nothing ran: all 4 cells reused earlier runs" in again.stdout
    assert "4 reused" in again.stdout
    for line in again.result_lines():
        cell, run_id = line.split()[1], line.split()[line.split().index("run") + 1]
        assert line.startswith("REUSED") and run_id == first_ids[cell]
    assert len(list((project.root / ".amlrun/runs").iterdir())) == runs_before

    # other parameters on the command line are other inputs
    assert "2 passed" in project.run("--reuse", "exp/b.py", "-p", "i=7,8").stdout

    project.write({"exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2]}\nprint('a changed')\n"})
    changed = project.run("--reuse")
    outcomes = {line.split()[1]: line.split()[0] for line in changed.result_lines()}
    assert outcomes == {"exp/a.py::local[i=1]": "PASSED", "exp/a.py::local[i=2]": "PASSED",
                        "exp/b.py::local[i=1]": "REUSED", "exp/b.py::local[i=2]": "REUSED"}

    # a shared file changes what every cell sees
    project.write({"helper.txt": "changed\n"})
    assert "4 passed" in project.run("--reuse").stdout
    # without --reuse everything runs
    assert "4 passed" in project.run().stdout


def test_resume_skips_cells_completed_by_the_interrupted_session(project):
    project.write({
        "exp/a.py": (
            "AMLRUN_PARAMS = {'i': [1, 2, 3, 4]}\nimport os, sys, time\n"
            "if sys.argv[-1] == '3' and os.environ.get('HANG'):\n    time.sleep(120)\nprint('ok')\n"
        ),
    })
    proc = project.popen("-n", "1", env={"HANG": "1"})
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PASSED"):
            seen.append(line.split()[1])
    time.sleep(0.5)
    proc.kill()  # the whole amlrun process dies: no chance to clean up
    proc.wait()
    proc.stdout.close()
    assert seen == ["exp/a.py::local[i=1]", "exp/a.py::local[i=2]"]
    resumed = project.run("--resume", "-n", "1")
    assert resumed.returncode == 0, resumed.output
    outcomes = {line.split()[1]: line.split()[0] for line in resumed.result_lines()}
    assert outcomes == {"exp/a.py::local[i=1]": "REUSED", "exp/a.py::local[i=2]": "REUSED",
                        "exp/a.py::local[i=3]": "PASSED", "exp/a.py::local[i=4]": "PASSED"}
    assert "resume: 2 of 4 cells already completed by the last session" in resumed.stdout
    # the resumed session completed the rest: resuming it again runs nothing
    assert "nothing ran" in project.run("--resume").stdout


def test_stream_lines_are_whole_and_prefixed(project):
    body = "import sys\nfor n in range(300):\n    print(f'line-{n} ' + sys.argv[-1] * 300)\n"
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'i': ['x', 'y', 'z']}\n" + body})
    result = project.run("-n", "3", "--stream")
    assert result.returncode == 0, result.output
    counts = {"x": 0, "y": 0, "z": 0}
    for line in result.stdout.splitlines():
        if "line-" in line:
            match = re.fullmatch(r"\[exp/a\.py::local\[i=(\w)\]\] line-\d+ (\w)\2{299}", line)
            assert match and match.group(1) == match.group(2), line[:120]
            counts[match.group(1)] += 1
    assert counts == {"x": 300, "y": 300, "z": 300}


def test_plain_heartbeat_when_not_a_terminal(project):
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2, 3]}\nimport time\ntime.sleep(1.5)\n"})
    result = project.run("-n", "2", env={"AMLRUN_HEARTBEAT_SECONDS": "0.5"})
    assert result.returncode == 0, result.output
    beats = [line for line in result.stdout.splitlines() if line.startswith("... ")]
    assert beats and "\x1b[" not in result.stdout
    for beat in beats:
        assert re.fullmatch(r"\.\.\. \d running, \d queued, \d passed, 0 failed \(\d+s\)(; longest: \S+ \d+s)?", beat)
    assert any(re.match(r"\.\.\. 2 running, 1 queued, 0 passed, 0 failed \(\d+s\); longest: exp/a\.py::local\[i=\d\] \d+s",
                        beat) for beat in beats), beats


def test_live_status_area_on_a_terminal(project):
    name = "exp/a_rather_long_experiment_name_to_show_truncation.py"
    project.write({name: "AMLRUN_PARAMS = {'i': [1, 2, 3, 4]}\nimport time\ntime.sleep(1.2)\n"})
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "60", "LINES": "20", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "amlrun", "-n", "2"], cwd=project.root, env=env,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(30)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert re.search(r"  running exp/a_rather_long_\S+\.\.\. \d+s", screen)  # cut to fit
    assert re.search(r"\[\d/4\] 2 running 2 queued 0 passed 0 failed 0 reused", screen)
    assert "\x1b[" in screen and "F\x1b[J" in screen  # the status area is erased and redrawn
    status = [line for line in re.split(r"\r?\n|\x1b\[\d+F\x1b\[J", screen)
              if line.startswith("  running ") or (line.startswith("[") and "/4]" in line)]
    assert status
    for line in status:  # the status area fits the terminal's width
        assert len(line) < 60, line
    assert "4 passed" in screen


# -- a remote target loses its connection mid-matrix (real sshd on 127.0.0.1) -------------------

SLOW_CELL = """
import os, time
AMLRUN_PARAMS = {"i": [1, 2, 3, 4]}
print("started on", os.environ["AMLRUN_TARGET"], flush=True)
time.sleep(3)
print("finished", flush=True)
"""


@pytest.mark.ssh
def test_lost_connection_retries_that_targets_cells_and_spares_the_others(project, sshd):
    project.write({
        "aml_config/vm.compute": sshd.compute_yaml(extra="maxParallel: 2\n"),
        "aml_config/box.compute": "type: local\nmaxParallel: 2\n",
        "exp/slow.py": SLOW_CELL,
    })
    # the outage (8 s) outlasts the target's reconnect window (1 s); retries start after it (delay 10 s)
    env = {"AMLRUN_SSH_RECONNECT_SECONDS": "1", "AMLRUN_RETRY_DELAY": "10"}
    proc = project.popen("-c", "vm", "-c", "box", "-n", "4", "--retries", "1", "--stream", env=env)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "::vm" in line and "started on vm" in line:
                break
        sshd.stop()        # every connection to the VM dies with the listener
        time.sleep(8)      # longer than the target's reconnect window
        sshd.start()
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        if not sshd.pidfile.exists():
            sshd.start()
    out = "".join(seen) + out
    lines = result_lines(out)
    local = [line for line in lines if "::box" in line]
    remote = [line for line in lines if "::vm" in line]
    # the local target's cells never noticed
    assert sorted(line.split()[0] for line in local) == ["PASSED"] * 4, out
    # the VM's running cells failed as infrastructure errors and were retried, not failed as scripts
    retried = [line for line in remote if line.startswith("RETRY")]
    assert retried, out
    final = [line for line in remote if not line.startswith("RETRY")]
    assert len(final) == 4 and {line.split()[1] for line in final} == {f"exp/slow.py::vm[i={i}]" for i in range(1, 5)}
    assert all(line.startswith(("PASSED", "ERROR")) for line in final), out
    assert any(line.startswith("PASSED") for line in final), "a retry after the outage succeeds: " + out
    assert not any(line.startswith("FAILED") for line in remote), out
    assert proc.returncode in (0, 1)
