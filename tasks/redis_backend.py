"""Redis, where murmur uses it beyond Celery: the tensor store and the length of a queue."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import redis

from murmur.tasks.store import TensorRef, feature_key


class RedisTensorStore:
    """Raw array bytes under the feature key, with a TTL so an abandoned job cannot fill Redis."""

    def __init__(self, url: str, ttl_seconds: int) -> None:
        self._redis = redis.Redis.from_url(url)
        self.ttl_seconds = ttl_seconds

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
    """A function counting the messages waiting in `queue`, over all of kombu's priority lists.

    kombu keeps one Redis list per priority step (`queue`, `queue\\x06\\x163`, …);
    messages already delivered to a worker are not counted.
    """
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    client = redis.Redis.from_url(url)
    keys = [queue] + [f"{queue}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]

    def backlog() -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    return backlog
