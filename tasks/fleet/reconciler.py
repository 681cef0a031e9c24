"""The reconciler: Postgres is the record, the broker only a transport.

Every few seconds one CPU worker of the fleet (whichever holds a Postgres
advisory lock) reads the rows of unfinished jobs and decides what to send
again:

- a lease that lapsed: the worker preparing a job, detecting its language or
  holding its chunks stopped renewing it (killed, lost its network);
- a stalled job: no step forward for MURMUR_STALL_TIMEOUT seconds, nobody
  holding any of it, and its message gone from the queue its next step goes
  to: the queue is empty, or has started a message sent after the job's last
  step that was as urgent or less (`deliveries`), so the job's own would have
  been started before it. Its message was lost: Redis flushed or restarted, a
  publish failed, retries ran out while the database was away, a producer
  crashed after its insert. A job whose message only waits its turn behind a
  long queue is left alone, however long the queue stays busy.

Each re-drive counts an attempt on the row; past MURMUR_MAX_ATTEMPTS the job
fails with the reason, which also ends a file that kills its worker every time.
Every task is safe to receive twice, so a re-drive that races the original
message costs time, never correctness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session, sessionmaker

from murmur.db.models import ENDED, UNENDED, CallbackState, ChunkRow, ChunkState, Job, JobState, utcnow
from murmur.settings import Settings
from murmur.tasks.fleet.deliveries import overtaken
from murmur.tasks.fleet.queues import QUEUE_OF_STEP
from murmur.tasks.outputs import retention
from murmur.workers.errors import Failure

log = logging.getLogger("murmur")
LOCK_KEY = 0x6D75726D7572  # "murmur": one reconciler in the fleet holds it at a time


@dataclass(frozen=True)
class Redrive:
    """A message to send again: `step` is the task (prepare, detect_language, decode, assemble, notify)."""

    step: str
    job_id: str
    priority: int | None
    chunks: tuple[int, ...] = ()


class Reconciler:
    """Decides the re-drives from the rows; sending them is the caller's part."""

    def __init__(self, db: sessionmaker[Session], settings: Settings, backlog: Callable[[str], int],
                 delivered: Callable[[], dict[tuple[str, int], tuple[float, float]]] = dict) -> None:
        self.db = db
        self.settings = settings
        self._backlog = backlog  # messages waiting in a queue (by its name)
        self._delivered = delivered  # (queue, priority) → the newest send and start times (Deliveries.newest)

    def tick(self) -> list[Redrive] | None:
        """One pass; None when another process holds the lock this time."""
        with self.db.begin() as s:
            if not _try_lock(s):
                return None
            pass_ = _Pass(s, self.settings, self._backlog, self._delivered)
            pass_.lapsed_job_leases()
            pass_.lapsed_chunk_leases()
            pass_.stalled_jobs()
            pass_.unsent_callbacks()
            redrives = pass_.redrives
        for r in redrives:
            log.warning("reconciler: re-driving %s of job %s%s", r.step, r.job_id, f" chunks {list(r.chunks)}" if r.chunks else "")
        if self.settings.retention:
            removed = retention.prune(self.db, self.settings, timedelta(seconds=self.settings.retention))
            if removed:
                log.info("reconciler: pruned %d job(s) older than MURMUR_RETENTION", removed)
        return redrives


