"""Shared fixtures: run the real ``amlrun`` CLI in throw-away projects (the harness is
``tests/harness.py``: ``Project.run`` returns a ``Result`` with outcomes, line matching
and the run records of the call).

Services: a test that needs one calls ``require_service(name, why)``. It skips only
where the service truly cannot exist; under CI (``AMLRUN_REQUIRE_SERVICES=1``, set by
``.ci/run``) it fails instead, so a skipped service never passes CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import LineMatcher, Project, Result, write_files

__all__ = ["REPO", "LineMatcher", "Project", "Result", "require_service", "write_files"]

#: service fixtures (a private sshd, a Spark master and worker, a SLURM cluster, a Ray head,
#: an MLflow server), available to every test file. A test module must not import one:
#: the imported name is a second fixture of its own, so a second service would start
#: beside the first (a second sshd resets the shared test user's password and key).
pytest_plugins = ["sshd_fixture", "spark_fixture", "slurm_fixture", "ray_fixture", "mlflow_fixture"]

REPO = Path(__file__).resolve().parent.parent


def require_service(name: str, why: str) -> None:
    message = f"{name} unavailable: {why}"
    if os.environ.get("AMLRUN_REQUIRE_SERVICES"):
        pytest.fail(message + " (AMLRUN_REQUIRE_SERVICES is set: services must run here)", pytrace=False)
    pytest.skip(message)


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail") and not _declared_unsupported(report):
        _skipped.append(report.nodeid)


def _declared_unsupported(report) -> bool:
    """A conformance-kit check the target declared it cannot keep (listed in the summary)."""
    from amlrun.testing.conformance import UNSUPPORTED

    return isinstance(report.longrepr, tuple) and UNSUPPORTED in str(report.longrepr[-1])


def pytest_sessionfinish(session, exitstatus):
    """Under CI every test must run: a skip of any kind fails the session."""
    if os.environ.get("AMLRUN_REQUIRE_SERVICES") and _skipped and exitstatus == 0:
        print(f"\nAMLRUN_REQUIRE_SERVICES is set but {len(_skipped)} test(s) were skipped: " + ", ".join(_skipped[:10]))
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Keep the credentials file and caches of tests away from the real user's."""
    home = tmp_path_factory.getbasetemp() / "userhome"
    (home / "config").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("AMLRUN_CREDENTIALS", str(home / "config" / "credentials.yml"))
    monkeypatch.setenv("AMLRUN_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("AMLRUN_PLUGINS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # export only where a test turns it on


@pytest.fixture
def project(tmp_path) -> Project:
    """An empty project with an ``aml_config/`` folder."""
    root = tmp_path / "proj"
    (root / "aml_config").mkdir(parents=True)
    return Project(root)
