"""The reads and writes the stages make, each in its own short transaction.

Every change of a job's or a chunk's state (claimed, planned, stored, ended) is
a conditional update, so that a duplicate of any message (a redelivery, a
re-drive by the reconciler) finds the change made and does nothing: a job is
planned once, a chunk stored once, a job ended once. `update_job` and
`set_language` write what only the one holder of a job's lease writes (timings,
the language), so they need no condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from murmur.db.models import ENDED, UNENDED, ApiKey, CallbackState, ChunkRow, ChunkState, Job, JobState, Voiceprint, utcnow
from murmur.workers.labels import Turn, label_segments
from murmur.workers.errors import Failure
from murmur.workers.transcript import Segment, Transcript


class TooManyJobs(Exception):
    """The owner already has `active` jobs queued or running, its limit."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} jobs queued or running")
        self.active = active


def create_job(
    db: sessionmaker[Session],
    source: str,
    options: dict,
    job_id: str | None = None,
    callback_url: str | None = None,
    priority: int | None = None,
    owner: str | None = None,
    max_active: int | None = None,
    request_key: str | None = None,
) -> str:
    """A queued job; with `job_id`, creating it again is a no-op (a redelivered submit), and so is
    creating one with the `request_key` of an earlier one (a retried request): the earlier job's id.

    With `max_active`, the owner's unended jobs are counted in the same
    transaction and TooManyJobs is raised at the limit: one round of queries,
    where a busy database makes every round trip cost. Submits of one owner
    count and insert one at a time (`_one_at_a_time`), so two at once never both
    see room for one.
    """
    try:
        with db.begin() as s:
            if max_active is not None:
                _one_at_a_time(s, owner)
                active = s.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(UNENDED)))
                if active >= max_active:
                    raise TooManyJobs(active)
            job = Job(id=job_id, source=source, options=options, status=JobState.queued, chunks_done=0,
                      prepare_seconds=0.0, detect_seconds=0.0, decode_seconds=0.0,
                      callback_url=callback_url, priority=priority, owner=owner, attempts=0, callback_attempts=0,
                      progress_at=utcnow(), request_key=request_key)
            s.add(job)
            s.flush()
            return job.id
    except IntegrityError:
        if job_id is not None and get_job(db, job_id) is not None:
            return job_id  # created before: a redelivered or concurrent delivery of the same submit
        earlier = job_by_request_key(db, request_key) if request_key else None
        if earlier is not None:
            return earlier.id  # the same request, sent again
        raise


def job_by_request_key(db: sessionmaker[Session], request_key: str) -> Job | None:
    with db() as s:
        return s.scalar(select(Job).where(Job.request_key == request_key))


def active_jobs(db: sessionmaker[Session], owner: str | None) -> int:
    """The owner's jobs queued or running."""
    with db() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(UNENDED)))


def forget_job(db: sessionmaker[Session], job_id: str) -> bool:
    """Delete a queued job whose message could not be sent: the caller heard it was not submitted."""
    with db.begin() as s:
        return s.execute(delete(Job).where(Job.id == job_id, Job.status == JobState.queued)).rowcount == 1


def _one_at_a_time(s: Session, owner: str | None) -> None:
    """Hold the owner's submit lock until the transaction ends: on Postgres an advisory lock keyed by the
    owner, on SQLite the database's write lock (taken by a write that changes nothing)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"), {"space": _SUBMIT_LOCKS, "owner": owner or ""})
    else:
        s.execute(update(Job).where(Job.id == "").values(chunks_done=Job.chunks_done))


_SUBMIT_LOCKS = 0x6A6F6273  # "jobs": the advisory-lock space of the per-owner submit locks


def get_job(db: sessionmaker[Session], job_id: str) -> Job | None:
    with db() as s:
        return s.get(Job, job_id)


def update_job(db: sessionmaker[Session], job_id: str, **values) -> None:
    with db.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


STAGES = ("prepare", "detect", "decode")


def add_timing(db: sessionmaker[Session], job_id: str, stage: str, seconds: float) -> None:
    """Add to a stage's total in one statement: batches decoded in parallel never lose time."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    column = getattr(Job, f"{stage}_seconds")
    update_job(db, job_id, **{column.key: column + seconds})


