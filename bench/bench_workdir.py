"""Per-cell cost against the project's size: a sweep in a project with 2,000 small files, and
in one with a 300 MB data file, each against the same project without them (same run).

    python3 bench/bench_workdir.py [--reps 3] [--cells 6] [--files 2000] [--mb 300]

Per additional cell = (N-cell sweep - 1-cell session) / (N - 1), ``-n 1``, whole processes.
The issue's goal: a cell of the large projects costs the same as one of the small project
(ratio near 1.0, under 0.06 s per cell), and no cell copies the large file. Also shown: the
1-cell session itself (a single ``amlrun -c local trivial.py``), which pays for a working
directory once per session unless the last session's small one was kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import Samples, bench_env, make_trivial_project, timed  # noqa: E402

GOAL = 0.06


def add_small_files(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / "src" / f"pkg{i // 50:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod_{i:05d}.py").write_text(f"VALUE = {i}\n" + "x = 1\n" * 20)


def add_large_file(root: Path, mb: int) -> None:
    chunk = os.urandom(1 << 20)
    (root / "data").mkdir()
    with open(root / "data" / "big.bin", "wb") as fh:
        for _ in range(mb):
            fh.write(chunk)


def per_cell(
    projects: dict[str, Path], env: dict[str, str], cells: int, reps: int
) -> dict[str, tuple[float, float, float]]:
    """Wall and CPU seconds per additional cell in each project, and the 1-cell session's wall
    seconds; the commands are timed round-robin."""
    py = sys.executable
    values = ",".join(str(i) for i in range(1, cells + 1))
    one = [py, "-m", "amlrun", "-c", "local", "-q", "trivial.py"]
    many = [*one, "-n", "1", "-p", f"i={values}"]
    for root in projects.values():           # warm: snapshot objects, stat cache, byte-code
        timed(one, root, env, 1)
    samples = {name: (Samples(), Samples()) for name in projects}
    for _ in range(reps):
        for name, root in projects.items():
            timed(one, root, env, 1, samples[name][0])
            timed(many, root, env, 1, samples[name][1])
    return {name: ((b.median - a.median) / (cells - 1), (b.cpu_median - a.cpu_median) / (cells - 1), a.median)
            for name, (a, b) in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=300)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="amlrun-bench-workdir-"))
    try:
        env = bench_env(tmp)
        projects = {"baseline (trivial project)": tmp / "base", f"+ {args.files} small files": tmp / "files",
                    f"+ one {args.mb} MB file": tmp / "large"}
        for root in projects.values():
            make_trivial_project(root)
        add_small_files(projects[f"+ {args.files} small files"], args.files)
        add_large_file(projects[f"+ one {args.mb} MB file"], args.mb)
        figures = per_cell(projects, env, args.cells, args.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base, base_cpu, base_single = figures["baseline (trivial project)"]
    print(f"per additional cell, {args.cells}-cell sweep -n 1, median of {args.reps}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f} (a loaded machine inflates wall times; compare the ratios)")
    missed = []
    for name, (wall, cpu, _single) in figures.items():
        note = "baseline" if wall == base else f"{wall / base:.2f}x the baseline, cpu {cpu / base_cpu:.2f}x"
        print(f"  {name:<28} {wall:.3f} s  cpu {cpu:.3f} s   {note}")
        if wall > GOAL and wall != base:
            missed.append(f"{name}: {wall:.3f} s per cell > {GOAL} s")
    print(f"a single run (the 1-cell session), median of {args.reps}")
    for name, (_wall, _cpu, single) in figures.items():
        note = "baseline" if single == base_single else f"{single / base_single:.2f}x the baseline"
        print(f"  {name:<28} {single:.3f} s   {note}")
    for line in missed:
        print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
