"""The run's output sink: every line is redacted, saved to the run's log, parsed for
metrics, and either streamed to the terminal or kept for the failure report.

``log.txt`` is capped (``AMLRUN_LOG_MAX_BYTES``, default 20 MiB, ``0`` for no cap): a
script printing without end must not fill the disk. The first half of the cap is written
as it comes; after that only the last half is kept (in memory, bounded), and written with
a line saying how much was cut when the run ends. Metrics, the terminal and the failure
report see every line either way.
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from amlrun import strictjson

METRIC_PREFIX = "##amlrun-metric "
TAG_PREFIX = "##amlrun-tag "
TAIL_LINES = 30
LOG_LIMIT_ENV = "AMLRUN_LOG_MAX_BYTES"
DEFAULT_LOG_LIMIT = 20 * 2**20
_SIZE = re.compile(r"^(\d+)\s*([kmg]?)i?b?$", re.IGNORECASE)


def log_limit() -> int:
    """The log cap in bytes from ``AMLRUN_LOG_MAX_BYTES`` (``512k``, ``20m``, ``1g``, bytes; 0: none)."""
    from amlrun.errors import UsageError

    text = os.environ.get(LOG_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LOG_LIMIT
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"{LOG_LIMIT_ENV}={text!r}: expected a size such as 20m, 512k or a number of bytes")
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")


class _CappedLog:
    """``log.txt`` holding at most about ``limit`` bytes: the head, a line saying what was
    cut, and the tail (kept in memory, at most half the cap, until :meth:`close`)."""

    def __init__(self, path: Path, limit: int):
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._limit = limit
        self._head_left = limit // 2 if limit else -1
        self._tail: collections.deque[str] = collections.deque()
        self._tail_bytes = 0
        self._cut_lines = 0
        self._cut_bytes = 0
        self._capped = False

    def write(self, line: str) -> None:
        if self._head_left < 0:
            self._file.write(line + "\n")
            return
        size = len(line.encode("utf-8", "replace")) + 1
        if not self._capped and size <= self._head_left:
            self._head_left -= size
            self._file.write(line + "\n")
            return
        if not self._capped:
            self._capped = True
            self._file.write(
                f"[amlrun] log.txt reached {self._limit // 2} bytes ({LOG_LIMIT_ENV}={self._limit}): "
                "from here only its last part is kept, written when the run ends\n"
            )
        budget = self._limit - self._limit // 2
        if size > budget:  # one line longer than the whole tail: keep its end
            line = line.encode("utf-8", "replace")[-(budget - 1) :].decode("utf-8", "ignore")
            self._cut_bytes += size - budget
            size = len(line.encode("utf-8")) + 1
        self._tail.append(line)
        self._tail_bytes += size
        while self._tail_bytes > budget and self._tail:
            oldest = self._tail[0].encode("utf-8", "replace")
            excess = self._tail_bytes - budget
            if len(oldest) > excess:  # cut the oldest line's beginning, keep its end
                self._tail[0] = oldest[excess:].decode("utf-8", "ignore")
                self._tail_bytes -= excess
                self._cut_bytes += excess
                break
            self._tail.popleft()
            self._tail_bytes -= len(oldest) + 1
            self._cut_lines += 1
            self._cut_bytes += len(oldest) + 1

    def close(self) -> None:
        if self._capped:
            if self._cut_lines or self._cut_bytes:
                self._file.write(
                    f"[amlrun] cut {self._cut_lines} lines ({self._cut_bytes} bytes) of output here; "
                    f"the last {self._tail_bytes} bytes follow\n"
                )
            for line in self._tail:
                self._file.write(line + "\n")
            self._tail.clear()
        self._file.close()


class RunSink:
    def __init__(self, run_dir: Path, redact: Callable[[str], str], stream: Callable[[str], None] | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log = _CappedLog(run_dir / "log.txt", log_limit())
        self._metrics_path = run_dir / "metrics.jsonl"
        self._metrics_file: TextIO | None = None
        self._redact = redact
        self._stream = stream
        self._lock = threading.Lock()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.metrics: dict[str, Any] = {}
        self.tags: dict[str, str] = {}

    def write(self, line: str) -> None:
        line = self._redact(line)
        with self._lock:
            self._log.write(line)
            if line.startswith(METRIC_PREFIX):  # kept in log.txt and the metrics, not shown to a person
                self._metric(line[len(METRIC_PREFIX) :])
                return
            if line.startswith(TAG_PREFIX):
                self._tag(line[len(TAG_PREFIX) :])
                return
            self.tail.append(line)
            if self._stream is not None:
                self._stream(line)

    def _metric(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            name = data["name"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(name, str) or not name.strip():
            return  # the documented format: "name" is a non-empty string
        entry = strictjson.finite(
            {"name": name, "value": data.get("value"), "step": data.get("step"), "time": time.time()}
        )
        if self._metrics_file is None:
            self._metrics_file = open(self._metrics_path, "a", encoding="utf-8", buffering=1)
        self._metrics_file.write(strictjson.dumps(entry, ensure_ascii=False) + "\n")
        self.metrics[name] = entry["value"]

    def _tag(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            name, value = data["name"], data.get("value", "")
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(name, str) and name.strip():
            self.tags[name] = value if isinstance(value, str) else json.dumps(value)

    def note(self, line: str) -> None:
        """A line from amlrun itself (build output, reasons): logged, not parsed."""
        with self._lock:
            self._log.write(self._redact(line))

    def close(self) -> None:
        self._log.close()
        if self._metrics_file is not None:
            self._metrics_file.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows
