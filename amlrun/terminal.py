"""The terminal reporter: pytest-style header, one line per finished cell, a summary."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time

from amlrun.hookspec import hookimpl
from amlrun.protocol import CANCELED, ERROR, FAILED, PASSED, REUSED, SKIPPED
from amlrun.secrets import redactor

_COLORS = {PASSED: "32", FAILED: "31", ERROR: "31", CANCELED: "33", SKIPPED: "33", REUSED: "36"}
HEARTBEAT_SECONDS = 30.0


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class TerminalReporter:
    """pytest's terminal reporter, for cells: listens to the session's hooks and writes lines.

    Other plugins write through :meth:`write_line` (it redacts secrets and keeps the live
    status area intact) and add sections with ``amlrun_terminal_summary``."""

    def __init__(self, config, out=None):
        self.config = config
        self.out = out or sys.stdout
        self.verbosity = (config.getoption("verbose") or 0) - (config.getoption("quiet") or 0)
        isatty = self.out.isatty()
        self.color = isatty and not os.environ.get("NO_COLOR")
        #: a redrawn status area at the bottom on a terminal; plain heartbeat lines otherwise
        self.live = isatty and os.environ.get("TERM", "") != "dumb" and not os.environ.get("AMLRUN_NO_LIVE")
        self.lock = threading.RLock()
        self._last_heartbeat = time.monotonic()
        self._last_draw = 0.0
        self._drawn = 0  # lines of the status area currently on screen
        self._status: list[str] = []
        self._session = None
        self.heartbeat = float(os.environ.get("AMLRUN_HEARTBEAT_SECONDS") or HEARTBEAT_SECONDS)

    # -- output helpers ------------------------------------------------------------------

    def write_line(self, text: str = "") -> None:
        """Write one whole line; the status area (if any) is lifted around it, never interleaved."""
        text = redactor(text)  # a secret value never reaches the terminal, whatever printed it
        with self.lock:
            self._erase()
            self.out.write(text + "\n")
            self._draw()
            self.out.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        if self._status:
            self.out.write("".join(line + "\n" for line in self._status))
            self._drawn = len(self._status)

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

    @hookimpl
    def amlrun_collection_finish(self, session) -> None:
        """The header; then, with ``--collect-only``, the plan, or why nothing will run."""
        self.header(session)
        if self.config.getoption("collect_only"):
            self.collection_plan(session)
        elif not session.cells:
            self.write_line("no cells collected" if not session.deselected else "every cell was deselected")
            for error in session.collection_errors:
                self.write_line(f"ERROR {error.path} - {error.message}")

    def header(self, session) -> None:
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
        extra = f" / {len(session.deselected)} deselected" if session.deselected else ""
        errors = session.collection_errors
        extra += f" / {plural(len(errors), 'error')}" if errors else ""
        self.write_line(f"collected {plural(len(session.cells), 'cell')}{extra}")
        for error in errors:
            self.write_line(f"ERROR collecting {error.path}: {error.message}")
        self.write_line()

    def collection_plan(self, session) -> None:
        """``--collect-only``: every cell (with why it will not run, if so), then each target's plan."""
        reused = session.reuse_plan
        for cell in session.cells:
            skip = cell.skip_mark()
            suffix = f"  (skip: {skip.reason or 'skip mark'})" if skip else ""
            if not skip and cell.id in reused:
                suffix = f"  (reuse run {reused[cell.id].run_id})"
            self.write_line(f"{cell.id}{suffix}")
        self.write_line()
        for name, target in session.targets.items():
            cells = [c for c in session.cells if c.target == name]
            if not cells:
                continue
            try:
                ready = "environment ready" if target.is_prepared(session.runconfigs[name]) else "environment not built"
            except Exception as exc:  # a plan is informational: report, don't fail
                ready = f"environment unknown ({exc})"
            skipped = sum(1 for c in cells if c.skip_mark() is not None)
            from_cache = sum(1 for c in cells if c.id in reused)
            plan = f"{len(cells) - skipped - from_cache} to run"
            plan += f", {from_cache} reused from the cache" if from_cache else ""
            plan += f", {skipped} skipped" if skipped else ""
            self.write_line(f"target {name}: {plural(len(cells), 'cell')} ({plan}), {ready}")
        for error in session.collection_errors:
            self.write_line(f"ERROR collecting {error.path}: {error.message}")

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

    def tick(self, session, final: bool = False) -> None:
        """Called by the scheduler a few times a second: redraw the status area, or print a
        plain heartbeat line every ``AMLRUN_HEARTBEAT_SECONDS`` (30) so long runs never look hung."""
        if self.verbosity < 0:
            return
        now = time.monotonic()
        if self.live and len(session.cells) > 1:
            if final:
                with self.lock:
                    self._erase()
                    self._status = []
                    self.out.flush()
                return
            if now - self._last_draw < 0.2:
                return
            self._last_draw = now
            with self.lock:
                self._erase()
                self._status = status_lines(session, now, shutil.get_terminal_size((80, 24)))
                self._draw()
                self.out.flush()
            return
        if final or now - self._last_heartbeat < self.heartbeat:
            return
        self._last_heartbeat = now
        self.write_line("... " + status_summary(session, now))

    @hookimpl
    def amlrun_keyboard_interrupt(self, session):
        self.write_line()
        self.write_line("!!! interrupted: stopping running cells !!!")

    @hookimpl
    def amlrun_sessionstart(self, session):
        self._cells = session.cells
        self._session = session

    @hookimpl
    def amlrun_runreport(self, report):
        if self.verbosity < 0 and report.outcome not in (FAILED, ERROR):
            return
        retry = self._session is not None and self._session.will_retry(report)
        label = self.paint("RETRY", CANCELED) if retry else self.paint(report.outcome.upper(), report.outcome)
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

    @hookimpl(tryfirst=True)
    def amlrun_sessionfinish(self, session, exitstatus):
        """First, so the summary comes before what other plugins write at the end."""
        self.summary(session, exitstatus)

    def summary(self, session, exitstatus: int) -> None:
        failed = [r for r in session.reports if r.outcome in (FAILED, ERROR)]
        errors = session.collection_errors
        self.failures_section(session, failed)
        self.config.hook.amlrun_terminal_summary(terminalreporter=self, exitstatus=exitstatus, session=session)
        if failed or errors:
            self.sep("=", "short summary")
            for error in errors:
                self.write_line(f"ERROR {error.path} - {error.message}")
            for report in failed:
                reason = f" - {report.reason}" if report.reason else ""
                self.write_line(f"{report.outcome.upper()} {report.cell.id}{reason}")
        if session.shouldstop:
            self.write_line(f"!!! {session.shouldstop} !!!")
        reused = [r for r in session.reports if r.outcome == REUSED]
        if reused and len(reused) == len(session.reports):
            self.write_line(f"nothing ran: all {plural(len(reused), 'cell')} reused earlier runs with identical inputs")
        self.stats_line(session, failed)

    def failures_section(self, session, failed: list) -> None:
        """The failed cells' log tails (not when they streamed live, except a build's log)."""
        shown = failed if not session.stream_live else [r for r in failed if r.outcome == ERROR and r.log_tail]
        if not shown:
            return
        self.sep("=", "FAILURES")
        for report in shown:
            self.sep("_", report.cell.id)
            for line in report.log_tail[-15:]:
                self.write_line(line)
            if report.run_dir is not None:
                self.write_line(f"full log: {report.run_dir / 'log.txt'}")

    def stats_line(self, session, failed: list) -> None:
        errors = session.collection_errors
        counts: dict[str, int] = {ERROR: len(errors)} if errors else {}
        for report in session.reports:
            counts[report.outcome] = counts.get(report.outcome, 0) + 1
        pieces = []
        for outcome in (PASSED, FAILED, ERROR, CANCELED, SKIPPED, REUSED):
            n = counts.get(outcome)
            if n:
                pieces.append(f"{n} {('error' if n == 1 else 'errors') if outcome == ERROR else outcome}")
        if session.deselected:
            pieces.append(f"{len(session.deselected)} deselected")
        text = ", ".join(pieces) or "no cells ran"
        worst = FAILED if failed or errors else (CANCELED if counts.get(CANCELED) else PASSED)
        self.sep("=", self.paint(f"{text} in {time.monotonic() - session.started:.2f}s", worst))


