"""Ray target benchmark: N trivial cells through ``amlrun -c ray`` against a hand-written loop
that submits the same N jobs with Ray's own ``JobSubmissionClient`` and waits for them, both
on one private Ray head started here (127.0.0.1, as the tests start it), in the same run.

    python3 bench/bench_ray.py                  # 100 cells, 8 jobs at a time
    python3 bench/bench_ray.py --cells 20 --parallel 4

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
            started = time.monotonic()
            loop = subprocess.run([str(RAY_VENV / "bin" / "python"), "-c", HAND_LOOP, head.address, str(project),
                                   str(args.cells), str(args.parallel)], cwd=project, env=env,
                                  capture_output=True, text=True)
            loop_seconds = time.monotonic() - started
            if loop.returncode != 0:
                print(loop.stdout, loop.stderr)
                return 2
            values = ",".join(str(i) for i in range(args.cells))
            started = time.monotonic()
            ours = subprocess.run([sys.executable, "-m", "amlrun", "-c", "ray", "-n", str(args.parallel),
                                   "trivial.py", "-p", f"i={values}"], cwd=project, env=env,
                                  capture_output=True, text=True)
            amlrun_seconds = time.monotonic() - started
            if ours.returncode != 0:
                print(ours.stdout[-3000:], ours.stderr[-3000:])
                return 2
    finally:
        stop_head(head)
    ratio = amlrun_seconds / loop_seconds
    print(f"{args.cells} trivial cells, {args.parallel} at a time, one Ray head on 127.0.0.1")
    print(f"  hand-written loop (JobSubmissionClient)  {loop_seconds:8.1f} s  ({loop_seconds / args.cells:.2f} s/job)")
    print(f"  amlrun -c ray                            {amlrun_seconds:8.1f} s  ({amlrun_seconds / args.cells:.2f} s/cell)")
    print(f"  ratio {ratio:.2f}x (target <= {TARGET}x)")
    if ratio > TARGET:
        print(f"MISSED: amlrun took {ratio:.2f}x the hand-written loop")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
