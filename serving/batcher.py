"""Dynamic batching: requests queue up, one worker thread runs them in batches, each caller gets its rows.

Batches are formed on the event loop, handed to a dedicated worker thread that runs the forward pass, and
the results come back to the loop in one call per batch:

- while the worker computes, new requests wait in the queue;
- when it is idle, the queue is flushed at the end of the current loop iteration (after every request that
  arrived in the same wake-up was parsed); when a forward finishes, the next batch is whatever queued
  meanwhile, up to ``max_batch_size`` rows. With ``overlap`` (several CPUs) it starts at once, while the loop
  answers the finished batch; without (the loop and the worker share one CPU) the answers go out first, since
  starting the next forward would only make the two threads fight over the CPU and the GIL, delaying the
  answers and shrinking the next batch.

So a lone caller never waits for a batch window, and under load batches grow by themselves. Optionally
(``max_delay_s > 0``) a batch that is not full waits up to that long, counted from its oldest request, for
more. A request whose caller gave up (timed out, disconnected) before its batch formed is dropped there and
costs no compute. The queue is bounded: :meth:`DynamicBatcher.submit` raises :class:`QueueFull` beyond
``queue_limit`` waiting requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

logger = logging.getLogger("mlplat.serving")


class QueueFull(RuntimeError):
    """The queue holds `queue_limit` requests already; the caller should retry later (HTTP 503)."""


class BatcherStopped(RuntimeError):
    """The batcher is not accepting work (not started yet, or shutting down)."""


class WouldMissDeadline(QueueFull):
    """The request cannot finish before its deadline at the current pace: refused at once (HTTP 503).

    `wait_s` is the estimated time until it would be answered; `excess_s` how far past the deadline that is.
    """

    def __init__(self, wait_s: float, excess_s: float) -> None:
        super().__init__(f"estimated wait {wait_s:.3f} s exceeds the time left by {excess_s:.3f} s")
        self.wait_s = wait_s
        self.excess_s = excess_s


class RequestTimedOut(Exception):
    """Set on a request's future when its deadline passes before its rows come back."""


class ClientDisconnected(Exception):
    """Set on a request's future when its caller went away; the batcher then skips it."""


