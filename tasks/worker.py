"""A worker process: its configuration, what it loads once, and how it starts Celery.

`murmur worker cpu|gpu` configures the process and preloads (the VAD on a CPU
worker, the model on a GPU worker) before consuming; a worker started with
plain `celery -A murmur.tasks.app worker` gets the same state from the
settings on its first task.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from murmur.db import queries
from murmur.db.session import check_schema, sessions
from murmur.settings import Settings, get_settings
from murmur.tasks import memory, stages
from murmur.tasks.app import CPU_QUEUE, GPU_QUEUE, HOOK_QUEUE, QUEUES, app
from murmur.tasks.batching import Batcher
from murmur.tasks.reconciler import Reconciler
from murmur.tasks.redis_backend import RedisTensorStore, queue_backlog
from murmur.tasks.store import TensorRef
from murmur.tasks.webhook import HookSender
from murmur.workers.errors import MurmurError

log = logging.getLogger("murmur")
KINDS = ("cpu", "gpu")
FLUSH_SECONDS = 0.05  # the longest a GPU worker waits for a batch to fill while work is queued


@dataclass
class WorkerConfig:
    """What `murmur worker` was asked for: its flags, with the settings as defaults."""

    kind: str = "gpu"
    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 1  # CPU threads for the model (gpu) or for numpy's BLAS (cpu)
    batch_size: int = 8
    concurrency: int = 0  # Celery threads; 0: 2 on a CPU worker, the batch size on a GPU worker
    flush_seconds: float = FLUSH_SECONDS
    name: str = field(default_factory=lambda: f"{os.getpid()}@{socket.gethostname()}")

    @classmethod
    def from_settings(cls, settings: Settings, **flags) -> WorkerConfig:
        values = {"device": settings.device, "compute_type": settings.compute_type, "batch_size": settings.batch_size}
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)

    def threads_in_pool(self) -> int:
        if self.concurrency:
            return self.concurrency
        # A GPU worker holds one batch's worth of messages: any more would wait
        # behind its batch while another worker may sit idle. (On a 2-core
        # machine holding two batches measured the same, within noise.)
        return self.batch_size if self.kind == "gpu" else 2


class WorkerState:
    """What one worker process holds: its configuration, the stage context, the batcher."""

    def __init__(self, config: WorkerConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.ctx = stages.Context(
            db=sessions(settings.fleet_database_url),
            store=RedisTensorStore(settings.store_url, settings.tensor_ttl, settings.tensor_budget),
            device=config.device,
            compute_type=config.compute_type,
            threads=config.threads,
            worker=f"{config.kind}-{config.name}",
            lease_owner=f"{config.kind}-{config.name}/{uuid.uuid4().hex[:8]}",
            model_dirs=settings.model_dirs,
            lease_seconds=settings.lease_seconds,
            max_duration=settings.max_duration,
            output_uri=settings.output_uri,
            pack_windows=settings.pack_windows,
        )
        self._batcher: Batcher | None = None
        self._hooks: HookSender | None = None
        self.batch_metrics = None  # a BatchMetrics while MURMUR_METRICS_PORT serves them
        self._lock = threading.Lock()

    def hooks(self) -> HookSender:
        with self._lock:
            if self._hooks is None:
                self._hooks = HookSender(self.ctx.db, self.settings, _retry_hook)
            return self._hooks

    def start_background(self) -> None:
        """Threads that live as long as the process: lease renewal, and on CPU workers the reconciler."""
        threading.Thread(target=self._renew_leases, name="murmur-leases", daemon=True).start()
        if self.config.kind == "cpu":
            threading.Thread(target=self._reconcile, name="murmur-reconciler", daemon=True).start()

    def _renew_leases(self) -> None:
        """While this process lives, the jobs and chunks it holds stay its own."""
        while True:
            time.sleep(self.settings.lease_seconds / 3)
            jobs, chunks = self.ctx.held.snapshot()
            if not jobs and not chunks:
                continue
            try:
                queries.renew_leases(self.ctx.db, self.ctx.lease_owner, self.settings.lease_seconds, jobs, chunks)
            except Exception:  # noqa: BLE001 - the database is away; try again next round
                log.warning("could not renew this worker's leases", exc_info=True)

    def _reconcile(self) -> None:
        from murmur.tasks.chain import redrive

        backlogs = {kind: queue_backlog(self.settings.broker_url, queue) for kind, queue in QUEUES.items()}
        reconciler = Reconciler(self.ctx.db, self.settings, lambda kind: backlogs[kind]())
        while True:
            time.sleep(self.settings.reconcile_interval)
            try:
                for r in reconciler.tick() or ():
                    redrive(r)
            except Exception:  # noqa: BLE001 - broker or database away: the rows keep, try again next round
                log.warning("reconciler pass failed", exc_info=True)

    def batcher(self) -> Batcher:
        with self._lock:
            if self._batcher is None:
                backlog = queue_backlog(self.settings.broker_url, GPU_QUEUE)
                self._batcher = Batcher(self._decode, self.config.batch_size, self.config.flush_seconds, backlog)
            return self._batcher

    def _decode(self, items: list[tuple[str, TensorRef, stages.Encoded | None]]) -> list[bool]:
        """One batch: (job, chunk, its encoder output if language detection holds it); each item
        learns whether it should trigger its job's assembly."""
        log.info("decoding a batch of %d chunk(s) from %d job(s)", len(items), len({j for j, *_ in items}))
        started = time.perf_counter()
        held = list({id(e): e for *_, e in items if e is not None}.values())
        completed = set(stages.decode(self.ctx, [(job_id, ref) for job_id, ref, _ in items], encoded=held))
        if self.batch_metrics:
            self.batch_metrics.observe(len(items), time.perf_counter() - started)
        for job_id in queries.unsent_callbacks(self.ctx.db, [j for j, *_ in items]):
            _retry_hook(job_id, 0)  # jobs this batch failed: their webhooks go out now
        first: dict[str, int] = {}
        return [job_id in completed and first.setdefault(job_id, i) == i for i, (job_id, *_) in enumerate(items)]


