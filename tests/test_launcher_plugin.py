"""The amlrun-launcher plugin, installed with pip (scripts/test.sh installs plugins/*):
found through the ``amlrun`` entry-point group, its prefix really applied to the run."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import require_service

PROBE = """
import os
from amlrun_client import log
log("niceness", os.nice(0))
log("cpus", sorted(os.sched_getaffinity(0)))
log("launched_as", os.environ.get("LAUNCHED_AS"))
log("run_id", os.environ["AMLRUN_RUN_ID"])
os.makedirs("outputs", exist_ok=True)
open("outputs/where.txt", "w").write(os.getcwd())
"""


@pytest.fixture(autouse=True)
def launcher_installed():
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="amlrun")}
    if names.get("launcher") != "amlrun_launcher":
        require_service("amlrun-launcher", "not installed (bash scripts/test.sh pip-installs plugins/*)")


def test_nice_and_taskset_prefixes_are_applied(project):
    base = os.nice(0)
    cpu = max(os.sched_getaffinity(0))
    project.write({
        "probe.py": PROBE,
        "aml_config/niced.compute": 'type: launcher\nlauncher: ["nice", "-n", "7"]\n',
        "aml_config/pinned.compute": f"type: launcher\nlauncher: taskset -c {cpu}\n",
    })
    result = project.run("-c", "niced", "-c", "pinned", "-c", "local", "probe.py")
    assert result.returncode == 0, result.output
    assert "target niced: launcher nice -n 7" in result.stdout
    assert "warning" not in result.stderr  # the plugin declares its 'launcher' key
    recs = project.records_by_cell()
    assert recs["probe.py::niced"]["metrics"]["niceness"] == min(base + 7, 19)
    assert recs["probe.py::pinned"]["metrics"]["cpus"] == [cpu]
    assert recs["probe.py::pinned"]["metrics"]["niceness"] == base
    assert recs["probe.py::local"]["metrics"]["niceness"] == base
    assert recs["probe.py::local"]["metrics"]["cpus"] == sorted(os.sched_getaffinity(0))
    for rec in recs.values():  # everything else of the local target still holds
        assert rec["target_type"] in ("launcher", "local") and rec["status"] == "completed"
        where = project.root / ".amlrun/runs" / rec["run_id"] / "outputs/where.txt"
        assert Path(where.read_text()) != project.root  # ran in a snapshot, outputs came back


def test_placeholders_in_the_prefix(project):
    project.write({
        "probe.py": PROBE,
        "aml_config/tagged.compute": 'type: launcher\nlauncher: ["env", "LAUNCHED_AS={target}/{run_id}"]\n',
    })
    result = project.run("-c", "tagged", "probe.py")
    assert result.returncode == 0, result.output
    metrics = project.records_by_cell()["probe.py::tagged"]["metrics"]
    assert metrics["launched_as"] == f"tagged/{metrics['run_id']}"


def test_no_launcher_blocks_the_plugin(project):
    project.write({"probe.py": PROBE, "aml_config/niced.compute": 'type: launcher\nlauncher: ["nice"]\n'})
    blocked = project.run("-c", "niced", "-p", "no:launcher", "probe.py")
    assert blocked.returncode == 4
    assert "unknown compute target type 'launcher'" in blocked.stderr
    assert "Traceback" not in blocked.output
    assert not (project.root / ".amlrun/runs").exists() or not list((project.root / ".amlrun/runs").iterdir())

    no_autoload = project.run("-c", "niced", "probe.py", env={"AMLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert no_autoload.returncode == 4 and "unknown compute target type 'launcher'" in no_autoload.stderr
    by_module = project.run("-c", "niced", "-p", "amlrun_launcher", "probe.py",
                            env={"AMLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert by_module.returncode == 0, by_module.output


@pytest.mark.parametrize("value, message", [
    ("5", "'launcher' must be a list of strings"),
    ("[]", "'launcher' is empty"),
    ('"nice \'unclosed"', "'launcher' is not a valid command line"),
])
def test_bad_launcher_key_is_one_line_naming_the_file(project, value, message):
    project.write({"probe.py": PROBE, "aml_config/bad.compute": f"type: launcher\nlauncher: {value}\n"})
    result = project.run("-c", "bad", "probe.py")
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"amlrun: error: aml_config/bad.compute: {message}")
    assert "Traceback" not in result.output


def test_missing_key_and_missing_command(project):
    project.write({"probe.py": PROBE, "aml_config/nokey.compute": "type: launcher\n",
                   "aml_config/ghost.compute": 'type: launcher\nlauncher: ["no-such-launcher-xyz", "-q"]\n'})
    nokey = project.run("-c", "nokey", "probe.py")
    assert nokey.returncode == 4 and "needs a 'launcher' key" in nokey.stderr
    ghost = project.run("-c", "ghost", "probe.py")
    assert ghost.returncode == 1
    assert "cannot start no-such-launcher-xyz: not found" in ghost.stdout


def test_timeout_kills_the_prefixed_process(project):
    if shutil.which("nice") is None:
        require_service("nice", "coreutils' nice is not on PATH")
    project.write({
        "sleeper.py": "import os, time\nopen(os.environ['AMLRUN_OUTPUTS_DIR'] + '/pid', 'w').write(str(os.getpid()))\n"
                      "time.sleep(60)\n",
        "aml_config/niced.compute": 'type: launcher\nlauncher: ["nice", "-n", "3"]\n',
    })
    started = time.monotonic()
    result = project.run("-c", "niced", "--timeout", "1", "sleeper.py")
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.output
    assert "timed out after 1s" in result.output
    rec = project.records_by_cell()["sleeper.py::niced"]
    assert rec["status"] == "canceled"
    pid = int((project.root / ".amlrun/runs" / rec["run_id"] / "outputs/pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_doctor_checks_the_launcher_command(project):
    project.write({"aml_config/niced.compute": 'type: launcher\nlauncher: ["nice", "-n", "1"]\n',
                   "aml_config/ghost.compute": 'type: launcher\nlauncher: ["no-such-launcher-xyz"]\n'})
    ok = project.run("doctor", "-c", "niced")
    assert ok.returncode == 0, ok.output
    assert "launcher command 'nice'" in ok.stdout
    bad = project.run("doctor", "-c", "ghost")
    assert bad.returncode != 0
    assert "'no-such-launcher-xyz' is not on PATH" in bad.stdout