def fail_job(db: sessionmaker[Session], job_id: str, error: str, failure: Failure) -> bool:
    """Mark a job failed, with its reason and the class of it, unless it has already ended; True if this call ended it."""
    with db.begin() as s:
        result = s.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(UNENDED))
            .values(status=JobState.failed, error=error, failure=failure, finished_at=utcnow(), lease_worker=None,
                    lease_until=None, **_callback_due())
        )
        return result.rowcount == 1


def is_complete(db: sessionmaker[Session], job_id: str) -> bool:
    """Every chunk decoded and the job not yet ended: time to assemble."""
    job = get_job(db, job_id)
    return job is not None and job.status == JobState.running and job.n_chunks is not None and job.chunks_done >= job.n_chunks


def finish_job(db: sessionmaker[Session], job_id: str) -> bool:
    """running → done once every chunk is decoded; True only for the one call that did it.

    A conditional update, so two deliveries of the same assemble cannot both finish the job.
    """
    with db.begin() as s:
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobState.running, Job.n_chunks.is_not(None), Job.chunks_done >= Job.n_chunks)
            .values(status=JobState.done, finished_at=utcnow(), lease_worker=None, lease_until=None, **_callback_due())
        )
        return result.rowcount == 1


def hand_to_prepare(db: sessionmaker[Session], job_id: str) -> Job | None:
    """A queued job whose prepare message is sent now; None when it is no longer queued.

    Its progress time becomes now: the reconciler judges a message lost by the
    time it was sent (tasks.fleet.deliveries), and this one joins the back of
    its queue, however long the job's first message waited.
    """
    with db.begin() as s:
        result = s.execute(update(Job).where(Job.id == job_id, Job.status == JobState.queued).values(progress_at=utcnow()))
        if result.rowcount != 1:
            return None
    return get_job(db, job_id)


def claim_job(db: sessionmaker[Session], job_id: str, worker: str | None, lease_seconds: float) -> Job | None:
    """Take the job for prepare: a queued job, or one whose prepare died before it was planned.

    None when it has ended, is planned already, or another live worker holds it:
    a duplicate prepare then does nothing, and a finished job is never planned again.
    """
    now = utcnow()
    with db.begin() as s:
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.n_chunks.is_(None), Job.status.in_([JobState.queued, JobState.running]),
                   _lease_free(Job, now, worker))
            .values(status=JobState.running, started_at=func.coalesce(Job.started_at, now), lease_worker=worker,
                    lease_until=now + timedelta(seconds=lease_seconds), progress_at=now)
        )
        if result.rowcount != 1:
            return None
    return get_job(db, job_id)


def claim_detection(db: sessionmaker[Session], job_id: str, worker: str | None, lease_seconds: float) -> bool:
    """Take a planned job whose language is not known yet, for detection; False for a duplicate."""
    now = utcnow()
    with db.begin() as s:
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobState.running, Job.n_chunks.is_not(None), Job.language.is_(None),
                   _lease_free(Job, now, worker))
            .values(lease_worker=worker, lease_until=now + timedelta(seconds=lease_seconds))
        )
        return result.rowcount == 1


def set_language(db: sessionmaker[Session], job_id: str, language: str, probability: float | None, spoken: list[str]) -> None:
    """The job's language is known: detection's lease is given back."""
    update_job(db, job_id, language=language, language_probability=probability, spoken_languages=spoken,
               lease_worker=None, lease_until=None, progress_at=utcnow())


def save_chunks(db: sessionmaker[Session], job_id: str, chunks: Sequence, duration: float, worker: str | None = None,
                prints: bytes | None = None) -> bool:
    """Record the plan of chunks (workers.cpu.chunking.Chunk), and a diarized job's voiceprints, once; False if
    the job was planned, ended or taken by another worker meanwhile (nothing is then written)."""
    rows = [ChunkRow(job_id=job_id, idx=c.idx, start=c.spans[0][0], end=c.spans[-1][1], spans=[list(s) for s in c.spans],
                     speech=[list(s) for s in c.speech], status=ChunkState.pending, attempts=0) for c in chunks]
    with db.begin() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobState.running or job.n_chunks is not None or job.lease_worker != worker:
            return False
        s.add_all(rows)
        if prints is not None:
            s.merge(Voiceprint(job_id=job_id, prints=prints, turns=None))
        job.n_chunks, job.chunks_done, job.duration = len(rows), 0, duration
        job.lease_worker, job.lease_until, job.progress_at = None, None, utcnow()
    return True


