"""``amlrun init [DIR]``: scaffold a project that runs straight away with ``amlrun``.

Writes Workbench-shaped ``aml_config/`` files (a local and a docker target, their run
configurations, the dependency files), ``[tool.amlrun]`` in ``pyproject.toml``, one
example experiment and a ``.gitignore``. Existing files are never overwritten unless
``--force``; an existing ``pyproject.toml`` without ``[tool.amlrun]`` and an existing
``.gitignore`` are extended instead of replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

from amlrun.errors import UsageError

DEFAULT_IMAGE = "python:3.11-slim"

LOCAL_COMPUTE = """\
# The local machine. Runs use the interpreter amlrun runs with, or pythonLocation.
type: local
# pythonLocation: python3
# false: amlrun builds (and caches) a virtual environment from the pip: section of
# aml_config/conda_dependencies.yml instead of using the interpreter as it is.
userManagedEnvironment: true
# nativeSharedDirectory: ~/.azureml/share/
"""

LOCAL_RUNCONFIG = """\
# How scripts run on the 'local' compute target ($file is the experiment script).
ArgumentVector:
  - "$file"
Target: local
EnvironmentVariables:
  EXAMPLE_ENV_VAR: "Example Value"
Framework: Python
CondaDependenciesFile: aml_config/conda_dependencies.yml
SparkDependenciesFile: aml_config/spark_dependencies.yml
PrepareEnvironment: true
TrackedRun: true
"""

DOCKER_COMPUTE = """\
# A container on this machine's Docker engine, built from baseDockerImage plus the
# packages of aml_config/conda_dependencies.yml (built once, reused while unchanged).
type: docker
baseDockerImage: {image}
# true: the project snapshot is mounted into the container; false: copied in.
sharedVolumes: true
# nvidiaDocker: false
# nativeSharedDirectory: ~/.azureml/share/
"""

DOCKER_RUNCONFIG = """\
# How scripts run on the 'docker' compute target.
ArgumentVector:
  - "$file"
Target: docker
EnvironmentVariables:
  EXAMPLE_ENV_VAR: "Example Value"
Framework: Python
CondaDependenciesFile: aml_config/conda_dependencies.yml
SparkDependenciesFile: aml_config/spark_dependencies.yml
# false: fail fast unless 'amlrun prepare -c docker' has built the image already.
PrepareEnvironment: true
TrackedRun: true
"""

CONDA_DEPENDENCIES = """\
# The execution environment of managed targets (docker, remote, and local with
# userManagedEnvironment: false): a conda environment file. List the packages your
# experiments import under pip:, e.g.
#   - pip:
#     - scikit-learn==1.5.2
name: project_environment
dependencies:
  - python=3.11
  - pip: []
"""

SPARK_DEPENDENCIES = """\
# Spark settings and Maven packages for runs with Framework: PySpark.
configuration:
  spark.app.name: {name}
repositories: []
packages: []
"""

PYPROJECT_TABLE = """\
[tool.amlrun]
# where 'amlrun' with no paths looks for experiments, and which files are experiments
experiment_paths = ["experiments"]
experiment_files = ["*.py"]
# the targets 'amlrun' runs on without -c
default_targets = ["local"]
"""

TRAIN_PY = '''\
"""An example experiment: a tiny model fitted by gradient descent (standard library only).

