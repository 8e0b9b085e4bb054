"""The terminal reporter: pytest-style header, one line per finished cell, a summary."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time

from amlrun.hookspec import hookimpl
from amlrun.protocol import CANCELED, ERROR, FAILED, PASSED, REUSED, SKIPPED

_COLORS = {PASSED: "32", FAILED: "31", ERROR: "31", CANCELED: "33", SKIPPED: "33", REUSED: "36"}
HEARTBEAT_SECONDS = 30.0


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class TerminalReporter:
    def __init__(self, config, out=None):
        self.config = config
        self.out = out or sys.stdout
        self.verbosity = (config.getoption("verbose") or 0) - (config.getoption("quiet") or 0)
        self.color = self.out.isatty() and not os.environ.get("NO_COLOR")
        self.lock = threading.Lock()
        self._last_heartbeat = time.monotonic()

    # -- output helpers ------------------------------------------------------------------

    def write_line(self, text: str = "") -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def paint(self, text: str, outcome: str) -> str:
        code = _COLORS.get(outcome)
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text

    def sep(self, char: str, title: str = "") -> None:
        width = min(shutil.get_terminal_size((80, 24)).columns, 100)
        if title:
            side = max(3, (width - len(title) - 2) // 2)
            line = f"{char * side} {title} {char * side}"
        else:
            line = char * width
        self.write_line(line)

    # -- session -------------------------------------------------------------------------

    def header(self, session, collected: int, deselected: int) -> None:
        if self.verbosity < 0:
            return
        from amlrun import __version__

        self.sep("=", "amlrun session starts")
        self.write_line(f"amlrun {__version__}, python {sys.version.split()[0]}")
        self.write_line(f"project: {session.project.root}")
        for name, target in session.targets.items():
            self.write_line(f"target {name}: {target.describe()}")
        for lines in self.config.hook.amlrun_report_header(config=self.config):
            for line in [lines] if isinstance(lines, str) else (lines or []):
                self.write_line(line)
        extra = f" / {deselected} deselected" if deselected else ""
        self.write_line(f"collected {plural(collected, 'cell')}{extra}")
        self.write_line()

    def progress(self, message: str) -> None:
        if self.verbosity >= 0:
            self.write_line(message)

    def progress_detail(self, message: str) -> None:
        if self.verbosity >= 1:
            self.write_line(message)

    def stream_for(self, cell, live: bool):
        if not live or self.verbosity < 0:
            return None
        prefix = "" if len(getattr(self, "_cells", ())) <= 1 else f"[{cell.id}] "

        def stream(line: str) -> None:
            self.write_line(prefix + line)

        return stream

    def tick(self, session) -> None:
        """Plain heartbeat lines so long sessions never look hung."""
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_SECONDS or self.verbosity < 0:
            return
        self._last_heartbeat = now
        done = len(session.reports)
        running = len(session._jobs)
        queued = max(0, len(session.cells) - done - running)
        elapsed = now - session.started
        self.write_line(f"... {done} done, {running} running, {queued} queued ({elapsed:.0f}s)")

    def interrupted(self) -> None:
        self.write_line()
        self.write_line("!!! interrupted: stopping running cells !!!")

    @hookimpl
    def amlrun_sessionstart(self, session):
        self._cells = session.cells

    @hookimpl
    def amlrun_runreport(self, report):
        if self.verbosity < 0 and report.outcome not in (FAILED, ERROR):
            return
        label = self.paint(report.outcome.upper(), report.outcome)
        parts = [f"{label} {report.cell.id}"]
        if report.outcome != SKIPPED:
            parts.append(f"{report.duration:.2f}s")
        if report.run_id:
            parts.append(f"run {report.run_id}")
        if report.reason and report.outcome != PASSED:
            parts.append(f"({report.reason})")
        if report.metrics and self.verbosity >= 0:
            shown = [f"{k}={_short(v)}" for k, v in list(report.metrics.items())[:4]]
            parts.append(" ".join(shown))
        self.write_line("  ".join(parts))

    # -- summary -------------------------------------------------------------------------

    def summary(self, session, duration: float) -> None:
        failed = [r for r in session.reports if r.outcome in (FAILED, ERROR)]
        if failed and not session.stream_live:
            self.sep("=", "FAILURES")
            for report in failed:
                self.sep("_", report.cell.id)
                for line in report.log_tail[-15:]:
                    self.write_line(line)
                if report.run_dir is not None:
                    self.write_line(f"full log: {report.run_dir / 'log.txt'}")
        if failed:
            self.sep("=", "short summary")
            for report in failed:
                reason = f" - {report.reason}" if report.reason else ""
                self.write_line(f"{report.outcome.upper()} {report.cell.id}{reason}")
        if session.shouldstop:
            self.write_line(f"!!! {session.shouldstop} !!!")
        counts: dict[str, int] = {}
        for report in session.reports:
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
        order = [PASSED, FAILED, ERROR, CANCELED, SKIPPED, REUSED]
        words = {ERROR: "errors"}
        pieces = []
        for outcome in order:
            if counts.get(outcome):
                n = counts[outcome]
                name = ("error" if n == 1 else "errors") if outcome in words else outcome
                pieces.append(f"{n} {name}")
        if session.deselected:
            pieces.append(f"{len(session.deselected)} deselected")
        text = ", ".join(pieces) or "no cells ran"
        worst = FAILED if failed else (CANCELED if counts.get(CANCELED) else PASSED)
        self.sep("=", self.paint(f"{text} in {duration:.2f}s", worst))


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."
