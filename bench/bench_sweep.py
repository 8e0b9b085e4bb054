"""Throughput of a sweep: 200 trivial cells with ``-n 2`` against ``xargs -P 2`` running the
bare interpreter 200 times (the ceiling: the same processes, no amlrun), same run.

    python3 bench/bench_sweep.py [--cells 200] [--reps 3]

Printed: cells per second of each and amlrun's share of the ceiling (goal: at least 0.85),
and amlrun's own CPU per cell (the sweep's CPU minus the interpreters', over the cells).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import bench_env, interleaved, make_trivial_project, timed  # noqa: E402

GOAL = 0.85


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="amlrun-bench-sweep-"))
    py = sys.executable
    values = ",".join(str(i) for i in range(args.cells))
    try:
        env = bench_env(tmp)
        root = tmp / "trivial"
        make_trivial_project(root)
        (root / "inputs.txt").write_text("".join(f"--i {i}\n" for i in range(args.cells)))
        sweep = [py, "-m", "amlrun", "-c", "local", "-q", "-n", "2", "trivial.py", "-p", f"i={values}"]
        ceiling = ["sh", "-c", f"xargs -P 2 -L 1 {py} trivial.py < inputs.txt > /dev/null"]
        timed(sweep, root, env, 1)   # warm
        amlrun_t, xargs_t = interleaved([sweep, ceiling], root, env, args.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours, best = args.cells / amlrun_t.median, args.cells / xargs_t.median
    share = ours / best
    own_cpu = (amlrun_t.cpu_median - xargs_t.cpu_median) / args.cells
    print(f"{args.cells} trivial cells, median of {args.reps}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  xargs -P 2 python trivial.py   {xargs_t.median:.2f} s  {best:.1f} cells/s   ceiling")
    print(f"  amlrun -n 2                    {amlrun_t.median:.2f} s  {ours:.1f} cells/s   {share:.2f} of the ceiling; "
          f"amlrun's own cpu {own_cpu * 1000:.1f} ms per cell")
    if share < GOAL:
        print(f"MISSED: {share:.2f} of the ceiling < {GOAL}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