def claim_chunks(db: sessionmaker[Session], job_id: str, indices: Sequence[int], worker: str | None, lease_seconds: float) -> list[int]:
    """Lease the chunks a decode message names to this worker; returns those it may decode.

    A chunk already stored, or held by another live worker, is left alone.
    """
    now = utcnow()
    with db.begin() as s:
        claimed = s.scalars(
            update(ChunkRow)
            .where(ChunkRow.job_id == job_id, ChunkRow.idx.in_(list(indices)), ChunkRow.status == ChunkState.pending,
                   _lease_free(ChunkRow, now, worker))
            .values(lease_worker=worker, lease_until=now + timedelta(seconds=lease_seconds))
            .returning(ChunkRow.idx)
        )
        return sorted(claimed)


def renew_leases(db: sessionmaker[Session], holder: str, lease_seconds: float, jobs: Sequence[str],
                 chunks: Sequence[tuple[str, int]]) -> int:
    """Push back the end of the leases `holder` holds on the jobs and chunks it is working on."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    renewed = 0
    with db.begin() as s:
        if jobs:
            renewed += s.execute(update(Job).where(Job.id.in_(list(jobs)), Job.lease_worker == holder)
                                 .values(lease_until=until)).rowcount
        if chunks:
            renewed += s.execute(update(ChunkRow).where(tuple_(ChunkRow.job_id, ChunkRow.idx).in_(list(chunks)),
                                                        ChunkRow.lease_worker == holder, ChunkRow.status == ChunkState.pending)
                                 .values(lease_until=until)).rowcount
    return renewed


def get_chunks(db: sessionmaker[Session], job_id: str, indices: Sequence[int] | None = None) -> list[ChunkRow]:
    with db() as s:
        query = select(ChunkRow).where(ChunkRow.job_id == job_id)
        if indices is not None:
            query = query.where(ChunkRow.idx.in_(list(indices)))
        return list(s.scalars(query.order_by(ChunkRow.idx)))


def replace_segments(
    db: sessionmaker[Session], job_id: str, chunk_idx: int, segments: Sequence[Segment], language: str | None, worker: str | None = None
) -> bool:
    """Store a decoded chunk's segments and count it, in one transaction; False if it was stored already."""
    if any(segment.chunk_idx != chunk_idx for segment in segments):
        raise ValueError(f"segments of another chunk handed to chunk {chunk_idx}")
    with db.begin() as s:
        chunk = s.get(ChunkRow, (job_id, chunk_idx), with_for_update=True)
        if chunk is None or chunk.status == ChunkState.decoded:
            return False  # deleted meanwhile, or stored by a duplicate of this decode: the first one stands
        s.execute(delete(Segment).where(Segment.job_id == job_id, Segment.chunk_idx == chunk_idx))
        for segment in segments:
            segment.job_id = job_id
            s.add(segment)
        chunk.status = ChunkState.decoded
        chunk.language, chunk.worker = language, worker
        chunk.lease_worker, chunk.lease_until = None, None
        s.execute(update(Job).where(Job.id == job_id).values(chunks_done=Job.chunks_done + 1, progress_at=utcnow()))
        return True


def get_segments(db: sessionmaker[Session], job_id: str) -> list[Segment]:
    """The job's segments in order, as decoded (a diarized job's unlabelled: `get_transcript` labels them)."""
    with db() as s:
        return _segments(s, job_id)


