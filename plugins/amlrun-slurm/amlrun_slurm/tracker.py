"""Following every SLURM task of a target with one command per tick.

Each ``execute()`` waits on its own :class:`Task`; one thread per target polls them all:
a single sh script per tick reads the new ``started``/``exit`` files, the new bytes of
every running task's log, and (every ``QUEUE_EVERY`` seconds) ``squeue``. So 2,000 cells
in the queue cost one command a tick, on the login node or over one SSH connection,
never 2,000 channels. Cancels are gathered the same way: one ``scancel`` a tick.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from amlrun.errors import TargetUnavailable
from amlrun_slurm.jobscript import TERMINAL_STATES, Ending, classify

q = shlex.quote

INTERVAL = float(os.environ.get("AMLRUN_SLURM_POLL_SECONDS", "0.5"))
QUEUE_EVERY = max(INTERVAL, 2.0)
#: log bytes read per task and tick (the rest comes on the next tick)
CHUNK = 1 << 22
#: a task whose script wrote a non-zero exit code waits this long for SLURM's final state
STATE_GRACE = 20.0
#: squeue queries a task may be missing from before it counts as lost
MISSING_QUERIES = 3
SQUEUE_FORMAT = "%F|%K|%T|%r|%N|%P"
#: reads the task table ("<run dir> <log offset> <flags>" lines, in $tab): one stat of every
#: log, then, for each log grown past its offset, "@L <run dir> <bytes> <size>" and (up to
#: CHUNK of) the new bytes. O(tasks) a tick, whatever their number (no argv holds the list)
LOG_READER = (
    "{ printf '%s\\n' \"$tab\"; echo @@; printf '%s\\n' \"$tab\" | awk '{print $1 \"/log\"}' "
    "| xargs stat -c '%s %n' /dev/null 2>/dev/null; } | "
    f'awk -v chunk={CHUNK} -v sq="\'" '
    '\'s == 0 && $0 == "@@" { s = 1; next } s == 0 { o[$1 "/log"] = $2 + 0; next } '
    "($2 in o) && $1 + 0 > o[$2] { c = $1 - o[$2]; if (c > chunk) c = chunk; d = substr($2, 1, length($2) - 4); "
    'printf "printf %s\\\\n@L %s %.0f %.0f\\\\n%s; tail -c +%.0f %s | head -c %.0f\\n", sq, d, c, $1, sq, '
    "o[$2] + 1, "
    "sq $2 sq, c }' | sh"
)
_SAFE_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(eq=False)
class Task:
    """One array task: one cell's run on the cluster."""

    run_id: str
    run_dir: str  # relative to the runs root (= run_id)
    on_line: Callable[[str], None]
    on_note: Callable[[str], None]
    array_id: str = ""
    index: int = 0
    submitted: float = 0.0  # epoch on the login node's clock
    batch: str = ""
    offset: int = 0
    partial: bytes = b""
    more: bool = False  # the last read was capped: more log is waiting
    started: tuple[float, str, str, str] | None = None  # epoch, node, partition, task's own job id
    started_local: float | None = None  # monotonic, when amlrun saw it start
    exit: tuple[int, float] | None = None  # exit code, epoch
    exit_seen: float | None = None
    has_outputs: bool | None = None  # None: unknown (the script did not finish)
    state: str | None = None
    slurm_reason: str = ""
    node: str = ""
    partition: str = ""
    terminal_query: int | None = None  # the squeue query that first showed a terminal state
    missing: int = 0
    cancel_reason: str | None = None
    cancel_sent: bool = False
    ending: Ending | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> str:
        return f"{self.array_id}_{self.index}"

    def flush(self) -> None:
        if self.partial:
            self.on_line(self.partial.decode("utf-8", "replace").rstrip("\r"))
            self.partial = b""


