"""Start-up: ``amlrun -c local trivial.py`` against ``python trivial.py``, and ``amlrun --help``
against ``python -c pass``, timed round-robin in the same run (byte-code cached).

    python3 bench/bench_startup.py [--reps 15]

The issue's goal: a single local run adds at most 0.09 s to ``python trivial.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import bench_env, fmt, interleaved, make_trivial_project, timed  # noqa: E402

GOAL = 0.09


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="amlrun-bench-startup-"))
    py = sys.executable
    try:
        env = bench_env(tmp)
        root = tmp / "trivial"
        make_trivial_project(root)
        run = [py, "-m", "amlrun", "-c", "local", "-q", "trivial.py"]
        timed(run, root, env, 2)   # warm: byte-code, snapshot objects, the environment's package list
        bare, single, nothing, helped = interleaved(
            [[py, "trivial.py"], run, [py, "-c", "pass"], [py, "-m", "amlrun", "--help"]], root, env, args.reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    added = single.median - bare.median
    print(f"start-up, wall median [min] and cpu of {args.reps} runs, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  python trivial.py            {fmt(bare)}   baseline")
    print(f"  amlrun -c local trivial.py   {fmt(single)}   +{added:.3f} s, {single.median / bare.median:.2f}x")
    print(f"  python -c pass               {fmt(nothing)}   baseline")
    print(f"  amlrun --help                {fmt(helped)}   +{helped.median - nothing.median:.3f} s, "
          f"{helped.median / nothing.median:.2f}x")
    if added > GOAL:
        print(f"MISSED: a local run adds {added:.3f} s > {GOAL} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