def released_segments(db: sessionmaker[Session], job_id: str, since: int = 0) -> tuple[list[Segment], int]:
    """The segments released after the first `since` chunks, and how many chunks are released now.

    A chunk is released once it and every chunk before it are decoded: its segments are final and
    may be read before the job ends, in source order. A diarized job's segments are released all at
    once when it is done, labelled with their speakers (assembly tells the speakers apart); a failed
    job releases nothing more. Every door that streams a job (the embedded runner, Client.stream,
    the API's events) reads this one rule.
    """
    with db() as s:
        job = s.get(Job, job_id)
        if job is None or job.n_chunks is None or job.status == JobState.failed or since >= job.n_chunks:
            return [], since
        if job.job_options().diarize:
            if job.status != JobState.done:
                return [], since
            return _labelled(s, job, _segments(s, job_id)), job.n_chunks
        pending = s.scalar(select(func.min(ChunkRow.idx)).where(ChunkRow.job_id == job_id, ChunkRow.status != ChunkState.decoded))
        upto = job.n_chunks if pending is None else pending
        return (_segments(s, job_id, range(since, upto)), upto) if upto > since else ([], since)


def get_transcript(db: sessionmaker[Session], job_id: str) -> Transcript:
    """The job and its segments from one session: under load every connection checkout and transaction waits its turn.

    A diarized job's segments come labelled with its speakers (split where the speaker changes), once assembly
    has made its turns; its words are shown only if the job asked for them."""
    with db() as s:
        job = s.get(Job, job_id)
        return Transcript(job.id, job.language, job.language_probability, job.duration, _labelled(s, job, _segments(s, job_id)))


def _labelled(s: Session, job: Job, segments: list[Segment]) -> list[Segment]:
    """A diarized job's segments with their speakers, once assembly has made its turns; the others as they are."""
    options = job.job_options()
    if not options.diarize:
        return segments
    turns = s.scalar(select(Voiceprint.turns).where(Voiceprint.job_id == job.id))
    return segments if turns is None else label_segments(segments, [Turn(*t) for t in turns], keep_words=options.word_timestamps)


def get_voiceprints(db: sessionmaker[Session], job_id: str) -> bytes | None:
    with db() as s:
        return s.scalar(select(Voiceprint.prints).where(Voiceprint.job_id == job_id))


def save_turns(db: sessionmaker[Session], job_id: str, turns: Sequence[Turn]) -> None:
    """A diarized job's speaker turns; assembly made them from its voiceprints, and the same prints always make the same turns."""
    with db.begin() as s:
        s.execute(update(Voiceprint).where(Voiceprint.job_id == job_id).values(turns=[[t.start, t.end, t.speaker] for t in turns]))


def _segments(s: Session, job_id: str, chunks: range | None = None) -> list[Segment]:
    query = select(Segment).where(Segment.job_id == job_id)
    if chunks is not None:
        query = query.where(Segment.chunk_idx >= chunks.start, Segment.chunk_idx < chunks.stop)
    return list(s.scalars(query.order_by(Segment.chunk_idx, Segment.idx)))


def prune(db: sessionmaker[Session], older_than: timedelta, limit: int = 1000) -> list[tuple[str, str]]:
    """Delete jobs that ended more than `older_than` ago, with their chunks and segments; (id, source) of those that went."""
    cutoff = utcnow() - older_than
    removed: list[tuple[str, str]] = []
    while True:
        with db.begin() as s:
            rows = s.execute(select(Job.id, Job.source).where(Job.status.in_(ENDED), Job.finished_at < cutoff).limit(limit)).all()
            if not rows:
                return removed
            _delete_jobs(s, [job_id for job_id, _ in rows])
            removed += [(job_id, source) for job_id, source in rows]


def delete_job(db: sessionmaker[Session], job_id: str) -> bool:
    """Delete an ended job with its chunks and segments; False if it is not there or has not ended."""
    with db.begin() as s:
        if s.scalar(select(Job.id).where(Job.id == job_id, Job.status.in_(ENDED)).with_for_update()) is None:
            return False
        _delete_jobs(s, [job_id])
        return True


def _delete_jobs(s: Session, ids: list[str]) -> None:
    s.execute(delete(Segment).where(Segment.job_id.in_(ids)))
    s.execute(delete(ChunkRow).where(ChunkRow.job_id.in_(ids)))
    s.execute(delete(Voiceprint).where(Voiceprint.job_id.in_(ids)))
    s.execute(delete(Job).where(Job.id.in_(ids)))


def cancel_job(db: sessionmaker[Session], job_id: str) -> bool:
    """End a queued or running job as failed, `cancelled`: every stage skips an ended job's work."""
    return fail_job(db, job_id, "cancelled", Failure.cancelled)


