"""Migrations and the replace-never-append rule on SQLite and the real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from murmur.db import queries
from murmur.db.models import Base, ChunkState, JobState
from murmur.db.session import engine_for, sessions, upgrade
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.transcript import Segment, Word


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url)
    upgrade(url)  # idempotent
    return sessions(url), url


def _segment(idx, text, words=None, chunk_idx=0):
    return Segment(chunk_idx=chunk_idx, idx=idx, start=0.0, end=1.0, text=text, language="en", avg_logprob=-0.1,
                   no_speech_prob=0.01, compression_ratio=1.1, words=words)


def test_migrations_arrive_at_exactly_the_models(db):
    """The tables the migrations build are the ones the models (and Segment's fields) define."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    _, url = db
    with engine_for(url).connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert differences == []
    assert {"jobs", "chunks", "segments", "alembic_version"} <= set(inspect(engine_for(url)).get_table_names())


def test_redecoded_chunk_replaces_its_segments(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"})
    queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),), ((0.1, 4.9),)), Chunk(1, ((6.0, 9.0),))], 9.0)
    queries.replace_segments(Session, job, 0, [_segment(0, "first"), _segment(1, "second")], "en")
    queries.replace_segments(Session, job, 0, [_segment(0, "again")], "en")  # a redelivered decode
    queries.replace_segments(Session, job, 1, [_segment(0, "third", [Word(6.0, 6.5, " third", 0.9)], chunk_idx=1)], "en")
    segments = queries.get_segments(Session, job)
    assert [s.text for s in segments] == ["again", "third"]
    assert segments[1].words == [Word(6.0, 6.5, " third", 0.9)] and segments[0].words is None
    row = queries.get_job(Session, job)
    assert row.chunks_done == 2 and row.n_chunks == 2
    chunks = queries.get_chunks(Session, job)
    assert [c.status for c in chunks] == [ChunkState.decoded, ChunkState.decoded]
    assert [c.speech for c in chunks] == [[[0.1, 4.9]], []]


def test_states_are_enums_that_read_back_as_enums(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {})
    assert queries.get_job(Session, job).status is JobState.queued
    assert queries.fail_job(Session, job, "broken") and not queries.fail_job(Session, job, "again")
    row = queries.get_job(Session, job)
    assert row.status is JobState.failed and row.error == "broken"


def test_segment_position_is_unique(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {})
    with pytest.raises(IntegrityError):
        with Session.begin() as s:
            for text in ("a", "b"):
                segment = _segment(0, text)
                segment.job_id = job
                s.add(segment)
