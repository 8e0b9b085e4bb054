"""Metrics from inside a run: the client module, the line format, Workbench's azureml.logging,
and the shared folder, all through real runs of the CLI."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path


def last_record(project) -> dict:
    result = project.run("history", "show", "last", "--format", "json")
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)


def test_client_logs_numbers_strings_lists_and_steps(project):
    project.write({"m.py": """
        from amlrun_client import log, run_id
        import os
        log("accuracy", 0.93)
        log("epochs", 12)
        log("best", "model-b")
        log("confusion", [[1, 2], [3, 4]])
        log("mixed", (1, "two", 3.5, None, True))
        for step in range(4):
            log("loss", 1.0 / (step + 1), step=step)
        log("odd", {1, 2} and object())           # not JSON: kept as text
        assert run_id() == os.environ["AMLRUN_RUN_ID"]
        print("done")
    """})
    result = project.run("m.py")
    assert result.returncode == 0, result.output
    data = last_record(project)
    metrics = data["record"]["metrics"]
    assert metrics["accuracy"] == 0.93 and metrics["epochs"] == 12 and metrics["best"] == "model-b"
    assert metrics["confusion"] == [[1, 2], [3, 4]]
    assert metrics["mixed"] == [1, "two", 3.5, None, True]
    assert metrics["loss"] == 0.25  # the last value of the series
    assert metrics["odd"].startswith("<object object")
    assert data["metric_series"]["loss"] == [[0, 1.0], [1, 0.5], [2, 1.0 / 3], [3, 0.25]]
    listed = project.run("history", "list")
    assert "accuracy" in listed.stdout.splitlines()[0] and "0.93" in listed.stdout


def test_the_line_format_works_from_any_language(project):
    project.write({"shell.py": r"""
        import subprocess
        # a program in another language only prints the documented line
        subprocess.run(["sh", "-c", 'printf "##amlrun-metric {\\"name\\": \\"from_shell\\", \\"value\\": 7, \\"step\\": 1}\\n"'], check=True)
        print('##amlrun-metric {"name": "rmse", "value": 0.5}', flush=True)
        print("##amlrun-metric not json", flush=True)
        print('##amlrun-metric {"value": 1}', flush=True)
        print('##amlrun-metric {"name": null, "value": 1}', flush=True)
        print('##amlrun-metric [1, 2]', flush=True)
        print('  ##amlrun-metric {"name": "indented", "value": 1}', flush=True)
    """})
    result = project.run("shell.py")
    assert result.returncode == 0, result.output
    data = last_record(project)
    assert data["record"]["metrics"] == {"from_shell": 7, "rmse": 0.5}
    assert "##amlrun-metric not json" in (Path(data["run_dir"]) / "log.txt").read_text()


def test_workbench_azureml_logging_works_unchanged(project):
    project.write({"wb.py": """
        from azureml.logging import get_azureml_logger
        run_logger = get_azureml_logger()
        run_logger.log("Accuracy", 0.9)
        run_logger.log("Regularization Rate", [0.1, 0.01])
    """})
    result = project.run("wb.py")
    assert result.returncode == 0, result.output
    assert last_record(project)["record"]["metrics"] == {"Accuracy": 0.9, "Regularization Rate": [0.1, 0.01]}


def _fake_sdk(root: Path, extend_path: bool) -> Path:
    package = root / "azureml"
    package.mkdir(parents=True)
    init = "FAKE_SDK = True\n"
    if extend_path:  # how azureml-core declares its namespace
        init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n" + init
    (package / "__init__.py").write_text(init)
    (package / "core.py").write_text("WORKSPACE = 'fake'\n")
    return root


def test_a_real_azureml_sdk_is_not_shadowed(project, tmp_path):
    sdk = _fake_sdk(tmp_path / "site", extend_path=False)
    project.write({
        "aml_config/sdk.runconfig": f"Target: local\nEnvironmentVariables:\n  PYTHONPATH: {sdk}\n",
        "uses_sdk.py": """
            import sys, azureml, azureml.core
            assert azureml.FAKE_SDK and azureml.core.WORKSPACE == "fake"
            print("sdk from", azureml.__file__)
            # amlrun's runtime folder comes first on sys.path, and still does not win
            runtime = [i for i, p in enumerate(sys.path) if p.endswith(".amlrun_runtime")]
            site = [i for i, p in enumerate(sys.path) if p.endswith("site")]
            assert runtime and site and runtime[0] < site[0], sys.path
        """,
    })
    result = project.run("uses_sdk.py", "-c", "sdk")
    assert result.returncode == 0, result.output
    assert f"sdk from {sdk / 'azureml' / '__init__.py'}" in result.stdout


def test_azureml_logging_joins_a_namespace_sdk(project, tmp_path):
    sdk = _fake_sdk(tmp_path / "site", extend_path=True)
    project.write({
        "aml_config/sdk.runconfig": f"Target: local\nEnvironmentVariables:\n  PYTHONPATH: {sdk}\n",
        "both.py": """
            import azureml.core
            from azureml.logging import get_azureml_logger
            assert azureml.FAKE_SDK
            get_azureml_logger().log("Accuracy", 0.75)
        """,
    })
    result = project.run("both.py", "-c", "sdk")
    assert result.returncode == 0, result.output
    assert last_record(project)["record"]["metrics"] == {"Accuracy": 0.75}


def test_native_shared_directory_persists_across_runs(project, tmp_path):
    share = tmp_path / "share"
    project.write({
        "aml_config/shared.compute": f"type: local\nnativeSharedDirectory: {share}\n",
        "count.py": """
            import os
            from amlrun_client import log
            folder = os.environ["AMLRUN_SHARE_DIRECTORY"]
            assert os.environ["AZUREML_NATIVE_SHARE_DIRECTORY"] == folder + "/"  # with its slash, as Workbench
            with open(os.path.join(folder, "visits.txt"), "a") as fh:
                fh.write("x")
            log("visits", len(open(os.path.join(folder, "visits.txt")).read()))
            print("share", folder)
        """,
    })
    for expected in (1, 2):
        result = project.run("count.py", "-c", "shared")
        assert result.returncode == 0, result.output
        assert last_record(project)["record"]["metrics"]["visits"] == expected
    folder = share / project.root.name / "shared"
    assert (folder / "visits.txt").read_text() == "xx"
    assert f"share {folder}" in result.stdout
    # a target without the key gets neither variable
    project.write({"plain.py": "import os\nprint('vars', 'AMLRUN_SHARE_DIRECTORY' in os.environ, "
                                "'AZUREML_NATIVE_SHARE_DIRECTORY' in os.environ)\n"})
    assert "vars False False" in project.run("plain.py").stdout


def test_client_module_is_plain_and_importable_alone(tmp_path, capsys):
    """The client must need nothing but the standard library (it is copied to every target)."""
    import ast

    runtime = Path(__file__).resolve().parent.parent / "amlrun" / "runtime"
    for path in [runtime / "amlrun_client.py", runtime / "azureml" / "logging.py"]:
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert imported <= {"json", "os", "shutil", "sys", "amlrun_client"}, (path, imported)
    assert not (runtime / "azureml" / "__init__.py").exists()  # a namespace portion, never a regular package
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(runtime)!r})
        from amlrun_client import log
        log("a", 1.5, step=2)
    """)
    import subprocess
    import sys

    env = {**os.environ, "AMLRUN_RUN_ID": "r1"}  # inside a run (outside one it prints a readable line)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out == '##amlrun-metric {"name": "a", "value": 1.5, "step": 2}\n'
