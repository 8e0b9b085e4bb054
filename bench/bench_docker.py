"""Docker target benchmark: a warm run (environment image cached) of a trivial script with
``amlrun -c docker`` against ``docker run --rm IMAGE python script.py`` on the same image,
and the second run after a code-only change (which must not rebuild).

    python3 bench/bench_docker.py                 # 5 repetitions, interleaved
    python3 bench/bench_docker.py --reps 10 --image amlrun-test/python:bookworm

Needs a running engine and the base image (``.ci/services/docker.sh`` provides both).
Baseline: ``docker run --rm -v PROJECT:/w -w /w IMAGE python trivial.py`` (the code is
mounted, as amlrun mounts it with ``sharedVolumes: true``). Also shown, for reading the
figures: ``amlrun -c local`` on the same script (amlrun's own start-up, no container), the
copy mode (``sharedVolumes: false``), and ``-p no:repro`` (without the per-session
environment listing, which runs one more container).

Target (the speed issue): the warm ``amlrun -c docker`` within 1.3x the ``docker run`` baseline
(it was 1.5x before). Exit status 1 when it is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.3


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-2000:]}")
    return elapsed, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--image", default=os.environ.get("AMLRUN_TEST_BASE_IMAGE", "amlrun-test/python:bookworm"),
                    help="base image of the docker target (must be on the engine)")
    args = ap.parse_args()
    if shutil.which("docker") is None or subprocess.run(["docker", "image", "inspect", args.image],
                                                        capture_output=True).returncode != 0:
        sys.exit(f"needs the docker CLI, an engine and the image {args.image} (run .ci/services/docker.sh)")

    tmp = Path(tempfile.mkdtemp(prefix="amlrun-bench-docker-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["AMLRUN_CACHE_DIR"] = str(tmp / "cache")
    # byte-code cached as a normal install has it (this machine sets PYTHONDONTWRITEBYTECODE=1)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    amlrun = [sys.executable, "-m", "amlrun"]
    try:
        proj = tmp / "proj"
        (proj / "aml_config").mkdir(parents=True)
        (proj / "aml_config" / "docker.compute").write_text(f"type: docker\nbaseDockerImage: {args.image}\n")
        (proj / "aml_config" / "copied.compute").write_text(
            f"type: docker\nbaseDockerImage: {args.image}\nsharedVolumes: false\n")
        (proj / "aml_config" / "conda_dependencies.yml").write_text("dependencies:\n  - python=3.11\n")
        (proj / "trivial.py").write_text("print('hello')\n")

        _, out = run([*amlrun, "prepare", "-c", "docker"], proj, env)
        image = out.split("ready (", 1)[1].split(",", 1)[0]
        run([*amlrun, "-q", "-c", "docker", "-c", "copied", "trivial.py"], proj, env)  # warm caches

        commands = {
            "docker run --rm IMAGE python trivial.py": ["docker", "run", "--rm", "-v", f"{proj}:/w", "-w", "/w",
                                                         image, "python", "trivial.py"],
            "amlrun -c docker trivial.py": [*amlrun, "-q", "-c", "docker", "trivial.py"],
            "amlrun -c docker (sharedVolumes: false)": [*amlrun, "-q", "-c", "copied", "trivial.py"],
            "amlrun -c docker -p no:repro": [*amlrun, "-q", "-p", "no:repro", "-c", "docker", "trivial.py"],
            "amlrun -c local trivial.py": [*amlrun, "-q", "-c", "local", "trivial.py"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.reps):  # interleaved, so drifting load hits all alike
            for name, cmd in commands.items():
                times[name].append(run(cmd, proj, env)[0])

        changed = []
        for i in range(args.reps):
            (proj / "trivial.py").write_text(f"print('hello, edit {i}')\n")
            elapsed, out = run([*amlrun, "-c", "docker", "trivial.py"], proj, env)
            if "building" in out or f"edit {i}" not in out:
                sys.exit(f"a code-only change rebuilt the image or ran old code:\n{out}")
            changed.append(elapsed)

        base = statistics.median(times["docker run --rm IMAGE python trivial.py"])
        print(f"docker target, warm image {image}, {args.reps} repetitions (median [min])")
        print(f"{'':46} {'seconds':>16} {'x docker run':>13}")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"{name:46} {med:8.3f} [{min(values):.3f}] {med / base:12.2f}x")
        med = statistics.median(changed)
        print(f"{'amlrun -c docker after a code-only change':46} {med:8.3f} [{min(changed):.3f}] "
              f"{med / base:12.2f}x  (no rebuild)")
        ratio = statistics.median(times["amlrun -c docker trivial.py"]) / base
        if ratio > TARGET_RATIO:
            print(f"MISSED: warm amlrun -c docker is {ratio:.2f}x docker run (target < {TARGET_RATIO}x)")
            return 1
        print(f"ok: warm amlrun -c docker is {ratio:.2f}x docker run (target < {TARGET_RATIO}x)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
