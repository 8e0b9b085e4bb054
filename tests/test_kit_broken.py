"""The conformance kit catches a broken target: one that drops the parameters and leaves its
process running after a timeout fails the kit, each failure naming the broken promise.

The kit runs in a pytest of its own (as pytest's ``pytester`` does), on a test module a
plugin author would write, against a real (broken) target plugin loaded by amlrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

BROKEN_PLUGIN = '''
import os
import subprocess
import sys
import threading
import time

from amlrun.hookspec import hookimpl
from amlrun.targets.base import ExecResult, PreparedEnvironment, Target, contract_env


class BrokenTarget(Target):
    """Runs locally, but drops the parameters and never stops a run that timed out."""

    type_name = "broken"
    local_filesystem = True

    def environment_digest(self, runconfig):
        return "broken"

    def prepare(self, runconfig, progress):
        return PreparedEnvironment("broken", python=sys.executable)

    def execute(self, job, prepared, sink):
        outputs = job.workdir / "outputs"
        outputs.mkdir(exist_ok=True)
        env = {**os.environ, **contract_env(job, workdir=str(job.workdir), outputs=str(outputs), share=None)}
        proc = subprocess.Popen([prepared.python, job.argv[0]], cwd=job.workdir, env=env,   # params dropped
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        pump = threading.Thread(target=lambda: [sink.write(raw.decode("utf-8", "replace").rstrip("\\n"))
                                                for raw in iter(proc.stdout.readline, b"")], daemon=True)
        pump.start()
        deadline = time.monotonic() + job.timeout if job.timeout else None
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return ExecResult("canceled", None, "timed out")   # and the process keeps running
            time.sleep(0.1)
        pump.join()
        return ExecResult("completed" if proc.returncode == 0 else "failed", proc.returncode)


@hookimpl
def amlrun_register_targets():
    return {"broken": BrokenTarget}
'''

KIT_MODULE = '''
import pytest

from amlrun.testing import TargetConformance


class TestBrokenTarget(TargetConformance):
    target_name = "broken"
    timeout_seconds = 2
    stop_within = 5

    @pytest.fixture
    def target_files(self):
        return {"aml_config/broken.compute": "type: broken\\n"}

    def amlrun_env(self):
        return {"AMLRUN_PLUGINS": "broken_target", "PYTHONPATH": PLUGIN_DIR}
'''


def _kill_leftovers(root: Path) -> None:
    """The broken target leaves its sleeper running: stop what runs under ``root``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmdline and b"kit_sleep_" in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_broken_target_fails_the_kit_naming_the_broken_promises(tmp_path):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "broken_target.py").write_text(textwrap.dedent(BROKEN_PLUGIN))
    (tmp_path / "test_broken_kit.py").write_text(
        textwrap.dedent(KIT_MODULE).replace("PLUGIN_DIR", repr(str(plugin_dir))))
    env = {k: v for k, v in os.environ.items() if k != "AMLRUN_REQUIRE_SERVICES"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "tmp"),
             "-k", "file_and_params or hostile or timeout", "test_broken_kit.py"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        _kill_leftovers(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "target 'broken' breaks the promise [params]: $file is substituted and parameters arrive as " \
           "--name value arguments" in out, out
    assert "breaks the promise [hostile_values]" in out, out
    assert "breaks the promise [process_listing]: nothing is left running on the target after a timeout" in out, out
    # what the broken target does right still passes: its timed-out run is recorded as canceled
    assert "3 failed, 1 passed" in out, out
