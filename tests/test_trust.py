"""Results you can trust: ``--reuse`` never hands back a stale result, whatever was typed;
amlrun's own files never invalidate it; ``--lf`` reruns exactly what failed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def outcomes(output: str) -> dict[str, str]:
    """cell id → PASSED / FAILED / REUSED ... from the per-cell result lines."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"^(PASSED|FAILED|ERROR|REUSED|CANCELED|SKIPPED) (\S+)  ", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def make_interpreter(where: Path) -> Path:
    """A real, separate interpreter (a venv without pip) whose packages a test installs."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    return where / "bin" / "python"


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def install(site: Path, name: str, version: str) -> None:
    """Install (or replace) a one-module distribution the way pip lays it out."""
    for old in site.glob(f"{name}-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{name}.py,,\n")
    (site / f"{name}.py").write_text(f"VERSION = {version!r}\n")
    # pip removes the old byte-code too; a .pyc of the same-sized source written within the
    # same second would otherwise still be taken for current (where byte-code is written)
    for cached in site.glob(f"__pycache__/{name}.*.pyc"):
        cached.unlink()


SCRIPT = """\
import json
import trustpkg
print("##amlrun-metric " + json.dumps({"name": "acc", "value": float(trustpkg.VERSION)}))
"""


def test_reuse_is_refused_when_the_interpreters_packages_changed(project, tmp_path):
    python = make_interpreter(tmp_path / "venv")
    site = site_packages(python)
    install(site, "trustpkg", "1.0")
    project.write({"aml_config/local.compute": f"type: local\npythonLocation: {python}\n", "exp/acc.py": SCRIPT})
    first = project.run("-c", "local")
    assert first.returncode == 0, first.output
    assert outcomes(project.run("--reuse").stdout) == {"exp/acc.py::local": "REUSED"}

    install(site, "trustpkg", "0.5")  # a downgrade in the same interpreter: same path, other result
    plan = project.run("--reuse", "--collect-only")
    assert plan.returncode == 0, plan.output
    line = next(li for li in plan.stdout.splitlines() if li.startswith("not reused: exp/acc.py::local"))
    assert "environment changed" in line and "trustpkg" in line, line
    again = project.run("--reuse")
    assert outcomes(again.stdout) == {"exp/acc.py::local": "PASSED"}, again.output
    assert "environment changed" in again.stdout  # the terminal summary says why
    listed = json.loads(project.run("history", "list", "--format", "json").stdout)
    assert sorted(r["metrics"]["acc"] for r in listed) == [0.5, 1.0]


def test_reused_run_names_its_run_and_its_environment_is_the_same(project):
    project.write({"exp/a.py": "print('a')\n"})
    first = project.run()
    assert first.returncode == 0, first.output
    run_id = re.search(r"run (\S+)", next(li for li in first.stdout.splitlines() if li.startswith("PASSED"))).group(1)
    again = project.run("--reuse")
    line = next(li for li in again.stdout.splitlines() if li.startswith("REUSED"))
    assert run_id in line
    recorded = (project.root / ".amlrun/runs" / run_id / "environment.txt").read_text()
    now = [p.read_text() for p in (project.root / ".amlrun/environments").glob("*.txt")]
    assert recorded in now


def test_another_python_first_on_path_is_another_environment(project, tmp_path):
    bins = {}
    for name in ("a", "b"):
        python = make_interpreter(tmp_path / f"venv-{name}")
        bins[name] = tmp_path / f"bin-{name}"
        bins[name].mkdir()
        wrapper = bins[name] / "python3"  # as pyenv's and conda's shims do
        wrapper.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
        wrapper.chmod(0o755)
    project.write({"aml_config/local.compute": "type: local\npythonLocation: python3\n",
                   "exp/a.py": "import sys\nprint(sys.prefix)\n"})
    import os

    path = os.environ["PATH"]
    first = project.run(env={"PATH": f"{bins['a']}:{path}"})
    assert first.returncode == 0, first.output
    same = project.run("--reuse", env={"PATH": f"{bins['a']}:{path}"})
    assert outcomes(same.stdout) == {"exp/a.py::local": "REUSED"}
    plan = project.run("--reuse", "--collect-only", env={"PATH": f"{bins['b']}:{path}"})
    assert "not reused: exp/a.py::local: changed: environment" in plan.stdout, plan.output
    other = project.run("--reuse", env={"PATH": f"{bins['b']}:{path}"})
    assert outcomes(other.stdout) == {"exp/a.py::local": "PASSED"}


def test_reuse_does_not_depend_on_the_paths_typed(project):
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'i': [1, 2]}\nprint('a')\n", "exp/b.py": "print('b')\n"})
    assert project.run().returncode == 0
    only_a = project.run("exp/a.py", "--reuse")
    assert outcomes(only_a.stdout) == {"exp/a.py::local[i=1]": "REUSED", "exp/a.py::local[i=2]": "REUSED"}
    only_b = project.run("exp", "--reuse")
    assert set(outcomes(only_b.stdout).values()) == {"REUSED"}


def test_reports_and_the_baseline_written_into_the_project_do_not_invalidate_reuse(project):
    project.write({"exp/a.py": "print('##amlrun-metric {\"name\": \"acc\", \"value\": 1}')\n"})
    first = project.run("--junitxml", "j.xml", "--report-json", "r.json", "--html", "out/r.html")
    assert first.returncode == 0, first.output
    assert (project.root / "j.xml").exists() and (project.root / "out/r.html").exists()
    assert project.run("baseline", "save").returncode == 0
    assert (project.root / "amlrun-baseline.yml").exists()
    again = project.run("--reuse", "--junitxml", "j.xml")
    assert outcomes(again.stdout) == {"exp/a.py::local": "REUSED"}, again.output
    manifest = max((project.root / ".amlrun/snapshots").glob("*.json"), key=lambda p: p.stat().st_mtime)
    paths = {entry[0] for entry in json.loads(manifest.read_text())}
    assert paths == {"exp/a.py"}


def test_init_gitignore_covers_amlrun_files(project):
    assert project.run("init", "p").returncode == 0
    ignored = (project.root / "p/.gitignore").read_text().splitlines()
    assert ".amlrun/" in ignored and "reports/" in ignored


def test_editing_a_module_a_script_imports_reruns_only_that_script(project):
    project.write({
        "exp/a.py": "import helper\nprint(helper.X)\n",
        "exp/b.py": "print('b')\n",
        "exp/helper.py": "X = 1\n",
    })
    assert project.run("exp/a.py", "exp/b.py").returncode == 0
    project.write({"exp/helper.py": "X = 2\n"})
    plan = project.run("exp/a.py", "exp/b.py", "--reuse", "--collect-only")
    assert "not reused: exp/a.py::local: changed: code it sees" in plan.stdout, plan.output
    again = project.run("exp/a.py", "exp/b.py", "--reuse")
    assert outcomes(again.stdout) == {"exp/a.py::local": "PASSED", "exp/b.py::local": "REUSED"}
    # a script that imports dynamically sees every Python file
    project.write({"exp/b.py": "import importlib\nprint(importlib.import_module('json'))\n"})
    assert project.run("exp/a.py", "exp/b.py").returncode == 0
    project.write({"exp/helper.py": "X = 3\n"})
    assert outcomes(project.run("exp/a.py", "exp/b.py", "--reuse").stdout) == {
        "exp/a.py::local": "PASSED", "exp/b.py::local": "PASSED"}


def test_last_failed_reruns_the_failed_cell_of_a_sweep_without_retyping_it(project):
    project.write({"exp/a.py": "import sys\nAMLRUN_PARAMS = {'i': [0]}\n"
                               "i = sys.argv[sys.argv.index('--i') + 1]\nsys.exit(1 if i == '2' else 0)\n",
                   "exp/b.py": "print('b')\n"})
    sweep = project.run("exp/a.py", "-p", "i=1,2,3")
    assert sweep.returncode == 1
    assert outcomes(sweep.stdout)["exp/a.py::local[i=2]"] == "FAILED"
    rerun = project.run("--lf")
    assert outcomes(rerun.stdout) == {"exp/a.py::local[i=2]": "FAILED"}, rerun.output
    assert "rerun previous 1 failure" in rerun.stdout
    first = project.run("--ff")
    ids = list(outcomes(first.stdout))
    assert ids[0] == "exp/a.py::local[i=2]" and "exp/b.py::local" in ids
    # fixed: nothing failed last time, so --lf says so and runs what was selected
    project.write({"exp/a.py": "print('fixed')\n"})
    assert project.run("exp/a.py", "-p", "i=2").returncode == 0
    everything = project.run("--lf")
    assert "no previously failed cells" in everything.stdout
    assert outcomes(everything.stdout) == {"exp/a.py::local": "PASSED", "exp/b.py::local": "PASSED"}


@pytest.mark.parametrize("typed", [("-c", "local"), ()])
def test_last_failed_keeps_its_target(project, typed):
    project.write({"aml_config/other.compute": "type: local\n", "exp/a.py": "import sys\nsys.exit(1)\n"})
    assert project.run("-c", "other").returncode == 1
    rerun = project.run("--lf", *typed)
    expected = {} if typed else {"exp/a.py::other": "FAILED"}
    got = {k: v for k, v in outcomes(rerun.stdout).items() if k.endswith("::other")}
    assert got == expected, rerun.output


def test_failures_name_the_projects_files_and_the_exception(project):
    project.write({"exp/bad.py": "import json\nprint('##amlrun-metric ' + json.dumps({'name': 'acc', 'value': 1}))\n"
                                 "def f():\n    raise ValueError('lr must be positive')\nf()\n"})
    result = project.run()
    assert result.returncode == 1
    assert "FAILED exp/bad.py::local - ValueError: lr must be positive (exited with code 1)" in result.stdout
    assert 'File "exp/bad.py", line 4, in f' in result.stdout
    assert ".amlrun/work" not in result.stdout
    assert "##amlrun-metric" not in result.stdout  # metric lines stay out of what a person reads
    run_id = re.search(r"run (\d{8}-\d{6}-\w+)", result.stdout).group(1)
    log = (project.root / ".amlrun/runs" / run_id / "log.txt").read_text()
    assert "##amlrun-metric" in log and ".amlrun/work" not in log
    shown = project.run("history", "show", run_id)
    assert "##amlrun-metric" not in shown.stdout and "ValueError: lr must be positive" in shown.stdout


def test_a_sweep_scoped_to_one_script(project):
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'lr': [1]}\nprint('a')\n", "exp/b.py": "print('b')\n"})
    plan = project.run("--collect-only", "-p", "exp/a.py::lr=0.1,0.01")
    cells = [ln for ln in plan.stdout.splitlines() if ln.startswith("exp/")]
    assert cells == ["exp/a.py::local[lr=0.1]", "exp/a.py::local[lr=0.01]", "exp/b.py::local"], plan.output
    wrong = project.run("--collect-only", "-p", "exp/nope.py::lr=1")
    assert wrong.returncode == 4 and "exp/nope.py is not a collected experiment" in wrong.stderr
    assert "Traceback" not in wrong.output


def test_an_undeclared_parameter_is_warned_about_before_anything_runs(project):
    project.write({"exp/a.py": "AMLRUN_PARAMS = {'learning_rate': [1]}\nimport sys\nsys.exit(2)\n"})
    result = project.run("-p", "learning_rat=0.1")
    assert "warning: -p learning_rat: exp/a.py declares no parameter 'learning_rat'; did you mean 'learning_rate'?" \
        in result.stderr
    plan = project.run("--collect-only", "-p", "learning_rat=0.1")  # said before anything runs
    assert plan.returncode == 0 and "did you mean 'learning_rate'?" in plan.stderr


def test_a_misspelt_target_gets_did_you_mean(project):
    project.write({"aml_config/docker.compute": "type: docker\nbaseDockerImage: x\n", "exp/a.py": "print(1)\n"})
    result = project.run("-c", "dokcer", "--collect-only")
    assert result.returncode == 4 and "unknown target 'dokcer'; did you mean 'docker'?" in result.output
    assert "Traceback" not in result.output


def test_json_output_is_strict_json(project):
    project.write({"exp/a.py": "print('##amlrun-metric {\"name\": \"loss\", \"value\": NaN}')\n"
                               "print('##amlrun-metric {\"name\": \"big\", \"value\": Infinity}')\n"})
    assert project.run("--report-json", "r.json").returncode == 0
    listed = project.run("history", "list", "--format", "json").stdout
    for text in (listed, (project.root / "r.json").read_text()):
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    (run,) = json.loads(listed)
    assert run["metrics"] == {"loss": None, "big": None}