class Answer(Protocol):
    """What the batcher needs of the object a request's outcome goes to: an :class:`asyncio.Future`, or any object
    with the same five methods (the wire fast path's, which answers at once instead of one loop turn later)."""

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def set_result(self, result: np.ndarray, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass(slots=True)
class _Item:
    rows: np.ndarray
    future: Answer
    deadline: float = math.inf  # time.monotonic() by which the answer is due
    queued_at: float = field(default_factory=time.monotonic)


_STOP = object()
BatchObserver = Callable[[np.ndarray, float], None]
SkipObserver = Callable[[str], None]


class DynamicBatcher:
    """Groups concurrent requests into batched forward passes on one worker thread.

    `predict` takes a batch of rows and returns one output row per input row; it runs only on the worker
    thread (under whatever mode it sets up itself, e.g. `torch.inference_mode`). `on_batch(rows, seconds)` is
    called there after each forward (metrics, drift); `on_skip(reason)` on the loop for each request dropped
    before compute (`timeout`, `disconnect`, `cancelled`).
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_delay_s: float = 0.0,
        queue_limit: int = 512,
        overlap: bool = True,
        on_batch: BatchObserver | None = None,
        on_skip: SkipObserver | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue_limit = queue_limit
        self.overlap = overlap
        self._on_batch = on_batch
        self._on_skip = on_skip
        self._pending: deque[_Item] = deque()
        self._work: queue.SimpleQueue[list[_Item] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._busy = False  # a batch is on the worker thread
        self._flush_scheduled = False
        self._window_timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._pending_rows = 0
        self._batch_started = 0.0  # time.monotonic() when the batch on the worker started
        self._batch_s: float | None = None  # moving average of one forward (a full batch under load)

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the batch being computed)."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        """Whether new requests are accepted."""
        return self._accepting

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker thread; batches form and results are delivered on `loop` (the caller's loop)."""
        if self._thread is not None:
            raise RuntimeError("batcher already started")
        self._loop = loop
        self._thread = threading.Thread(target=self._work_loop, name="mlplat-batcher", daemon=True)
        self._thread.start()
        self._accepting = True

    def estimated_wait(self, rows: int = 1, now: float | None = None) -> float:
        """Seconds until `rows` queued now would be answered, at the pace of recent forwards (0 before any)."""
        batch_s = self._batch_s
        if batch_s is None:
            return 0.0
        now = time.monotonic() if now is None else now
        current = max(0.0, self._batch_started + batch_s - now) if self._busy else 0.0
        batches = -(-(self._pending_rows + rows) // self.max_batch_size)
        return current + batches * batch_s

    def check_deadline(self, deadline: float, rows: int = 1) -> None:
        """Raise :class:`WouldMissDeadline` if `rows` queued now could not be answered by `deadline` (monotonic)."""
        now = time.monotonic()
        wait = self.estimated_wait(rows, now)
        if now + wait > deadline:
            raise WouldMissDeadline(wait, now + wait - deadline)

    def check_admission(self, deadline: float, rows: int = 1) -> None:
        """Raise what :meth:`submit` would raise for a request due by `deadline` (:class:`QueueFull`,
        :class:`WouldMissDeadline`), before its body is read or parsed: under overload, a refusal then costs the
        server no parsing (each refusal's cost is what the queue loses to a retry storm)."""
        if len(self._pending) >= self.queue_limit:
            raise QueueFull(f"{self.queue_limit} requests are already waiting")
        self.check_deadline(deadline, rows)

    def submit(self, rows: np.ndarray, deadline: float | None = None) -> asyncio.Future[np.ndarray]:
        """Queue `rows` (shape [n, ...]) for inference; the future resolves to the n output rows.

        Must be called on the loop given to :meth:`start`. Raises :class:`QueueFull`, :class:`WouldMissDeadline`
        (`deadline`, in ``time.monotonic()`` time, cannot be met at the current pace) or :class:`BatcherStopped`
        instead of queueing when the request cannot be served. Finish the future (e.g. with
        :class:`RequestTimedOut`) to withdraw the request; if its batch has not formed yet it is skipped. A
        request whose deadline comes before its batch could finish is refused when the batch forms
        (:class:`WouldMissDeadline` on its future) instead of being computed for nobody.
        """
        loop = self._loop
        if not self._accepting or loop is None:
            raise BatcherStopped("the batcher is not accepting requests")
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self.submit_to(future, rows, deadline)
        return future

    def submit_to(self, answer: Answer, rows: np.ndarray, deadline: float | None = None) -> None:
        """:meth:`submit`, with the outcome going to `answer` (an :class:`Answer`) instead of a new future."""
        if not self._accepting or self._loop is None:
            raise BatcherStopped("the batcher is not accepting requests")
        if len(self._pending) >= self.queue_limit:
            raise QueueFull(f"{self.queue_limit} requests are already waiting")
        if deadline is not None:
            self.check_deadline(deadline, len(rows))
        self._pending.append(_Item(rows, answer, math.inf if deadline is None else deadline))
        self._pending_rows += len(rows)
        if not self._busy:
            # Flush after this loop iteration: requests that arrived in the same wake-up join the batch.
            self._schedule_flush()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, finish every queued request, then stop the worker thread."""
        self._accepting = False
        if self._thread is None:
            return
        if self._pending or self._busy:
            self._idle.clear()
            self._flush()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                logger.error("batcher did not finish its queue within %.1f s", timeout or 0.0)
        self._work.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout)

    # -- on the event loop ------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            assert self._loop is not None
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._busy:
            return
        pending = self._pending
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        # A request due before this batch could finish would be computed for nobody: refuse it now instead.
        due = now + (self._batch_s or 0.0)
        while pending:
            item = pending[0]
            if item.future.done() or item.deadline < due:
                pending.popleft()
                self._pending_rows -= len(item.rows)
                if not item.future.done():
                    item.future.set_exception(WouldMissDeadline(due - now, due - item.deadline))
                if self._on_skip is not None:
                    self._on_skip(_skip_reason(item.future))
                continue
            n = len(item.rows)
            if batch and rows + n > self.max_batch_size:
                break
            if not batch and self.max_delay_s > 0 and not self._window_closed(item):
                return
            batch.append(pending.popleft())
            self._pending_rows -= n
            rows += n
        if not batch:
            self._set_idle_if_done()
            return
        self._busy = True
        self._batch_started = now
        self._work.put(batch)

    def _window_closed(self, first: _Item) -> bool:
        """With a batch window: flush once the rows fill a batch or the oldest request waited `max_delay_s`."""
        waiting_rows = sum(len(item.rows) for item in self._pending)
        opens_at = first.queued_at + self.max_delay_s
        if waiting_rows >= self.max_batch_size or time.monotonic() >= opens_at or not self._accepting:
            return True
        if self._window_timer is None or self._window_timer.cancelled():
            assert self._loop is not None
            self._window_timer = self._loop.call_later(max(0.0, opens_at - time.monotonic()), self._window_elapsed)
        return False

    def _window_elapsed(self) -> None:
        self._window_timer = None
        self._flush()

    def _finished(self, batch: list[_Item], outputs: list[np.ndarray | BaseException]) -> None:
        """The worker is done with `batch`: answer its callers and start the next batch (see `overlap`)."""
        self._busy = False
        took = time.monotonic() - self._batch_started
        # Forward times of the recent past, weighted to the full batches that matter under load.
        self._batch_s = took if self._batch_s is None else 0.8 * self._batch_s + 0.2 * took
        for item, result in zip(batch, outputs, strict=True):
            if item.future.done():  # timed out or abandoned during the forward
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        if not self._pending:
            self._set_idle_if_done()
        elif self.overlap:
            self._flush()
        else:
            self._schedule_flush()  # after the callers just answered have written their responses

    def _set_idle_if_done(self) -> None:
        if not self._busy and not self._pending:
            self._idle.set()

    # -- on the worker thread ---------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            batch = self._work.get()
            if batch is _STOP:
                return
            assert isinstance(batch, list)
            outputs = self._run(batch)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._finished, batch, outputs)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                logger.warning("event loop closed; dropping %d results", len(batch))
                return

    def _run(self, batch: list[_Item]) -> list[np.ndarray | BaseException]:
        """One forward for the whole batch; if it fails, each request alone, so one bad input fails only itself."""
        try:
            inputs = batch[0].rows if len(batch) == 1 else np.concatenate([item.rows for item in batch])
        except ValueError:  # rows of different shapes (a model without a signature): run them one by one
            return [result for item in batch for result in self._run([item])]
        started = time.perf_counter()
        try:
            outputs = self._predict(inputs)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            return [result for item in batch for result in self._run([item])]
        if self._on_batch is not None:
            self._on_batch(inputs, time.perf_counter() - started)
        results: list[np.ndarray | BaseException] = []
        offset = 0
        for item in batch:
            n = len(item.rows)
            results.append(outputs[offset : offset + n])
            offset += n
        return results


def _skip_reason(future: Answer) -> str:
    if future.cancelled():
        return "cancelled"
    error = future.exception()
    if isinstance(error, RequestTimedOut):
        return "timeout"
    if isinstance(error, WouldMissDeadline):
        return "deadline"
    if isinstance(error, ClientDisconnected):
        return "disconnect"
    return "other"
