"""The tensor store's interface, and what a message carries instead of the array.

Messages carry only the key, shape and dtype; the array lives in a store
(`local` in one process, `redis` in the fleet). An array can go missing from
Redis (eviction, a restart, its TTL): `get` then answers None and the caller
recomputes the chunk from its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorRef:
    """What a message carries instead of the array."""

    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def chunk_idx(self) -> int:
        return int(self.key.rsplit(":", 1)[1])

    def to_json(self) -> dict:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorRef:
        shape = tuple(data["shape"])
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"bad shape {data['shape']!r}")
        return cls(str(data["key"]), shape, str(data["dtype"]))


def feature_key(job_id: str, chunk_idx: int) -> str:
    return f"murmur:feat:{job_id}:{chunk_idx}"


class TensorStore(Protocol):
    """Where features wait between prepare and decode."""

    def put(self, job_id: str, chunk_idx: int, array: np.ndarray) -> TensorRef: ...

    def get(self, ref: TensorRef) -> np.ndarray | None: ...

    def delete(self, refs: list[TensorRef]) -> None: ...

    def wait_for_room(self, own: int = 0) -> None: ...