@hookimpl
def amlrun_configure(config):
    """Register the terminal reporter like any plugin (``-p no:terminal`` leaves it out)."""
    if config.pluginmanager.get_plugin("terminalreporter") is None:
        config.pluginmanager.register(TerminalReporter(config), name="terminalreporter")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def status_counts(session) -> dict[str, int]:
    counts = {PASSED: 0, FAILED: 0, REUSED: 0, SKIPPED: 0, CANCELED: 0}
    for report in list(session.reports):
        key = FAILED if report.outcome == ERROR else report.outcome
        counts[key] = counts.get(key, 0) + 1
    return counts


def status_summary(session, now: float) -> str:
    """One line: running, queued, passed, failed, reused, elapsed; the longest-running cell."""
    running = dict(session.running)
    counts = status_counts(session)
    parts = [
        f"{len(running)} running",
        f"{session.queued()} queued",
        f"{counts[PASSED]} passed",
        f"{counts[FAILED]} failed",
    ]
    for outcome in (REUSED, SKIPPED, CANCELED):
        if counts.get(outcome):
            parts.append(f"{counts[outcome]} {outcome}")
    text = ", ".join(parts) + f" ({_elapsed(now - session.started)})"
    if running:
        cell_id, started = min(running.items(), key=lambda item: item[1])
        text += f"; longest: {cell_id} {_elapsed(now - started)}"
    return text


def status_lines(session, now: float, size) -> list[str]:
    """The status area: one line per running cell (oldest first, as many as fit) and a total line."""
    width = max(20, size.columns - 1)
    room = max(1, min(10, size.lines // 2) - 1)
    running = sorted(dict(session.running).items(), key=lambda item: item[1])
    lines = []
    for cell_id, started in running[:room]:
        elapsed = _elapsed(now - started)
        lines.append(_fit(f"  running {cell_id}", width - len(elapsed) - 1) + " " + elapsed)
    if len(running) > room:
        lines.append(f"  ... and {len(running) - room} more running")
    counts = status_counts(session)
    done = sum(counts.values())
    total = done + len(running) + session.queued()
    parts = [
        f"[{done}/{total}]",
        f"{len(running)} running",
        f"{session.queued()} queued",
        f"{counts[PASSED]} passed",
        f"{counts[FAILED]} failed",
        f"{counts[REUSED]} reused",
        _elapsed(now - session.started),
    ]
    lines.append(_fit(" ".join(parts), width))
    return lines


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."
