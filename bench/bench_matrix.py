"""Matrix throughput and the scheduler's own cost.

1. 200 trivial cells on ``local``, whole ``amlrun`` processes: ``-n 2`` against ``-n 1``
   (target: under 0.6x the serial wall time on 2 cores), with the serial cost of starting
   the same 200 bare Python processes as the baseline for amlrun's per-cell overhead.
2. The scheduler alone, in process: ``Session.run_cells`` over N cells whose run is a
   no-op plugin, so what is timed is dispatch, bookkeeping and reporting per cell.

Usage: python3 bench/bench_matrix.py [--cells 200] [--repeat 3] [--sched-cells 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "AMLRUN_PARAMS = {{'i': {values}}}\nprint('cell', __import__('sys').argv[-1])\n"


def make_project(root: Path, cells: int) -> None:
    (root / "aml_config").mkdir(parents=True)
    (root / "aml_config" / "local.compute").write_text("type: local\nmaxParallel: 8\n")
    (root / "trivial.py").write_text(SCRIPT.format(values=list(range(cells))))


def amlrun(root: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (amlrun and every process it ran) of one invocation."""
    env = {**os.environ, "AMLRUN_DISABLE_PLUGIN_AUTOLOAD": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "amlrun", "-q", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"amlrun {' '.join(args)} failed ({proc.returncode}):\n{output}")
    return elapsed, usage.ru_utime + usage.ru_stime


def bare_python(cells: int) -> float:
    started = time.perf_counter()
    for i in range(cells):
        subprocess.run([sys.executable, "-c", f"print('cell', {i})"], capture_output=True, check=True)
    return time.perf_counter() - started


def whole_process(cells: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="amlrun-bench-") as tmp:
        root = Path(tmp) / "proj"
        make_project(root, cells)
        amlrun(root, "-n", "2")  # warm: snapshot objects, stat cache, history database
        load_before = os.getloadavg()[0]
        serial, parallel, cpu = [], [], []
        for _ in range(repeat):  # interleaved, so a burst of other load hits both sides
            wall, used = amlrun(root, "-n", "1")
            serial.append(wall)
            cpu.append(used)
            parallel.append(amlrun(root, "-n", "2")[0])
        load_after = os.getloadavg()[0]
        baseline = bare_python(cells)
    s, p = statistics.median(serial), statistics.median(parallel)
    print(f"{cells} trivial cells on local (median of {repeat}; load average {load_before:.1f} -> {load_after:.1f}):")
    print(f"  -n 1: {s:7.2f} s   ({s / cells * 1000:6.1f} ms per cell)")
    print(f"  -n 2: {p:7.2f} s   ({p / cells * 1000:6.1f} ms per cell)")
    print(f"  ratio -n 2 / -n 1: {p / s:.2f}  (target < 0.60)  {'OK' if p / s < 0.6 else 'MISSED'}"
          f"  [each pair: {', '.join(f'{b / a:.2f}' for a, b in zip(serial, parallel))}]")
    print(f"  CPU per cell (amlrun + the script's python), -n 1: {statistics.median(cpu) / cells * 1000:.1f} ms")
    print(f"  baseline: {cells} bare python processes, serial: {baseline:.2f} s "
          f"({baseline / cells * 1000:.1f} ms each); amlrun adds {(s - baseline) / cells * 1000:.1f} ms per cell "
          f"at -n 1 (record, snapshot copy, log, teardown)")


def scheduler_only(cells: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from amlrun.options import make_config
    from amlrun.hookspec import hookimpl
    from amlrun.runner import build_matrix
    from amlrun.protocol import PASSED, RunReport
    from amlrun.session import Session
    from amlrun.terminal import TerminalReporter

    class NoRun:
        @hookimpl(tryfirst=True)
        def amlrun_run_cell(self, cell, session):
            report = RunReport(cell=cell, outcome=PASSED)
            session.config.hook.amlrun_runreport(report=report)
            return report

    with tempfile.TemporaryDirectory(prefix="amlrun-bench-") as tmp:
        root = Path(tmp) / "proj"
        make_project(root, cells)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            for workers in ("1", "2", "8"):
                config = make_config(["-q", "-q", "-n", workers])
                config.pluginmanager.register(NoRun(), name="norun")
                with open(os.devnull, "w") as devnull:
                    terminal = TerminalReporter(config, out=devnull)
                    config.pluginmanager.unregister(name="terminalreporter")
                    config.pluginmanager.register(terminal, name="terminalreporter")
                    session = Session(config, terminal)
                    build_matrix(session)
                    config.hook.amlrun_sessionstart(session=session)
                    started = time.perf_counter()
                    session.run_cells()
                    elapsed = time.perf_counter() - started
                assert len(session.reports) == cells
                print(f"scheduler alone, {cells} no-op cells, -n {workers}: {elapsed:.3f} s "
                      f"= {elapsed / cells * 1e6:.0f} µs per cell")
        finally:
            os.chdir(cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sched-cells", type=int, default=5000)
    options = parser.parse_args()
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    whole_process(options.cells, options.repeat)
    scheduler_only(options.sched_cells)


if __name__ == "__main__":
    main()
