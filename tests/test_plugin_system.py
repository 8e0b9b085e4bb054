"""The plugin system: -p NAME / -p no:NAME, entry points and their opt-out,
per-directory ``amlrunconf.py`` scoping, a third-party target type, a fresh plugin
manager per invocation, and plugin crashes as internal errors (exit 3)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from amlrun.plugins import build_pluginmanager

HEADER_PLUGIN = """
    from amlrun.hookspec import hookimpl

    @hookimpl
    def amlrun_report_header(config):
        return "hello from {name}"
"""



@pytest.fixture
def plugin_dir(tmp_path):
    """A folder on PYTHONPATH holding plugin modules and an installed (dist-info) plugin."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "hdr_plugin.py").write_text(textwrap.dedent(HEADER_PLUGIN.format(name="hdr_plugin")))
    (site / "ep_plugin_mod.py").write_text(textwrap.dedent(HEADER_PLUGIN.format(name="entry point")))
    dist = site / "amlrun_ep_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: amlrun-ep-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[amlrun]\nepdemo = ep_plugin_mod\n")
    return site


def _env(site: Path, **extra) -> dict[str, str]:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _autoload_on(monkeypatch):
    monkeypatch.delenv("AMLRUN_DISABLE_PLUGIN_AUTOLOAD", raising=False)


# -- -p NAME, -p no:NAME, entry points -----------------------------------------------------------


def test_p_name_loads_a_module(project, plugin_dir):
    project.write({"t.py": ""})
    result = project.run("--collect-only", "-p", "hdr_plugin", env=_env(plugin_dir))
    assert result.returncode == 0, result.output
    assert "hello from hdr_plugin" in result.stdout
    assert "hello from hdr_plugin" not in project.run("--collect-only", env=_env(plugin_dir)).stdout
    # --plugin and AMLRUN_PLUGINS do the same
    assert "hello from hdr_plugin" in project.run("--collect-only", "--plugin=hdr_plugin", env=_env(plugin_dir)).stdout
    assert "hello from hdr_plugin" in project.run("--collect-only", env=_env(plugin_dir, AMLRUN_PLUGINS="hdr_plugin")).stdout


def test_p_unknown_module_is_usage_error(project):
    project.write({"t.py": ""})
    result = project.run("--collect-only", "-p", "no_such_plugin_module")
    assert result.returncode == 4
    assert "no_such_plugin_module" in result.stderr and "Traceback" not in result.output


