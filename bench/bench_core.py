"""Core benchmarks: whole-process timings of the real ``amlrun`` CLI, each against a
baseline measured in the same run.

    python3 bench/bench_core.py            # default: 5 repetitions
    python3 bench/bench_core.py --reps 10 --cells 20 --files 2000

What is measured (wall-clock median over the repetitions, min in brackets, and the
CPU time of the whole process tree, which a loaded machine inflates far less):

- ``python trivial.py``                         the baseline a cell cannot beat
- ``amlrun -c local trivial.py``                 one cell: start-up + one run
- ``amlrun -c local trivial.py -p i=1..N``       N cells: separates per-cell cost from start-up
- ``amlrun --collect-only`` over F files          collection and matrix expansion only
- ``amlrun --help`` against ``python -c pass``    start-up (imports)

Targets (DESIGN/issue 2): under 0.15 s added per cell, under 1.5 s for collecting
2,000 experiment files. Exit status is 1 when a target is missed, so CI may run it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PER_CELL_TARGET = 0.15
COLLECT_TARGET = 1.5


@dataclass
class Samples:
    """Wall-clock and CPU (user + sys of the whole process tree) seconds per repetition."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def timed(cmd: list[str], cwd: Path, env: dict[str, str], reps: int, into: Samples | None = None) -> Samples:
    samples = into or Samples()
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout.decode(errors='replace')[-2000:]}")
        samples.wall.append(elapsed)
        samples.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return samples


def interleaved(commands: list[list[str]], cwd: Path, env: dict[str, str], reps: int) -> list[Samples]:
    """Time each command ``reps`` times, round-robin, so drifting machine load hits all alike."""
    results = [Samples() for _ in commands]
    for _ in range(reps):
        for cmd, samples in zip(commands, results):
            timed(cmd, cwd, env, 1, samples)
    return results


def bench_env(tmp: Path) -> dict[str, str]:
    """The environment of timed commands: caches in ``tmp``; byte-code cached as after a pip
    install (in ``tmp``, not the work tree), not recompiled by every process as
    PYTHONDONTWRITEBYTECODE=1 would have it."""
    env = dict(os.environ)
    env["AMLRUN_CACHE_DIR"] = str(tmp / "cache")
    env.pop("AMLRUN_PLUGINS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def make_trivial_project(root: Path) -> None:
    (root / "aml_config").mkdir(parents=True)
    (root / "aml_config" / "local.compute").write_text('type: "local"\n')
    (root / "trivial.py").write_text("print('hello')\n")


def make_many_experiments(root: Path, count: int) -> None:
    """``count`` experiment files in folders of 50, a quarter declaring a 2x2 grid."""
    (root / "aml_config").mkdir(parents=True)
    for i in range(count):
        folder = root / "experiments" / f"group{i // 50:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = "import numpy as np\nimport torch\n\n"
        if i % 4 == 0:
            body += 'AMLRUN_PARAMS = {"lr": [0.1, 0.01], "depth": [3, 5]}\nAMLRUN_MARKS = ["slow"]\n'
        body += "\n".join(f"x{j} = {j}" for j in range(40)) + "\nprint('done')\n"
        (folder / f"exp_{i:05d}.py").write_text(body)


def fmt(samples: Samples) -> str:
    return f"{samples.median:.3f} s [{min(samples.wall):.3f}]  cpu {samples.cpu_median:.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cells", type=int, default=20, help="cells in the sweep")
    parser.add_argument("--files", type=int, default=2000, help="experiment files for --collect-only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="amlrun-bench-"))
    env = bench_env(tmp)
    py = sys.executable
    amlrun = [py, "-m", "amlrun"]
    rows: list[tuple[str, str, str]] = []
    missed: list[str] = []
    try:
        trivial = tmp / "trivial"
        make_trivial_project(trivial)
        timed([*amlrun, "-c", "local", "trivial.py"], trivial, env, 1)  # warm caches (pyc, snapshot objects)

        values = ",".join(str(i) for i in range(1, args.cells + 1))
        python_t, one_t, many_t, bare_t = interleaved([
            [py, "trivial.py"],
            [*amlrun, "-c", "local", "-q", "trivial.py"],
            [*amlrun, "-c", "local", "-q", "-n", "1", "trivial.py", "-p", f"i={values}"],
            # what the once-per-session environment listing (repro plugin) costs
            [*amlrun, "-c", "local", "-q", "-p", "no:repro", "trivial.py"],
        ], trivial, env, args.reps)
        startup_added = one_t.median - python_t.median
        per_cell = (many_t.median - one_t.median) / (args.cells - 1)
        per_cell_added = per_cell - python_t.median
        per_cell_cpu = (many_t.cpu_median - one_t.cpu_median) / (args.cells - 1)
        per_cell_cpu_added = per_cell_cpu - python_t.cpu_median
        rows += [
            ("python trivial.py", fmt(python_t), "baseline"),
            ("amlrun -c local trivial.py (1 cell)", fmt(one_t),
             f"+{startup_added:.3f} s over python (cpu +{one_t.cpu_median - python_t.cpu_median:.3f} s)"),
            ("  the same, -p no:repro", fmt(bare_t),
             f"+{bare_t.median - python_t.median:.3f} s over python (no per-session environment listing)"),
            (f"amlrun ... -n 1 -p i=1..{args.cells} ({args.cells} cells)", fmt(many_t),
             f"{many_t.median / args.cells:.3f} s per cell overall"),
            ("  per additional cell", f"{per_cell:.3f} s  cpu {per_cell_cpu:.3f} s",
             f"+{per_cell_added:.3f} s over python (cpu +{per_cell_cpu_added:.3f} s; target < {PER_CELL_TARGET} s)"),
        ]
        if per_cell_added > PER_CELL_TARGET:
            missed.append(f"per-cell overhead {per_cell_added:.3f} s > {PER_CELL_TARGET} s")

        many = tmp / "many"
        make_many_experiments(many, args.files)
        timed([*amlrun, "--collect-only", "-q"], many, env, 1)  # warm the page cache
        collect_t = timed([*amlrun, "--collect-only", "-q"], many, env, args.reps)
        rows.append((f"amlrun --collect-only ({args.files} files, {args.files // 4 * 3 + args.files} cells)",
                     fmt(collect_t), f"target < {COLLECT_TARGET} s"))
        if collect_t.median > COLLECT_TARGET:
            missed.append(f"--collect-only {collect_t.median:.3f} s > {COLLECT_TARGET} s")

        pass_t, help_t = interleaved([[py, "-c", "pass"], [*amlrun, "--help"]], trivial, env, args.reps)
        rows += [
            ("python -c pass", fmt(pass_t), "baseline"),
            ("amlrun --help", fmt(help_t), f"+{help_t.median - pass_t.median:.3f} s"),
        ]
    finally:
        if args.keep:
            print(f"projects kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    load = os.getloadavg()[0]
    print(f"amlrun core benchmarks: wall median [min] and cpu median of {args.reps} runs, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load:.1f}")
    print(f"{'command':<{width}}  {'time':<34}  note")
    print("-" * (width + 80))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<34}  {note}")
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
