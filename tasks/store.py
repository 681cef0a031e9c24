"""Tensor store: chunk features between prepare and decode (a claim check).

Messages carry only the key, shape and dtype; the array lives here. The local
store is the embedded runner's in-process twin of the Redis one. Either may
lose an array (eviction, a restarted Redis): `get` then answers None and the
caller recomputes the chunk from its source.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tasks.config import env_seconds

DEFAULT_TTL_SECONDS = 6 * 3600  # long enough for a deep queue; a lost tensor is recomputed anyway


@dataclass(frozen=True)
class TensorRef:
    key: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorRef:
        return cls(data["key"], tuple(data["shape"]), data["dtype"])


def feature_key(job_id: str, chunk_idx: int) -> str:
    return f"murmur:feat:{job_id}:{chunk_idx}"


class TensorStore(Protocol):
    def put(self, job_id: str, chunk_idx: int, array: np.ndarray) -> TensorRef: ...

    def get(self, ref: TensorRef) -> np.ndarray | None: ...

    def delete(self, refs: list[TensorRef]) -> None: ...


class LocalTensorStore:
    """A dict behind the store interface; nothing leaves the process."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def put(self, job_id: str, chunk_idx: int, array: np.ndarray) -> TensorRef:
        key = feature_key(job_id, chunk_idx)
        self._arrays[key] = array
        return TensorRef(key, tuple(array.shape), str(array.dtype))

    def get(self, ref: TensorRef) -> np.ndarray | None:
        """The array, or None when it is gone (the caller recomputes it)."""
        return self._arrays.get(ref.key)

    def delete(self, refs: list[TensorRef]) -> None:
        for ref in refs:
            self._arrays.pop(ref.key, None)


class RedisTensorStore:
    """Raw array bytes under the feature key, with a TTL so an abandoned job cannot fill Redis."""

    def __init__(self, url: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        import redis

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


def tensor_url() -> str:
    """MURMUR_TENSOR_URL, else the broker's Redis."""
    from tasks.app import broker_url

    return os.environ.get("MURMUR_TENSOR_URL") or broker_url()


def tensor_ttl() -> int:
    return env_seconds("MURMUR_TENSOR_TTL", DEFAULT_TTL_SECONDS)
