"""The task chain: the Celery tasks transcribe → prepare → detect_language → decode × N → assemble → notify.

detect_language is the first decode batch of a job whose language is to be found: it decodes the
chunks that voted and sends the others on as decode messages.

Each task loads its inputs, calls a stage of `tasks.stages`, stores the outputs
and sends the next message; the logic lives in the stages.

Task names and `murmur.transcribe`'s keyword arguments are public API:
any Celery client can enqueue `murmur.transcribe` on the `murmur.cpu` queue
with JSON kwargs and get the job id back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from celery.signals import task_prerun
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError

from murmur.db import queries
from murmur.db.models import ENDED
from murmur.settings import get_settings
from murmur.tasks import jobs, stages
from murmur.tasks.context import Context
from murmur.tasks.fleet import deliveries
from murmur.tasks.fleet.app import app
from murmur.tasks.fleet.queues import QUEUE_OF_STEP, message_priority
from murmur.tasks.fleet.reconciler import Redrive
from murmur.tasks.outputs.s3 import OutputsUnavailable
from murmur.tasks.fleet import worker
from murmur.tasks.tensors.store import TensorRef, feature_key
from murmur.workers.errors import MurmurError, failure_of
from murmur.workers.window import N_FRAMES

log = logging.getLogger("murmur")
# Broker or database briefly away, a Redis under `noeviction` full for now, or S3 not taking a
# transcript for now: retry the message rather than fail the job. Should the retries run out, the reconciler sends the step again once
# the job has stalled.
TRANSIENT = (OperationalError, BrokerError, redis.ConnectionError, redis.TimeoutError, redis.OutOfMemoryError,
             OutputsUnavailable)
_retry = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 60, "max_retries": 10}


@app.task(name="murmur.transcribe", bind=True, ignore_result=False, **_retry)
def transcribe(self, source: str | None = None, callback_url: str | None = None, priority: int | None = None,
               **options) -> str:
    """Create the job (queued) and send it to prepare; returns the job id.

    A job a `Client` submitted has its row already, checked there. A raw
    producer's request is checked here, by the same `jobs.check`: one refused
    (invalid options, a source the workers may not read) gives a job failed
    with the reason, never an exception for the caller to decode.
    """
    ctx = _worker().ctx
    job_id = jobs.job_id_of(self.request.id)
    if queries.get_job(ctx.db, job_id) is None:
        try:
            submission = jobs.check(source, options, get_settings(), callback_url, priority)
        except (MurmurError, TypeError) as exc:
            if jobs.refuse(ctx.db, job_id, source, options, callback_url, priority, exc):
                send_notify(job_id)
            log.warning("job %s refused: %s", job_id, exc)
            return job_id
        jobs.create(ctx.db, submission, job_id)
    job = queries.hand_to_prepare(ctx.db, job_id)
    if job is not None:
        _send("prepare", (job_id,), job.priority)
    return job_id


@app.task(name="murmur.prepare", **_retry)
def prepare(job_id: str) -> None:
    ctx = _worker().ctx
    with _job_errors(ctx, job_id):
        refs = stages.prepare(ctx, job_id)
        if refs is None:
            return  # the job had already ended
        job = queries.get_job(ctx.db, job_id)
        if not refs:
            _send("assemble", (job_id,), job.priority)  # no speech: nothing to decode
        elif job.language is None:
            _send("detect_language", (job_id, [r.to_json() for r in refs]), job.priority)
        else:
            _fan_out(job_id, refs, job.priority)


@app.task(name="murmur.detect_language", **_retry)
def detect_language(job_id: str, refs: list[dict]) -> None:
    """The first batch of a job whose language is to be found: chunks spread over the file are encoded
    and vote; once the language is recorded the voters go to this worker's batcher with the encoder
    output they voted with (no second pass), then the other chunks to the decode queue."""
    ctx = _worker().ctx
    with _job_errors(ctx, job_id):
        chunk_refs = _own_refs(job_id, refs)
        if not queries.claim_detection(ctx.db, job_id, ctx.lease_holder, ctx.lease_seconds):
            _drop_if_ended(ctx, job_id, chunk_refs)
            return  # detected already, ended, or another live worker is on it
        with ctx.held.holding(jobs=[job_id]):
            voters = stages.detect_language(ctx, job_id, chunk_refs)
        voting = voters.refs if voters else []
        # leased once the language is recorded: a lease that lapses re-drives a decode, never one racing detection
        claimed = queries.claim_chunks(ctx.db, job_id, [r.chunk_idx for r in voting], ctx.lease_holder, ctx.lease_seconds)
        job = queries.get_job(ctx.db, job_id)
        priority = job.priority
        if voting:
            log.info("job %s: language %s, voted by %d chunk(s) that decode from the encoder output they voted with",
                     job_id, job.language, len(voting))
        with ctx.held.holding(chunks=[(job_id, i) for i in claimed]):
            # the voters (chunk 0 among them) are in the batcher before the other chunks are sent: a decode
            # message this worker takes cannot start a batch that chunk 0 would wait behind
            waiting = _worker().batcher().submit_all([(job_id, r, voters) for r in voting if r.chunk_idx in claimed])
            _fan_out(job_id, [r for r in chunk_refs if r not in voting], priority)
            assemble_now = any([future.result() for future in waiting])
        if assemble_now:
            _send("assemble", (job_id,), priority)


@app.task(name="murmur.decode", **_retry)
def decode_chunk(job_id: str, ref: dict) -> None:
    """One chunk: leased to this worker, handed to its batcher, decoded with chunks of other jobs."""
    ctx = _worker().ctx
    with _job_errors(ctx, job_id):
        [tensor] = _own_refs(job_id, [ref])
        if not queries.claim_chunks(ctx.db, job_id, [tensor.chunk_idx], ctx.lease_holder, ctx.lease_seconds):
            _drop_if_ended(ctx, job_id, [tensor])
            return  # stored already, the job ended, or another live worker holds it
        with ctx.held.holding(chunks=[(job_id, tensor.chunk_idx)]):
            assemble_now = _worker().batcher().submit((job_id, tensor, None)).result()
        if assemble_now:
            _send("assemble", (job_id,), queries.get_job(ctx.db, job_id).priority)


@app.task(name="murmur.assemble", **_retry)
def assemble(job_id: str) -> None:
    """Finish the job; a second delivery finds it finished and does nothing."""
    ctx = _worker().ctx
    with _job_errors(ctx, job_id):
        if stages.assemble(ctx, job_id):
            job = queries.get_job(ctx.db, job_id)
            log.info("job %s done: %d chunk(s), %.1f s of audio", job_id, job.n_chunks, job.duration or 0.0)
            _notify_later(job)
        else:
            log.info("job %s: assemble skipped, already finished or not complete", job_id)


@app.task(name="murmur.notify", **_retry)
def notify(job_id: str) -> None:
    """POST the ended job's webhook, off the Celery threads: a slow hook never holds up a job."""
    _worker().hooks().send(job_id)


