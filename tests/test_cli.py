"""The command line: exit codes 0-5, header and summary, -v / -q, --help and --version."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from amlrun.cli import main


def test_exit_0_all_passed(project):
    project.write({"ok.py": "print('fine')\n"})
    result = project.run("ok.py")
    assert result.returncode == 0, result.output
    result.re_match_lines([r"=+ 1 passed in \d+\.\d\ds =+$"])


def test_exit_1_some_failed(project):
    project.write({"ok.py": "", "bad.py": "raise SystemExit(2)\n"})
    result = project.run()
    assert result.returncode == 1
    result.re_match_lines([r"=+ 1 passed, 1 failed in \d+\.\d\ds =+$"])
    assert "FAILED bad.py::local - exited with code 2" in result.stdout


def test_exit_2_interrupted(project, tmp_path):
    project.write({"sleep.py": "import time\nprint('started', flush=True)\ntime.sleep(120)\n"})
    proc = project.popen("sleep.py")
    try:
        for line in proc.stdout:
            if "started" in line:
                break
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out


def test_exit_3_internal_error_from_a_plugin(project):
    project.write({
        "amlrunconf.py": "from amlrun.hookspec import hookimpl\n\n@hookimpl\ndef amlrun_sessionstart(session):\n"
                         "    raise ZeroDivisionError('bug in a plugin')\n",
        "t.py": "",
    })
    result = project.run("t.py")
    assert result.returncode == 3
    assert "ZeroDivisionError: bug in a plugin" in result.stderr
    assert "internal error" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("args", [["--maxfail", "x"], ["--maxfail", "-1"], ["-n", "0"], ["--no-such-option"], ["-p", "=3"],
                                  ["-c", "ghost"], ["missing_dir/"]])
def test_exit_4_usage_errors(project, args):
    project.write({"t.py": ""})
    result = project.run(*args)
    assert result.returncode == 4, (args, result.output)
    assert "Traceback" not in result.output
    assert len([l for l in result.stderr.splitlines() if l.startswith("amlrun: error:")]) == 1


def test_exit_5_nothing_collected(project):
    result = project.run()
    assert result.returncode == 5
    assert "no cells collected" in result.stdout


def test_header_lists_project_targets_and_cells(project):
    project.write({"aml_config/second.compute": "type: local\n", "a.py": "", "b.py": ""})
    result = project.run("-c", "local", "-c", "second", "-c", "local")
    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    assert "amlrun session starts" in lines[0]
    assert f"project: {project.root}" in lines
    assert sum(1 for l in lines if l.startswith("target ")) == 2  # -c local twice is one target
    assert "collected 4 cells" in lines
    assert len([l for l in lines if l.startswith("PASSED ")]) == 4


def test_quiet(project):
    project.write({"a.py": "print('a out')\n", "b.py": "print('b out')\nraise SystemExit(1)\n"})
    quiet = project.run("-q")
    assert quiet.returncode == 1
    assert "session starts" not in quiet.stdout and "PASSED" not in quiet.stdout
    assert "FAILED b.py::local" in quiet.stdout
    assert "1 passed, 1 failed" in quiet.stdout
    normal = project.run()
    assert "session starts" in normal.stdout and "PASSED a.py::local" in normal.stdout
    # -v adds environment build output: see test_managed_env.py


def test_help_lists_commands_and_builtin_plugin_options_without_heavy_sdks(project):
    result = project.run("--help")
    assert result.returncode == 0
    for word in ("--collect-only", "-k EXPR", "--timeout", "--stream", "commands:", "init",
                 "--junitxml", "--lf", "--reuse", "--repeat", "--check-baseline"):
        assert word in result.stdout
    code = textwrap.dedent("""
        import sys
        from amlrun.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("docker", "fabric", "paramiko", "invoke") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=project.root)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_plugin_options_show_in_help(project):
    project.write({"amlrunconf.py": "from amlrun.hookspec import hookimpl\n\n@hookimpl\n"
                                    "def amlrun_addoption(parser, group):\n    group.add_argument('--my-flag')\n"})
    result = project.run("--help", "-p", "no:nothing")
    assert result.returncode == 0, result.output
    assert "--my-flag" in result.stdout


def test_version(project):
    from amlrun import __version__

    result = project.run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"amlrun {__version__}"


def test_main_in_process_returns_codes(project, monkeypatch, capsys):
    monkeypatch.chdir(project.root)
    project.write({"t.py": ""})
    assert main(["--collect-only"]) == 0
    assert main(["--collect-only", "-k", "zzz"]) == 5
    assert main(["-c", "ghost"]) == 4
    err = capsys.readouterr().err
    assert "unknown target 'ghost'" in err
