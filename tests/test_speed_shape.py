"""The shape of amlrun's start-up: what a local run and ``--help`` import (never timings,
which live in bench/). Target families register lazily ("module:Class"), so the Docker SDK,
tarfile, the SSH libraries and the Spark code load only for a target that needs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from amlrun.errors import UsageError
from amlrun.plugins import build_pluginmanager
from amlrun.targets.registry import collect_target_types

#: modules a local run (or --help) must not wait for
HEAVY = ("docker", "paramiko", "fabric", "invoke", "amlrun.targets.cluster.spark", "tarfile", "requests",
         "amlrun.targets.docker.target", "amlrun.targets.ssh.connection")
#: what a plain local run in a project without [tool.amlrun] has no use for: the entry-point
#: machinery (amlrun reads entry_points.txt itself), a TOML parser, the JUnit writer, the
#: baseline checker, socket, filelock (which imports asyncio)
UNUSED_BY_A_LOCAL_RUN = (
    "importlib.metadata", "tomllib", "tomli", "xml.etree.ElementTree", "amlrun.baseline", "socket", "filelock", "asyncio"
)


def imported_modules(cwd, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``amlrun ARGS`` as a real process, and every module it imported (``-X importtime``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "amlrun", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    # what the interpreter's site (.pth files of this machine) imported is not amlrun's doing
    return proc, set(names[names.index("site") + 1 :] if "site" in names else names)


def test_a_local_run_imports_no_target_sdk(project):
    project.write({"trivial.py": "print('trivial ran')\n"})
    proc, names = imported_modules(project.root, "-c", "local", "trivial.py", "--stream")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trivial ran" in proc.stdout
    assert "amlrun.targets.local" in names and "amlrun.session" in names  # the listing is real
    assert sorted(set(HEAVY) & names) == []
    assert sorted(set(UNUSED_BY_A_LOCAL_RUN) & names) == []


def test_help_imports_no_target_sdk(project):
    proc, names = imported_modules(project.root, "--help")
    assert proc.returncode == 0 and "usage" in proc.stdout.lower()
    assert "amlrun.cli" in names
    assert sorted(set(HEAVY) & names) == []


def test_a_docker_target_still_loads_its_family(project):
    """The lazy registration resolves: ``amlrun targets`` lists every type with its class."""
    types = collect_target_types(build_pluginmanager([]))
    from amlrun.targets.docker.target import DockerTarget

    assert types["docker"] is DockerTarget and types["localdocker"] is DockerTarget
    assert types["cluster"].__module__ == "amlrun.targets.cluster.target"


LAZY_PLUGIN = '''
from amlrun.hookspec import hookimpl


@hookimpl
def amlrun_register_targets():
    return {"gone": "no_such_module_anywhere:GoneTarget", "odd": "lazyplugin:NOT_A_CLASS"}

NOT_A_CLASS = 3
'''


def test_a_lazy_registration_that_cannot_import_is_one_line(project):
    project.write({"lazyplugin.py": LAZY_PLUGIN, "aml_config/gone.compute": "type: gone\n",
                   "aml_config/odd.compute": "type: odd\n", "a.py": "print('x')\n"})
    env = {"PYTHONPATH": str(project.root), "AMLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = project.run("-c", "gone", "a.py", "-p", "lazyplugin", env=env)
    assert result.returncode == 4, result.output
    assert ("plugin 'lazyplugin' registers target type 'gone' as 'no_such_module_anywhere:GoneTarget', "
            "which cannot be imported: No module named 'no_such_module_anywhere'") in result.stderr
    assert "Traceback" not in result.output
    result = project.run("-c", "odd", "a.py", "-p", "lazyplugin", env=env)
    assert result.returncode == 4, result.output
    assert "registers target type 'odd' as 3, which is not a subclass of amlrun.targets.base.Target" in result.stderr


def test_a_lazy_type_and_a_class_of_the_same_name_conflict():
    from amlrun.hookspec import hookimpl
    from amlrun.targets.local import LocalTarget

    class Mine:
        @hookimpl
        def amlrun_register_targets(self):
            return {"docker": LocalTarget}

    pm = build_pluginmanager([])
    pm.register(Mine(), name="mine")
    with pytest.raises(UsageError, match="target type 'docker' is registered twice: by plugin 'docker' and by "
                                         "plugin 'mine'"):
        collect_target_types(pm)


def test_yaml_uses_libyaml_and_keeps_its_error_lines(tmp_path):
    import yaml

    from amlrun.errors import ConfigError
    from amlrun.yamlfile import parse, read_yaml

    assert hasattr(yaml, "CSafeLoader")
    assert parse("a: [1, 2]\nb: {c: d}\n") == {"a": [1, 2], "b": {"c": "d"}}
    with pytest.raises(yaml.YAMLError):
        parse("!!python/object/apply:os.system ['true']\n")   # safe: no Python objects
    bad = tmp_path / "bad.yml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(bad, display="bad.yml")
    assert str(info.value) == "bad.yml:3: invalid YAML: expected ',' or ']', but got ':'"   # the pure loader's words
