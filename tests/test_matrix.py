"""The matrix: parameter grids, stable cell ids, -k / -m selection, --collect-only."""

from __future__ import annotations

import json

import pytest

from amlrun.collection import Experiment
from amlrun.errors import UsageError
from amlrun.expression import Expression
from amlrun.matrix import Mark, ParamSet, combine, expand, parse_param_options, select



# -- unit level ----------------------------------------------------------------------------------


def test_parse_param_options_accumulates():
    assert parse_param_options(["a=1,2,3", "b=x,y", "a=4"]) == {"a": ["1", "2", "3", "4"], "b": ["x", "y"]}
    assert parse_param_options(["msg=hello world"]) == {"msg": ["hello world"]}
    assert parse_param_options(["e="]) == {"e": [""]}


@pytest.mark.parametrize("bad", ["=1", "a b=1", "x"])
def test_parse_param_options_rejects(bad):
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_param_options([bad])


def test_combine_overrides_declared_sets_without_duplicates():
    declared = [{"lr": 0.1, "depth": 3}, {"lr": 0.2, "depth": 3}]
    sets = combine(declared, {"depth": ["5", "7"]})
    assert [s.id for s in sets] == ["lr=0.1-depth=5", "lr=0.1-depth=7", "lr=0.2-depth=5", "lr=0.2-depth=7"]
    assert [s.id for s in combine([{"a": 1}, {"a": 2}], {"a": ["9"]})] == ["a=9"]
    assert combine([], {}) == [ParamSet()]


def test_cell_ids_are_stable_and_nest_experiment_params_target():
    exp = Experiment("experiments/train.py", None, params=({"lr": 0.1, "depth": 3}, {"lr": 1.0, "depth": 3}))
    cells = expand([exp], ["local", "docker"], {})
    assert [c.id for c in cells] == [
        "experiments/train.py::local[lr=0.1-depth=3]", "experiments/train.py::docker[lr=0.1-depth=3]",
        "experiments/train.py::local[lr=1.0-depth=3]", "experiments/train.py::docker[lr=1.0-depth=3]",
    ]
    assert [c.id for c in expand([exp], ["local", "docker"], {})] == [c.id for c in cells]


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("train", {"a/train.py::local[lr=1]", "a/train.py::gpu[lr=2]"}),
        ("train and not gpu", {"a/train.py::local[lr=1]"}),
        ("eval or lr=2", {"a/train.py::gpu[lr=2]", "b/eval.py::local"}),
        ("not (train or eval)", set()),
        ("(train and lr=1) or (eval and not gpu)", {"a/train.py::local[lr=1]", "b/eval.py::local"}),
        ("TRAIN and LOCAL", {"a/train.py::local[lr=1]"}),
        ("slow", {"b/eval.py::local"}),  # -k also matches mark names, as in pytest
    ],
)
def test_keyword_selection(expr, expected):
    train = Experiment("a/train.py", None)
    evaluate = Experiment("b/eval.py", None, marks=(Mark("slow"),))
    from amlrun.matrix import Cell

    cells = [
        Cell(train, ParamSet.of({"lr": 1}), "local"),
        Cell(train, ParamSet.of({"lr": 2}), "gpu"),
        Cell(evaluate, ParamSet(), "local", marks=evaluate.marks),
    ]
    selected, deselected = select(cells, expr, None)
    assert {c.id for c in selected} == expected
    assert len(selected) + len(deselected) == 3


def test_mark_selection_respects_target_scoped_marks():
    from amlrun.matrix import Cell

    exp = Experiment("t.py", None, marks=(Mark("gpu", targets=("docker",)), Mark("slow")))
    cells = [Cell(exp, ParamSet(), t, exp.marks) for t in ("local", "docker")]
    assert [c.id for c in select(cells, None, "gpu")[0]] == ["t.py::docker"]
    assert [c.id for c in select(cells, None, "slow and not gpu")[0]] == ["t.py::local"]


@pytest.mark.parametrize("bad, why", [("a and", "end"), ("(a or b", "')'"), ("a b", "unexpected 'b'"),
                                      ("or a", "unexpected 'or'"), ("  ", "empty"), ("a)", "unexpected ')'")])
def test_bad_expressions(bad, why):
    with pytest.raises(UsageError) as info:
        Expression(bad, "-k")
    assert why in str(info.value) and "-k" in str(info.value)


# -- the real CLI ---------------------------------------------------------------------------------


SWEEP_SCRIPT = """
    import json, os, sys
    out = os.environ["AMLRUN_OUTPUTS_DIR"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cell.json"), "w") as fh:
        json.dump({"argv": sys.argv[1:], "a": os.environ["AMLRUN_PARAM_A"], "b": os.environ["AMLRUN_PARAM_B"],
                   "run_id": os.environ["AMLRUN_RUN_ID"]}, fh)
    with open("outputs/relative.txt", "w") as fh:
        fh.write(os.environ["AMLRUN_PARAM_A"] + os.environ["AMLRUN_PARAM_B"])
"""