def unended_jobs(db: sessionmaker[Session]) -> list[str]:
    with db() as s:
        return list(s.scalars(select(Job.id).where(Job.status.in_(UNENDED))))


def jobs_of(db: sessionmaker[Session], owner: str | None, limit: int, after: str | None = None) -> list[Job]:
    """An owner's newest jobs first, up to `limit`; with `after` (one of its job ids), those older than that
    job: a page of a list too long to read at once, found by the (owner, created_at, id) index however deep."""
    with db() as s:
        query = select(Job).where(Job.owner == owner)
        if after is not None:
            mark = s.execute(select(Job.created_at, Job.id).where(Job.id == after, Job.owner == owner)).first()
            if mark is None:
                return []  # not one of the owner's jobs (or deleted since): nothing after it
            # constants, not a join: the index is entered at the mark, however deep the page
            query = query.where(tuple_(Job.created_at, Job.id) < tuple_(mark.created_at, mark.id))
        return list(s.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)))


def job_states(db: sessionmaker[Session], job_ids: Sequence[str]) -> dict[str, JobState]:
    """The status of each of these jobs, in one query (those that are gone are left out)."""
    with db() as s:
        return dict(s.execute(select(Job.id, Job.status).where(Job.id.in_(list(job_ids)))).all())


def create_key(db: sessionmaker[Session], name: str, digest: str, max_jobs: int | None = None,
               webhook_secret: str | None = None, top_priority: int | None = None) -> ApiKey:
    with db.begin() as s:
        key = ApiKey(name=name, digest=digest, max_jobs=max_jobs, webhook_secret=webhook_secret,
                     top_priority=top_priority, created_at=utcnow())
        s.add(key)
        s.flush()
        return key


def key_by_digest(db: sessionmaker[Session], digest: str) -> ApiKey | None:
    with db() as s:
        return s.scalar(select(ApiKey).where(ApiKey.digest == digest))


def has_keys(db: sessionmaker[Session]) -> bool:
    with db() as s:
        return s.scalar(select(ApiKey.id).limit(1)) is not None


def list_keys(db: sessionmaker[Session]) -> list[ApiKey]:
    with db() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def key_by_id(db: sessionmaker[Session], key_id: str) -> ApiKey | None:
    with db() as s:
        return s.get(ApiKey, key_id)


def set_webhook_secret(db: sessionmaker[Session], name: str, secret: str) -> bool:
    with db.begin() as s:
        return s.execute(update(ApiKey).where(ApiKey.name == name).values(webhook_secret=secret)).rowcount == 1


def delete_key(db: sessionmaker[Session], name: str) -> bool:
    with db.begin() as s:
        return s.execute(delete(ApiKey).where(ApiKey.name == name)).rowcount == 1


def _lease_free(table, now: datetime, worker: str | None):
    """No lease on the row, a lapsed one, or this worker's own."""
    free = [table.lease_until.is_(None), table.lease_until < now]
    return or_(*free, table.lease_worker == worker) if worker is not None else or_(*free)


def _callback_due() -> dict:
    """An ending job with a webhook has its POST to send."""
    return {"callback_state": case((Job.callback_url.is_not(None), CallbackState.pending.value), else_=None),
            "progress_at": utcnow()}


def unsent_callbacks(db: sessionmaker[Session], job_ids: Sequence[str]) -> list[str]:
    """Of these jobs, those that ended with their webhook still to send."""
    with db() as s:
        return list(s.scalars(select(Job.id).where(Job.id.in_(list(set(job_ids))), Job.status == JobState.failed,
                                                   Job.callback_state == CallbackState.pending, Job.callback_attempts == 0)))


def claim_callback(db: sessionmaker[Session], job_id: str, seen_attempts: int) -> bool:
    """Count one try of the job's webhook; only one sender wins each try, so a hook is not sent twice at once."""
    with db.begin() as s:
        result = s.execute(update(Job).where(Job.id == job_id, Job.callback_state == CallbackState.pending,
                                             Job.callback_attempts == seen_attempts)
                           .values(callback_attempts=seen_attempts + 1, progress_at=utcnow()))
        return result.rowcount == 1
