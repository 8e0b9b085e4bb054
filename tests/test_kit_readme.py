"""The README's "Write a target plugin" is true: the target written there from scratch
against ``Target`` passes the conformance kit exactly as the README says to run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def _block(readme: str, first_line: str) -> str:
    match = re.search(r"```python\n(" + re.escape(first_line) + r"\n.*?)```", readme, re.S)
    assert match, f"README.md has no python block starting with {first_line!r}"
    return match.group(1)


def test_the_readme_target_from_scratch_passes_the_kit(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (tmp_path / "scratch_target.py").write_text(_block(readme, "# scratch_target.py"))
    (tmp_path / "test_scratch_target.py").write_text(_block(readme, "# test_scratch_target.py"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("AMLRUN_REQUIRE_SERVICES", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "tmp"), "test_scratch_target.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"\b16 passed\b", out), out
