"""Benchmark the run history (issue 3). Whole-process timings, each next to a baseline
measured in the same run:

1. ``amlrun history list`` over 10,000 recorded runs (target: under 0.3 s), against
   ``python -c pass``, ``amlrun --version`` and ``history list`` of an empty project;
2. concurrent writers: 4 processes recording 250 runs each into one store (3 writes a
   run: queued, running, completed), none lost, against 1 process recording 1,000;
3. disk used by 1,000 real runs (the CLI, local target) of an unchanged 20 MB project,
   against one snapshot of it (target: under 2x).

    python bench/bench_history.py                 # everything (a few minutes)
    python bench/bench_history.py --quick         # smaller sizes, same measurements
    python bench/bench_history.py --only list     # list | writers | disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from amlrun.snapshot import SnapshotStore, disk_usage  # noqa: E402
from amlrun.store import RunStore  # noqa: E402

PY = sys.executable

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from amlrun.store import RunStore

    state, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = RunStore(state)
    for i in range(count):
        record = store.save(store.new_record(
            cell_id=f"experiments/train.py::local[lr={i / count:.4f}-depth={worker}]",
            script="experiments/train.py", target="local", target_type="local", runconfig="local",
            params={"lr": i / count, "depth": worker}, status="queued", snapshot_digest="ab" * 32,
            environment_digest="cd" * 10, git_commit="ef" * 20, git_dirty=False))
        record = store.update(record, status="running", started=time.time())
        store.update(record, status="completed", ended=time.time(), exit_code=0,
                     metrics={"accuracy": 1 - i / count, "loss": i / count, "f1": 0.5, "auc": 0.75,
                              "curve": [0.1, 0.2, 0.3]},
                     artifacts=({"path": "outputs/model.pkl", "size": 123456, "sha256": "12" * 32},))
    store.close()
""")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def timed(cmd: list[str], cwd: Path, repeat: int) -> dict:
    """Median wall time, median CPU time (user + system) and peak memory of ``cmd`` as a
    whole process, after one warm-up run. On a busy machine wall time mostly measures the
    queue for a core; CPU time is what the command itself costs."""
    subprocess.run(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, check=True)
    walls, cpus, peaks = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
        cpus.append(usage.ru_utime + usage.ru_stime)
        peaks.append(usage.ru_maxrss / 1024)
    return {"wall": round(statistics.median(walls), 4), "cpu": round(statistics.median(cpus), 4),
            "peak_mb": round(max(peaks), 1)}


def writers(state: Path, processes: int, runs_each: int) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen([PY, "-c", WRITER, str(state), str(w), str(runs_each)], env=env())
             for w in range(processes)]
    if any(p.wait() for p in procs):
        raise SystemExit("a writer failed")
    return time.perf_counter() - start


def project(root: Path) -> Path:
    (root / "aml_config").mkdir(parents=True)
    (root / "experiments").mkdir()
    return root


# -- 1. history list ---------------------------------------------------------------------------


