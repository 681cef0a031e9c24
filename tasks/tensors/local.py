"""The in-process tensor store: the embedded runner's twin of the fleet's Redis store.

It keeps what it is given, on disk, until it is deleted.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from murmur.tasks.tensors.store import TensorRef, feature_key


class LocalTensorStore:
    """Files in a temporary directory of this process's own: a job's features wait there
    from prepare to decode, so hours of audio do not hold ≈1 MB per chunk in memory
    (a 4 h file has ≈480 chunks). The directory goes when the store does."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def put(self, job_id: str, chunk_idx: int, array: np.ndarray) -> TensorRef:
        key = feature_key(job_id, chunk_idx)
        np.save(self._path(key), array, allow_pickle=False)
        return TensorRef(key, tuple(array.shape), str(array.dtype))

    def get(self, ref: TensorRef) -> np.ndarray | None:
        """The array, or None when it is gone (the caller recomputes it)."""
        try:
            return np.load(self._path(ref.key), allow_pickle=False)
        except FileNotFoundError:
            return None

    def delete(self, refs: list[TensorRef]) -> None:
        for ref in refs:
            self._path(ref.key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="murmur-features-"))
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        name = key.replace(":", "_")
        if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
            raise ValueError(f"not a feature key: {key!r}")
        return self._dir / (name + ".npy")

    def wait_for_room(self, own: int = 0) -> None:
        """In one process decode runs after prepare: there is never anything to wait for."""
