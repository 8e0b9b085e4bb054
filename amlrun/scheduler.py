"""The scheduler: the default run loop (``amlrun_runloop``), one object with named state.

The dispatcher (the session's thread) hands a worker a cell only when the cell's target
has a free slot, so no worker ever waits on one target while another target's cell could
run. A target's environment is prepared by one task before any of its cells start
(*prepare gating*). Among ready cells the one earliest in matrix order goes first, so
``-n 1`` reproduces. A cell whose failure was the infrastructure's is queued again after
a back-off (``--retries``); ``-x``/``--maxfail`` stop dispatching and cancel what runs;
Ctrl-C cancels everything and waits for the runs to be recorded canceled.

A plugin replaces the loop by implementing ``amlrun_runloop`` (returning non-None) or
wraps it with ``wrapper=True``; this module is the implementation that comes last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from amlrun.hookspec import hookimpl
from amlrun.protocol import ERROR, FAILED, RunReport

if TYPE_CHECKING:
    from amlrun.matrix import Cell
    from amlrun.session import Session

PREPARED, PREPARING = "ready", "preparing"
TICK_SECONDS = 0.25


@hookimpl(trylast=True)
def amlrun_runloop(session: Session) -> bool:
    Scheduler(session).run()
    return True


@dataclass(frozen=True)
class Task:
    """What a worker does next: prepare a target's environment, or run a cell."""

    kind: str  # "prepare" | "cell"
    target: str
    cell: Cell | None = None


@dataclass
class TargetQueue:
    """One target's waiting cells, its parallel limit, its busy slots and its environment's state."""

    limit: int
    cells: collections.deque = field(default_factory=collections.deque)
    busy: int = 0
    queue_backed: bool = False  # its cells wait in a scheduler's queue: -n does not bound them
    environment: str | None = None  # None (not asked yet) | PREPARING | PREPARED

    def has_room(self) -> bool:
        return bool(self.cells) and self.busy < self.limit


