"""A worker process: its configuration, what it loads once, its background threads, and how it starts Celery.

`murmur worker cpu|gpu` configures the process and preloads (the VAD on a CPU
worker, the model on a GPU worker) before consuming its queues, and says that it
runs here (`presence`, for `murmur health`). A worker started with plain
`celery -A murmur.tasks.fleet.app worker` consumes every queue: its state is made
from the settings at its first task, as kind `any`, with the CPU worker's
reconciler and lease renewal.
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
from collections.abc import Callable
from dataclasses import dataclass, field

from murmur.db import queries
from murmur.db.session import check_schema, sessions
from murmur.settings import Settings, get_settings
from murmur.tasks import stages
from murmur.tasks.context import Context
from murmur.tasks.fleet.app import app
from murmur.tasks.fleet import presence
from murmur.tasks.fleet.batcher import Batcher, BatchMetrics
from murmur.tasks.fleet.deliveries import Deliveries
from murmur.tasks.fleet.queues import CPU_QUEUE, GPU_QUEUE, HOOK_QUEUE, QUEUES, queue_backlog
from murmur.tasks.fleet.reconciler import Reconciler, Redrive
from murmur.tasks.outputs.webhook import HookSender
from murmur.tasks.tensors.redis import RedisTensorStore
from murmur.tasks.tensors.store import TensorRef
from murmur.workers import memory
from murmur.workers.errors import MurmurError

log = logging.getLogger("murmur")
KINDS = ("cpu", "gpu")  # what `murmur worker` runs; a plain `celery worker` is kind "any"
QUEUES_OF_KIND = {"cpu": (CPU_QUEUE, HOOK_QUEUE), "gpu": (GPU_QUEUE,), "any": tuple(QUEUES.values())}
FLUSH_SECONDS = 0.05  # the longest a GPU worker waits for a batch to fill while work is queued


@dataclass
class WorkerConfig:
    """What `murmur worker` was asked for: its flags, with the settings as defaults."""

    kind: str  # cpu, gpu, or any (a plain `celery worker`)
    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 1  # CPU threads for the model (gpu) or for numpy's BLAS (cpu)
    batch_size: int = 8
    concurrency: int = 0  # Celery threads; 0: the batch size on a GPU worker, 2 on the others
    flush_seconds: float = FLUSH_SECONDS
    name: str = field(default_factory=lambda: f"{os.getpid()}@{socket.gethostname()}")

    @classmethod
    def from_settings(cls, settings: Settings, kind: str, **flags) -> WorkerConfig:
        values = {"device": settings.device, "compute_type": settings.compute_type, "batch_size": settings.batch_size}
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(kind=kind, **values)

    @property
    def hostname(self) -> str:
        return f"{self.kind}-{self.name}"

    def threads_in_pool(self) -> int:
        if self.concurrency:
            return self.concurrency
        # A GPU worker holds one batch's worth of messages: any more would wait
        # behind its batch while another worker may sit idle. (On a 2-core
        # machine holding two batches measured the same, within noise.)
        return self.batch_size if self.kind == "gpu" else 2


@dataclass(frozen=True)
class Sends:
    """How this process's background threads put messages on the queues: the task chain's own sends."""

    redrive: Callable[[Redrive], None]  # a step the reconciler decided to send again
    notify: Callable[[str, float], None]  # a job's webhook, in so many seconds


class WorkerState:
    """What one worker process holds: its configuration, the stage context, the batcher, the hook sender."""

    def __init__(self, config: WorkerConfig, settings: Settings, sends: Sends) -> None:
        self.config = config
        self.settings = settings
        self.sends = sends
        self.ctx = Context.from_settings(
            settings, sessions(settings.fleet_database_url),
            store=RedisTensorStore(settings.store_url, settings.tensor_ttl, settings.tensor_budget),
            device=config.device,
            compute_type=config.compute_type,
            threads=config.threads,
            worker=config.hostname,
            lease_holder=f"{config.hostname}/{uuid.uuid4().hex[:8]}",
            model_dirs=settings.model_dirs,
            lease_seconds=settings.lease_seconds,
            output_uri=settings.output_uri,
            pack_windows=settings.pack_windows,
        )
        self.deliveries = Deliveries(settings.store_url)
        self._batcher: Batcher | None = None
        self._hooks: HookSender | None = None
        self.batch_metrics: BatchMetrics | None = None  # while MURMUR_METRICS_PORT serves them
        self._lock = threading.Lock()

    def hooks(self) -> HookSender:
        with self._lock:
            if self._hooks is None:
                self._hooks = HookSender(self.ctx.db, self.settings, self.sends.notify)
            return self._hooks

    def start_background(self) -> None:
        """Threads that live as long as the process: lease renewal, and where murmur.cpu is consumed the reconciler."""
        threading.Thread(target=self._renew_leases, name="murmur-leases", daemon=True).start()
        if CPU_QUEUE in QUEUES_OF_KIND[self.config.kind]:
            threading.Thread(target=self._reconcile, name="murmur-reconciler", daemon=True).start()

    def _renew_leases(self) -> None:
        """While this process lives, the jobs and chunks it holds stay its own."""
        while True:
            time.sleep(self.settings.lease_seconds / 3)
            jobs, chunks = self.ctx.held.snapshot()
            if not jobs and not chunks:
                continue
            try:
                queries.renew_leases(self.ctx.db, self.ctx.lease_holder, self.settings.lease_seconds, jobs, chunks)
            except Exception:  # noqa: BLE001 - the database is away; try again next round
                log.warning("could not renew this worker's leases", exc_info=True)

    def _reconcile(self) -> None:
        backlogs = {queue: queue_backlog(self.settings.broker_url, queue) for queue in QUEUES.values()}
        reconciler = Reconciler(self.ctx.db, self.settings, lambda queue: backlogs[queue](), self.deliveries.newest)
        while True:
            time.sleep(self.settings.reconcile_interval)
            try:
                for r in reconciler.tick() or ():
                    self.sends.redrive(r)
            except Exception:  # noqa: BLE001 - broker or database away: the rows keep, try again next round
                log.warning("reconciler pass failed", exc_info=True)

    def batcher(self) -> Batcher:
        with self._lock:
            if self._batcher is None:
                backlog = queue_backlog(self.settings.broker_url, GPU_QUEUE)
                # a job's segments are released in order: its earlier chunks, waiting beside later ones, go first
                self._batcher = Batcher(self._run_batch, self.config.batch_size, self.config.flush_seconds, backlog,
                                        order=lambda item: item[1].chunk_idx)
            return self._batcher

    def _run_batch(self, items: list[tuple[str, TensorRef, stages.Encoded | None]]) -> list[bool]:
        """One batch: (job, chunk, its encoder output if language detection holds it); each item
        learns whether it should trigger its job's assembly."""
        log.info("decoding a batch of %d chunk(s) from %d job(s)", len(items), len({j for j, *_ in items}))
        started = time.perf_counter()
        held = list({id(e): e for *_, e in items if e is not None}.values())
        completed: set[str] = set()
        for part in stages.first_chunks_first(items, lambda item: item[1].chunk_idx, self.ctx.device):
            completed.update(stages.decode_chunks(self.ctx, [(job_id, ref) for job_id, ref, _ in part], encoded=held))
        if self.batch_metrics:
            self.batch_metrics.observe(len(items), time.perf_counter() - started)
        for job_id in queries.unsent_callbacks(self.ctx.db, [j for j, *_ in items]):
            self.sends.notify(job_id, 0)  # jobs this batch failed: their webhooks go out now
        first: dict[str, int] = {}
        return [job_id in completed and first.setdefault(job_id, i) == i for i, (job_id, *_) in enumerate(items)]