def _retry_hook(job_id: str, seconds: float) -> None:
    from murmur.tasks.chain import notify

    notify.apply_async((job_id,), queue=HOOK_QUEUE, countdown=seconds)


_state: WorkerState | None = None
_state_lock = threading.Lock()


def state() -> WorkerState:
    """This process's worker state, made from the settings if `run` did not make it."""
    global _state
    with _state_lock:
        if _state is None:
            settings = get_settings()
            _state = WorkerState(WorkerConfig.from_settings(settings), settings)
            _state.start_background()
        return _state


def run(config: WorkerConfig, loglevel: str = "INFO") -> None:
    """Configure this process, load what it needs once, and consume its queue until stopped."""
    global _state
    if config.kind not in KINDS:
        raise MurmurError(f"unknown worker kind {config.kind!r}: use cpu or gpu")
    # Until Celery installs its own handler (warm shutdown), SIGTERM ends the start-up at once: as
    # a container's PID 1 the process would otherwise ignore it and wait for the SIGKILL.
    signal.signal(signal.SIGTERM, _stop_starting)
    settings = get_settings()
    check_schema(settings.fleet_database_url)
    with _state_lock:
        _state = proc = WorkerState(config, settings)
    if config.kind == "gpu":
        loaded = proc.ctx.model(settings.model)
        log.info("loaded model %s on %s (%s)", settings.model, loaded.device, loaded.compute_type)
        memory.keep_freed_blocks()
        proc.batcher()
        if settings.metrics_port:
            from murmur.tasks.metrics import BatchMetrics

            proc.batch_metrics = BatchMetrics(config.batch_size)
            proc.batch_metrics.serve(settings.metrics_port)
            log.info("batch metrics on port %d", settings.metrics_port)
    else:
        proc.ctx.vad  # noqa: B018 - load the VAD weights now, not in the first job
        proc.ctx.n_mels(settings.model)
    proc.start_background()
    queues = GPU_QUEUE if config.kind == "gpu" else f"{CPU_QUEUE},{HOOK_QUEUE}"
    try:
        code = _consume(config, queues, loglevel)
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None) and not _asked_to_stop():
        _start_again(f"the Celery worker stopped with exit code {code}")
    raise SystemExit(code)


def _stop_starting(signum, frame) -> None:
    log.info("stopped while starting: nothing was taken from the queues")
    raise SystemExit(0)


def _asked_to_stop() -> bool:
    from celery.worker import state as celery_state

    return bool(celery_state.should_stop or celery_state.should_terminate)


def _start_again(reason: str) -> None:
    log.error("%s; starting this worker again", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(sys.executable, [sys.executable, "-m", "murmur", *sys.argv[1:]])


def _consume(config: WorkerConfig, queues: str, loglevel: str) -> int | None:
    """Run Celery's worker until it stops; its exit code."""
    from murmur.tasks.health import register_worker

    register_worker(f"{config.kind}-{config.name}")
    return app.start([
        "worker",
        "--queues", queues,
        "--pool", "threads",
        "--concurrency", str(config.threads_in_pool()),
        "--hostname", f"{config.kind}-{config.name}",
        "--loglevel", loglevel,
        "--task-events",
        "--without-mingle",
        "--without-gossip",
    ])
