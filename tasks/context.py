"""What the stages share in one process: the database, the tensor store, the model, the limits, the leases held.

Both runners make one `Context` per process (the embedded runner per job or
server, a worker at its start) and hand it to every stage call; the compute in
`workers/` gets from it, as arguments, what the deployment allows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from murmur.settings import Settings
from murmur.tasks.tensors.local import LocalTensorStore
from murmur.tasks.tensors.store import TensorStore
from murmur.workers.cpu.vad import SileroVad
from murmur.workers.gpu.model import LoadedModel, decoders, model_for, model_n_mels


class Leases:
    """The jobs and chunks this process is working on right now: only these leases are renewed.

    A task that ends without finishing (an error, a retry) drops out of here, so
    its lease lapses and the reconciler hands the work on, even when the
    database could not be told."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, int] = {}
        self._chunks: dict[tuple[str, int], int] = {}

    @contextmanager
    def holding(self, jobs: Sequence[str] = (), chunks: Sequence[tuple[str, int]] = ()) -> Iterator[None]:
        with self._lock:
            for key, table in [*((j, self._jobs) for j in jobs), *((c, self._chunks) for c in chunks)]:
                table[key] = table.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for key, table in [*((j, self._jobs) for j in jobs), *((c, self._chunks) for c in chunks)]:
                    table[key] -= 1
                    if not table[key]:
                        del table[key]

    def snapshot(self) -> tuple[list[str], list[tuple[str, int]]]:
        with self._lock:
            return list(self._jobs), list(self._chunks)


@dataclass
class Context:
    """What the stages share in one process: the database, the tensor store, models, limits."""

    db: sessionmaker[Session]
    store: TensorStore = field(default_factory=LocalTensorStore)
    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 0  # CPU threads for the model in all; 0: every core
    worker: str | None = None  # recorded on each chunk this process decodes
    lease_holder: str | None = None  # the name its leases are held under: unique to this start of the process
    model_dirs: tuple[Path, ...] | None = None  # a fleet's workers load only bundled models and these; None: any directory
    cache_dir: Path | None = None  # where the bundled base model is reassembled (MURMUR_CACHE_DIR); None: its default
    allowed_roots: tuple[Path, ...] = ()  # where local sources may be read from (MURMUR_ALLOWED_ROOTS); empty: anywhere
    s3_allow: tuple[str, ...] | None = None  # the buckets s3:// sources may name (MURMUR_S3_ALLOW); None: any
    max_bytes: int | None = None  # the largest source (MURMUR_MAX_BYTES); None: no limit
    lease_seconds: float = 30.0
    max_duration: float | None = None  # seconds of audio a job may have
    output_uri: str | None = None  # where a finished job's transcript files go (MURMUR_OUTPUT_URI)
    pack_windows: bool = True  # short chunks of different jobs may share a window (MURMUR_PACK_WINDOWS)

    held: Leases = field(default_factory=lambda: Leases())

    @classmethod
    def from_settings(cls, settings: Settings, db: sessionmaker[Session], **values) -> Context:
        """A context with the deployment's limits and places from `settings`; `values` set the rest."""
        return cls(db=db, cache_dir=settings.cache_dir, allowed_roots=settings.allowed_roots, s3_allow=settings.s3_allow,
                   max_bytes=settings.max_bytes, max_duration=settings.max_duration, **values)

    @cached_property
    def vad(self) -> SileroVad:
        return SileroVad()

    def decoders(self) -> int:
        return decoders(self.device, self.threads)

    def n_mels(self, name: str) -> int:
        """Read from the model's files: no load in a shape decode does not use."""
        return model_n_mels(name, self.model_dirs, self.cache_dir)

    def model(self, name: str, concurrent: int = 1) -> LoadedModel:
        """The model for `concurrent` simultaneous calls, sharing the CPU threads between them."""
        return model_for(name, self.device, self.compute_type, self.threads, concurrent, self.model_dirs, self.cache_dir)
