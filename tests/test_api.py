"""amlrun.api: a short script runs a sweep with run(...), then reads its runs back as a
DataFrame (one row per run) and opens a run's outputs from its record."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

TRAIN = """
    import argparse, json, os
    from amlrun_client import log
    p = argparse.ArgumentParser(); p.add_argument("--lr", type=float, default=0.1); p.add_argument("--depth", type=int, default=1)
    a = p.parse_args()
    for step in range(3):
        log("loss", a.lr / (step + 1), step=step)
    log("accuracy", 1 - a.lr / a.depth)
    os.makedirs("outputs", exist_ok=True)
    json.dump({"lr": a.lr, "depth": a.depth}, open("outputs/model.json", "w"))
    if a.lr > 0.25:
        raise SystemExit("lr too high")
"""

SCRIPT = """
    import json, sys
    import amlrun.api as aml

    results = aml.run("train.py", params={"lr": [0.1, 0.2], "depth": [1, 2]}, n=2, project=sys.argv[1], args=["-q"])
    print("RESULT", json.dumps({"exit": results.exit_code, "ok": results.ok,
                                "cells": [[r.cell_id, r.outcome, r.metrics.get("accuracy")] for r in results]}))
    df = aml.runs(project=sys.argv[1], script="train.py").to_pandas()
    print("FRAME", json.dumps({"rows": len(df), "columns": list(df.columns),
                               "acc": sorted(zip(df["lr"], df["depth"], df["accuracy"].round(3)))}))
    history = aml.runs(project=sys.argv[1]).to_pandas(history=True)
    print("HISTORY", len(history), sorted(set(history["metric"])))
    latest = aml.runs(project=sys.argv[1], limit=1)[0]
    print("OPEN", latest.status, json.load(latest.open("model.json")), latest.outputs.is_dir())
"""


def run_script(project, *args: str) -> subprocess.CompletedProcess:
    (project.root / "sweep.py").write_text(textwrap.dedent(SCRIPT))
    return subprocess.run([sys.executable, "sweep.py", str(project.root), *args], cwd=project.root,
                          capture_output=True, text=True, timeout=600)


def tagged(stdout: str, tag: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(tag + " "))[len(tag) + 1:]


def test_a_script_runs_a_sweep_and_gets_a_dataframe_of_its_runs(project):
    project.write({"train.py": TRAIN})
    result = run_script(project)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = json.loads(tagged(result.stdout, "RESULT"))
    assert ran["exit"] == 0 and ran["ok"]
    assert ran["cells"] == [
        ["train.py::local[lr=0.1-depth=1]", "passed", 0.9], ["train.py::local[lr=0.1-depth=2]", "passed", 0.95],
        ["train.py::local[lr=0.2-depth=1]", "passed", 0.8], ["train.py::local[lr=0.2-depth=2]", "passed", 0.9],
    ]
    frame = json.loads(tagged(result.stdout, "FRAME"))
    assert frame["rows"] == 4  # one row per run
    assert {"run_id", "status", "lr", "depth", "loss", "accuracy"} <= set(frame["columns"])
    # parameters are the values given (text from -p, as the command line records them)
    assert frame["acc"] == [["0.1", "1", 0.9], ["0.1", "2", 0.95], ["0.2", "1", 0.8], ["0.2", "2", 0.9]]
    assert tagged(result.stdout, "HISTORY") == "16 ['accuracy', 'loss']"
    assert tagged(result.stdout, "OPEN").startswith("completed {'lr': 0.2, 'depth': 2} True")
    # the same runs as the command line sees them
    assert len(json.loads(project.run("history", "list", "--format", "json").stdout)) == 4


def test_failures_are_values_and_mistakes_are_exceptions(project, tmp_path):
    import pytest

    import amlrun.api as aml
    from amlrun.errors import UsageError

    project.write({"train.py": TRAIN})
    results = aml.run(["train.py"], params={"lr": 0.5}, project=project.root, args=["-q"])
    assert results.exit_code == 1 and not results.ok
    assert [(r.outcome, r.reason) for r in results] == [("failed", "exited with code 1")]
    assert (results[0].outputs / "model.json").is_file()
    with pytest.raises(UsageError, match="unknown target 'nowhere'"):
        aml.run("train.py", targets=["nowhere"], project=project.root)
    with pytest.raises(UsageError, match="params\\['lr'\\]"):
        aml.run("train.py", params={"lr": ["1,2"]}, project=project.root)
    with pytest.raises(UsageError, match="no artifact outputs/missing.txt"):
        aml.runs(project=project.root)[0].open("missing.txt")
    with pytest.raises(UsageError, match="no artifact"):
        aml.runs(project=project.root)[0].open("../record.json")
    assert len(aml.runs(project=tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)) == 0


def test_the_command_line_runs_through_run_command(project, monkeypatch, capsys):
    """``amlrun`` is a layer over the API: its run path is ``amlrun.api.run_command``, whose
    values (cells, outcomes, exit code) are what the command line turns into its exit code."""
    import amlrun.api as aml
    from amlrun.cli import main

    project.write({"a.py": "print('a')\n", "b.py": "raise SystemExit(3)\n"})
    monkeypatch.chdir(project.root)
    seen = []
    real = aml.run_command

    def spy(argv, **kwargs):  # the real function runs; the spy only keeps what it returned
        results = real(argv, **kwargs)
        seen.append((list(argv), results))
        return results

    monkeypatch.setattr(aml, "run_command", spy)
    assert main(["-q"]) == 1
    assert main(["--collect-only", "-k", "zzz"]) == 5
    assert main(["history", "list"]) == 0  # a subcommand is not a run
    assert [(argv, r.exit_code, [(c.cell_id, c.outcome) for c in r]) for argv, r in seen] == [
        (["-q"], 1, [("a.py::local", "passed"), ("b.py::local", "failed")]),
        (["--collect-only", "-k", "zzz"], 5, []),
    ]
    assert "1 passed, 1 failed" in capsys.readouterr().out  # the terminal report is printed as before
    collected = real(["--collect-only", "-q"], project=project.root, prog="x")
    assert (collected.exit_code, list(collected), collected.collected) == (0, [], ("a.py::local", "b.py::local"))
    assert aml.command_line(["a.py"], targets=["local"], params={"lr": [0.1, 1]}, n=2, keyword="a", args=["-q"]) == [
        "a.py", "-c", "local", "-p", "lr=0.1,1", "-n", "2", "-k", "a", "-q"]


def test_a_project_under_the_home_folder_may_be_named_with_a_tilde(project, monkeypatch):
    """The README's example names its project ``~/iris``."""
    import amlrun.api as aml

    project.write({"train.py": "print('hi')\n"})
    monkeypatch.setenv("HOME", str(project.root.parent))
    tilde = f"~/{project.root.name}"
    assert aml.run("train.py", project=tilde, args=["-q"]).exit_code == 0
    assert [r.status for r in aml.runs(project=tilde)] == ["completed"]