def bench_list(work: Path, runs: int, repeat: int) -> dict:
    empty = project(work / "empty")
    full = project(work / "full")
    fill = writers(full / ".amlrun", 2, runs // 2)
    count = RunStore(full / ".amlrun").count()
    assert count == runs, count
    results = {
        "runs": runs,
        "fill_seconds": round(fill, 2),
        "python -c pass": timed([PY, "-c", "pass"], work, repeat),
        "amlrun --version": timed([PY, "-m", "amlrun", "--version"], work, repeat),
        "history list (empty project)": timed([PY, "-m", "amlrun", "history", "list"], empty, repeat),
        f"history list ({runs} runs)": timed([PY, "-m", "amlrun", "history", "list"], full, repeat),
        f"history list --format json ({runs} runs)":
            timed([PY, "-m", "amlrun", "history", "list", "--format", "json"], full, repeat),
        f"history list --param depth=1 ({runs} runs)":
            timed([PY, "-m", "amlrun", "history", "list", "--param", "depth=1"], full, repeat),
        f"history list --limit 0 ({runs} runs)":
            timed([PY, "-m", "amlrun", "history", "list", "--limit", "0"], full, max(1, repeat // 3)),
        f"history list --limit 0 --format json ({runs} runs)":
            timed([PY, "-m", "amlrun", "history", "list", "--limit", "0", "--format", "json"], full, max(1, repeat // 3)),
        f"history show last ({runs} runs)": timed([PY, "-m", "amlrun", "history", "show", "last"], full, repeat),
    }
    return results


# -- 2. concurrent writers ---------------------------------------------------------------------


def bench_writers(work: Path, processes: int, runs_each: int) -> dict:
    total = processes * runs_each
    single = writers(work / "single" / ".amlrun", 1, total)
    concurrent = writers(work / "concurrent" / ".amlrun", processes, runs_each)
    store = RunStore(work / "concurrent" / ".amlrun")
    records = store.list()
    lost = total - len({r.run_id for r in records})
    unfinished = sum(1 for r in records if r.status != "completed")
    return {
        "runs": total, "processes": processes,
        "1 process seconds": round(single, 2), "1 process runs/s": round(total / single),
        f"{processes} processes seconds": round(concurrent, 2),
        f"{processes} processes runs/s": round(total / concurrent),
        "records lost": lost, "records not completed": unfinished,
    }


# -- 3. disk used by many runs of an unchanged project ---------------------------------------------


def bench_disk(work: Path, runs: int, invocations: int, megabytes: int) -> dict:
    root = project(work / "big")
    data = root / "data"
    data.mkdir()
    chunk = 1 << 20
    for i in range(megabytes):
        (data / f"part{i:03d}.bin").write_bytes(os.urandom(chunk))
    (root / "experiments" / "train.py").write_text(textwrap.dedent("""
        import sys
        from amlrun_client import log
        log("accuracy", 0.9)
        print("trained with", sys.argv[1:])
    """))
    (root / "pyproject.toml").write_text('[tool.amlrun]\nexperiment_paths = ["experiments"]\n')
    one = SnapshotStore(work / "one-snapshot")
    one.take(root)
    one_snapshot = disk_usage(one.objects) + disk_usage(one.manifests)
    project_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    per = runs // invocations
    start = time.perf_counter()
    for inv in range(invocations):
        values = ",".join(str(inv * per + i) for i in range(per))
        proc = subprocess.run([PY, "-m", "amlrun", "-p", f"i={values}", "-n", "2", "-q"], cwd=root, env=env(),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    elapsed = time.perf_counter() - start
    state = root / ".amlrun"
    recorded = RunStore(state).count()
    parts = {name: disk_usage(state / name) for name in ("objects", "snapshots", "runs", "work")}
    parts["index"] = sum(disk_usage(p) for p in state.glob("history.sqlite*"))
    used = disk_usage(state)
    return {
        "project MB": round(project_bytes / 2**20, 1), "runs": recorded, "invocations": invocations,
        "seconds": round(elapsed, 1),
        "one snapshot MB": round(one_snapshot / 2**20, 2),
        ".amlrun MB": round(used / 2**20, 2),
        "ratio (.amlrun / one snapshot)": round(used / one_snapshot, 2),
        "breakdown MB": {k: round(v / 2**20, 2) for k, v in parts.items()},
        "snapshots stored": len(list((state / "snapshots").glob("*.json"))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    parser.add_argument("--only", choices=("list", "writers", "disk"), action="append")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions per command (median)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    only = set(args.only or ("list", "writers", "disk"))
    work = Path(tempfile.mkdtemp(prefix="amlrun-bench-history-"))
    report: dict = {}
    try:
        if "list" in only:
            report["list"] = bench_list(work / "list", 1000 if args.quick else 10000, args.repeat)
            print(f"history list (whole process, median seconds; load average {os.getloadavg()[0]:.1f}):")
            for key, value in report["list"].items():
                shown = (f"wall {value['wall']:.3f}  cpu {value['cpu']:.3f}  peak {value['peak_mb']:.0f} MB"
                         if isinstance(value, dict) else value)
                print(f"  {key:<52} {shown}")
        if "writers" in only:
            report["writers"] = bench_writers(work / "writers", 4, 50 if args.quick else 250)
            print("concurrent writers:")
            for key, value in report["writers"].items():
                print(f"  {key:<52} {value}")
        if "disk" in only:
            quick = args.quick
            report["disk"] = bench_disk(work / "disk", 100 if quick else 1000, 2 if quick else 10, 20)
            print("disk used by many runs of an unchanged project:")
            for key, value in report["disk"].items():
                print(f"  {key:<52} {value}")
        print(json.dumps(report))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
