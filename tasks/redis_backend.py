"""Redis, where murmur uses it beyond Celery: the tensor store and the length of a queue."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import redis

from murmur.settings import is_redis
from murmur.tasks.store import TensorRef, feature_key

log = logging.getLogger("murmur")


DEFAULT_BUDGET = 2 * 1024**3


class RedisTensorStore:
    """Raw array bytes under the feature key, with a TTL so an abandoned job cannot fill Redis.

    `wait_for_room` is the backpressure: prepare holds off while Redis uses more
    than `budget` bytes (default: half of its maxmemory, or 2 GiB without one),
    so a burst of long jobs cannot push Redis into refusing writes, or, under
    an eviction policy, into evicting the queues themselves.
    """

    def __init__(self, url: str, ttl_seconds: int, budget: int | None = None) -> None:
        self._redis = redis.Redis.from_url(url)
        self.ttl_seconds = ttl_seconds
        self._budget = budget

    @property
    def budget(self) -> int:
        """Read afresh each time: an operator may change maxmemory on a running Redis."""
        if self._budget is not None:
            return self._budget
        maxmemory = int(self._redis.config_get("maxmemory").get("maxmemory", 0) or 0)
        return maxmemory // 2 if maxmemory else DEFAULT_BUDGET

    def used(self) -> int:
        return int(self._redis.info("memory")["used_memory"])

    def wait_for_room(self, own: int = 0, poll_seconds: float = 0.5) -> None:
        """Return once Redis holds no more than the budget, not counting `own`: the bytes the
        caller's job has put already, which cannot drain before its prepare ends (counting
        them would have a job larger than the budget wait for itself forever)."""
        warned = False
        while (used := self.used() - own) > (budget := self.budget):
            if not warned:
                log.warning("Redis holds %d MB, over the tensor budget of %d MB: prepare waits for decode to drain it",
                            used >> 20, budget >> 20)
                warned = True
            time.sleep(poll_seconds)

    def put(self, job_id: str, chunk_idx: int, array: np.ndarray) -> TensorRef:
        key = feature_key(job_id, chunk_idx)
        array = np.ascontiguousarray(array)
        self._redis.set(key, array.tobytes(), ex=self.ttl_seconds)
        return TensorRef(key, tuple(array.shape), str(array.dtype))

    def get(self, ref: TensorRef) -> np.ndarray | None:
        data = self._redis.get(ref.key)
        dtype = np.dtype(ref.dtype)
        if data is None or len(data) != math.prod(ref.shape) * dtype.itemsize:
            return None
        return np.frombuffer(data, dtype=dtype).reshape(ref.shape)

    def delete(self, refs: list[TensorRef]) -> None:
        if refs:
            self._redis.delete(*(ref.key for ref in refs))


def queue_backlog(url: str, queue: str) -> Callable[[], int]:
    """A function counting the messages waiting in `queue` on the broker at `url` (Redis or
    RabbitMQ); messages already delivered to a worker are not counted."""
    return _redis_backlog(url, queue) if is_redis(url) else _amqp_backlog(url, queue)


def _amqp_backlog(url: str, queue: str) -> Callable[[], int]:
    from kombu import Connection

    lock = threading.Lock()  # an AMQP connection is not shared between threads
    held: list[Connection] = []

    def backlog() -> int:
        with lock:
            if not held:
                held.append(Connection(url, connect_timeout=5))
            try:
                return held[0].default_channel.queue_declare(queue, passive=True).message_count
            except Exception:
                held.pop().release()  # a fresh connection next time
                raise

    return backlog


def priority_keys(queue: str) -> list[str]:
    """The Redis lists of one queue: kombu keeps one per priority step (`queue`, `queue\\x06\\x163`, …)."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    return [queue] + [f"{queue}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]


def _redis_backlog(url: str, queue: str) -> Callable[[], int]:
    """Summed over all of the queue's priority lists."""
    client = redis.Redis.from_url(url)
    keys = priority_keys(queue)

    def backlog() -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    return backlog
