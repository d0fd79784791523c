"""Micro-batching: requests that arrive close together are decoded in one beam search call.

The HTTP handlers submit jobs from the event loop; one worker thread owns the model. It
takes the oldest waiting job, gathers more until ``max_batch`` rows wait or ``max_wait_s``
has passed since that job arrived, and decodes them: one call per decoding mode among them
(a CF weight beta, or the learned fusion: each changes the search or the ranking), while rows
asking for different k share a call (the search keeps the largest k; each row gets the first
k of its own list, which is its top k, see ``tca4rec.llm.recommend``). While a batch
decodes, new jobs queue; by the time it is done their window has usually passed, so under
load batches fill at once and throughput grows with the number of concurrent requests, while
a lone request waits at most ``max_wait_s``.

A batch that fails is decoded again row by row, so a request that breaks the model gets its
own error (logged with the traceback) and the other rows of its batch still get answers.
A job whose caller gave up (its future cancelled) before decoding starts is never decoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from tca4rec.llm.recommend import Recommendation

LOG = logging.getLogger("tca4rec.serve")

# decode(histories of item ids, k, mode) -> one ranked list (of at least k items when possible) per history;
# a mode is a CF weight beta, or whatever else the decode function tells apart (serve.app: the learned fusion)
DecodeFn = Callable[[Sequence[Sequence[int]], int, Hashable], list[list[Recommendation]]]


@dataclass
class Job:
    history: list[int]
    k: int
    mode: Hashable
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters since start-up (read by ``/v1/info``)."""

    calls: int = 0  # decode calls (a gathered batch with two modes makes two)
    rows: int = 0  # rows decoded, retries included
    largest: int = 0  # most rows in one call
    failures: int = 0  # rows answered with an error
    seconds: float = 0.0  # time spent in decode calls


class MicroBatcher:
    """Gathers submitted jobs into batches and decodes them on one worker thread."""

    def __init__(self, decode: DecodeFn, max_batch: int = 16, max_wait_s: float = 0.02) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.decode = decode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tca4rec-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, history: list[int], k: int, mode: Hashable) -> Future:
        """Queue one row; the future holds its ranked list (``k`` items at most) or the decoding error."""
        job = Job(history, k, mode)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the batcher is stopping")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        """Refuse new jobs, decode those already queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            groups: dict[float, list[Job]] = {}
            for job in batch:
                if job.future.set_running_or_notify_cancel():  # False: its caller is gone
                    groups.setdefault(job.mode, []).append(job)
            for mode, jobs in groups.items():
                self._decode(jobs, mode, retry_alone=len(jobs) > 1)

    def _next_batch(self) -> list[Job] | None:
        """The next batch (oldest first), or None once stopping with nothing left."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].arrived + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]

    def _decode(self, jobs: list[Job], mode: Hashable, retry_alone: bool) -> None:
        self.stats.calls += 1
        self.stats.rows += len(jobs)
        self.stats.largest = max(self.stats.largest, len(jobs))
        began = time.monotonic()
        try:
            lists = self.decode([job.history for job in jobs], max(job.k for job in jobs), mode)
        except Exception as e:  # noqa: BLE001 - any model failure is answered, never raised in the worker
            self.stats.seconds += time.monotonic() - began
            if retry_alone:
                LOG.warning("a batch of %d rows failed (%s); decoding them one by one", len(jobs), one_line(e))
                for job in jobs:
                    self._decode([job], mode, retry_alone=False)
                return
            LOG.exception("decoding failed for history %s", jobs[0].history)
            self.stats.failures += 1
            jobs[0].future.set_exception(e)
            return
        self.stats.seconds += time.monotonic() - began
        for job, ranked in zip(jobs, lists):
            job.future.set_result(ranked[:job.k])


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for logs and error responses (never a traceback)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
