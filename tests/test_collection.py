"""Collection: scripts found by pattern, never imported; static AMLRUN_PARAMS / AMLRUN_MARKS."""

from __future__ import annotations

import pytest

from amlrun.collection import read_declarations
from amlrun.errors import ConfigError
from amlrun.matrix import Mark



# -- static declarations (unit) ------------------------------------------------------------------


def test_grid_declaration(tmp_path):
    path = tmp_path / "t.py"
    path.write_text('import numpy\nAMLRUN_PARAMS = {"lr": [0.1, 0.01], "depth": [3, 5]}\n')
    params, marks = read_declarations(path, "t.py")
    assert params == ({"lr": 0.1, "depth": 3}, {"lr": 0.1, "depth": 5}, {"lr": 0.01, "depth": 3},
                      {"lr": 0.01, "depth": 5})
    assert marks == ()


def test_list_declaration_and_marks(tmp_path):
    path = tmp_path / "t.py"
    path.write_text(
        'AMLRUN_PARAMS: list = [{"lr": 0.1, "opt": "adam"}, {"lr": 0.5}]\n'
        'AMLRUN_MARKS = ["slow", {"name": "skip", "targets": ["docker"], "reason": "needs a GPU"}]\n'
    )
    params, marks = read_declarations(path, "t.py")
    assert params == ({"lr": 0.1, "opt": "adam"}, {"lr": 0.5})
    assert marks == (Mark("slow"), Mark("skip", "needs a GPU", ("docker",)))


def test_scalar_in_grid_is_one_value(tmp_path):
    path = tmp_path / "t.py"
    path.write_text('AMLRUN_PARAMS = {"lr": 0.1, "depth": [1, 2]}\n')
    params, _ = read_declarations(path, "t.py")
    assert params == ({"lr": 0.1, "depth": 1}, {"lr": 0.1, "depth": 2})


def test_only_module_level_literals_count(tmp_path):
    path = tmp_path / "t.py"
    path.write_text('def f():\n    AMLRUN_PARAMS = {"x": [1, 2]}\nif True:\n    AMLRUN_MARKS = ["slow"]\n')
    assert read_declarations(path, "t.py") == ((), ())


@pytest.mark.parametrize(
    "source, line",
    [
        ("x = 1\nAMLRUN_PARAMS = {'lr': compute()}\n", 2),
        ("AMLRUN_PARAMS = [1, 2]\n", 1),
        ("\n\nAMLRUN_MARKS = [3]\n", 3),
        ("AMLRUN_PARAMS = {'a': [1]}\ndef broken(:\n", 2),
    ],
)
def test_bad_declarations_name_file_and_line(tmp_path, source, line):
    path = tmp_path / "t.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as info:
        read_declarations(path, "exp/t.py")
    assert str(info.value).startswith(f"exp/t.py:{line}: ")


# -- the real CLI ---------------------------------------------------------------------------------


def test_experiment_importing_missing_package_still_collects_and_runs_elsewhere(project):
    project.write({
        "experiments/train.py": """
            import definitely_not_installed_pkg_xyz
            from definitely_not_installed_pkg_xyz.sub import thing
            AMLRUN_PARAMS = {"lr": [0.1, 0.2]}
        """,
    })
    result = project.run_in_process("--collect-only", "experiments")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == ["experiments/train.py::local[lr=0.1]", "experiments/train.py::local[lr=0.2]"]
    # running it fails in the target (where the package is missing), not in collection
    result = project.run_in_process("experiments/train.py", "-k", "0.1")
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stdout


def test_walk_order_patterns_and_skipped_dirs(project):
    project.write({
        "b.py": "print('b')\n",
        "a.py": "print('a')\n",
        "_private.py": "",
        "__init__.py": "",
        "amlrunconf.py": "",
        "setup.py": "",
        "notes.txt": "",
        "sub/c.py": "",
        "outputs/generated.py": "",
        ".hidden/h.py": "",
        "__pycache__/x.py": "",
        "venv/lib.py": "",
        "aml_config/helper.py": "",
    })
    result = project.run_in_process("--collect-only")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == ["a.py::local", "b.py::local", "sub/c.py::local"]


def test_explicit_file_is_collected_even_if_pattern_differs(project):
    project.write({"pyproject.toml": '[tool.amlrun]\nexperiment_files = ["exp_*.py"]\n',
                   "train.py": "", "exp_a.py": ""})
    assert project.run_in_process("--collect-only").collected_ids() == ["exp_a.py::local"]
    assert project.run_in_process("--collect-only", "train.py").collected_ids() == ["train.py::local"]


def test_same_file_twice_is_one_experiment(project):
    project.write({"exp/a.py": ""})
    result = project.run_in_process("--collect-only", "exp", "exp/a.py")
    assert result.collected_ids() == ["exp/a.py::local"]


def test_collected_params_and_marks_in_collect_only(project):
    project.write({
        "grid.py": 'AMLRUN_PARAMS = {"a": [1, 2], "b": ["x"]}\n',
        "sets.py": 'AMLRUN_PARAMS = [{"n": 10}, {"n": 20, "mode": "fast"}]\nAMLRUN_MARKS = [{"name": "skip", "reason": "later"}]\n',
    })
    result = project.run_in_process("--collect-only")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == [
        "grid.py::local[a=1-b=x]", "grid.py::local[a=2-b=x]",
        "sets.py::local[n=10]", "sets.py::local[n=20-mode=fast]",
    ]
    assert "sets.py::local[n=10]  (skip: later)" in result.stdout


def test_syntax_error_in_declaring_script_is_one_line(project):
    """A script's unreadable declaration is that script's collection error (exit 1, as
    pytest --continue-on-collection-errors), named with its file and line."""
    project.write({"bad.py": "AMLRUN_PARAMS = {'a': [1,\n"})
    result = project.run_in_process("--collect-only")
    assert result.returncode == 1
    assert "Traceback" not in result.output
    assert "ERROR collecting bad.py: bad.py:1:" in result.stdout and "syntax error" in result.stdout


def test_script_with_syntax_error_but_no_declaration_collects(project):
    """Without a declaration the file is not even parsed (it may be Python 2 from Workbench days)."""
    project.write({"py2.py": "print 'hello'\n"})
    result = project.run_in_process("--collect-only")
    assert result.returncode == 0
    assert result.collected_ids() == ["py2.py::local"]


def test_skip_mark_per_target(project):
    project.write({
        "aml_config/other.compute": "type: local\n",
        "t.py": 'AMLRUN_MARKS = [{"name": "skip", "targets": ["other"], "reason": "not there"}]\nprint("ran")\n',
    })
    result = project.run_in_process("-c", "local", "-c", "other", "t.py")
    assert result.returncode == 0, result.output
    assert "PASSED t.py::local" in result.stdout
    assert "SKIPPED t.py::other" in result.stdout and "not there" in result.stdout
    assert "1 passed, 1 skipped" in result.stdout
