"""Tensor store: chunk features between prepare and decode (a claim check).

Messages carry only the key, shape and dtype; the array lives here. The local
store is the embedded runner's and the tests' in-process twin of the Redis one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
