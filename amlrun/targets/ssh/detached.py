"""Long commands on a host reached over SSH that survive the network.

:func:`start_detached` runs a command in its own session on the host (``setsid``/``nohup``),
its output going to a log file there and its exit code to a file; :func:`stream_log`
follows that log, resuming from the last byte offset after a reconnect; :func:`kill_group`
stops the whole process group; :func:`sweep_orphans` stops what a dead amlrun left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.targets.outcome import ConnectionLost
from amlrun.targets.ssh.connection import (
    AuthenticationFailed,
    HostKeyUnknown,
    SSHSession,
    q,
    reconnect_seconds,
    sh,
)

if TYPE_CHECKING:
    from paramiko import Channel

LOG, EXIT, PID, ENV, OWNER = "log", "exit", "pid", "env", "owner"


def env_file_text(env: dict[str, str]) -> bytes:
    """Shell ``export`` lines for ``env``; sourced by the detached command, then deleted."""
    lines = []
    for name, value in env.items():
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ConfigError(f"environment variable name {name!r} is not a valid shell name")
        if "\0" in value:
            raise ConfigError(f"environment variable {name} contains a NUL character")
        lines.append(f"export {name}={q(value)}\n")
    return "".join(lines).encode("utf-8")


def start_detached(
    session: SSHSession,
    run_dir: str,
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str] | None = None,
    prelude: str = "",
    owner: str = "",
) -> int:
    """Start ``argv`` on the host in its own session, detached from this connection.

    ``run_dir`` (created) receives ``log`` (stdout+stderr), ``pid`` (the process group)
    and, when the command ends, ``exit`` (its exit code). ``env`` travels through a 0600
    file in ``run_dir`` (written from stdin, never in a command line) that the command
    sources and deletes before it starts. ``prelude``: extra sh lines run first (after
    the environment is loaded). ``owner``: a line written to ``run_dir/owner`` naming the
    local process responsible for it (see :func:`sweep_orphans`). Returns the process group id.
    """
    rd = q(run_dir)
    inner = (
        f"echo $$ > {rd}/{PID}.tmp && mv {rd}/{PID}.tmp {rd}/{PID}; "
        f"if [ -f {rd}/{ENV} ]; then . {rd}/{ENV}; rm -f {rd}/{ENV}; fi; "
        f"{prelude}\n"
        f"cd {q(cwd)} || exit 127; "
        f'"$@"; code=$?; echo $code > {rd}/{EXIT}.tmp && mv {rd}/{EXIT}.tmp {rd}/{EXIT}'
    )
    script = (
        # idempotent per run folder: a retry after a dropped connection does not start it twice
        f"if [ -s {rd}/{PID} ]; then cat > /dev/null; cat {rd}/{PID}; exit 0; fi; "
        f"set -e; umask 077; mkdir -p {rd}; rm -f {rd}/{EXIT} {rd}/{LOG}; cat > {rd}/{ENV}; "
        + (f"printf '%s\\n' {q(owner)} > {rd}/{OWNER}; " if owner else "")
        + "umask 022; "
        f"if command -v setsid >/dev/null 2>&1; then S=setsid; else S=; fi; "
        f"$S nohup sh -c {q(inner)} amlrun-job {' '.join(q(a) for a in argv)} "
        f"> {rd}/{LOG} 2>&1 < /dev/null & "
        f"i=0; while [ ! -s {rd}/{PID} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; cat {rd}/{PID}"
    )
    result = session.run(script, stdin=env_file_text(env or {}), timeout=60)
    if not result.ok or not result.stdout.strip().isdigit():
        raise TargetUnavailable(
            f"{session.settings.label}: could not start the command: {(result.stderr or result.stdout).strip()[-300:]}"
        )
    return int(result.stdout.strip())


#: sh function: is process $1 alive (a zombie is not)? ``kill -0`` where there is no /proc
_ALIVE = (
    'alive() { kill -0 "$1" 2>/dev/null || return 1; [ -r /proc/$1/stat ] || return 0; '
    '{ read -r l < /proc/$1/stat; } 2>/dev/null || return 1; set -- ${l##*) }; [ "$1" != Z ]; }; '
)
#: sh function: does any live (non-zombie) process remain in process group $1?
_GROUP_ALIVE = (
    'group_alive() { [ -d /proc/self ] || { kill -0 -"$1" 2>/dev/null; return; }; '
    'for f in /proc/[0-9]*/stat; do { read -r l < "$f"; } 2>/dev/null || continue; '
    'set -- "$1" ${l##*) }; [ "$4" = "$1" ] && [ "$2" != Z ] && return 0; done; return 1; }; '
)
#: the stream loop writes a byte to stderr this often, so it dies (EPIPE) once the channel is gone
HEARTBEAT_TICKS = 10


def _stream_script(run_dir: str, offset: int) -> str:
    rd = q(run_dir)
    return (
        f"{_ALIVE}cd {rd} || exit 3; off={int(offset)}; done=; tick=0; "
        "while :; do "
        f"  [ -e {EXIT} ] && done=1; "
        f"  size=$(wc -c < {LOG} 2>/dev/null || echo 0); size=$((size+0)); "
        '  if [ "$size" -gt "$off" ]; then '
        f"    tail -c +$((off+1)) {LOG} | head -c $((size-off)) || exit 5; off=$size; "
        "  fi; "
        '  [ -n "$done" ] && exit 0; '
        f"  if [ -s {PID} ] && ! alive $(cat {PID}) && [ ! -e {EXIT} ]; then "
        "    sleep 0.5; [ -e " + EXIT + " ] || exit 4; fi; "
        f"  tick=$((tick+1)); if [ $tick -ge {HEARTBEAT_TICKS} ]; then tick=0; printf . >&2 || exit 5; fi; "
        "  sleep 0.2; "
        "done"
    )


@dataclass
class StreamState:
    """Where streaming got to: bytes of the log already delivered, reconnects so far."""

    offset: int = 0
    reconnects: int = 0
    partial: bytes = b""


class _Outage:
    """How long the connection has been down (``since`` is None while it is up) and how long it may stay down."""

    def __init__(self, label: str, window: float, on_note: Callable[[str], None] | None) -> None:
        self.label, self.window, self.on_note = label, window, on_note
        self.since: float | None = None

    def deadline(self) -> float | None:
        """When reconnecting gives up, None while connected."""
        return None if self.since is None else self.since + self.window

    def lost(self, note: str) -> None:
        """Start the outage clock (once per outage), saying so."""
        if self.since is None:
            self.since = time.monotonic()
            if self.on_note:
                self.on_note(note)

    def check(self) -> None:
        """ConnectionLost once the outage has outlasted the window."""
        if self.since is not None and time.monotonic() - self.since > self.window:
            raise ConnectionLost(
                f"{self.label}: connection lost and not back within "
                f"{self.window:g}s; the run may still be going on the host"
            ) from None

    def restored(self, state: StreamState) -> None:
        """The connection is back: count the reconnect and end the outage."""
        if self.since is not None:
            state.reconnects += 1
            if self.on_note:
                self.on_note(f"reconnected; resuming the log at byte {state.offset}")
            self.since = None


def stream_log(
    session: SSHSession,
    run_dir: str,
    on_line: Callable[[str], None],
    *,
    state: StreamState | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    window: float | None = None,
    on_note: Callable[[str], None] | None = None,
) -> str:
    """Deliver the log of a :func:`start_detached` command line by line until it ends.

    Returns ``"exited"`` (the exit file exists), ``"vanished"`` (the process is gone without
    an exit code: killed, or the host rebooted) or ``"stopped"`` (``should_stop()`` turned
    true). A dropped connection is reopened with backoff for up to ``window`` seconds
    (default :func:`reconnect_seconds`) and streaming resumes at ``state.offset``;
    ConnectionLost when it cannot.
    """
    state = state or StreamState()
    outage = _Outage(session.settings.label, reconnect_seconds() if window is None else window, on_note)
    while True:
        if should_stop():
            return "stopped"
        channel = _open_stream(session, run_dir, state, outage)
        if channel is None:
            continue
        if _pump(channel, state, on_line, should_stop):
            channel.close()
            return "stopped"
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        channel.close()
        how = _ended(status, state, on_line, session.settings.label, run_dir)
        if how is not None:
            return how
        # -1 (no status: the connection dropped) or anything else: reconnect and resume
        session.drop()
        outage.lost("connection lost; reconnecting")


def _open_stream(session: SSHSession, run_dir: str, state: StreamState, outage: _Outage) -> Channel | None:
    """A channel streaming the log from ``state.offset``; None (after a pause) while the host is unreachable."""
    try:
        channel = session.open_channel(
            sh(_stream_script(run_dir, state.offset)), deadline=outage.deadline(), on_retry=outage.on_note
        )
    except (TargetUnavailable, OSError, EOFError) as exc:
        if isinstance(exc, (HostKeyUnknown, AuthenticationFailed)):
            raise
        outage.lost(f"connection lost ({exc}); reconnecting")
        outage.check()
        time.sleep(1.0)
        return None
    outage.restored(state)
    channel.settimeout(0.2)
    return channel


def _pump(
    channel: Channel, state: StreamState, on_line: Callable[[str], None], should_stop: Callable[[], bool]
) -> bool:
    """Deliver whole lines until the channel ends or drops; True when ``should_stop()`` ended it."""
    try:
        while True:
            if should_stop():
                return True
            while channel.recv_stderr_ready():
                channel.recv_stderr(1 << 16)  # heartbeats
            try:
                data = channel.recv(1 << 16)
            except TimeoutError:
                if not channel.get_transport().is_active():
                    return False
                continue
            if not data:
                return False
            state.offset += len(data)
            *lines, state.partial = (state.partial + data).split(b"\n")
            for raw in lines:
                on_line(raw.decode("utf-8", "replace").rstrip("\r"))
    except (OSError, EOFError):
        return False


def _ended(status: int, state: StreamState, on_line: Callable[[str], None], label: str, run_dir: str) -> str | None:
    """What the streaming script's exit status says: ``"exited"``, ``"vanished"``, or None to reconnect."""
    if status == 0:
        if state.partial:
            on_line(state.partial.decode("utf-8", "replace").rstrip("\r"))
            state.partial = b""
        return "exited"
    if status == 4:
        return "vanished"
    if status == 3:
        raise TargetUnavailable(f"{label}: the run folder {run_dir} is gone")
    return None


