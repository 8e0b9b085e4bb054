"""Following a container to its end, for every engine: its log streamed line by line, a
timeout or a cancel stopping it, and on an engine reached over a network (a ``window`` of
seconds to reconnect) a dropped connection waited out, the log followed again from the
last line delivered (lines already delivered are skipped by their engine timestamps).
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from amlrun.process import MAX_LINE
from amlrun.targets.base import ExecResult, Job, Sink
from amlrun.targets.docker.image import docker_sdk
from amlrun.targets.outcome import StopWatch, finished, infrastructure_failure

STOP_GRACE_SECONDS = 3


@dataclass
class LogState:
    """How far the log got: the engine timestamp of the last line delivered."""

    last: tuple[bytes, bytes] | None = None
    resumed: bool = False

    def since(self) -> int | None:
        """Where a re-follow starts (whole seconds: the engine's ``since``)."""
        if self.last is None:
            return None
        try:
            moment = datetime.datetime.strptime(self.last[0].decode(), "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None
        return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())


def follow(container, job: Job, sink: Sink, *, window: float, engine: str) -> ExecResult:
    """Stream ``container``'s log until it exits, is canceled or times out (then stop it)."""
    watch = StopWatch(job)
    state = LogState()
    reconnects = 0
    lost_since: float | None = None
    stopped = None
    while True:
        stopped, pump = _pump_until_end(container, sink, state, watch)
        if stopped:
            stop_container(container, retry_for=window)
            pump.join(5)  # the last lines
            break
        state.resumed = True  # whatever broke the stream, the next one skips what was delivered
        running, problem = _running(container)
        if problem is not None:
            if window <= 0:
                return infrastructure_failure(f"lost {engine}: {problem}")
            if lost_since is None:
                lost_since = time.monotonic()
                reconnects += 1
                sink.write(f"[amlrun] connection to {engine} lost ({problem}); reconnecting")
            if time.monotonic() - lost_since > window:
                return infrastructure_failure(
                    f"connection to {engine} lost and not back within {window:g}s; the container may still run there",
                    {"reconnects": reconnects},
                )
            time.sleep(1)
            continue
        if lost_since is not None:
            sink.write(f"[amlrun] reconnected to {engine}")
            lost_since = None
        if not running:
            break
        reconnects += 1  # the log stream broke while the container runs: follow it again
        sink.write("[amlrun] resuming the log")
    code = _exit_code(container)
    oom = not stopped and code not in (0, None) and _oom_killed(container)
    return finished(code, stopped=stopped, oom=oom, extra={"reconnects": reconnects} if window > 0 else None)


def stop_container(container, *, retry_for: float = 0.0) -> None:
    """Stop a container (TERM, KILL after the grace period), retrying for ``retry_for``
    seconds while the engine cannot be reached."""
    docker = docker_sdk()
    deadline = time.monotonic() + retry_for
    while True:
        try:
            try:
                container.stop(timeout=STOP_GRACE_SECONDS)
            except docker.errors.APIError:
                container.kill()
            return
        except docker.errors.NotFound:
            return
        except Exception:  # the engine is away (or the container already gone): retry while allowed
            if time.monotonic() >= deadline:
                return
            time.sleep(1)


def _pump_until_end(container, sink: Sink, state: LogState, watch: StopWatch) -> tuple[str | None, threading.Thread]:
    """Deliver the log until the stream ends; the stop reason when the job must stop first."""
    pump = threading.Thread(target=_pump, args=(container, sink, state), daemon=True)
    pump.start()
    while pump.is_alive():
        pump.join(0.05)
        reason = watch.reason()
        if reason and pump.is_alive():
            return reason, pump
    return None, pump


def _pump(container, sink: Sink, state: LogState) -> None:
    lines = LogLines(lambda stamp, text: _deliver(stamp, text, sink, state))
    try:
        stream = container.logs(
            stream=True,
            follow=True,
            stdout=True,
            stderr=True,
            timestamps=True,
            since=state.since() if state.resumed else None,
        )
        for chunk in stream:
            lines.feed(chunk)
    except Exception:  # the container was removed under us (cancel) or the engine went away
        return
    lines.feed(b"", final=True)


#: the engine's log copier stores a line longer than this as several entries, each stamped
ENTRY_BYTES = 16 * 1024
#: an engine timestamp (RFC 3339, nanoseconds with trailing zeros trimmed) and its space
STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z ")
STAMP_MAX = 32


class LogLines:
    """The bytes of a ``timestamps=True`` log stream, as (stamp, line) pairs: each line's
    stamp taken off, a line the engine split into entries of ENTRY_BYTES joined again
    (no timestamps in the middle of it), and a line longer than ``MAX_LINE`` delivered in
    pieces of that size, so that output without newlines is never held whole in memory."""

    def __init__(self, emit: Callable[[bytes, bytes], None]):
        self._emit = emit
        self._buf = bytearray()
        self._line = bytearray()
        self._stamp = b""
        self._left: int | None = None  # text bytes left in the current entry; None: at a stamp

    def feed(self, chunk: bytes, final: bool = False) -> None:
        self._buf += chunk
        pos = 0
        while pos < len(self._buf):
            step = (
                self._after_full_entry
                if self._left == 0
                else self._read_stamp
                if self._left is None
                else self._read_text
            )
            moved = step(pos, final)
            if moved is None:
                break  # the rest of a stamp is still to come
            pos = moved
        del self._buf[:pos]
        if final and (self._line or self._left is not None):
            self._end()

    def _after_full_entry(self, pos: int, final: bool) -> int | None:
        """An entry of ENTRY_BYTES ended without a newline: the line ends, or goes on in the
        next entry (its stamp skipped), or this engine does not split (text goes on)."""
        if self._buf[pos] == 0x0A:
            self._end()
            return pos + 1
        match = STAMP.match(self._buf, pos)
        if match is None and len(self._buf) - pos < STAMP_MAX and not final:
            return None
        self._left = ENTRY_BYTES
        return match.end() if match else pos

    def _read_stamp(self, pos: int, final: bool) -> int | None:
        space = self._buf.find(b" ", pos, pos + STAMP_MAX + 8)
        if space < 0:
            if len(self._buf) - pos < STAMP_MAX + 8 and not final:
                return None
            space = pos - 1  # no stamp: all of it is text
        self._stamp = bytes(self._buf[pos:space])
        self._left = ENTRY_BYTES
        return space + 1

    def _read_text(self, pos: int, final: bool) -> int:
        assert self._left is not None
        end = min(len(self._buf), pos + self._left)
        newline = self._buf.find(b"\n", pos, end)
        stop = newline if newline >= 0 else end
        self._line += self._buf[pos:stop]
        self._left -= stop - pos
        if newline >= 0:
            self._end()
            return stop + 1
        if len(self._line) >= MAX_LINE:
            self._emit(self._stamp, bytes(self._line))
            self._line = bytearray()
        return stop

    def _end(self) -> None:
        self._emit(self._stamp, bytes(self._line))
        self._line = bytearray()
        self._left = None


def _deliver(stamp: bytes, line: bytes, sink: Sink, state: LogState) -> None:
    main, _, frac = stamp.rstrip(b"Z").partition(b".")
    key = (main, frac.ljust(9, b"0"))  # sortable: the engine trims trailing zeros
    if state.resumed and state.last is not None and key <= state.last:
        return  # delivered before the stream broke
    state.last = key
    sink.write(line.decode("utf-8", "replace").rstrip("\r"))


def _running(container) -> tuple[bool, str | None]:
    """(whether the container still runs, why the engine could not be asked)."""
    try:
        container.reload()
    except Exception as exc:
        if type(exc).__name__ == "NotFound":
            return False, None
        return False, short_reason(exc)
    return bool(container.attrs.get("State", {}).get("Running")), None


def _exit_code(container) -> int | None:
    try:
        code = container.wait(timeout=60).get("StatusCode")
    except Exception:
        return None
    return code if isinstance(code, int) else None


def _oom_killed(container) -> bool:
    try:
        container.reload()
    except Exception:
        return False
    return bool(container.attrs.get("State", {}).get("OOMKilled"))


def short_reason(exc: BaseException) -> str:
    """One short phrase for an engine error (no stack of URLs and adapters)."""
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__
