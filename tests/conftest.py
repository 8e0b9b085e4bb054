"""Shared fixtures: run the real ``amlrun`` CLI in throw-away projects.

Services: a test that needs one calls ``require_service(name, why)``. It skips only
where the service truly cannot exist; under CI (``AMLRUN_REQUIRE_SERVICES=1``, set by
``.ci/run``) it fails instead, so a skipped service never passes CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def require_service(name: str, why: str) -> None:
    message = f"{name} unavailable: {why}"
    if os.environ.get("AMLRUN_REQUIRE_SERVICES"):
        pytest.fail(message + " (AMLRUN_REQUIRE_SERVICES is set: services must run here)", pytrace=False)
    pytest.skip(message)


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """Under CI every test must run: a skip of any kind fails the session."""
    if os.environ.get("AMLRUN_REQUIRE_SERVICES") and _skipped and exitstatus == 0:
        print(f"\nAMLRUN_REQUIRE_SERVICES is set but {len(_skipped)} test(s) were skipped: " + ", ".join(_skipped[:10]))
        session.exitstatus = 1


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep the credentials file and caches of tests away from the real user's."""
    home = tmp_path_factory.getbasetemp() / "userhome"
    (home / "config").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("AMLRUN_CREDENTIALS", str(home / "config" / "credentials.yml"))
    monkeypatch.setenv("AMLRUN_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("AMLRUN_PLUGINS", raising=False)


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


class Project:
    """A throw-away project folder with a helper to run amlrun in it."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, files: dict[str, str]) -> "Project":
        write_files(self.root, files)
        return self

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300, input: str | None = None) -> Result:
        full_env = os.environ.copy()
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "amlrun", *args], cwd=self.root, env=full_env, capture_output=True, text=True,
            timeout=timeout, input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        full_env = os.environ.copy()
        full_env.update(env or {})
        return subprocess.Popen(
            [sys.executable, "-m", "amlrun", *args], cwd=self.root, env=full_env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )


@pytest.fixture
def project(tmp_path) -> Project:
    """An empty project with an ``aml_config/`` folder."""
    root = tmp_path / "proj"
    (root / "aml_config").mkdir(parents=True)
    return Project(root)