def redrive(r: Redrive) -> None:
    """Send a step again, as the reconciler decided."""
    if r.step in ("detect_language", "decode"):
        ctx = _worker().ctx
        job = queries.get_job(ctx.db, r.job_id)
        n_mels = ctx.n_mels(job.job_options().model)
        indices = r.chunks or tuple(range(job.n_chunks or 0))
        refs = [TensorRef(feature_key(r.job_id, i), (n_mels, N_FRAMES), "float32") for i in indices]
        if r.step == "detect_language":
            _send("detect_language", (r.job_id, [ref.to_json() for ref in refs]), r.priority)
        else:
            _fan_out(r.job_id, refs, r.priority)
    elif r.step == "notify":
        send_notify(r.job_id)
    else:
        _send(r.step, (r.job_id,), r.priority)


def send_notify(job_id: str, countdown: float = 0) -> None:
    """The job's webhook, sent by a CPU worker's hook threads, now or in `countdown` seconds."""
    notify.apply_async((job_id,), queue=QUEUE_OF_STEP["notify"], countdown=countdown)


def _own_refs(job_id: str, refs: list) -> list[TensorRef]:
    """The message's tensor references, each checked to be this job's own chunk (never another job's key)."""
    try:
        parsed = [TensorRef.from_json(r) for r in refs]
        ok = all(r.key == feature_key(job_id, r.chunk_idx) and r.dtype == "float32" and len(r.shape) == 2 for r in parsed)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        ok = False
    if not ok:
        raise RefusedMessage(f"refused a message for job {job_id}: its tensor references are not that job's chunks")
    return parsed


_TASKS = {"prepare": prepare, "detect_language": detect_language, "decode": decode_chunk, "assemble": assemble}
# what this process's background threads send: the reconciler's re-drives, webhook retries
SENDS = worker.Sends(redrive=redrive, notify=send_notify)


def _worker() -> worker.WorkerState:
    return worker.state(SENDS)


@task_prerun.connect
def _started(task=None, **_) -> None:
    """Record that this message of its queue was started (see `deliveries`)."""
    if task is None or not task.name.startswith("murmur."):
        return
    request = task.request
    _worker().deliveries.started((request.delivery_info or {}).get("routing_key"),
                                 getattr(request, deliveries.PRIORITY, None), getattr(request, deliveries.SENT, None))


def _drop_if_ended(ctx: Context, job_id: str, refs: list[TensorRef]) -> None:
    """A message for a job that ended or was deleted: its features wait for nobody (a live job's may be
    in another worker's hands, and are left alone)."""
    job = queries.get_job(ctx.db, job_id)
    if job is None or job.status in ENDED:
        ctx.store.delete(refs)


def _send(step: str, args: tuple, priority: int | None) -> None:
    _TASKS[step].apply_async(args, queue=QUEUE_OF_STEP[step], priority=message_priority(app.conf.broker_url, priority),
                             headers=deliveries.headers(priority))


def _fan_out(job_id: str, refs: list[TensorRef], priority: int | None) -> None:
    for ref in refs:
        _send("decode", (job_id, ref.to_json()), priority)


@contextmanager
def _job_errors(ctx: Context, job_id: str) -> Iterator[None]:
    """A job's error fails that job, with its reason; the worker and other jobs go on."""
    try:
        yield
    except TRANSIENT:
        raise  # retried by Celery
    except RefusedMessage as exc:
        log.warning("%s", exc)  # a forged or garbled message: dropped, the job it names is left alone
    except MurmurError as exc:
        _fail(ctx, job_id, exc)
    except Exception as exc:
        log.exception("job %s: internal error", job_id)
        _fail(ctx, job_id, exc)
        raise  # shown as a failed task in Flower; the message is acknowledged all the same


def _fail(ctx: Context, job_id: str, exc: Exception) -> None:
    reason, failure = failure_of(exc)
    if queries.fail_job(ctx.db, job_id, reason, failure):
        log.warning("job %s failed: %s", job_id, reason)
        _notify_later(queries.get_job(ctx.db, job_id))


def _notify_later(job) -> None:
    if job is not None and job.callback_url:
        send_notify(job.id)


class RefusedMessage(Exception):
    """A message that no honest producer sends; it is dropped without touching any job."""
