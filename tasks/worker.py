"""A worker process: its settings, what it loads once, and how it starts Celery.

`murmur worker cpu|gpu` configures the process and preloads (the VAD on a CPU
worker, the model on a GPU worker) before consuming; a worker started with
plain `celery -A tasks.app worker` gets the same state from the environment on
its first task.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from db.session import check_schema, distributed_database_url, sessions
from tasks import pipeline
from tasks.app import CPU_QUEUE, GPU_QUEUE, app, broker_url
from tasks.batching import Batcher
from tasks.options import JobOptions
from tasks.store import RedisTensorStore, TensorRef, tensor_ttl, tensor_url
from workers.errors import MurmurError

log = logging.getLogger("murmur")
KINDS = ("cpu", "gpu")
FLUSH_SECONDS = 0.05  # the longest a GPU worker waits for a batch to fill while work is queued


@dataclass
class WorkerSettings:
    kind: str = "gpu"
    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 1  # CPU threads for the model (gpu) or for torch (cpu)
    batch_size: int = 8
    concurrency: int = 0  # Celery threads; 0: 2 on a CPU worker, the batch size on a GPU worker
    flush_seconds: float = FLUSH_SECONDS
    name: str = field(default_factory=lambda: f"{os.getpid()}@{socket.gethostname()}")

    @classmethod
    def from_env(cls, **overrides) -> WorkerSettings:
        base = {
            "device": os.environ.get("MURMUR_DEVICE") or "auto",
            "compute_type": os.environ.get("MURMUR_COMPUTE_TYPE") or "auto",
            "batch_size": JobOptions.from_env().batch_size,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def threads_in_pool(self) -> int:
        if self.concurrency:
            return self.concurrency
        # A GPU worker holds one batch's worth of messages: any more would wait
        # behind its batch while another worker may sit idle. (On this 2-core
        # machine holding two batches measured the same, within noise.)
        return self.batch_size if self.kind == "gpu" else 2


class _Process:
    """What one worker process holds: settings, the stage context, the batcher."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.ctx = pipeline.Context(
            db=sessions(distributed_database_url()),
            store=RedisTensorStore(tensor_url(), tensor_ttl()),
            device=settings.device,
            compute_type=settings.compute_type,
            threads=settings.threads,
            worker=f"{settings.kind}-{settings.name}",
            decodes=settings.kind == "gpu",
        )
        self._batcher: Batcher | None = None
        self._lock = threading.Lock()

    def batcher(self) -> Batcher:
        with self._lock:
            if self._batcher is None:
                self._batcher = Batcher(self._decode, self.settings.batch_size, self.settings.flush_seconds, _gpu_backlog())
            return self._batcher

    def _decode(self, items: list[tuple[str, TensorRef]]) -> list[bool]:
        """One batch; each item learns whether it should trigger its job's assembly."""
        log.info("decoding a batch of %d chunk(s) from %d job(s)", len(items), len({j for j, _ in items}))
        completed = set(pipeline.decode(self.ctx, items))
        first: dict[str, int] = {}
        return [job_id in completed and first.setdefault(job_id, i) == i for i, (job_id, _) in enumerate(items)]


_process: _Process | None = None
_process_lock = threading.Lock()


def process() -> _Process:
    global _process
    with _process_lock:
        if _process is None:
            _process = _Process(WorkerSettings.from_env())
        return _process


def configure(settings: WorkerSettings) -> _Process:
    global _process
    with _process_lock:
        _process = _Process(settings)
        return _process


def _gpu_backlog():
    """Messages still waiting in the GPU queue, over all of kombu's priority lists."""
    import redis
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    client = redis.Redis.from_url(broker_url())
    keys = [GPU_QUEUE] + [f"{GPU_QUEUE}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]

    def backlog() -> int:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    return backlog


def run(settings: WorkerSettings, loglevel: str = "INFO") -> None:
    """Configure this process, load what it needs once, and consume its queue until stopped."""
    if settings.kind not in KINDS:
        raise MurmurError(f"unknown worker kind {settings.kind!r}: use cpu or gpu")
    url = distributed_database_url()
    check_schema(url)
    if settings.kind == "cpu":
        import torch

        torch.set_num_threads(max(1, settings.threads))
    proc = configure(settings)
    model = JobOptions.from_env().model
    if settings.kind == "gpu":
        loaded = proc.ctx.model(model)
        log.info("loaded model %s on %s (%s)", model, loaded.device, loaded.compute_type)
        proc.batcher()
    else:
        proc.ctx.vad  # noqa: B018 - load the VAD weights now, not in the first job
        proc.ctx.n_mels(model)
    queue = GPU_QUEUE if settings.kind == "gpu" else CPU_QUEUE
    app.worker_main([
        "worker",
        "--queues", queue,
        "--pool", "threads",
        "--concurrency", str(settings.threads_in_pool()),
        "--hostname", f"{settings.kind}-{settings.name}",
        "--loglevel", loglevel,
        "--task-events",
        "--without-mingle",
        "--without-gossip",
    ])
