"""Running the real ``amlrun`` command in a throw-away project and reading what it recorded."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KitRun:
    """One run as the history keeps it: its record, its log and its folder."""

    folder: Path
    record: dict[str, Any]
    log: str

    @property
    def outputs(self) -> Path:
        return self.folder / "outputs"

    @property
    def script(self) -> str:
        return str(self.record.get("script", ""))

    def describe(self) -> str:
        r = self.record
        return (
            f"run {r.get('run_id')} of {r.get('cell_id')}: {r.get('status')} (exit {r.get('exit_code')}) "
            f"{r.get('reason') or ''}".rstrip()
        )


@dataclass(frozen=True)
class KitSession:
    """One ``amlrun`` invocation: its exit code, its output and the runs it recorded."""

    returncode: int
    output: str
    runs: tuple[KitRun, ...]
    seconds: float

    def run_of(self, script: str) -> KitRun | None:
        for run in self.runs:
            if run.script == script:
                return run
        return None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def read_runs(root: Path) -> tuple[KitRun, ...]:
    runs_dir = root / ".amlrun" / "runs"
    found = []
    for folder in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else ():
        try:
            record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        log_path = folder / "log.txt"
        log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
        found.append(KitRun(folder, record, log))
    return tuple(found)


def amlrun_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "amlrun", *args]


def run_amlrun(root: Path, args: list[str], env: dict[str, str], timeout: float) -> KitSession:
    started = time.monotonic()
    before = {run.folder for run in read_runs(root)}
    try:
        proc = subprocess.run(
            amlrun_command(args),
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = -1, f"amlrun did not finish within {timeout:g}s\n{_text(exc.stdout)}{_text(exc.stderr)}"
    runs = tuple(run for run in read_runs(root) if run.folder not in before)
    return KitSession(code, output, runs, time.monotonic() - started)


def run_and_interrupt(
    root: Path, args: list[str], env: dict[str, str], *, when_seen: str, wait_first: float, timeout: float
) -> KitSession:
    """Start amlrun, send it SIGTERM (as a CI job's cancel does) once ``when_seen`` is in its
    output, and wait for it to end: every running job's ``cancel`` event is then set."""
    started = time.monotonic()
    before = {run.folder for run in read_runs(root)}
    proc = subprocess.Popen(
        amlrun_command(args),
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    signalled = False
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if when_seen in line and not signalled:
            time.sleep(wait_first)
            proc.send_signal(signal.SIGTERM)
            signalled = True
    try:
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        seen.append(f"amlrun did not end within {timeout:g}s")
    if not signalled:
        seen.append(f"(the kit never saw {when_seen!r}, so it sent no signal)")
    runs = tuple(run for run in read_runs(root) if run.folder not in before)
    return KitSession(code, "".join(seen), runs, time.monotonic() - started)


def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def local_processes(marker: str) -> list[str]:
    """``pid: command line`` of this machine's processes whose argv holds ``marker``."""
    found = []
    me = os.getpid()
    proc = Path("/proc")
    if not proc.is_dir():
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        return [line.strip() for line in out.splitlines() if marker in line and not line.strip().startswith(f"{me} ")]
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state == "Z" or marker.encode() not in raw:
            continue
        found.append(f"{entry.name}: " + raw.replace(b"\0", b" ").decode("utf-8", "replace").strip())
    return found
