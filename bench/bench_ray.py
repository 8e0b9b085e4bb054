"""Ray target benchmark: N trivial cells through ``amlrun -c ray`` against a hand-written loop
that submits the same N jobs with Ray's own ``JobSubmissionClient`` and waits for them, both
on one private Ray head started here (127.0.0.1, as the tests start it), in the same run.

    python3 bench/bench_ray.py                  # 100 cells, 8 jobs at a time
    python3 bench/bench_ray.py --cells 20 --parallel 4
    python3 bench/bench_ray.py --amlrun-first   # the other order, to see a drift of the machine's load

Both sides keep the same number of jobs in flight (``maxParallel``/``-n`` for amlrun), upload
the same project as the working directory and poll every 0.1-0.5 s. Whole-process wall times
(the loop's includes importing ray, amlrun's its start-up, records and its once-per-session
environment listing job). Target (issue 14): amlrun within 1.2x of the loop. Exit status 1
when missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
TARGET = 1.2

HAND_LOOP = r'''
import sys, time
from ray.job_submission import JobSubmissionClient, JobStatus
address, project, cells, parallel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = JobSubmissionClient(address)
todo = list(range(cells))
running = {}
done = 0
while todo or running:
    while todo and len(running) < parallel:
        i = todo.pop(0)
        sid = client.submit_job(entrypoint=f"python trivial.py --i {i}", runtime_env={"working_dir": project})
        running[sid] = 0.1
    time.sleep(0.1)
    for sid in list(running):
        if client.get_job_status(sid) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert client.get_job_status(sid) == JobStatus.SUCCEEDED, client.get_job_logs(sid)
            del running[sid]
            done += 1
print("done", done)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--amlrun-first", action="store_true", help="time amlrun before the loop (order bias)")
    args = parser.parse_args()
    from ray_fixture import RAY_VENV, start_head, stop_head

    head = start_head()
    try:
        with tempfile.TemporaryDirectory(prefix="amlrun-bench-ray-") as tmp:
            project = Path(tmp) / "proj"
            (project / "aml_config").mkdir(parents=True)
            (project / "aml_config" / "ray.compute").write_text(
                head.compute_yaml(maxParallel=args.parallel))
            (project / "trivial.py").write_text("import sys\nprint('ok', sys.argv[1:])\n")
            env = dict(os.environ, AMLRUN_CACHE_DIR=str(Path(tmp) / "cache"))
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            # warm-up: the first job of a fresh head starts Ray's workers (paid once, by neither side)
            subprocess.run([sys.executable, "-m", "amlrun", "-c", "ray", "trivial.py"], cwd=project, env=env,
                           capture_output=True, check=True)
            values = ",".join(str(i) for i in range(args.cells))
            sides = {
                "loop": [str(RAY_VENV / "bin" / "python"), "-c", HAND_LOOP, head.address, str(project),
                         str(args.cells), str(args.parallel)],
                "amlrun": [sys.executable, "-m", "amlrun", "-c", "ray", "-n", str(args.parallel), "trivial.py",
                           "-p", f"i={values}"],
            }
            order = ["amlrun", "loop"] if args.amlrun_first else ["loop", "amlrun"]
            seconds = {}
            for side in order:
                load = os.getloadavg()[0]
                started = time.monotonic()
                done = subprocess.run(sides[side], cwd=project, env=env, capture_output=True, text=True)
                seconds[side] = time.monotonic() - started
                print(f"  {side}: {seconds[side]:.1f} s (load average {load:.1f} before, "
                      f"{os.getloadavg()[0]:.1f} after)", flush=True)
                if done.returncode != 0:
                    print(done.stdout[-3000:], done.stderr[-3000:])
                    return 2
            loop_seconds, amlrun_seconds = seconds["loop"], seconds["amlrun"]
    finally:
        stop_head(head)
    ratio = amlrun_seconds / loop_seconds
    print(f"{args.cells} trivial cells, {args.parallel} at a time, one Ray head on 127.0.0.1, "
          f"{os.cpu_count()} CPUs")
    print(f"  hand-written loop (JobSubmissionClient)  {loop_seconds:8.1f} s  ({loop_seconds / args.cells:.2f} s/job)")
    print(f"  amlrun -c ray                            {amlrun_seconds:8.1f} s  ({amlrun_seconds / args.cells:.2f} s/cell)")
    print(f"  ratio {ratio:.2f}x (target <= {TARGET}x)")
    if ratio > TARGET:
        print(f"MISSED: amlrun took {ratio:.2f}x the hand-written loop")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
