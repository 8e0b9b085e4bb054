"""Following a container to its end, for every engine: its log streamed line by line, a
timeout or a cancel stopping it, and on an engine reached over a network (a ``window`` of
seconds to reconnect) a dropped connection waited out, the log followed again from the
last line delivered (lines already delivered are skipped by their engine timestamps).
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass

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
            pump.join(5)    # the last lines
            break
        running, problem = _running(container)
        if problem is not None:
            if window <= 0:
                return infrastructure_failure(f"lost {engine}: {problem}")
            if lost_since is None:
                lost_since = time.monotonic()
                reconnects += 1
                sink.write(f"[amlrun] connection to {engine} lost ({problem}); reconnecting")
            if time.monotonic() - lost_since > window:
                return infrastructure_failure(f"connection to {engine} lost and not back within {window:g}s; "
                                              "the container may still run there", {"reconnects": reconnects})
            time.sleep(1)
            continue
        if lost_since is not None:
            sink.write(f"[amlrun] reconnected to {engine}")
            lost_since = None
        if not running:
            break
        reconnects += 1     # the log stream broke while the container runs: follow it again
        state.resumed = True
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


def _pump_until_end(container, sink: Sink, state: LogState,
                    watch: StopWatch) -> tuple[str | None, threading.Thread]:
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
    partial = b""
    try:
        stream = container.logs(stream=True, follow=True, stdout=True, stderr=True, timestamps=True,
                                since=state.since() if state.resumed else None)
        for chunk in stream:
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                _deliver(line, sink, state)
    except Exception:  # the container was removed under us (cancel) or the engine went away
        return
    if partial:
        _deliver(partial, sink, state)


def _deliver(line: bytes, sink: Sink, state: LogState) -> None:
    stamp, _, text = line.partition(b" ")
    main, _, frac = stamp.rstrip(b"Z").partition(b".")
    key = (main, frac.ljust(9, b"0"))      # sortable: the engine trims trailing zeros
    if state.resumed and state.last is not None and key <= state.last:
        return  # delivered before the stream broke
    state.last = key
    sink.write(text.decode("utf-8", "replace").rstrip("\r"))


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
