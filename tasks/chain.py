"""The task chain: the Celery tasks transcribe → prepare → detect_language → decode × N → assemble.

Each task loads its inputs, calls a stage of `tasks.stages`, stores the outputs
and sends the next message; the logic lives in the stages.

Task names and `murmur.transcribe`'s keyword arguments are public API:
any Celery client can enqueue `murmur.transcribe` on the `murmur.cpu` queue
with JSON kwargs and get the job id back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy.exc import OperationalError

from murmur.db import queries
from murmur.db.models import JobState
from murmur.settings import get_settings
from murmur.tasks import stages
from murmur.tasks.app import CPU_QUEUE, GPU_QUEUE, app
from murmur.tasks.store import TensorRef
from murmur.tasks.webhook import check_callback_url, notify
from murmur.tasks.worker import state
from murmur.workers.cpu.sources import check_source
from murmur.workers.errors import MurmurError

log = logging.getLogger("murmur")
# Broker or database briefly away: retry the message rather than fail the job.
TRANSIENT = (OperationalError, redis.ConnectionError, redis.TimeoutError)
_retry = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 60, "max_retries": 10}


def job_id_for(task_id: str | None) -> str:
    """The job id is the submit's task id (hex): a redelivered submit finds its own job."""
    try:
        return uuid.UUID(task_id).hex
    except (TypeError, ValueError):
        return uuid.uuid4().hex


@app.task(name="murmur.transcribe", bind=True, ignore_result=False, **_retry)
def transcribe(self, source: str, callback_url: str | None = None, priority: int | None = None, **options) -> str:
    """Create the job (queued) and send it to prepare; returns the job id.

    Invalid options or a source the workers may not read give a job that is
    failed with the reason, never an exception for the caller to decode.
    """
    ctx = state().ctx
    job_id = job_id_for(self.request.id)
    try:
        job_options = get_settings().job_options(**options)
        check_source(source)
        _check_priority(priority)
        check_callback_url(callback_url)
        error = None
    except (MurmurError, TypeError) as exc:
        job_options, error = None, str(exc)
    stored = job_options.to_json() if job_options else options
    queries.create_job(ctx.db, str(source), stored, job_id, callback_url, priority if isinstance(priority, int) else None)
    if error:
        _fail(ctx, job_id, error)
        return job_id
    if queries.get_job(ctx.db, job_id).status == JobState.queued:
        prepare.apply_async((job_id,), queue=CPU_QUEUE, priority=priority)
    return job_id


@app.task(name="murmur.prepare", **_retry)
def prepare(job_id: str) -> None:
    ctx = state().ctx
    with _job_errors(ctx, job_id):
        refs = stages.prepare(ctx, job_id)
        if refs is None:
            return  # the job had already ended
        job = queries.get_job(ctx.db, job_id)
        if not refs:
            assemble.apply_async((job_id,), queue=CPU_QUEUE, priority=job.priority)  # no speech: nothing to decode
        elif job.language is None:
            detect_language.apply_async((job_id, [r.to_json() for r in refs]), queue=GPU_QUEUE, priority=job.priority)
        else:
            _fan_out(job_id, refs, job.priority)


@app.task(name="murmur.detect_language", **_retry)
def detect_language(job_id: str, refs: list[dict]) -> None:
    ctx = state().ctx
    with _job_errors(ctx, job_id):
        job = queries.get_job(ctx.db, job_id)
        if job is None or job.status != JobState.running:
            return
        chunk_refs = [TensorRef.from_json(r) for r in refs]
        stages.detect_language(ctx, job_id, chunk_refs)
        _fan_out(job_id, chunk_refs, job.priority)


@app.task(name="murmur.decode", **_retry)
def decode(job_id: str, ref: dict) -> None:
    """One chunk: handed to this process's batcher, decoded with chunks of other jobs."""
    ctx = state().ctx
    with _job_errors(ctx, job_id):
        assemble_now = state().batcher().submit((job_id, TensorRef.from_json(ref))).result()
        if assemble_now:
            assemble.apply_async((job_id,), queue=CPU_QUEUE, priority=queries.get_job(ctx.db, job_id).priority)


@app.task(name="murmur.assemble", **_retry)
def assemble(job_id: str) -> None:
    """Finish the job; a second delivery finds it finished and does nothing."""
    ctx = state().ctx
    with _job_errors(ctx, job_id):
        if stages.assemble(ctx, job_id):
            job = queries.get_job(ctx.db, job_id)
            log.info("job %s done: %d chunk(s), %.1f s of audio", job_id, job.n_chunks, job.duration or 0.0)
            notify(job)
        else:
            log.info("job %s: assemble skipped, already finished or not complete", job_id)


def _fan_out(job_id: str, refs: list[TensorRef], priority: int | None) -> None:
    for ref in refs:
        decode.apply_async((job_id, ref.to_json()), queue=GPU_QUEUE, priority=priority)


@contextmanager
def _job_errors(ctx: stages.Context, job_id: str) -> Iterator[None]:
    """A job's error fails that job, with its reason; the worker and other jobs go on."""
    try:
        yield
    except TRANSIENT:
        raise  # retried by Celery
    except MurmurError as exc:
        _fail(ctx, job_id, str(exc))
    except Exception as exc:
        log.exception("job %s: internal error", job_id)
        _fail(ctx, job_id, f"internal error: {type(exc).__name__}: {exc}")
        raise  # shown as a failed task in Flower; the message is acknowledged all the same


def _fail(ctx: stages.Context, job_id: str, error: str) -> None:
    if queries.fail_job(ctx.db, job_id, error):
        log.warning("job %s failed: %s", job_id, error)
        notify(queries.get_job(ctx.db, job_id))


def _check_priority(priority) -> None:
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9):
        raise MurmurError(f"invalid priority {priority!r}: use 0 (most urgent) to 9")
