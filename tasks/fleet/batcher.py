"""A GPU worker's batcher: chunks of many jobs gathered into one batch, and how full and long its batches are.

Each Celery thread submits its chunk and waits on the future; one thread takes
up to `size` items, waiting at most `flush_seconds` for more and only while the
broker still holds work (`backlog`), and runs them together; with more than a
batch waiting, those first by `order` go first (a GPU worker's: the earlier
chunks of their jobs, whose segments are released first). `BatchMetrics`
serves their fill and time on MURMUR_METRICS_PORT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("murmur")


class Batcher(Generic[T, R]):
    """Items from many threads, run `size` at a time by one thread of its own."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        size: int,
        flush_seconds: float = 0.05,
        backlog: Callable[[], int] = lambda: 0,
        order: Callable[[T], Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._run = run
        self._order = order
        self.size = size
        self.flush_seconds = flush_seconds
        self._backlog = backlog
        self._pending: list[tuple[T, Future]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="murmur-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future:
        [future] = self.submit_all([item])
        return future

    def submit_all(self, items: Sequence[T]) -> list[Future]:
        """Items handed over at once: none of them can be left behind a batch that another thread's item starts."""
        futures = [Future() for _ in items]
        with self._cond:
            self._pending.extend(zip(items, futures))
            self._cond.notify()
        return futures

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = self._run([item for item, _ in batch])
            except BaseException as exc:  # every waiting task must hear of it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)

    def _next_batch(self) -> list[tuple[T, Future]]:
        with self._cond:
            while not self._pending:
                self._cond.wait()
        deadline = time.monotonic() + self.flush_seconds
        while True:
            with self._cond:
                if len(self._pending) >= self.size or time.monotonic() >= deadline:
                    break
            if self._safe_backlog() == 0:
                break  # nothing else is queued: waiting would only add latency
            with self._cond:
                self._cond.wait(timeout=max(0.0, min(0.005, deadline - time.monotonic())))
        with self._cond:
            if self._order is not None:  # of more than a batch, those that come first by `order` go now
                self._pending.sort(key=lambda pending: self._order(pending[0]))
            batch, self._pending = self._pending[: self.size], self._pending[self.size :]
        return batch

    def _safe_backlog(self) -> int:
        try:
            return self._backlog()
        except Exception:  # the broker hiccupped: decode what we hold rather than wait
            log.warning("could not read the queue length; flushing the batch", exc_info=True)
            return 0


class BatchMetrics:
    """A GPU worker's own batches: fill ratio and time, served on MURMUR_METRICS_PORT."""

    def __init__(self, batch_size: int) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.batch_size = batch_size
        self.registry = CollectorRegistry()
        self.fill = Histogram("murmur_batch_fill_ratio", "chunks in a decoded batch over the batch size",
                              buckets=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0), registry=self.registry)
        self.seconds = Histogram("murmur_batch_seconds", "wall time of a decoded batch",
                                 buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)

    def observe(self, chunks: int, seconds: float) -> None:
        self.fill.observe(chunks / self.batch_size)
        self.seconds.observe(seconds)

    def serve(self, port: int, address: str) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=address, registry=self.registry)
