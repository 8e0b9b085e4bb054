"""Handing a target several cells at once, without changing the run loop.

The run loop calls a target's ``execute(job, ...)`` once per cell, on up to
``min(-n, target.max_parallel)`` worker threads. A scheduler-backed target (SLURM job
arrays, a Ray batch of tasks) wants the cells that are dispatched together as *one*
submission. :class:`Batcher` gives it that: each ``execute()`` calls
:meth:`Batcher.submit` with its own item and blocks only until the batch holding that
item has been submitted; it then waits for its own task as before, so every cell
stays its own run with its own record, log and result.

A batch opens with the first item, gathers every item that arrives while the stream
keeps coming (no gap longer than ``idle`` seconds, at most ``window`` seconds in all,
at most ``max_size`` items), and is then handed to ``submit_many(items)`` once, by the
thread of the item that opened it. ``submit_many`` returns one handle per item (in
order), or raises: every item of the batch then gets that exception. Items with
different ``key(item)`` never share a batch (e.g. one batch per script).

Use from a target::

    self._batcher = Batcher(self._submit_array, key=lambda job: job.argv[0])

    def execute(self, job, prepared, sink):
        handle = self._batcher.submit(job)     # the array task that runs this job
        ...                                    # follow it until it ends

A target using this sets ``queue_backed = True`` and a generous ``default_parallel`` (its
queue is the limit): the run loop then dispatches up to ``max_parallel`` of its cells at once
without ``-n`` (which bounds only the cells that occupy this machine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
H = TypeVar("H")

DEFAULT_IDLE = 0.25
DEFAULT_WINDOW = 3.0


@dataclass(eq=False)
class _Batch(Generic[T, H]):
    key: Hashable
    opened: float
    items: list[T] = field(default_factory=list)
    last: float = 0.0
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    handles: Sequence[H] = ()
    error: BaseException | None = None


class Batcher(Generic[T, H]):
    """Gathers ``submit`` calls that arrive together into one ``submit_many`` call."""

    def __init__(
        self,
        submit_many: Callable[[list[T]], Sequence[H]],
        *,
        key: Callable[[T], Hashable] = lambda _: None,
        idle: float = DEFAULT_IDLE,
        window: float = DEFAULT_WINDOW,
        max_size: int = 10_000,
    ):
        if idle <= 0 or window < idle or max_size < 1:
            raise ValueError("Batcher needs 0 < idle <= window and max_size >= 1")
        self._submit_many = submit_many
        self._key = key
        self.idle = idle
        self.window = window
        self.max_size = max_size
        self._lock = threading.Condition()
        self._open: dict[Hashable, _Batch[T, H]] = {}
        self.batches_submitted = 0

    def submit(self, item: T) -> H:
        """Add ``item`` to the open batch of its key (or open one); return its handle once
        the batch is submitted."""
        key = self._key(item)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(key, time.monotonic())
            batch.items.append(item)
            index = len(batch.items) - 1
            batch.last = time.monotonic()
            if len(batch.items) >= self.max_size:
                self._close(batch)
            self._lock.notify_all()
            if leader:
                self._gather(batch)
        if leader:
            try:
                handles = list(self._submit_many(list(batch.items)))
                if len(handles) != len(batch.items):
                    raise RuntimeError(f"submit_many returned {len(handles)} handles for {len(batch.items)} items")
                batch.handles = handles
            except BaseException as exc:
                batch.error = exc
            finally:
                self.batches_submitted += 1
                batch.done.set()
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.handles[index]

    def _gather(self, batch: _Batch[T, H]) -> None:
        """Wait (holding the condition) until the batch closes: idle gap, window or size."""
        while not batch.closed:
            now = time.monotonic()
            deadline = min(batch.last + self.idle, batch.opened + self.window)
            if now >= deadline:
                self._close(batch)
                break
            self._lock.wait(deadline - now)

    def _close(self, batch: _Batch[T, H]) -> None:
        batch.closed = True
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