def exit_code(session: SSHSession, run_dir: str) -> int | None:
    """The exit code a detached command left, None when it has not ended (or was killed)."""
    result = session.run(f"cat {q(run_dir)}/{EXIT} 2>/dev/null", timeout=30)
    text = result.stdout.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def kill_group(session: SSHSession, run_dir: str, grace: float = 5.0) -> bool:
    """Stop a detached command's whole process group (TERM, then KILL after ``grace``).
    Returns True when it is gone."""
    rd = q(run_dir)
    script = (
        f"{_GROUP_ALIVE}[ -s {rd}/{PID} ] || exit 0; pg=$(cat {rd}/{PID}); "
        "kill -TERM -$pg 2>/dev/null || exit 0; "
        f"i=0; while group_alive $pg && [ $i -lt {int(grace * 10)} ]; do sleep 0.1; i=$((i+1)); done; "
        "kill -KILL -$pg 2>/dev/null; sleep 0.1; ! group_alive $pg"
    )
    return session.run(script, timeout=grace + 30).ok


def sweep_orphans(session: SSHSession, runs_root: str, is_dead: Callable[[str], bool]) -> list[str]:
    """Stop and remove the detached commands under ``runs_root/*`` whose owner line (see
    :func:`start_detached`) ``is_dead`` says belongs to a local process that is gone (an
    amlrun killed with -9, a laptop that crashed): the counterpart of the Docker target's
    orphan-container cleanup. Returns the run folders removed."""
    root = q(runs_root)
    listing = session.run(
        f'for d in {root}/*/; do [ -s "${{d}}{OWNER}" ] || continue; '
        f'printf \'%s\\t%s\\n\' "$d" "$(head -1 "${{d}}{OWNER}")"; done 2>/dev/null; true',
        timeout=60,
    )
    removed = []
    for line in listing.stdout.splitlines():
        folder, _, owner = line.partition("\t")
        if not folder or not is_dead(owner):
            continue
        folder = folder.rstrip("/")
        kill_group(session, folder, grace=2.0)
        session.run(f"rm -rf {q(folder)}", timeout=120)
        removed.append(folder)
    return removed