def test_entry_point_plugins_autoload_unless_disabled_or_blocked(project, plugin_dir):
    project.write({"t.py": ""})
    assert "hello from entry point" in project.run("--collect-only", env=_env(plugin_dir)).stdout
    disabled = project.run("--collect-only", env=_env(plugin_dir, AMLRUN_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert disabled.returncode == 0 and "hello from entry point" not in disabled.stdout
    blocked = project.run("--collect-only", "-p", "no:epdemo", env=_env(plugin_dir))
    assert blocked.returncode == 0 and "hello from entry point" not in blocked.stdout


def test_disabled_autoload_still_allows_explicit_plugins(project, plugin_dir):
    project.write({"t.py": ""})
    result = project.run("--collect-only", "-p", "ep_plugin_mod",
                         env=_env(plugin_dir, AMLRUN_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert "hello from entry point" in result.stdout


def test_p_no_blocks_a_builtin(project):
    project.write({"t.py": ""})
    result = project.run("-p", "no:local", "t.py")
    assert result.returncode == 4
    assert "unknown compute target type 'local'" in result.stderr


def test_builder_unit(plugin_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_dir))
    pm = build_pluginmanager(["hdr_plugin", "no:collector"])
    assert pm.has_plugin("hdr_plugin") and pm.has_plugin("local") and pm.has_plugin("epdemo")
    assert pm.get_plugin("collector") is None and pm.is_blocked("collector")
    assert build_pluginmanager([]) is not pm


def test_fast_entry_point_loader_agrees_with_pluggys(plugin_dir, monkeypatch):
    """amlrun reads entry_points.txt itself (importlib.metadata is slow); same plugins as pluggy finds."""
    import pluggy

    from amlrun.plugins import load_entry_points

    monkeypatch.syspath_prepend(str(plugin_dir))
    ours, theirs = pluggy.PluginManager("amlrun"), pluggy.PluginManager("amlrun")
    load_entry_points(ours)
    theirs.load_setuptools_entrypoints("amlrun")
    assert "epdemo" in dict(ours.list_name_plugin())
    assert dict(ours.list_name_plugin()) == dict(theirs.list_name_plugin())
    blocked = pluggy.PluginManager("amlrun")
    blocked.set_blocked("epdemo")
    load_entry_points(blocked)
    assert blocked.get_plugin("epdemo") is None and blocked.is_blocked("epdemo")


# -- a third-party compute target type -------------------------------------------------------------


def test_plugin_registers_a_target_type(project, plugin_dir):
    (plugin_dir / "echo_target.py").write_text(textwrap.dedent("""
        from amlrun.hookspec import hookimpl
        from amlrun.targets.base import ExecResult, PreparedEnvironment, Target

        class EchoTarget(Target):
            type_name = "echo"
            compute_keys = frozenset({"greeting"})

            def environment_digest(self, runconfig):
                return "echo"

            def prepare(self, runconfig, progress):
                return PreparedEnvironment("echo")

            def execute(self, job, prepared, sink):
                sink.write(f"{self.compute.get('greeting')} {' '.join(job.argv)}")
                return ExecResult("completed", 0)

        @hookimpl
        def amlrun_register_targets():
            return {"echo": EchoTarget}
    """))
    project.write({"aml_config/talk.compute": "type: echo\ngreeting: hi\n", "t.py": ""})
    result = project.run("-c", "talk", "t.py", "-p", "echo_target", "-p", "x=1", env=_env(plugin_dir))
    assert result.returncode == 0, result.output
    assert "warning" not in result.stderr  # the plugin's compute key is known
    assert "hi t.py --x 1" in result.stdout
    # without the plugin the type is unknown
    result = project.run("-c", "talk", "t.py", env=_env(plugin_dir))
    assert result.returncode == 4 and "unknown compute target type 'echo'" in result.stderr


# -- crashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["amlrun_configure(config)", "amlrun_runreport(report)"])
def test_plugin_raising_is_an_internal_error(project, plugin_dir, hook):
    (plugin_dir / "crashy.py").write_text(
        f"from amlrun.hookspec import hookimpl\n\n@hookimpl\ndef {hook}:\n    raise RuntimeError('plugin bug')\n")
    project.write({"t.py": ""})
    result = project.run("t.py", "-p", "crashy", env=_env(plugin_dir))
    assert result.returncode == 3, result.output
    assert "RuntimeError: plugin bug" in result.stderr
    assert "internal error" in result.stderr


# -- amlrunconf.py ---------------------------------------------------------------------------------


CONF_PARAMS = """
    from amlrun.hookspec import hookimpl

    @hookimpl
    def amlrun_generate_params(experiment, config):
        return [{{"from": "{name}"}}]
"""


def test_amlrunconf_hooks_are_scoped_to_their_directory(project):
    project.write({
        "a/amlrunconf.py": CONF_PARAMS.format(name="a"),
        "a/train.py": "",
        "a/deep/more.py": "",
        "b/train.py": "",
        "root.py": "",
    })
    result = project.run("--collect-only")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == [
        "root.py::local", "a/train.py::local[from=a]", "a/deep/more.py::local[from=a]", "b/train.py::local",
    ]
    # the same holds when only the sibling is collected, and when a file is named directly
    assert project.run("--collect-only", "b").collected_ids() == ["b/train.py::local"]
    assert project.run("--collect-only", "a/deep/more.py").collected_ids() == ["a/deep/more.py::local[from=a]"]
    # ... and whatever order the command line visits the folders in
    project.write({"b/other.py": ""})
    assert project.run("--collect-only", "b/train.py", "a", "b/other.py").collected_ids() == [
        "b/train.py::local", "a/train.py::local[from=a]", "a/deep/more.py::local[from=a]", "b/other.py::local",
    ]


def test_nested_amlrunconf_adds_to_parents(project):
    project.write({
        "amlrunconf.py": CONF_PARAMS.format(name="root"),
        "sub/amlrunconf.py": CONF_PARAMS.format(name="sub"),
        "sub/t.py": 'AMLRUN_PARAMS = {"from": ["declared"]}\n',
        "other/u.py": "",
    })
    ids = project.run("--collect-only").collected_ids()
    assert ids[:2] == ["other/u.py::local[from=root]", "sub/t.py::local[from=declared]"]
    assert sorted(ids[2:]) == ["sub/t.py::local[from=root]", "sub/t.py::local[from=sub]"]


def test_amlrunconf_modifyitems_addoption_and_collect_file(project):
    project.write({
        "amlrunconf.py": """
            from amlrun.hookspec import hookimpl
            from amlrun.matrix import Mark

            @hookimpl
            def amlrun_addoption(parser, group):
                group.add_argument("--only-even", action="store_true")

            @hookimpl
            def amlrun_collection_modifyitems(session, config, items):
                if config.getoption("only_even"):
                    items[:] = [c for c in items if int(c.params.as_dict().get("n", 0)) % 2 == 0]
                items.reverse()
                for i, cell in enumerate(items):
                    if "n=4" in cell.id:
                        items[i] = cell.with_mark(Mark("skip", reason="skipped by amlrunconf"))
        """,
        "data/amlrunconf.py": """
            from amlrun.collection import Experiment
            from amlrun.hookspec import hookimpl

            @hookimpl
            def amlrun_collect_file(file_path, config):
                if file_path.name.startswith("plain_"):
                    return None  # no answer: the default collector takes the file
                return Experiment(config.project.relative(file_path), file_path, params=({"n": 100},))
        """,
        "t.py": 'AMLRUN_PARAMS = {"n": [1, 2, 3, 4]}\nprint("ran")\n',
        "data/plain_one.py": "",
        "data/job.py": "",
    })
    result = project.run("--collect-only", "--only-even")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == ["data/plain_one.py::local", "data/job.py::local[n=100]",
                            "t.py::local[n=4]", "t.py::local[n=2]"]
    assert "t.py::local[n=4]  (skip: skipped by amlrunconf)" in result.stdout
    result = project.run("t.py", "--only-even")
    assert result.returncode == 0, result.output
    assert "1 passed, 1 skipped" in result.stdout


def test_broken_amlrunconf_is_one_line(project):
    project.write({"sub/amlrunconf.py": "x = 1\nimport not_a_module_anywhere\n", "sub/t.py": ""})
    result = project.run("--collect-only")
    assert result.returncode == 4
    assert "Traceback" not in result.output
    assert "sub/amlrunconf.py:2:" in result.stderr and "not_a_module_anywhere" in result.stderr


def test_fresh_plugin_manager_per_invocation(project, plugin_dir, monkeypatch, capsys):
    """Two in-process calls of ``amlrun.cli.main()`` share neither -p plugins nor amlrunconf hooks."""
    from amlrun.cli import main

    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("AMLRUN_DISABLE_PLUGIN_AUTOLOAD", "1")
    project.write({"t.py": "", "sub/u.py": ""})
    monkeypatch.chdir(project.root)
    assert main(["--collect-only", "-p", "hdr_plugin"]) == 0
    first = capsys.readouterr().out
    assert "hello from hdr_plugin" in first
    assert main(["--collect-only"]) == 0
    second = capsys.readouterr().out
    assert "hello from hdr_plugin" not in second
    # an amlrunconf.py that disappears between calls leaves nothing behind
    project.write({"sub/amlrunconf.py": CONF_PARAMS.format(name="sub")})
    assert main(["--collect-only"]) == 0
    assert "sub/u.py::local[from=sub]" in capsys.readouterr().out
    (project.root / "sub" / "amlrunconf.py").unlink()
    assert main(["--collect-only"]) == 0
    out = capsys.readouterr().out
    assert "sub/u.py::local\n" in out and "from=sub" not in out
