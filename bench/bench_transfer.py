"""Incremental code transfer to a remote target (issue 5): bytes and time of the second
submission of a 50 MB project after changing one file (target: under 1 MB sent).

    python3 bench/bench_transfer.py                 # 50 MB in 200 files
    python3 bench/bench_transfer.py --mb 200 --files 2000

Needs root (it starts a private sshd on 127.0.0.1 with a test user, as the tests do).
Whole-process timings of the real CLI, ``amlrun -c vm noop.py``:

- first submission (nothing on the VM yet): the baseline, everything travels;
- second submission after changing one small file: only that file and the manifest;
- a third, unchanged: the floor (no file travels);

plus ``python noop.py`` (the interpreter alone). Bytes are what amlrun's transfer sent
(the compressed tar on the SSH channel, as recorded in the run's ``extra.transfer``).
Exit status 1 when the second submission sends 1 MB or more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def amlrun(project: Path, *args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "amlrun", *args], cwd=project, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"amlrun {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed


def last_transfer(project: Path) -> dict:
    records = [json.loads(p.read_text()) for p in (project / ".amlrun" / "runs").glob("*/record.json")]
    records.sort(key=lambda r: r.get("created") or 0)
    return records[-1]["extra"]["transfer"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="project size in MB (default 50)")
    parser.add_argument("--files", type=int, default=200, help="number of data files (default 200)")
    options = parser.parse_args()

    from sshd_fixture import sshd_unavailable, start_test_sshd

    why = sshd_unavailable()
    if why:
        print(f"bench_transfer: cannot run here: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="amlrun-bench-transfer-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "sshd").mkdir()
        server = start_test_sshd(tmp_path / "sshd")
        os.environ["AMLRUN_CREDENTIALS"] = str(tmp_path / "credentials.yml")
        os.environ["AMLRUN_CACHE_DIR"] = str(tmp_path / "cache")
        try:
            project = tmp_path / "proj"
            (project / "aml_config").mkdir(parents=True)
            (project / "aml_config" / "vm.compute").write_text(server.compute_yaml())
            (project / "noop.py").write_text("import helper\n")
            (project / "helper.py").write_text("VALUE = 1\n")
            data = project / "data"
            data.mkdir()
            per_file = options.mb * (1 << 20) // options.files
            for i in range(options.files):
                (data / f"part{i:05d}.bin").write_bytes(os.urandom(per_file))
            size = sum(p.stat().st_size for p in project.rglob("*") if p.is_file())

            started = time.monotonic()
            subprocess.run([sys.executable, "noop.py"], cwd=project, check=True)
            baseline_python = time.monotonic() - started
            first = amlrun(project, "-c", "vm", "noop.py")
            first_t = last_transfer(project)
            (project / "helper.py").write_text("VALUE = 2  # one changed file\n")
            second = amlrun(project, "-c", "vm", "noop.py")
            second_t = last_transfer(project)
            third = amlrun(project, "-c", "vm", "noop.py")
            third_t = last_transfer(project)
        finally:
            server.stop()
            server.remove_user()

    def row(name, seconds, t):
        print(f"{name:<34} {seconds:7.2f} s  {t['bytes_sent']:>12,} bytes  {t['files_sent']:>5} files sent"
              f"  (transfer {t['seconds']:.2f} s)")

    print(f"project: {size / (1 << 20):.1f} MB in {options.files + 3} files; VM: sshd on 127.0.0.1")
    print(f"{'python noop.py (interpreter only)':<34} {baseline_python:7.2f} s")
    row("1st submission (baseline: all)", first, first_t)
    row("2nd submission (one file changed)", second, second_t)
    row("3rd submission (unchanged)", third, third_t)
    ratio = second_t["bytes_sent"] / max(1, first_t["bytes_sent"])
    print(f"2nd/1st bytes: {ratio:.5f}; 2nd/1st time: {second / first:.2f}")
    ok = second_t["bytes_sent"] < (1 << 20) and second_t["files_sent"] == 1
    print(("PASS" if ok else "FAIL") + ": second submission sent "
          f"{second_t['bytes_sent']:,} bytes (target: under 1 MB, only the changed file)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