amlrun runs it once per parameter set below; each run gets --lr/--epochs arguments,
AMLRUN_PARAM_* variables, and its own outputs/ folder kept in the run history.
"""

AMLRUN_PARAMS = {"lr": [0.05, 0.1], "epochs": [20]}

import argparse
import json
import os
import random

try:
    from amlrun_client import log  # put on the import path of every run by amlrun
except ImportError:  # running the script by hand
    def log(name, value, step=None):
        print(f"{name} = {value}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    rng = random.Random(int(os.environ.get("AMLRUN_SEED", "0")))
    data = [(x, 3.0 * x + 1.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    w, b = 0.0, 0.0
    for epoch in range(args.epochs):
        gw = sum((w * x + b - y) * x for x, y in data) * 2 / len(data)
        gb = sum((w * x + b - y) for x, y in data) * 2 / len(data)
        w, b = w - args.lr * gw, b - args.lr * gb
        loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
        log("loss", loss, step=epoch)
    log("final_loss", loss)
    print(f"EXAMPLE_ENV_VAR={os.environ.get('EXAMPLE_ENV_VAR')!r} w={w:.3f} b={b:.3f}")

    os.makedirs("outputs", exist_ok=True)  # outputs/ comes back into the run history
    with open(os.path.join("outputs", "model.json"), "w") as fh:
        json.dump({"w": w, "b": b, "lr": args.lr, "epochs": args.epochs}, fh)


if __name__ == "__main__":
    main()
'''

# amlrun's state, run outputs, and the report files the README's examples write (reports/)
GITIGNORE_LINES = (".amlrun/", "outputs/", "__pycache__/", "reports/")


def _files(name: str, image: str) -> dict[str, str]:
    return {
        "aml_config/local.compute": LOCAL_COMPUTE,
        "aml_config/local.runconfig": LOCAL_RUNCONFIG,
        "aml_config/docker.compute": DOCKER_COMPUTE.format(image=json.dumps(image)),
        "aml_config/docker.runconfig": DOCKER_RUNCONFIG,
        "aml_config/conda_dependencies.yml": CONDA_DEPENDENCIES,
        "aml_config/spark_dependencies.yml": SPARK_DEPENDENCIES.format(name=json.dumps(name)),
        "experiments/train.py": TRAIN_PY,
    }


def _pyproject_text(name: str) -> str:
    # a valid distribution name (PEP 508: ASCII letters, digits, - _ .)
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "-" for c in name).strip("-._")
    safe = safe or "experiments"
    return f'[project]\nname = "{safe}"\nversion = "0.1.0"\n\n{PYPROJECT_TABLE}'


def plan(root: Path, force: bool, image: str) -> list[tuple[str, str, str]]:
    """(relative path, action, text) for every file; action is create, overwrite or append."""
    name = root.resolve().name
    actions: list[tuple[str, str, str]] = []
    conflicts: list[str] = []
    for rel, text in _files(name, image).items():
        path = root / rel
        if path.exists():
            if not force:
                conflicts.append(rel)
                continue
            actions.append((rel, "overwrite", text))
        else:
            actions.append((rel, "create", text))

    pyproject = root / "pyproject.toml"
    if not pyproject.exists():
        actions.append(("pyproject.toml", "create", _pyproject_text(name)))
    else:
        current = pyproject.read_text(encoding="utf-8", errors="replace")
        if "[tool.amlrun]" not in current:
            sep = "" if current.endswith("\n\n") or not current else ("\n" if current.endswith("\n") else "\n\n")
            actions.append(("pyproject.toml", "append", sep + PYPROJECT_TABLE))
        elif force:
            actions.append(("pyproject.toml", "keep", ""))  # never rewrite someone's own pyproject
        else:
            conflicts.append("pyproject.toml ([tool.amlrun])")

    gitignore = root / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8", errors="replace").splitlines() if gitignore.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in existing and line.rstrip("/") not in existing]
    if missing:
        prefix = "\n" if existing and not gitignore.read_text(encoding="utf-8").endswith("\n") else ""
        actions.append((".gitignore", "append" if existing else "create", prefix + "\n".join(missing) + "\n"))

    if conflicts:
        raise UsageError(f"{root} already has {', '.join(conflicts)}; nothing written (use --force to overwrite)")
    return actions


def main(argv: list[str], prog: str) -> int:
    from amlrun.options import ArgumentParser

    parser = ArgumentParser(prog=prog, description="Scaffold a new amlrun project (Workbench-compatible aml_config/).")
    parser.add_argument("directory", nargs="?", default=".", metavar="DIR", help="the project folder (default: here)")
    parser.add_argument("--force", action="store_true", help="overwrite files amlrun init would write")
    parser.add_argument(
        "--docker-image",
        default=DEFAULT_IMAGE,
        metavar="IMAGE",
        help=f"baseDockerImage of the docker target (default: {DEFAULT_IMAGE})",
    )
    options = parser.parse_args(argv)

    root = Path(options.directory)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory")
    actions = plan(root, options.force, options.docker_image)
    root.mkdir(parents=True, exist_ok=True)
    for rel, action, text in actions:
        path = root / rel
        if action == "keep":
            print(f"  kept      {rel} (already has [tool.amlrun])")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if action == "append":
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
            print(f"  updated   {rel}")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"  {'wrote' if action == 'create' else 'overwrote':<9} {rel}")
    where = "" if root.resolve() == Path.cwd().resolve() else f"cd {_shell_quote(str(options.directory))} && "
    print(f"Initialized an amlrun project in {root.resolve()}")
    print(f"Next: {where}amlrun            (runs experiments/train.py on the local target)")
    print(f"      {where}amlrun -c docker  (the same in a container, once Docker is available)")
    return 0


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