class _Pass:
    def __init__(self, s: Session, settings: Settings, backlog: Callable[[str], int],
                 delivered: Callable[[], dict[tuple[str, int], tuple[float, float]]]) -> None:
        self.s, self.settings, self._backlog, self._delivered = s, settings, backlog, delivered
        self.now = utcnow()
        self.redrives: list[Redrive] = []
        self._backlogs: dict[str, int] = {}
        self._newest: dict[tuple[str, int], tuple[float, float]] | None = None

    def lapsed_job_leases(self) -> None:
        """A worker died while preparing a job or detecting its language."""
        jobs = self.s.scalars(select(Job).where(Job.status.in_(UNENDED), Job.lease_worker.is_not(None),
                                                Job.lease_until < self.now).with_for_update(skip_locked=True))
        for job in jobs:
            step = "prepare" if job.n_chunks is None else "detect_language"
            self._redrive_job(job, step, f"its worker {job.lease_worker} stopped during {_stage(step)}")

    def lapsed_chunk_leases(self) -> None:
        """A worker died holding chunks (in its batch, or waiting for one)."""
        rows = self.s.execute(
            select(ChunkRow, Job).join(Job, Job.id == ChunkRow.job_id)
            .where(Job.status == JobState.running, ChunkRow.status == ChunkState.pending,
                   ChunkRow.lease_worker.is_not(None), ChunkRow.lease_until < self.now)
            .order_by(ChunkRow.job_id, ChunkRow.idx).with_for_update(of=ChunkRow, skip_locked=True)
        ).all()
        by_job: dict[str, tuple[Job, list[ChunkRow]]] = {}
        for chunk, job in rows:
            by_job.setdefault(job.id, (job, []))[1].append(chunk)
        for job, chunks in by_job.values():
            worst = max(chunks, key=lambda c: c.attempts)
            if worst.attempts >= self.settings.max_attempts:
                self._fail(job, f"chunk {worst.idx} was tried {worst.attempts + 1} times and its worker "
                                f"({worst.lease_worker}) stopped each time: giving up (MURMUR_MAX_ATTEMPTS)")
                continue
            for chunk in chunks:
                chunk.attempts += 1
                chunk.lease_worker = chunk.lease_until = None
            job.progress_at = self.now
            self.redrives.append(Redrive("decode", job.id, job.priority, tuple(c.idx for c in chunks)))

    def stalled_jobs(self) -> None:
        """No step forward for the stall timeout, nobody holding it, its message gone from its queue: lost."""
        held = exists().where(ChunkRow.job_id == Job.id, ChunkRow.status == ChunkState.pending,
                              ChunkRow.lease_until.is_not(None), ChunkRow.lease_until >= self.now)
        before = self.now - timedelta(seconds=self.settings.stall_timeout)
        jobs = self.s.scalars(select(Job).where(Job.status.in_(UNENDED), Job.lease_worker.is_(None),
                                                Job.progress_at < before, ~held).with_for_update(skip_locked=True))
        for job in jobs:
            if job.n_chunks is None:
                step = "prepare"
            elif job.language is None and job.chunks_done < job.n_chunks:
                step = "detect_language"
            elif job.chunks_done < job.n_chunks:
                step = "decode"
            else:
                step = "assemble"
            queue = QUEUE_OF_STEP[step]
            if self._queued(queue) and not overtaken(self._started(), queue, job.priority, job.progress_at):
                continue  # its message may well be waiting in line
            chunks: tuple[int, ...] = ()
            if step == "decode":
                chunks = tuple(self.s.scalars(select(ChunkRow.idx).where(
                    ChunkRow.job_id == job.id, ChunkRow.status == ChunkState.pending).order_by(ChunkRow.idx)))
            self._redrive_job(job, step, f"no progress for {self.settings.stall_timeout} s in {_stage(step)} "
                                         "and no message for it in the queue", chunks)

    def unsent_callbacks(self) -> None:
        """An ended job whose webhook was never sent (its message or its worker was lost)."""
        before = self.now - timedelta(seconds=self.settings.stall_timeout)
        jobs = self.s.scalars(select(Job).where(Job.status.in_(ENDED), Job.callback_state == CallbackState.pending,
                                                Job.progress_at < before).with_for_update(skip_locked=True))
        for job in jobs:
            job.progress_at = self.now
            self.redrives.append(Redrive("notify", job.id, job.priority))

    def _redrive_job(self, job: Job, step: str, why: str, chunks: tuple[int, ...] = ()) -> None:
        if job.attempts >= self.settings.max_attempts:
            self._fail(job, f"gave up after {job.attempts + 1} tries (MURMUR_MAX_ATTEMPTS): {why}")
            return
        job.attempts += 1
        job.lease_worker = job.lease_until = None
        job.progress_at = self.now
        self.redrives.append(Redrive(step, job.id, job.priority, chunks))

    def _fail(self, job: Job, reason: str) -> None:
        log.warning("reconciler: job %s failed: %s", job.id, reason)
        job.status, job.error, job.failure, job.finished_at = JobState.failed, reason, Failure.gave_up, self.now
        job.lease_worker = job.lease_until = None
        job.progress_at = self.now
        if job.callback_url:
            job.callback_state = CallbackState.pending
            self.redrives.append(Redrive("notify", job.id, job.priority))

    def _started(self) -> dict[tuple[str, int], tuple[float, float]]:
        if self._newest is None:
            try:
                self._newest = self._delivered()
            except Exception:  # noqa: BLE001 - Redis is away: no job counts as overtaken this pass
                log.warning("reconciler: cannot read the queues' deliveries", exc_info=True)
                self._newest = {}
        return self._newest

    def _queued(self, queue: str) -> bool:
        if queue not in self._backlogs:
            try:
                self._backlogs[queue] = self._backlog(queue)
            except Exception:  # noqa: BLE001 - the broker is away: we cannot tell, so assume work is queued
                log.warning("reconciler: cannot read the length of queue %s", queue, exc_info=True)
                self._backlogs[queue] = 1
        return self._backlogs[queue] > 0


def _stage(step: str) -> str:
    return {"prepare": "prepare", "detect_language": "language detection", "decode": "decoding",
            "assemble": "assembly"}.get(step, step)


def _try_lock(s: Session) -> bool:
    """Postgres: a transaction-scoped advisory lock, so exactly one reconciler runs a pass at a time."""
    if s.get_bind().dialect.name != "postgresql":
        return True  # SQLite: one machine, one process
    return bool(s.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}))
