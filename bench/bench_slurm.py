"""SLURM target benchmark: 500 trivial cells with ``amlrun -c slurm ...`` (no ``-n``: a queue-backed
target gets ``maxParallel`` cells at once) against a
hand-written ``sbatch --array=0-499`` of the same 500 tasks plus waiting for them, on the
same private single-node cluster, in the same run.

    sudo python3 bench/bench_slurm.py                  # 500 cells, baseline before and after
    sudo python3 bench/bench_slurm.py --cells 200

Starts its own cluster (tests/slurm_fixture.py: munged, slurmctld, slurmd on 127.0.0.1;
needs root and ``.ci/services/slurm.sh``) and stops it at the end. Baseline: one job script
that copies the project's files (not amlrun's .amlrun/ state) into a per-task folder, runs
``python3 trivial.py --i $TASK`` there
with its output in a per-task file (what amlrun's job does, minus amlrun), submitted as
one array, then ``squeue`` polled every 0.5 s until the array is gone. The baseline is timed
before and after amlrun and averaged, so a drifting machine load cancels out.

Target (issue 13): amlrun within 1.3x of the hand-written array, and the history holding all
the runs. Exit status 1 when either is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

TARGET_RATIO = 1.3
TRIVIAL = "import sys\nprint('cell', sys.argv[1:])\n"


def hand_written(cluster, root: Path, project: Path, cells: int) -> float:
    """One sbatch --array of ``cells`` tasks doing what amlrun's job does, plus waiting."""
    work = root / f"hand-{time.monotonic_ns()}"
    work.mkdir()
    script = work / "job.sh"
    script.write_text(f"""#!/bin/sh
d={work}/$SLURM_ARRAY_TASK_ID
mkdir -p "$d/work" && cp -a {project}/trivial.py {project}/aml_config "$d/work/" && cd "$d/work" && \\
  python3 trivial.py --i "$SLURM_ARRAY_TASK_ID" > "$d/log" 2>&1
echo $? > "$d/exit"
""")
    script.chmod(0o755)
    env = {**os.environ, **cluster.env}
    started = time.perf_counter()
    job = subprocess.run(["sbatch", "--parsable", f"--array=0-{cells - 1}", "--job-name=bench-hand",
                          f"--output={work}/slurm-%a.out", str(script)], capture_output=True, text=True, env=env,
                         check=True).stdout.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env).stdout.strip():
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    done = sum(1 for i in range(cells) if (work / str(i) / "exit").is_file()
               and (work / str(i) / "exit").read_text().strip() == "0")
    if done != cells:
        sys.exit(f"the hand-written array finished only {done} of {cells} tasks")
    shutil.rmtree(work, ignore_errors=True)
    return elapsed


def with_amlrun(cluster, root: Path, project: Path, cells: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMLRUN_")}
    env["AMLRUN_CACHE_DIR"] = str(root / "cache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    values = ",".join(str(i) for i in range(cells))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "amlrun", "-c", "slurm", "trivial.py", "-p", f"i={values}", "-q"],
                          cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"amlrun exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    sys.path.insert(0, str(REPO))
    from amlrun.store import RunStore

    store = RunStore(project / ".amlrun")
    try:
        completed = store.count(status="completed")
    finally:
        store.close()
    return elapsed, completed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=500)
    args = ap.parse_args()
    from slurm_fixture import slurm_unavailable, start_cluster

    why = slurm_unavailable()
    if why:
        sys.exit(f"cannot start a test SLURM cluster: {why}")
    root = Path(tempfile.mkdtemp(prefix="amlrun-bench-slurm-"))
    os.chmod(root, 0o755)
    cluster = start_cluster()
    try:
        project = root / "proj"
        (project / "aml_config").mkdir(parents=True)
        (project / "trivial.py").write_text(TRIVIAL)
        (project / "aml_config" / "slurm.compute").write_text(
            cluster.compute_yaml(root / "ws", f"maxParallel: {args.cells}\n"))
        load = os.getloadavg()[0]
        before = hand_written(cluster, root, project, args.cells)
        amlrun, completed = with_amlrun(cluster, root, project, args.cells)
        after = hand_written(cluster, root, project, args.cells)
        load_after = os.getloadavg()[0]
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    baseline = (before + after) / 2
    ratio = amlrun / baseline
    print(f"{args.cells} trivial cells on a 1-node SLURM (8 slots); {os.cpu_count()} cores, "
          f"load average {load:.1f} at the start, {load_after:.1f} at the end")
    print(f"  hand-written sbatch --array + wait : {before:7.1f}s before, {after:7.1f}s after, {baseline:7.1f}s mean")
    print(f"  amlrun -c slurm                    : {amlrun:7.1f}s  ({amlrun / args.cells * 1000:.0f} ms/cell)")
    print(f"  ratio                              : {ratio:.2f}x   (target <= {TARGET_RATIO}x)")
    print(f"  completed runs in the history      : {completed} of {args.cells}")
    missed = []
    if ratio > TARGET_RATIO:
        missed.append(f"MISSED: amlrun {ratio:.2f}x the hand-written array (target {TARGET_RATIO}x)")
    if completed != args.cells:
        missed.append(f"MISSED: the history holds {completed} completed runs, not {args.cells}")
    for line in missed:
        print(line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