class Tracker:
    """Polls the tasks of one target until each has ended."""

    def __init__(self, run: Callable[..., bytes], runs_root: str, slurm_prefix: str = ""):
        self._run = run  # runs a sh script (and its stdin) on the login node: its stdout
        self.runs_root = runs_root
        self.slurm_prefix = slurm_prefix  # "export SLURM_CONF=...; " etc.
        self._lock = threading.Lock()
        self._tasks: list[Task] = []
        self._thread: threading.Thread | None = None
        self._stop = False
        self._queries = 0
        self._last_query = 0.0
        self._lost_since: float | None = None
        self._wake = threading.Event()
        self._garbage: list[str] = []
        self.ticks = 0

    def add(self, tasks: list[Task]) -> None:
        with self._lock:
            self._tasks.extend(tasks)
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._loop, name="amlrun-slurm-tracker", daemon=True)
                self._thread.start()

    def remove_later(self, folders: list[str]) -> None:
        """Folders (under the runs root's parent) to remove with the next tick's command."""
        with self._lock:
            self._garbage.extend(folders)
        if self._thread is None:
            self._flush_garbage()

    def _flush_garbage(self) -> None:
        with self._lock:
            folders, self._garbage = self._garbage, []
        if folders:
            try:
                self._run("rm -rf " + " ".join(q(f) for f in folders) + "; true")
            except TargetUnavailable:
                pass

    def cancel(self, task: Task, reason: str) -> None:
        with self._lock:
            if task.cancel_reason is None:
                task.cancel_reason = reason
        self._wake.set()

    def active(self) -> list[Task]:
        with self._lock:
            return [t for t in self._tasks if not t.ended.is_set()]

    def stop(self, cancel_pending: bool = True) -> None:
        """Stop polling; scancel what has not ended (the session is over)."""
        if cancel_pending:
            self._scancel(self.active())
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._flush_garbage()

    def _scancel(self, tasks: list[Task]) -> None:
        if tasks:
            try:
                self._run(self.slurm_prefix + "scancel " + " ".join(q(t.job_id) for t in tasks) + " 2>/dev/null; true")
            except TargetUnavailable:
                pass

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop:
            with self._lock:
                self._tasks = [t for t in self._tasks if not t.ended.is_set()]
                tasks = list(self._tasks)
                if not tasks:
                    self._thread = None
                    garbage = bool(self._garbage)
                    if not garbage:
                        return
            if not tasks:
                self._flush_garbage()
                return
            try:
                self._tick(tasks)
                self._lost_since = None
            except Exception as exc:  # a bug here must end the runs, not leave them waiting forever
                if not isinstance(exc, TargetUnavailable):
                    self._scancel(tasks)
                    for task in tasks:
                        self._end(task, Ending("failed", None, f"amlrun's SLURM tracker failed: {exc!r}"))
                    return
                now = time.monotonic()
                if self._lost_since is None:
                    self._lost_since = now
                    for task in tasks:
                        task.on_note(f"[amlrun] cannot reach the login node ({exc}); retrying")
                limit = float(os.environ.get("AMLRUN_SSH_RECONNECT_SECONDS", "300"))
                if now - self._lost_since > limit:
                    for task in tasks:
                        self._end(task, Ending("failed", None, f"lost the login node for {limit:g}s: {exc}", True))
            self.ticks += 1
            self._wake.wait(INTERVAL)
            self._wake.clear()

    def _tick(self, tasks: list[Task]) -> None:
        now = time.monotonic()
        query = (
            now - self._last_query >= QUEUE_EVERY
            or any(t.exit and t.exit[0] != 0 for t in tasks)
            or any(t.cancel_reason for t in tasks)
        )
        to_cancel = [t for t in tasks if t.cancel_reason and not t.cancel_sent]
        with self._lock:
            garbage, self._garbage = self._garbage, []
        parts = [f"cd {q(self.runs_root)} 2>/dev/null || exit 0"]
        if garbage:
            parts.append("rm -rf " + " ".join(q(f) for f in garbage))
        if to_cancel:
            parts.append(self.slurm_prefix + "scancel " + " ".join(q(t.job_id) for t in to_cancel) + " 2>/dev/null")
        parts.append("tab=$(cat); echo @F")
        parts.append(
            'printf \'%s\\n\' "$tab" | awk \'$3 ~ /s/ {print $1 "/started"} $3 ~ /e/ {print $1 "/exit"}\' '
            "| xargs grep -H . /dev/null 2>/dev/null"
        )
        if query:
            parts.append(
                "echo @Q; " + self.slurm_prefix + f'squeue -h -r -t all -u "$(id -un)" -o {q(SQUEUE_FORMAT)}'
                " 2>/dev/null || echo @QFAIL"
            )
        # every task's log, after its exit file: an exit seen above has its whole log read below
        parts.append(LOG_READER)
        out = self._run("; ".join(parts) + "; true", _table(tasks))
        for task in to_cancel:
            task.cancel_sent = True
        if query:
            self._queries += 1
            self._last_query = now
        self._parse(out, tasks, query)

    def _parse(self, out: bytes, tasks: list[Task], queried: bool) -> None:
        by_dir = {t.run_dir: t for t in tasks}
        cut = out.find(b"\n@L ")
        head, chunks = (out, b"") if cut < 0 else (out[:cut], out[cut + 1 :])
        section = None
        rows: dict[tuple[str, str], list[str]] = {}
        query_failed = False
        for raw in head.decode("utf-8", "replace").splitlines():
            if raw in ("@F", "@Q"):
                section = raw
                continue
            if raw == "@QFAIL":
                query_failed = True
                continue
            if section == "@F":
                path, _, value = raw.partition(":")
                folder, _, name = path.rpartition("/")
                task = by_dir.get(folder)
                if task is not None:
                    self._file(task, name, value.split())
            elif section == "@Q":
                fields = raw.split("|")
                if len(fields) >= 6:
                    rows[(fields[0], fields[1])] = fields
        pos = 0
        while pos < len(chunks):
            end = chunks.find(b"\n", pos)
            if end < 0:
                break
            header = chunks[pos:end].decode("utf-8", "replace").split()
            if len(header) != 4 or header[0] != "@L" or not header[2].isdigit():
                break
            count, size = int(header[2]), int(header[3])
            data = chunks[end + 1 : end + 1 + count]
            pos = end + 1 + count + 1  # the chunk, then the next header's leading newline
            task = by_dir.get(header[1])
            if task is None:
                continue
            task.offset += len(data)
            task.more = task.offset < size
            *lines, task.partial = (task.partial + data).split(b"\n")
            for line in lines:
                task.on_line(line.decode("utf-8", "replace").rstrip("\r"))
        if queried and not query_failed:
            for task in tasks:
                row = rows.get((task.array_id, str(task.index)))
                if row is None:
                    task.missing += 1
                    continue
                task.missing = 0
                task.state, task.slurm_reason = row[2], row[3]
                task.node = row[4] if row[4] not in ("", "(null)") else task.node
                task.partition = row[5] or task.partition
                if task.state in TERMINAL_STATES and task.terminal_query is None:
                    task.terminal_query = self._queries
                if task.state == "RUNNING" and task.started_local is None:
                    task.started_local = time.monotonic()
        for task in tasks:
            self._decide(task)

    def _file(self, task: Task, name: str, values: list[str]) -> None:
        if name == "started" and len(values) >= 2 and task.started is None:
            try:
                epoch = float(values[0])
            except ValueError:
                return
            node = values[1]
            partition = values[2] if len(values) > 2 else ""
            task.started = (epoch, node, partition, values[3] if len(values) > 3 else "")
            task.node, task.partition = node, partition or task.partition
            if task.started_local is None:
                task.started_local = time.monotonic()
            queued = max(0.0, epoch - task.submitted) if task.submitted else None
            task.on_note(
                f"[amlrun] SLURM job {task.job_id} started on {node}"
                + (f" (partition {partition})" if partition else "")
                + (f" after {queued:.1f}s in the queue" if queued is not None else "")
            )
        elif name == "exit" and values and values[0].lstrip("-").isdigit() and task.exit is None:
            try:
                when = float(values[1]) if len(values) > 1 else time.time()
            except ValueError:
                when = time.time()
            task.exit = (int(values[0]), when)
            task.has_outputs = values[2] != "0" if len(values) > 2 else None
            task.exit_seen = time.monotonic()

    def _decide(self, task: Task) -> None:
        if task.ended.is_set() or task.more:
            return
        canceled = task.cancel_reason is not None
        terminal = task.state in TERMINAL_STATES
        if task.exit is not None:
            code = task.exit[0]
            if code == 0 and not canceled:
                self._end(task, classify(None, 0, False))
            elif terminal:
                self._end(task, classify(task.state, code, canceled, task.slurm_reason))
            elif task.missing >= MISSING_QUERIES or time.monotonic() - (task.exit_seen or 0) > STATE_GRACE:
                self._end(task, classify(None, code, canceled))
            return
        if terminal and task.terminal_query is not None and task.terminal_query < self._queries:
            self._end(task, classify(task.state, None, canceled, task.slurm_reason))
        elif terminal and task.terminal_query is not None and task.terminal_query == self._queries:
            self._wake.set()  # one more look at the files, right away
        elif task.missing >= MISSING_QUERIES:
            self._end(task, classify(None, None, canceled))

    def _end(self, task: Task, ending: Ending) -> None:
        if task.ended.is_set():
            return
        if task.cancel_reason and ending.status == "canceled":
            ending = Ending("canceled", ending.exit_code, task.cancel_reason)
        task.flush()
        task.ending = ending
        task.ended.set()


def _table(tasks: list[Task]) -> bytes:
    """The tick's task table for its stdin: run folder, log offset, the files still to read."""
    lines = []
    for t in tasks:
        if not _SAFE_DIR.match(t.run_dir):
            raise ValueError(f"a run folder name the tick's shell cannot take as it is: {t.run_dir!r}")
        flags = ("s" if t.started is None else "") + ("e" if t.exit is None else "")
        lines.append(f"{t.run_dir} {t.offset} {flags or '-'}\n")
    return "".join(lines).encode()


def run_capturing(login, script: str, stdin: bytes = b"", timeout: float = 120) -> bytes:
    """A tick's script on the login node, ``stdin`` its input; its stdout as bytes."""
    buffer = io.BytesIO()
    result = login.run(script, stdin=stdin, timeout=timeout, stdout_to=buffer)
    if result.exit_code != 0:
        raise TargetUnavailable(
            f"{login.settings.label}: polling SLURM failed (exit {result.exit_code}): {result.stderr.strip()[-200:]}"
        )
    return buffer.getvalue()
