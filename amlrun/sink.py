"""The run's output sink: every line is redacted, saved to the run's log, parsed for
metrics, and either streamed to the terminal or kept for the failure report."""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

METRIC_PREFIX = "##amlrun-metric "
TAG_PREFIX = "##amlrun-tag "
TAIL_LINES = 30


class RunSink:
    def __init__(self, run_dir: Path, redact: Callable[[str], str], stream: Callable[[str], None] | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(run_dir / "log.txt", "a", encoding="utf-8", buffering=1)
        self._metrics_path = run_dir / "metrics.jsonl"
        self._metrics_file = None
        self._redact = redact
        self._stream = stream
        self._lock = threading.Lock()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.metrics: dict[str, Any] = {}
        self.tags: dict[str, str] = {}

    def write(self, line: str) -> None:
        line = self._redact(line)
        with self._lock:
            self._log.write(line + "\n")
            if line.startswith(METRIC_PREFIX):
                self._metric(line[len(METRIC_PREFIX):])
            elif line.startswith(TAG_PREFIX):
                self._tag(line[len(TAG_PREFIX):])
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
        entry = {"name": name, "value": data.get("value"), "step": data.get("step"), "time": time.time()}
        if self._metrics_file is None:
            self._metrics_file = open(self._metrics_path, "a", encoding="utf-8", buffering=1)
        self._metrics_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
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
            self._log.write(self._redact(line) + "\n")

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
