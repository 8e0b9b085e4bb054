"""``amlrun history``: the real CLI over runs recorded by real amlrun sessions."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAIN = """
    import argparse, json, os, random
    from amlrun_client import log

    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--depth", type=int, default=1)
    a = p.parse_args()
    log("accuracy", round(1 - a.lr / a.depth, 4))
    log("loss", a.lr * a.depth)
    for step in range(3):
        log("curve", step * a.lr, step=step)
    rng = random.Random(f"{a.lr}-{a.depth}")
    os.makedirs("outputs/sub", exist_ok=True)
    with open("outputs/model.bin", "wb") as fh:
        fh.write(bytes(rng.randrange(256) for _ in range(50000)))
    with open("outputs/sub/info.json", "w") as fh:
        json.dump({"lr": a.lr, "depth": a.depth}, fh)
    print("trained", a.lr, a.depth)
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout


def history(project, *args: str):
    result = project.run("history", *args)
    assert "Traceback" not in result.output, result.output
    return result


def records(project, *args: str) -> list[dict]:
    result = history(project, "list", "--format", "json", *args)
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def swept(project):
    """A git project swept over 6 cells (lr × depth) with an uncommitted change."""
    project.write({"train.py": TRAIN, "util.py": "X = 1\n"})
    git(project.root, "init", "-q")
    git(project.root, "-c", "user.email=t@example.com", "-c", "user.name=t", "add", ".")
    git(project.root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    (project.root / "util.py").write_text("X = 2  # uncommitted\n")
    result = project.run("train.py", "-p", "lr=0.1,0.2,0.4", "-p", "depth=1,2", "-n", "2")
    assert result.returncode == 0, result.output
    return project


def test_sweep_of_six_cells_is_listed_with_metric_columns(swept):
    result = history(swept, "list")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["run", "status", "cell", "started", "duration"]
    assert set(header[5:]) == {"accuracy", "loss", "curve"}
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 6 and all("completed" in row for row in rows)
    assert any("train.py::local[lr=0.4-depth=2]" in row and "0.8" in row for row in rows)

    recs = records(swept)
    assert [r["created"] for r in recs] == sorted((r["created"] for r in recs), reverse=True)  # newest first
    head = git(swept.root, "rev-parse", "HEAD").strip()
    for rec in recs:
        assert rec["status"] == "completed" and rec["exit_code"] == 0
        assert rec["script"] == "train.py" and rec["target"] == "local" and rec["target_type"] == "local"
        assert rec["runconfig"] == "local" and rec["amlrun_version"] and rec["host"]
        assert rec["started"] <= rec["ended"] and rec["duration"] >= 0
        assert rec["git_commit"] == head and rec["git_dirty"] is True
        assert len(rec["snapshot_digest"]) == 64 and rec["environment_digest"]
        assert rec["metrics"]["curve"] == 2 * float(rec["params"]["lr"])  # the last value of a series
        run_dir = swept.root / ".amlrun" / "runs" / rec["run_id"]
        assert "uncommitted" in (run_dir / "git.diff").read_text()
        artifacts = {a["path"]: a for a in rec["artifacts"]}
        assert set(artifacts) == {"outputs/model.bin", "outputs/sub/info.json"}
        for path, art in artifacts.items():
            data = (run_dir / path).read_bytes()
            assert art["size"] == len(data) and art["sha256"] == hashlib.sha256(data).hexdigest()


def test_list_filters_and_limit(swept):
    assert len(records(swept, "--param", "lr=0.1")) == 2
    assert {r["params"]["depth"] for r in records(swept, "--param", "lr=0.2", "--param", "depth=2")} == {"2"}
    assert records(swept, "--status", "failed") == []
    assert len(records(swept, "--script", "train.py", "--target", "local")) == 6
    assert records(swept, "--script", "other.py") == []
    assert len(records(swept, "--limit", "4")) == 4
    table = history(swept, "list", "--limit", "2")
    assert "showing the newest 2 of 6 runs" in table.stdout
    bad = history(swept, "list", "--status", "weird")
    assert bad.returncode == 4 and "invalid choice" in bad.stderr
    bad = history(swept, "list", "--param", "lr")
    assert bad.returncode == 4 and "NAME=VALUE" in bad.stderr
    assert "no runs match" in history(swept, "list", "--param", "lr=9").stdout
    rows = history(swept, "list", "--param", "lr=0.1").stdout.splitlines()[2:]  # the table filters alike
    assert len(rows) == 2 and all("lr=0.1-" in row for row in rows)


@pytest.mark.parametrize(
    "rows",
    [
        [["20261202-1", "completed", "a.py::local[lr=0.1]", 0.25, None, True, 3], ["r2", " padded ", "", "", 7, "", ""]],
        [],
        [["wide: 学习率", "ok", "x", "", "", "", ""], ["tab\there", "é", "\x1b[31mred", "", "", "", ""]],
    ],
    ids=["ascii", "empty", "wide-and-escapes"],
)
def test_tables_are_laid_out_as_tabulate_lays_them_out(rows):
    from tabulate import tabulate

    from amlrun.commands.history import table

    headers = ["run", "status", "cell", "loss", "", "flag", "n"]
    assert table(rows, headers) == tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def test_show_by_prefix_and_last(swept):
    last = records(swept, "--limit", "1")[0]
    for ref in ("last", last["run_id"], last["run_id"][:-2]):
        result = history(swept, "show", ref)
        assert result.returncode == 0, result.output
        assert last["run_id"] in result.stdout and last["cell_id"] in result.stdout
        assert "outputs/model.bin" in result.stdout and "accuracy" in result.stdout
        assert "trained" in result.stdout  # the log's tail
    data = json.loads(history(swept, "show", "last", "--format", "json").stdout)
    assert data["record"]["run_id"] == last["run_id"]
    assert [step for step, _ in data["metric_series"]["curve"]] == [0, 1, 2]
    assert data["log_tail"][-1].startswith("trained")
    missing = history(swept, "show", "zzz")
    assert missing.returncode == 4 and "no run matches 'zzz'" in missing.stderr


def test_compare_marks_the_differing_parameter_and_metrics(swept):
    recs = records(swept)
    a = next(r for r in recs if r["params"] == {"lr": "0.1", "depth": "2"})
    b = next(r for r in recs if r["params"] == {"lr": "0.4", "depth": "2"})
    result = history(swept, "compare", a["run_id"], b["run_id"])
    assert result.returncode == 0, result.output
    rows = {line.split()[2] if line.startswith("*") else line.split()[1]: line
            for line in result.stdout.splitlines()[2:] if line.strip() and not line.startswith("* marks")}
    assert rows["lr"].startswith("*") and rows["accuracy"].startswith("*") and rows["loss"].startswith("*")
    assert not rows["depth"].startswith("*") and not rows["script"].startswith("*")
    data = json.loads(history(swept, "compare", a["run_id"], b["run_id"], "--format", "json").stdout)
    differs = {row["name"] for row in data["rows"] if row["differs"]}
    assert {"lr", "accuracy", "loss", "curve"} <= differs and "depth" not in differs
    only = json.loads(history(swept, "compare", a["run_id"], b["run_id"], "--diff-only", "--format", "json").stdout)
    assert all(row["differs"] for row in only["rows"])
    assert history(swept, "compare", a["run_id"]).returncode == 4


def test_download_gives_back_identical_outputs_and_refuses_to_overwrite(swept, tmp_path):
    rec = records(swept, "--limit", "1")[0]
    dest = tmp_path / "dl"
    result = history(swept, "download", "last", "-d", str(dest))
    assert result.returncode == 0, result.output
    for art in rec["artifacts"]:
        data = (dest / art["path"].removeprefix("outputs/")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"]
    (dest / "model.bin").write_bytes(b"mine")
    again = history(swept, "download", "last", "-d", str(dest))
    assert again.returncode == 4 and "already exists" in again.stderr and "--force" in again.stderr
    assert (dest / "model.bin").read_bytes() == b"mine"
    forced = history(swept, "download", "last", "-d", str(dest), "--force", "--format", "json")
    assert forced.returncode == 0
    assert {f["path"] for f in json.loads(forced.stdout)["files"]} == {"model.bin", "sub/info.json"}
    assert hashlib.sha256((dest / "model.bin").read_bytes()).hexdigest() == next(
        a["sha256"] for a in rec["artifacts"] if a["path"] == "outputs/model.bin")


def test_restore_gives_back_the_exact_code(swept, tmp_path):
    at_run_time = {p: (swept.root / p).read_bytes() for p in ("train.py", "util.py")}
    (swept.root / "util.py").write_text("X = 3  # changed after the run\n")
    (swept.root / "new.py").write_text("print('new')\n")
    dest = tmp_path / "restored"
    result = history(swept, "restore", "last", "-d", str(dest))
    assert result.returncode == 0, result.output
    assert {p: (dest / p).read_bytes() for p in at_run_time} == at_run_time
    assert not (dest / "new.py").exists() and not (dest / ".amlrun").exists()
    assert "uncommitted changes" in result.stdout
    again = history(swept, "restore", "last", "-d", str(dest))
    assert again.returncode == 4 and "not empty" in again.stderr
    assert history(swept, "restore", "last", "-d", str(dest), "--force").returncode == 0


def test_gc_by_count_and_age(swept, tmp_path):
    # a second snapshot: the runs removed below are its only users
    (swept.root / "util.py").write_text("X = 4\n")
    assert swept.run("train.py", "-p", "lr=0.3", "-q").returncode == 0
    before = records(swept, "--limit", "0")
    assert len(before) == 7
    dry = history(swept, "gc", "--keep", "1", "--dry-run", "--grace", "0")
    assert dry.returncode == 0 and "would free" in dry.stdout
    assert len(records(swept, "--limit", "0")) == 7
    assert history(swept, "gc", "--older-than", "1d").stdout.count("freed 0 B") == 1
    result = history(swept, "gc", "--keep", "1", "--grace", "0", "--format", "json")
    data = json.loads(result.stdout)
    assert len(data["runs"]) == 6 and data["snapshots"] == 1 and data["objects"] >= 1 and data["bytes"] > 0
    kept = records(swept, "--limit", "0")
    assert [r["run_id"] for r in kept] == [before[0]["run_id"]]
    for gone in data["runs"]:
        assert not (swept.root / ".amlrun" / "runs" / gone).exists()
    assert history(swept, "restore", "last", "-d", str(tmp_path / "r")).returncode == 0
    assert (tmp_path / "r" / "util.py").read_text() == "X = 4\n"
    assert history(swept, "gc", "--older-than", "soon").returncode == 4


def test_killed_amlrun_leaves_a_failed_run_and_earlier_runs_intact(project):
    project.write({
        "quick.py": "print('quick')\n",
        "slow.py": """
            import os, time
            print("child pid", os.getpid(), flush=True)
            time.sleep(120)
        """,
    })
    assert project.run("quick.py").returncode == 0
    proc = project.popen("slow.py")
    try:
        deadline = time.time() + 60
        child = None
        while time.time() < deadline and child is None:
            running = [r for r in records(project) if r["status"] == "running"]
            if running:
                log = project.root / ".amlrun" / "runs" / running[0]["run_id"] / "log.txt"
                text = log.read_text() if log.exists() else ""
                if "child pid" in text:
                    child = int(text.split("child pid")[1].split()[0])
            time.sleep(0.1)
        assert child, "the slow run never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    try:
        os.kill(child, signal.SIGKILL)  # the script survives its runner (own session); not amlrun's to clean up
    except ProcessLookupError:
        pass
    recs = records(project)
    slow = next(r for r in recs if r["script"] == "slow.py")
    quick = next(r for r in recs if r["script"] == "quick.py")
    assert slow["status"] == "failed" and "died" in slow["reason"]
    assert quick["status"] == "completed"
    assert "failed" in history(project, "list").stdout
    # its working copy is garbage now; gc removes it
    assert (project.root / ".amlrun" / "work" / slow["run_id"]).exists()
    data = json.loads(history(project, "gc", "--format", "json").stdout)
    assert data["workdirs"] == 1 and data["runs"] == []
    assert not (project.root / ".amlrun" / "work" / slow["run_id"]).exists()


def test_logs_follow_prints_until_the_run_ends(project):
    project.write({"ticks.py": """
        import time
        for i in range(8):
            print("tick", i, flush=True)
            time.sleep(0.3)
    """})
    proc = project.popen("ticks.py")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not [r for r in records(project) if r["status"] == "running"]:
            time.sleep(0.05)
        follower = subprocess.run([sys.executable, "-m", "amlrun", "history", "logs", "last", "--follow"],
                                  cwd=project.root, capture_output=True, text=True, timeout=60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert follower.returncode == 0, follower.stderr
    assert [line for line in follower.stdout.splitlines() if line.startswith("tick")] == [f"tick {i}" for i in range(8)]
    assert "completed" in follower.stderr
    plain = history(project, "logs", "last", "--tail", "2")
    assert plain.stdout.splitlines() == ["tick 6", "tick 7"]
    data = json.loads(history(project, "logs", "last", "--format", "json").stdout)
    assert data["status"] == "completed" and data["lines"][0] == "tick 0"


def test_tracked_run_false_records_nothing(project):
    project.write({
        "aml_config/quiet.runconfig": "Target: local\nTrackedRun: false\n",
        "hello.py": "from amlrun_client import log\nlog('x', 1)\nprint('hello')\n",
    })
    result = project.run("hello.py", "-c", "quiet")
    assert result.returncode == 0 and "hello" in result.stdout
    assert records(project) == []
    assert not list((project.root / ".amlrun" / "runs").glob("*/record.json"))
    # its folder (log, outputs) is outside the history; gc removes it by age only
    untracked = project.root / ".amlrun" / "untracked"
    assert len(list(untracked.iterdir())) == 1
    assert json.loads(history(project, "gc", "--format", "json").stdout)["untracked"] == 0
    assert json.loads(history(project, "gc", "--older-than", "0s", "--format", "json").stdout)["untracked"] == 1
    assert list(untracked.iterdir()) == []


def test_concurrent_amlrun_processes_lose_no_record(project):
    project.write({"job.py": "import sys\nprint(sys.argv)\n"})
    procs = [project.popen("job.py", "-p", f"w={w}", "-p", "i=0,1,2,3,4", "-n", "2", "-q") for w in range(4)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    recs = records(project, "--limit", "0")
    assert len(recs) == 20 and {r["status"] for r in recs} == {"completed"}
    assert {(r["params"]["w"], r["params"]["i"]) for r in recs} == {(str(w), str(i)) for w in range(4) for i in range(5)}


def test_history_without_runs_and_diff_dispatch(project):
    empty = history(project, "list")
    assert empty.returncode == 0 and "no runs recorded" in empty.stdout
    assert history(project, "list", "--format", "json").stdout.strip() == "[]"
    assert history(project, "show", "last").returncode == 4
    diff = history(project, "diff", "--help")
    try:
        import amlrun.commands.history_diff  # noqa: F401  (written separately)
    except ModuleNotFoundError:
        assert diff.returncode == 4 and "history_diff.py is missing" in diff.stderr
    else:
        assert diff.returncode == 0 and "usage" in diff.stdout.lower()
