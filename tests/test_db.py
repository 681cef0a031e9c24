"""Migrations and the replace-never-append rule on SQLite and the real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from db import queries
from db.models import SegmentRow
from db.session import engine_for, sessions, upgrade


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url)
    upgrade(url)  # idempotent
    return sessions(url), url


def _segment(idx, text):
    return {"idx": idx, "start": 0.0, "end": 1.0, "text": text, "language": "en", "avg_logprob": -0.1,
            "no_speech_prob": 0.01, "compression_ratio": 1.1, "words": None}


def test_migration_creates_the_three_tables(db):
    _, url = db
    tables = set(inspect(engine_for(url)).get_table_names())
    assert {"jobs", "chunks", "segments", "alembic_version"} <= tables


def test_redecoded_chunk_replaces_its_segments(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"})
    queries.save_chunks(Session, job, [{"idx": 0, "spans": [[0.0, 5.0]]}, {"idx": 1, "spans": [[6.0, 9.0]]}], 9.0)
    queries.replace_segments(Session, job, 0, [_segment(0, "first"), _segment(1, "second")], "en")
    queries.replace_segments(Session, job, 0, [_segment(0, "again")], "en")  # a redelivered decode
    queries.replace_segments(Session, job, 1, [_segment(0, "third")], "en")
    texts = [s.text for s in queries.get_segments(Session, job)]
    assert texts == ["again", "third"]
    row = queries.get_job(Session, job)
    assert row.chunks_done == 2 and row.n_chunks == 2


def test_segment_position_is_unique(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {})
    with pytest.raises(IntegrityError):
        with Session.begin() as s:
            s.add(SegmentRow(job_id=job, chunk_idx=0, **_segment(0, "a")))
            s.add(SegmentRow(job_id=job, chunk_idx=0, **_segment(0, "b")))
