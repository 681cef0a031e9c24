"""The reads and writes the pipeline makes, each in its own short transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import ChunkRow, Job, SegmentRow, utcnow


def create_job(db: sessionmaker[Session], source: str, options: dict) -> str:
    with db.begin() as s:
        job = Job(source=source, options=options, status="queued", chunks_done=0,
                  prepare_seconds=0.0, detect_seconds=0.0, decode_seconds=0.0)
        s.add(job)
        s.flush()
        return job.id


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


def fail_job(db: sessionmaker[Session], job_id: str, error: str) -> None:
    update_job(db, job_id, status="failed", error=error, finished_at=utcnow())


def save_chunks(db: sessionmaker[Session], job_id: str, chunks: Iterable[dict], duration: float) -> int:
    """Record the plan of chunks; replaces an earlier plan of the same job."""
    rows = [ChunkRow(job_id=job_id, idx=c["idx"], start=c["spans"][0][0], end=c["spans"][-1][1], spans=c["spans"], status="pending") for c in chunks]
    with db.begin() as s:
        s.execute(delete(SegmentRow).where(SegmentRow.job_id == job_id))
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


def replace_segments(db: sessionmaker[Session], job_id: str, chunk_idx: int, segments: Sequence[dict], language: str | None) -> None:
    """One transaction: the chunk's old segments out, the new ones in, progress counted once."""
    with db.begin() as s:
        chunk = s.get(ChunkRow, (job_id, chunk_idx), with_for_update=True)
        if chunk is None:
            return  # the job was re-planned or deleted meanwhile
        s.execute(delete(SegmentRow).where(SegmentRow.job_id == job_id, SegmentRow.chunk_idx == chunk_idx))
        s.add_all(SegmentRow(job_id=job_id, chunk_idx=chunk_idx, **seg) for seg in segments)
        if chunk.status != "decoded":
            chunk.status = "decoded"
            s.execute(update(Job).where(Job.id == job_id).values(chunks_done=Job.chunks_done + 1))
        chunk.language = language


def get_segments(db: sessionmaker[Session], job_id: str) -> list[SegmentRow]:
    with db() as s:
        query = select(SegmentRow).where(SegmentRow.job_id == job_id).order_by(SegmentRow.chunk_idx, SegmentRow.idx)
        return list(s.scalars(query))
