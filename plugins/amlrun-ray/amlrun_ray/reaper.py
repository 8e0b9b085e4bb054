"""Jobs amlrun could not stop because the job server did not answer: asked to stop as soon
as it answers again.

A run whose job server stays lost is given up (an infrastructure error), but its job may
still be running on the cluster. A thread of this session retries the stop every few
seconds, so a long session does not leave such jobs running; what is still unreachable
when the session ends is left to the next session's sweep (the jobs' owner is gone then).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from amlrun_ray.client import JobServer, JobServerError

RETRY_SECONDS = 2.0
#: the timeout of one stop request (a frozen server must not hold the thread long)
REQUEST_SECONDS = 5.0


class Reaper:
    """Submission ids to stop, and the thread that stops them once the server answers."""

    def __init__(self, server: Callable[[], JobServer], retry: float = RETRY_SECONDS):
        self._server = server
        self._retry = retry
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.stopped: list[str] = []

    def add(self, sid: str) -> None:
        with self._lock:
            self._pending.add(sid)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="amlrun-ray-reaper", daemon=True)
                self._thread.start()

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
            self.attempt()
            time.sleep(self._retry)

    def attempt(self) -> list[str]:
        """One stop request per pending job; returns the ones still pending."""
        server = dataclasses.replace(self._server(), timeout=REQUEST_SECONDS)
        for sid in self.pending():
            try:
                server.stop(sid)  # a job that already ended (or is unknown) is fine too
            except JobServerError:
                return self.pending()  # still lost: all of them wait for the next try
            with self._lock:
                self._pending.discard(sid)
                self.stopped.append(sid)
        return self.pending()

    def finish(self, within: float) -> list[str]:
        """Last attempts for up to ``within`` seconds; returns the jobs that could not be asked."""
        deadline = time.monotonic() + within
        left = self.attempt()
        while left and time.monotonic() + RETRY_SECONDS < deadline:
            time.sleep(RETRY_SECONDS)
            left = self.attempt()
        return left
