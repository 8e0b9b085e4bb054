"""The target registry: a type name belongs to one plugin; a second registration is one
clear line naming both plugins, and replacing a built-in is explicit (-p no:NAME)."""

from __future__ import annotations

import pytest

from amlrun.errors import UsageError
from amlrun.plugins import build_pluginmanager
from amlrun.targets.registry import collect_target_types

OWN_DOCKER = '''
from amlrun.hookspec import hookimpl
from amlrun.targets.local import LocalTarget


class OwnDocker(LocalTarget):
    """A 'docker' of this plugin's own (runs locally, says so)."""

    def execute(self, job, prepared, sink):
        sink.write("own docker target runs it")
        return super().execute(job, prepared, sink)


@hookimpl
def amlrun_register_targets():
    return {"docker": OwnDocker}
'''


@pytest.fixture
def own_docker(project):
    project.write({"own_docker.py": OWN_DOCKER, "aml_config/docker.compute": "type: docker\nbaseDockerImage: x\n",
                   "a.py": "print('ran')\n"})
    return {"PYTHONPATH": str(project.root), "AMLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_a_second_docker_type_is_one_line_naming_both_plugins(project, own_docker):
    result = project.run("-c", "docker", "a.py", "-p", "own_docker", env=own_docker)
    assert result.returncode == 4, result.output
    line = ("target type 'docker' is registered twice: by plugin 'docker' and by plugin 'own_docker'; "
            "keep one of them: -p no:docker or -p no:own_docker")
    assert line in result.stderr and "Traceback" not in result.output


def test_replacing_a_builtin_is_blocking_it_then_registering_your_own(project, own_docker):
    result = project.run("-c", "docker", "a.py", "--stream", "-p", "no:docker", "-p", "own_docker", env=own_docker)
    assert result.returncode == 0, result.output
    assert "own docker target runs it" in result.output and "ran" in result.output


def test_the_registry_refuses_what_is_not_a_target():
    from amlrun.hookspec import hookimpl

    class NotATarget:
        @hookimpl
        def amlrun_register_targets(self):
            return {"odd": object}

    pm = build_pluginmanager([])
    pm.register(NotATarget(), name="odd-plugin")
    with pytest.raises(UsageError, match="plugin 'odd-plugin' registers target type 'odd' as"):
        collect_target_types(pm)


def test_builtin_types_and_aliases_are_registered_once():
    types = collect_target_types(build_pluginmanager([]))
    assert {"local", "docker", "localdocker", "remote", "remotedocker", "cluster"} <= set(types)
    assert types["localdocker"] is types["docker"]
