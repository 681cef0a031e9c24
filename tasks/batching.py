"""Batching: a job's chunks split into balanced batches, and chunks of many jobs gathered into one.

`job_decoders` and `plan_batches` are the embedded runner's: one job, several decoders side by side.
`Batcher` is a GPU worker's: each Celery thread submits its chunk and waits on
the future; one thread takes up to `size` items, waiting at most
`flush_seconds` for more and only while the broker still holds work
(`backlog`), and runs them together.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("murmur")


def job_decoders(source: str, decoders: int) -> int:
    """How many decoders a job keeps busy, known before it is prepared: one per 30 s of the
    length its file declares, at most `decoders`; all of them when no length is known.

    Chosen this early so the model loads while the file is prepared, in the shape
    decoding will ask for: an 11 s clip gets one model on every thread, an hour one
    one-thread replica per decoder, and neither loads the other shape.
    """
    from murmur.workers.cpu.audio import declared_seconds
    from murmur.workers.cpu.chunking import CHUNK_S
    from murmur.workers.errors import MurmurError

    try:
        seconds = declared_seconds(source) if os.path.isfile(source) else None
    except MurmurError:
        seconds = None  # preparing the file says what is wrong with it
    return decoders if not seconds else max(1, min(decoders, math.ceil(seconds / CHUNK_S)))


def plan_batches(n_chunks: int, batch_size: int, decoders: int) -> list[slice]:
    """Split a job's chunks into batches of at most `batch_size`, balanced over `decoders`.

    Nine chunks with batch size 8 and two decoders become 5 + 4, not 8 + 1:
    both decoders stay busy and neither waits on a lone straggler batch.
    """
    if n_chunks == 0:
        return []
    count = -(-n_chunks // batch_size)
    if decoders > 1:
        count = min(n_chunks, -(-max(count, decoders) // decoders) * decoders)
    size, extra = divmod(n_chunks, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class Batcher(Generic[T, R]):
    """Items from many threads, run `size` at a time by one thread of its own."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        size: int,
        flush_seconds: float = 0.05,
        backlog: Callable[[], int] = lambda: 0,
    ) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._run = run
        self.size = size
        self.flush_seconds = flush_seconds
        self._backlog = backlog
        self._pending: list[tuple[T, Future]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="murmur-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future:
        future: Future = Future()
        with self._cond:
            self._pending.append((item, future))
            self._cond.notify()
        return future

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
            batch, self._pending = self._pending[: self.size], self._pending[self.size :]
        return batch

    def _safe_backlog(self) -> int:
        try:
            return self._backlog()
        except Exception:  # the broker hiccupped: decode what we hold rather than wait
            log.warning("could not read the queue length; flushing the batch", exc_info=True)
            return 0