_state: WorkerState | None = None
_state_lock = threading.Lock()


def state(sends: Sends) -> WorkerState:
    """This process's worker state: the one `run` made, or, in a plain `celery worker`, one made now from the settings."""
    global _state
    with _state_lock:
        if _state is None:
            settings = get_settings()
            _state = WorkerState(WorkerConfig.from_settings(settings, "any"), settings, sends)
            _state.start_background()
        return _state


def run(config: WorkerConfig, sends: Sends, loglevel: str = "INFO") -> None:
    """Configure this process, load what it needs once, and consume its queues until stopped."""
    global _state
    if config.kind not in KINDS:
        raise MurmurError(f"unknown worker kind {config.kind!r}: use cpu or gpu")
    # Until Celery installs its own handler (warm shutdown), SIGTERM ends the start-up at once: as
    # a container's PID 1 the process would otherwise ignore it and wait for the SIGKILL.
    signal.signal(signal.SIGTERM, _stop_starting)
    settings = get_settings()
    check_schema(settings.fleet_database_url)
    with _state_lock:
        _state = proc = WorkerState(config, settings, sends)
    if config.kind == "gpu":
        loaded = proc.ctx.model(settings.model)
        log.info("loaded model %s on %s (%s)", settings.model, loaded.device, loaded.compute_type)
        memory.keep_freed_blocks()
        proc.batcher()
        if settings.metrics_port:
            proc.batch_metrics = BatchMetrics(config.batch_size)
            proc.batch_metrics.serve(settings.metrics_port, settings.metrics_address)
            log.info("batch metrics on %s:%d", settings.metrics_address, settings.metrics_port)
    else:
        proc.ctx.vad  # noqa: B018 - load the VAD weights now, not in the first job
        proc.ctx.n_mels(settings.model)
    proc.start_background()
    try:
        code = _consume(config, ",".join(QUEUES_OF_KIND[config.kind]), loglevel)
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
    presence.register(config.hostname)
    return app.start([
        "worker",
        "--queues", queues,
        "--pool", "threads",
        "--concurrency", str(config.threads_in_pool()),
        "--hostname", config.hostname,
        "--loglevel", loglevel,
        "--task-events",
        "--without-mingle",
        "--without-gossip",
    ])