def test_sweep_3x2_gives_6_cells_with_own_outputs(project):
    project.write({"experiments/sweep.py": SWEEP_SCRIPT})
    result = project.run_in_process("-c", "local", "experiments/sweep.py", "-p", "a=1,2,3", "-p", "b=x,y")
    assert result.returncode == 0, result.output
    assert "6 passed" in result.stdout
    expected_ids = [f"experiments/sweep.py::local[a={a}-b={b}]" for a in "123" for b in "xy"]
    for cell_id in expected_ids:
        assert f"PASSED {cell_id}" in result.stdout
    runs = sorted((project.root / ".amlrun" / "runs").iterdir())
    assert len(runs) == 6
    seen = {}
    for run in runs:
        record = json.loads((run / "record.json").read_text())
        data = json.loads((run / "outputs" / "cell.json").read_text())
        assert data["run_id"] == run.name == record["run_id"]
        assert data["argv"] == ["--a", data["a"], "--b", data["b"]]
        assert (run / "outputs" / "relative.txt").read_text() == data["a"] + data["b"]
        seen[record["cell_id"]] = (data["a"], data["b"])
    assert sorted(seen) == sorted(expected_ids)
    assert len(set(seen.values())) == 6
    # nothing leaked into the working tree
    assert not (project.root / "outputs").exists()
    assert not (project.root / "experiments" / "outputs").exists()


def test_cli_grid_overrides_declared_param(project):
    project.write({"t.py": 'AMLRUN_PARAMS = {"a": [1, 2], "b": ["keep"]}\n'})
    result = project.run_in_process("--collect-only", "-p", "a=9", "--param", "c=u,v")
    assert result.collected_ids() == ["t.py::local[a=9-b=keep-c=u]", "t.py::local[a=9-b=keep-c=v]"]


def test_k_with_and_or_not_parentheses(project):
    project.write({"exp/train.py": 'AMLRUN_PARAMS = {"lr": [0.1, 0.01], "depth": [3, 5]}\n',
                   "exp/evaluate.py": "", "aml_config/gpu.compute": "type: local\n"})
    base = ("--collect-only", "-c", "local", "-c", "gpu")
    result = project.run_in_process(*base, "-k", "(train and depth=5) and not (gpu or lr=0.01)")
    assert result.returncode == 0, result.output
    assert result.collected_ids() == ["exp/train.py::local[lr=0.1-depth=5]"]
    assert "collected 1 cell / 9 deselected" in result.stdout
    result = project.run_in_process(*base, "-k", "evaluate or lr=0.01-depth=3")
    assert result.collected_ids() == ["exp/evaluate.py::local", "exp/evaluate.py::gpu",
                            "exp/train.py::local[lr=0.01-depth=3]", "exp/train.py::gpu[lr=0.01-depth=3]"]


def test_k_bad_expression_is_usage_error(project):
    project.write({"t.py": ""})
    result = project.run_in_process("--collect-only", "-k", "train and (")
    assert result.returncode == 4
    assert "Traceback" not in result.output and "-k" in result.stderr


def test_m_selects_by_marks(project):
    project.write({
        "slow.py": 'AMLRUN_MARKS = ["slow"]\n',
        "fast.py": 'AMLRUN_MARKS = ["fast", "smoke"]\n',
        "plain.py": "",
    })
    assert project.run_in_process("--collect-only", "-m", "slow").collected_ids() == ["slow.py::local"]
    assert project.run_in_process("--collect-only", "-m", "not slow").collected_ids() == ["fast.py::local", "plain.py::local"]
    assert project.run_in_process("--collect-only", "-m", "smoke and fast").collected_ids() == ["fast.py::local"]


def test_collect_only_exit_codes_and_runs_nothing(project):
    project.write({"t.py": "open('ran', 'w').write('x')\n"})
    result = project.run_in_process("--collect-only")
    assert result.returncode == 0
    assert "target local: 1 cell" in result.stdout
    assert not (project.root / "ran").exists()
    assert not (project.root / ".amlrun" / "runs").exists() or not any((project.root / ".amlrun" / "runs").iterdir())
    result = project.run_in_process("--collect-only", "-k", "nomatch")
    assert result.returncode == 5
    assert "collected 0 cells / 1 deselected" in result.stdout
    (project.root / "t.py").unlink()
    assert project.run_in_process("--collect-only").returncode == 5
    assert project.run_in_process().returncode == 5


def test_everything_deselected_exits_5_without_running(project):
    project.write({"t.py": "open('ran', 'w').write('x')\n"})
    result = project.run_in_process("-k", "nothing")
    assert result.returncode == 5
    assert "deselected" in result.stdout