class Scheduler:
    """Runs a session's cells: ``-n`` workers (a queue-backed target's cells: its own limit),
    per-target queues and limits, prepare gating, retries with back-off, ``--maxfail``,
    cancellation. ``session.reports`` gets one report per cell that ran (in completion order;
    the session sorts them into matrix order)."""

    def __init__(self, session: Session):
        self.session = session
        option = session.config.getoption
        self.workers = max(1, int(option("numprocesses") or 1))
        self.maxfail = int(option("maxfail") or 0)
        self.retries = max(0, int(option("retries") or 0))
        self.retry_delay = float(os.environ.get("AMLRUN_RETRY_DELAY", "1"))
        self.order = {id(cell): index for index, cell in enumerate(session.cells)}
        self.targets = {
            name: TargetQueue(t.max_parallel, queue_backed=t.queue_backed) for name, t in session.targets.items()
        }
        for cell in session.cells:
            self.targets.setdefault(cell.target, TargetQueue(1)).cells.append(cell)
        self.not_before: dict[int, float] = {}  # matrix index → monotonic time its retry may start
        self.in_flight: dict[concurrent.futures.Future, Task] = {}
        self.failures = 0
        self.finished = False

    # -- what reporters ask ------------------------------------------------------------------

    def queued(self) -> int:
        return 0 if self.finished else sum(len(q.cells) for q in self.targets.values())

    def should_retry(self, report: RunReport) -> bool:
        """Retry only what the infrastructure broke, never a script's own failure."""
        session = self.session
        return (
            report.infrastructure_error
            and report.outcome in (ERROR, FAILED)
            and not self.stopping
            and session.attempts.get(report.cell.id, 0) <= self.retries
        )

    @property
    def stopping(self) -> bool:
        return bool(self.session.shouldstop or self.session.interrupted)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        session = self.session
        session.scheduler = self
        threads = self.workers + sum(q.limit for q in self.targets.values() if q.queue_backed)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="amlrun-cell")
        try:
            self._loop(pool)
        except KeyboardInterrupt:
            session.interrupt()
            self._drain()
        except BaseException:
            session.stop("internal error")
            raise
        finally:
            pool.shutdown(wait=True)
            self.finished = True
            if session.terminal is not None:
                session.terminal.tick(session, final=True)

    def _loop(self, pool: concurrent.futures.Executor) -> None:
        self.dispatch(pool)
        while self.in_flight or (self.queued() and not self.stopping):
            if self.in_flight:
                done, _ = concurrent.futures.wait(
                    list(self.in_flight), timeout=TICK_SECONDS, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    self.complete(future)
            else:
                time.sleep(0.05)  # only retries waiting for their delay
            self.dispatch(pool)
            if self.session.terminal is not None:
                self.session.terminal.tick(self.session)

    def _drain(self) -> None:
        """After Ctrl-C: wait for the canceled runs (a second Ctrl-C cancels again), keep their reports."""
        while True:
            try:
                concurrent.futures.wait(list(self.in_flight))
                break
            except KeyboardInterrupt:
                self.session.cancel_running()
        for future in list(self.in_flight):
            if not future.cancelled() and future.exception() is None:
                self.complete(future)

    # -- choosing and starting work ------------------------------------------------------------

    def next_task(self) -> Task | None:
        """The ready task earliest in matrix order: a cell, or its target's preparation first."""
        now = time.monotonic()
        best: tuple[int, Task] | None = None
        local = sum(1 for task in self.in_flight.values() if not self.targets[task.target].queue_backed)
        for name, queue in self.targets.items():
            if not queue.has_room() or (local >= self.workers and not queue.queue_backed):
                continue
            cell = queue.cells[0]
            index = self.order[id(cell)]
            if self.not_before.get(index, 0) > now:
                continue
            if self.session.cell_needs_environment(cell) and queue.environment != PREPARED:
                if queue.environment == PREPARING:
                    continue
                task = Task("prepare", name)
            else:
                task = Task("cell", name, cell)
            if best is None or index < best[0]:
                best = (index, task)
        return None if best is None else best[1]

    def dispatch(self, pool: concurrent.futures.Executor) -> None:
        while not self.stopping:
            task = self.next_task()
            if task is None:
                return
            queue = self.targets[task.target]
            queue.busy += 1
            if task.cell is None:
                queue.environment = PREPARING
                self.in_flight[pool.submit(self.session.prepare_ahead, task.target)] = task
            else:
                queue.cells.popleft()
                self.session.attempts[task.cell.id] = self.session.attempts.get(task.cell.id, 0) + 1
                self.in_flight[pool.submit(self.run_one, task.cell)] = task

    def run_one(self, cell: Cell) -> RunReport | None:
        """On a worker thread: the cell's whole protocol (``amlrun_run_cell``)."""
        session = self.session
        if self.stopping:
            return None
        session.running[cell.id] = time.monotonic()
        try:
            return session.config.hook.amlrun_run_cell(cell=cell, session=session)
        finally:
            session.running.pop(cell.id, None)

    # -- a task ended --------------------------------------------------------------------------

    def complete(self, future: concurrent.futures.Future) -> None:
        task = self.in_flight.pop(future)
        queue = self.targets[task.target]
        queue.busy -= 1
        if task.cell is None:
            future.result()
            queue.environment = PREPARED
            return
        report = future.result()
        if report is None:
            return
        if self.should_retry(report):
            self.retry(task.cell)
            return
        self.session.reports.append(report)
        if report.failed:
            self.failures += 1
            if self.maxfail and self.failures >= self.maxfail and not self.session.shouldstop:
                self.session.stop(f"stopping after {self.failures} failure{'s' * (self.failures != 1)}")

    def retry(self, cell: Cell) -> None:
        """Queue ``cell`` again, first in its target's queue, after a back-off growing per attempt."""
        queue = self.targets[cell.target]
        if self.session.forget_unavailable(cell.target):
            queue.environment = None  # an unreachable target gets another preparation
        queue.cells.appendleft(cell)
        attempts = self.session.attempts[cell.id]
        self.not_before[self.order[id(cell)]] = time.monotonic() + self.retry_delay * attempts
