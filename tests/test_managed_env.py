"""Managed local environments (``userManagedEnvironment: false``): a venv built from the
``pip:`` list with real pip and PyPI, reused while the spec is unchanged, rebuilt when
it changes, built once when two amlrun processes race for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
SCRIPT = "import six, sys\nprint('SIX=' + six.__version__)\nprint('PREFIX=' + sys.prefix)\n"
BUILDING = "building environment"


def _deps(*pip: str, conda: tuple[str, ...] = ()) -> str:
    lines = ["name: project_environment", "dependencies:", f"  - python={PY}"]
    lines += [f"  - {c}" for c in conda]
    if pip:
        lines.append("  - pip:")
        lines += [f"    - {p}" for p in pip]
    return "\n".join(lines) + "\n"


@pytest.fixture
def managed(project, tmp_path):
    project.write({
        "aml_config/local.compute": 'type: "local"\npythonLocation: "python"\nuserManagedEnvironment: false\n',
        "aml_config/conda_dependencies.yml": _deps("six==1.16.0"),
        "job.py": SCRIPT,
    })
    cache = tmp_path / "cache"
    return project, {"AMLRUN_CACHE_DIR": str(cache)}, cache


def _value(output: str, key: str) -> str:
    return next(line.split("=", 1)[1] for line in output.splitlines() if line.startswith(key + "="))


def _env_dirs(cache: Path) -> list[Path]:
    envs = cache / "envs"
    return sorted(p for p in envs.iterdir() if p.is_dir()) if envs.exists() else []


def test_build_reuse_and_rebuild_on_change(managed):
    project, env, cache = managed
    plan = project.run("--collect-only", env=env)
    assert "environment not built" in plan.stdout

    first = project.run("job.py", "-v", env=env)
    assert first.returncode == 0, first.output
    assert BUILDING in first.stdout
    assert "Successfully installed six" in first.stdout  # -v shows the build's output
    assert _value(first.stdout, "SIX") == "1.16.0"
    (built,) = _env_dirs(cache)
    assert Path(_value(first.stdout, "PREFIX")).resolve() == built.resolve()
    marker = built / ".amlrun-complete"
    stamp = (marker.stat().st_ino, marker.stat().st_mtime_ns)

    assert "environment ready" in project.run("--collect-only", env=env).stdout
    second = project.run("job.py", env=env)
    assert second.returncode == 0, second.output
    assert BUILDING not in second.output
    assert "Successfully installed" not in second.output
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns) == stamp
    assert _value(second.stdout, "PREFIX") == _value(first.stdout, "PREFIX")

    # without -v the build is one status line, not pip's output
    project.write({"aml_config/conda_dependencies.yml": _deps("six==1.17.0")})
    third = project.run("job.py", env=env)
    assert third.returncode == 0, third.output
    assert BUILDING in third.stdout and "Successfully installed" not in third.stdout
    assert _value(third.stdout, "SIX") == "1.17.0"
    assert len(_env_dirs(cache)) == 2
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns) == stamp  # the old one is untouched


def test_concurrent_processes_build_once(managed):
    project, env, cache = managed
    project.write({"aml_config/conda_dependencies.yml": _deps("six==1.15.0")})
    procs = [project.popen("job.py", env=env) for _ in range(2)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(out.count(BUILDING) for out in outputs) == 1, outputs
    assert {_value(out, "SIX") for out in outputs} == {"1.15.0"}
    assert len(_env_dirs(cache)) == 1


def test_failed_build_reports_log_tail_and_retries(managed):
    project, env, cache = managed
    project.write({"aml_config/conda_dependencies.yml": _deps("amlrun-no-such-package-xyz==0.0.1")})
    result = project.run("job.py", env=env)
    assert result.returncode == 1, result.output
    assert "ERROR job.py::local" in result.stdout
    assert "environment build failed" in result.stdout
    assert "amlrun-no-such-package-xyz" in result.stdout  # pip's own complaint, from the log tail
    assert "Traceback" not in result.output
    assert not any((d / ".amlrun-complete").exists() for d in _env_dirs(cache))
    again = project.run("job.py", env=env)
    assert BUILDING in again.stdout  # a failed build is not cached


def test_conda_packages_need_conda(managed):
    project, env, cache = managed
    project.write({"aml_config/conda_dependencies.yml": _deps("six", conda=("scikit-learn",))})
    result = project.run("job.py", env=env)
    assert result.returncode == 4, result.output
    assert "scikit-learn" in result.stdout and "userManagedEnvironment" in result.stdout
    assert "Traceback" not in result.output
    assert _env_dirs(cache) == []


def test_user_managed_default_uses_the_interpreter_as_is(project, tmp_path):
    project.write({"aml_config/local.compute": 'type: "local"\n', "aml_config/conda_dependencies.yml": _deps("six"),
                   "p.py": "import sys\nprint('PREFIX=' + sys.prefix)\n"})
    result = project.run("p.py", env={"AMLRUN_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.output
    assert BUILDING not in result.stdout
    assert _value(result.stdout, "PREFIX") == sys.prefix
    assert not (tmp_path / "cache" / "envs").exists()


def test_clean_removes_only_this_projects_environments_unless_all(managed, tmp_path):
    project, env, cache = managed
    assert project.run("job.py", env=env).returncode == 0
    (ours,) = _env_dirs(cache)
    other = type(project)(tmp_path / "other")
    other.write({
        "aml_config/local.compute": 'type: "local"\npythonLocation: "python"\nuserManagedEnvironment: false\n',
        "aml_config/conda_dependencies.yml": _deps(),
        "job.py": "print('other')\n",
    })
    assert other.run("job.py", env=env).returncode == 0
    (theirs,) = [d for d in _env_dirs(cache) if d != ours]

    cleaned = project.run("clean", "--no-docker", env=env)
    assert cleaned.returncode == 0, cleaned.output
    assert f"removed environment {ours.name}" in cleaned.stdout and theirs.name not in cleaned.stdout
    assert "1 item, freed" in cleaned.stdout
    assert _env_dirs(cache) == [theirs]

    everything = project.run("clean", "--all", "--no-docker", "--dry-run", env=env)
    assert f"would remove environment {theirs.name}" in everything.stdout
