"""The fleet's tensor store: each chunk's features in Redis, with a TTL and backpressure."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import redis

from murmur.tasks.tensors.store import TensorRef, feature_key

log = logging.getLogger("murmur")


DEFAULT_BUDGET = 2 * 1024**3


class RedisTensorStore:
    """Raw array bytes under the feature key, with a TTL so an abandoned job cannot fill Redis.

    `wait_for_room` is the backpressure: prepare holds off while Redis uses more
    than `budget` bytes (default: half of its maxmemory, or 2 GiB without one, or
    where CONFIG is not allowed, as on most managed Redis), so a burst of long
    jobs cannot push Redis into refusing writes, or, under an eviction policy,
    into evicting the queues themselves.
    """

    def __init__(self, url: str, ttl_seconds: int, budget: int | None = None) -> None:
        self._redis = redis.Redis.from_url(url)
        self.ttl_seconds = ttl_seconds
        self._budget = budget
        self._told = False  # that maxmemory cannot be read: logged once

    @property
    def budget(self) -> int:
        """Read afresh each time: an operator may change maxmemory on a running Redis."""
        if self._budget is not None:
            return self._budget
        try:
            maxmemory = int(self._redis.config_get("maxmemory").get("maxmemory", 0) or 0)
        except redis.ResponseError as exc:  # CONFIG renamed or refused: a managed Redis
            if not self._told:
                log.warning("cannot read Redis' maxmemory (%s): the tensor budget is %d MB; set MURMUR_TENSOR_BUDGET "
                            "to what this Redis may hold", exc, DEFAULT_BUDGET >> 20)
                self._told = True
            return DEFAULT_BUDGET
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
