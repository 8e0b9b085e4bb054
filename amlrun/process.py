"""Running a local child process with live output, a timeout and cancellation.

The child gets its own session (process group), so Ctrl-C in the terminal reaches
amlrun only; amlrun then stops the whole group for real (SIGTERM, then SIGKILL).

A process group is not the whole run: a script may start a process in a session of its
own (``setsid``, a double fork) that outlives the group. Every process of a run therefore
inherits a marker variable (``AMLRUN_RUN_TOKEN``, random per run) and, when the run ends
or is stopped, every process of this user whose ``/proc/PID/environ`` holds the marker
is killed too. Environments are inherited by every descendant whatever it does with
sessions, groups or parents, and need no privileges (cgroups would need a delegated
hierarchy, which containers and CI machines often lack); only a process that clears its
own environment escapes (``env -i``): that takes intent, not carelessness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

GRACE_SECONDS = 5.0
#: the longest piece of one output line handed to the sink at once
MAX_LINE = 1 << 20
#: the variable marking every process of one run (see the module docstring)
MARKER_ENV = "AMLRUN_RUN_TOKEN"
#: how long processes a finished script started may keep its output open
STRAGGLER_GRACE = 1.0


@dataclass(frozen=True)
class ProcessOutcome:
    """How a script's process ended: its exit code, and whether amlrun stopped it (timeout, cancel)."""

    exit_code: int | None
    timed_out: bool = False
    canceled: bool = False


def stop_group(proc: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            # the leader exited; make sure no straggler of its group survives
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def _pids_wrapped(since_pid: int) -> bool:
    """Whether pid numbers wrapped around since ``since_pid`` was handed out."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", encoding="ascii") as fh:
            return int(fh.read()) < since_pid
    except (OSError, ValueError):
        return True


def marked_processes(token: str, since_pid: int = 0) -> list[int]:
    """Pids of processes (other than this one) whose environment holds ``MARKER_ENV=token``.

    Descendants of a process are handed pids after its own until the numbers wrap, so with
    ``since_pid`` (the run's first pid) only newer pids are read: a few files, not all."""
    needle = f"{MARKER_ENV}={token}".encode()
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    me = os.getpid()
    floor = since_pid if since_pid and not _pids_wrapped(since_pid) else 0
    for name in names:
        if not name.isdigit() or int(name) == me or int(name) < floor:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                data = fh.read()
        except OSError:  # gone, or another user's
            continue
        if needle + b"\0" in data or data.endswith(needle):
            found.append(int(name))
    return found


def kill_marked(token: str, since_pid: int = 0) -> list[int]:
    """SIGKILL every process of the run marked ``token``, again until none is left (one may
    fork while the others are killed)."""
    killed: list[int] = []
    for _ in range(20):
        pids = [pid for pid in marked_processes(token, since_pid) if pid not in killed or alive(pid)]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def pump_lines(stream, sink) -> threading.Thread:
    """Forward decoded lines of a binary ``stream`` to ``sink.write`` on a thread."""

    def pump() -> None:
        # a line is read at most MAX_LINE bytes at a time: output without newlines must
        # not be held whole in memory
        for raw in iter(lambda: stream.readline(MAX_LINE), b""):
            sink.write(raw.decode("utf-8", "replace").rstrip("\r\n"))
        stream.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run_streaming(
    cmd, *, cwd, env, sink, cancel: threading.Event, timeout: float | None, on_stop=None, group_file=None
) -> ProcessOutcome:
    """Run ``cmd``; every output line goes to ``sink``; stop on ``cancel`` or ``timeout``.

    ``on_stop`` (optional) is called before the process group is killed, e.g. to
    stop a remote application the process started. ``group_file`` (optional) records
    the process group while it runs, so :func:`reap_orphan_groups` can stop it if amlrun
    itself is killed (kill -9 leaves no chance to clean up).
    """
    token = os.urandom(12).hex()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**env, MARKER_ENV: token},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if group_file is not None:
        _write_group_file(group_file, proc.pid, token)
    try:
        return _supervise(proc, sink, cancel, timeout, on_stop, token)
    finally:
        kill_marked(token, proc.pid)  # whatever of the run is left (setsid, double forks) ends with it
        if group_file is not None:
            try:
                os.unlink(group_file)
            except OSError:
                pass


def _supervise(proc, sink, cancel, timeout, on_stop, token: str = "") -> ProcessOutcome:
    pump = pump_lines(proc.stdout, sink)
    deadline = time.monotonic() + timeout if timeout else None
    timed_out = canceled = False
    while True:
        # Waiting on the output pump wakes the moment the child closes its output (its
        # exit, usually); ``proc.wait(timeout)`` would poll with sleeps instead.
        if pump.is_alive():
            pump.join(0.05)
        else:
            try:
                proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is not None:
            break
        if cancel.is_set():
            canceled = True
        elif deadline is not None and time.monotonic() > deadline:
            timed_out = True
        if canceled or timed_out:
            if on_stop is not None:
                on_stop()
            stop_group(proc)
            break
    pump.join(STRAGGLER_GRACE)
    if pump.is_alive():
        # the script ended but processes it started still hold its output: a run is its
        # process group, and it must not outlive its cell (nor write to a finished log)
        note = getattr(sink, "note", None)
        if note is not None:
            note("[amlrun] the script exited; stopping the processes it left running")
        stop_group(proc)
        if token:
            kill_marked(token, proc.pid)  # a process in a session of its own may hold the output too
        pump.join(10)
    return ProcessOutcome(proc.returncode, timed_out=timed_out, canceled=canceled)


# -- process groups left behind by a killed amlrun -------------------------------------------


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (guards against pid reuse); empty off Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def alive(pid: int, started: str = "") -> bool:
    """Whether ``pid`` runs and is the same process that started at ``started``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or process_start(pid) in ("", started)


def _write_group_file(path, pgid: int, token: str = "") -> None:
    owner = os.getpid()
    data = {
        "pgid": pgid,
        "start": process_start(pgid),
        "owner": owner,
        "owner_start": process_start(owner),
        "token": token,
    }  # the group leader's pid is the run's first pid (kill_marked's since_pid)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
    except OSError:
        pass


def reap_orphan_groups(directory) -> list[int]:
    """Kill process groups recorded in ``directory/*.pgid`` whose amlrun process is gone."""
    killed: list[int] = []
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".pgid")]
    except OSError:
        return killed
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            pgid, owner = int(data["pgid"]), int(data["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive(owner, data.get("owner_start", "")):
            continue
        if alive(pgid, data.get("start", "")):
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except OSError:
                pass
        if isinstance(data.get("token"), str) and data["token"]:
            killed.extend(kill_marked(data["token"], pgid))
        try:
            os.unlink(path)
        except OSError:
            pass
    return killed
