"""The reads and writes the stages make, each in its own short transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from murmur.db.models import ENDED, ChunkRow, ChunkState, Job, JobState, utcnow
from murmur.workers.transcript import Segment, Transcript


def create_job(
    db: sessionmaker[Session],
    source: str,
    options: dict,
    job_id: str | None = None,
    callback_url: str | None = None,
    priority: int | None = None,
) -> str:
    """A queued job; with `job_id`, creating it again is a no-op (a redelivered submit)."""
    if job_id is not None and get_job(db, job_id) is not None:
        return job_id
    try:
        with db.begin() as s:
            job = Job(id=job_id, source=source, options=options, status=JobState.queued, chunks_done=0,
                      prepare_seconds=0.0, detect_seconds=0.0, decode_seconds=0.0,
                      callback_url=callback_url, priority=priority)
            s.add(job)
            s.flush()
            return job.id
    except IntegrityError:
        if job_id is not None and get_job(db, job_id) is not None:
            return job_id  # created by a concurrent delivery of the same submit
        raise


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


def fail_job(db: sessionmaker[Session], job_id: str, error: str) -> bool:
    """Mark a job failed unless it has already ended; True if this call ended it."""
    with db.begin() as s:
        result = s.execute(
            update(Job).where(Job.id == job_id, Job.status.not_in(ENDED))
            .values(status=JobState.failed, error=error, finished_at=utcnow())
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
            .values(status=JobState.done, finished_at=utcnow())
        )
        return result.rowcount == 1


def save_chunks(db: sessionmaker[Session], job_id: str, chunks: Sequence, duration: float) -> int:
    """Record the plan of chunks (workers.cpu.chunking.Chunk); replaces an earlier plan of the same job."""
    rows = [ChunkRow(job_id=job_id, idx=c.idx, start=c.spans[0][0], end=c.spans[-1][1], spans=[list(s) for s in c.spans],
                     speech=[list(s) for s in c.speech], status=ChunkState.pending) for c in chunks]
    with db.begin() as s:
        s.execute(delete(Segment).where(Segment.job_id == job_id))
        s.execute(delete(ChunkRow).where(ChunkRow.job_id == job_id))
        s.add_all(rows)
        s.execute(update(Job).where(Job.id == job_id).values(n_chunks=len(rows), chunks_done=0, duration=duration))
    return len(rows)


def get_chunks(db: sessionmaker[Session], job_id: str, indices: Sequence[int] | None = None) -> list[ChunkRow]:
    with db() as s:
        query = select(ChunkRow).where(ChunkRow.job_id == job_id)
        if indices is not None:
            query = query.where(ChunkRow.idx.in_(list(indices)))
        return list(s.scalars(query.order_by(ChunkRow.idx)))


def replace_segments(
    db: sessionmaker[Session], job_id: str, chunk_idx: int, segments: Sequence[Segment], language: str | None, worker: str | None = None
) -> None:
    """One transaction: the chunk's old segments out, the new ones in, progress counted once."""
    if any(segment.chunk_idx != chunk_idx for segment in segments):
        raise ValueError(f"segments of another chunk handed to chunk {chunk_idx}")
    with db.begin() as s:
        chunk = s.get(ChunkRow, (job_id, chunk_idx), with_for_update=True)
        if chunk is None:
            return  # the job was re-planned or deleted meanwhile
        s.execute(delete(Segment).where(Segment.job_id == job_id, Segment.chunk_idx == chunk_idx))
        for segment in segments:
            segment.job_id = job_id
            s.add(segment)
        if chunk.status != ChunkState.decoded:
            chunk.status = ChunkState.decoded
            s.execute(update(Job).where(Job.id == job_id).values(chunks_done=Job.chunks_done + 1))
        chunk.language = language
        chunk.worker = worker


def get_segments(db: sessionmaker[Session], job_id: str) -> list[Segment]:
    with db() as s:
        query = select(Segment).where(Segment.job_id == job_id).order_by(Segment.chunk_idx, Segment.idx)
        return list(s.scalars(query))


def get_transcript(db: sessionmaker[Session], job_id: str) -> Transcript:
    job = get_job(db, job_id)
    return Transcript(job.id, job.language, job.language_probability, job.duration, get_segments(db, job_id))
