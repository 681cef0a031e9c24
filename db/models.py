"""Tables: jobs, chunks, and segments stored as `Segment` objects themselves.

A segment is unique on (job_id, chunk_idx, idx): a chunk's segments are
replaced as a whole, so decoding a chunk twice never duplicates text. The
`segments` columns are derived from the fields of `workers.transcript.Segment`,
so a segment's fields are written down once; the migrations are the history of
the schema, and a test checks that they arrive at exactly these tables.
"""

from __future__ import annotations

import types
import uuid
from dataclasses import fields
from datetime import datetime, timezone
from enum import StrEnum
from typing import Union, get_args, get_origin, get_type_hints

from sqlalchemy import (JSON, Column, DateTime, Enum, Float, ForeignKey, Index, Integer, LargeBinary, String, Table, Text,
                        TypeDecorator, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from murmur.workers.errors import Failure
from murmur.workers.options import JobOptions
from murmur.workers.transcript import Segment, Word


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


ENDED = (JobState.done, JobState.failed)
UNENDED = (JobState.queued, JobState.running)  # spelled out, not "not ENDED": the partial indexes match it


class ChunkState(StrEnum):
    pending = "pending"
    decoded = "decoded"


class CallbackState(StrEnum):
    """A job's webhook, once the job has ended: to send, sent, or given up on."""

    pending = "pending"
    sent = "sent"
    failed = "failed"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _state(enum: type[StrEnum]) -> Enum:
    """A state column: VARCHAR in the database, the enum in Python."""
    return Enum(enum, native_enum=False, create_constraint=False, length=16, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


def _where(condition: str) -> dict:
    """A partial index's condition, on both databases."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


class Job(Base):
    __tablename__ = "jobs"
    # Indexes sized to what the fleet asks on every tick (the reconciler, the exporter, the autoscaler,
    # the API's pages), which a year of ended jobs must not slow down (migration 0009, bench/bench_records.py)
    __table_args__ = (
        Index("uq_jobs_request_key", "request_key", unique=True),
        Index("ix_jobs_unended", "owner", "created_at", **_where("status IN ('queued', 'running')")),
        Index("ix_jobs_ended", "finished_at", **_where("status IN ('done', 'failed')")),
        Index("ix_jobs_hooks_due", "progress_at", **_where("callback_state = 'pending'")),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    status: Mapped[JobState] = mapped_column(_state(JobState), default=JobState.queued, index=True)
    source: Mapped[str] = mapped_column(Text)
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # JobOptions.to_json(); raw kwargs on a job failed for them
    language: Mapped[str | None] = mapped_column(String(16))
    language_probability: Mapped[float | None] = mapped_column(Float)
    spoken_languages: Mapped[list | None] = mapped_column(JSON)  # multilingual mode: the file's languages
    duration: Mapped[float | None] = mapped_column(Float)
    n_chunks: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    prepare_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # wall time per stage, summed
    detect_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    decode_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[Failure | None] = mapped_column(_state(Failure))  # a failed job's class of failure
    callback_url: Mapped[str | None] = mapped_column(Text)  # POSTed once when the job ends
    priority: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(32))  # the id of the API key it belongs to; None: any
    # "<owner>:<Idempotency-Key>" of the request that created it: a retried request finds this job
    request_key: Mapped[str | None] = mapped_column(String(300))
    # Postgres is the record: the reconciler re-drives a job from these when its messages are lost
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # re-drives of prepare, detection or assembly
    progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the last step forward
    lease_worker: Mapped[str | None] = mapped_column(String(255))  # the lease holder that prepares or detects it now …
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # … while they live
    callback_state: Mapped[CallbackState | None] = mapped_column(_state(CallbackState))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def job_options(self) -> JobOptions:
        return JobOptions.from_json(self.options)


class ApiKey(Base):
    """A key of the HTTP API: only its SHA-256 is kept, so a stolen database yields no usable key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    max_jobs: Mapped[int | None] = mapped_column(Integer)  # queued or running at once; None: MURMUR_API_MAX_JOBS
    # signs the webhooks of this key's jobs, so no other tenant can forge them (shown once; None: MURMUR_CALLBACK_SECRET)
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    top_priority: Mapped[int | None] = mapped_column(Integer)  # the most urgent priority it may ask (0-9); None: 0
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChunkRow(Base):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_pending", "job_id", **_where("status = 'pending'")),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    spans: Mapped[list] = mapped_column(JSON)  # the chunk's source spans, as workers.cpu.chunking.Chunk has them
    speech: Mapped[list | None] = mapped_column(JSON)  # where the VAD hears speech inside them (Chunk.speech)
    language: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[ChunkState] = mapped_column(_state(ChunkState), default=ChunkState.pending)
    worker: Mapped[str | None] = mapped_column(String(255))  # the worker whose decode was stored
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # re-drives after its decode was lost
    lease_worker: Mapped[str | None] = mapped_column(String(255))  # the worker that holds its decode message
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Voiceprint(Base):
    """A diarized job's voices: prepare stores the prints of its speech, assembly the turns it made of them."""

    __tablename__ = "voiceprints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    prints: Mapped[bytes] = mapped_column(LargeBinary)  # workers.cpu.speakers.Voiceprints.to_bytes()
    turns: Mapped[list | None] = mapped_column(JSON)  # [[start, end, speaker], ...] in time order, set at assembly


class JobTotal(Base):
    """A running total over the jobs that ended (audio done, failures by class, stage seconds, re-drives),
    kept by a Postgres trigger as they end (migration 0009): the exporter reads a few rows, never all jobs."""

    __tablename__ = "job_totals"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class StageBucket(Base):
    """How many jobs done took a stage up to `le` seconds: the exporter's histogram, kept as JobTotal is."""

    __tablename__ = "stage_buckets"

    stage: Mapped[str] = mapped_column(String(16), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class _Words(TypeDecorator):
    """A segment's words as a JSON list of objects."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[Word] | None, dialect) -> list[dict] | None:
        return None if value is None else [w.to_json() for w in value]

    def process_result_value(self, value: list[dict] | None, dialect) -> list[Word] | None:
        return None if value is None else [Word(**w) for w in value]


_SQL_TYPES = {int: Integer, float: Float, list: _Words}


def _columns(record: type) -> list[Column]:
    """One column per dataclass field; `X | None` is nullable, a str with `max_length` a VARCHAR."""
    hints = get_type_hints(record)
    columns = []
    for f in fields(record):
        if not f.metadata.get("stored", True):
            continue
        hint = hints[f.name]
        nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
        base = next(a for a in get_args(hint) if a is not type(None)) if nullable else hint
        base = get_origin(base) or base
        if base is str:
            sql_type = String(f.metadata["max_length"]) if "max_length" in f.metadata else Text()
        else:
            sql_type = _SQL_TYPES[base]()
        columns.append(Column(f.name, sql_type, nullable=nullable))
    return columns


segments = Table(
    "segments",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    *_columns(Segment),
    UniqueConstraint("job_id", "chunk_idx", "idx", name="uq_segment_position"),
)
Base.registry.map_imperatively(Segment, segments)
