"""Migrations, the guarded state changes, leases, the reconciler and pruning, on SQLite and the real Postgres."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from murmur.db import queries
from murmur.db.models import Base, CallbackState, ChunkState, JobState
from murmur.db.session import engine_for, sessions, upgrade
from murmur.settings import Settings
from murmur.tasks.fleet.reconciler import Reconciler
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.errors import Failure, MurmurError
from murmur.workers.transcript import Segment, Word
from tests.conftest import fresh_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade(url)
    upgrade(url)  # idempotent
    with engine_for(url).begin() as conn:  # the Postgres database is shared by the session's tests: start empty
        for table in ("segments", "chunks", "jobs"):
            conn.execute(text(f"DELETE FROM {table}"))
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


def test_head_names_the_newest_migration_and_an_old_schema_is_caught(tmp_path):
    """`upgrade` skips Alembic for a database at HEAD, so HEAD must be Alembic's own head."""
    from alembic.script import ScriptDirectory

    from murmur.db.session import HEAD, _alembic_config, check_schema, current_revision

    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert ScriptDirectory.from_config(_alembic_config(url)).get_current_head() == HEAD
    assert current_revision(url) is None
    upgrade(url, "0004")
    with pytest.raises(MurmurError, match=f"revision 0004, not {HEAD}: run `murmur db upgrade`"):
        check_schema(url)
    upgrade(url)
    assert current_revision(url) == HEAD
    check_schema(url)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def test_jobs_failed_before_failures_were_recorded_get_their_class(kind, tmp_path):
    """Migration 0007 sorts the jobs that failed before it by their reason, once; from then on the
    code that fails a job names the class."""
    url = f"sqlite:///{tmp_path / 'before.db'}" if kind == "sqlite" else fresh_postgres("murmur_migration_test")
    upgrade(url, "0006")
    reasons = {"gave up after 3 tries (MURMUR_MAX_ATTEMPTS): its worker stopped": "gave_up",
               "a.flac is longer than the limit of 4 h (MURMUR_MAX_DURATION)": "limit",
               "/etc/x is outside MURMUR_ALLOWED_ROOTS (/data)": "forbidden", "no such file: /data/x.flac": "source",
               "not a readable audio file: notes.wav": "input", "cancelled": "cancelled",
               "internal error: RuntimeError: CUDA failed": "internal"}
    with engine_for(url).begin() as conn:
        for i, reason in enumerate(reasons):
            conn.execute(text("INSERT INTO jobs (id, status, source, options, chunks_done, prepare_seconds, detect_seconds, "
                              "decode_seconds, error, attempts, callback_attempts, created_at) VALUES (:id, 'failed', '/a', '{}', 0, 0, 0, 0, "
                              ":error, 0, 0, :now)"), {"id": f"{i:032x}", "error": reason, "now": datetime.now(timezone.utc)})
    upgrade(url)
    rows = [queries.get_job(sessions(url), f"{i:032x}") for i in range(len(reasons))]
    assert {row.error: row.failure for row in rows} == reasons


def test_a_chunk_is_stored_once_and_a_duplicate_decode_changes_nothing(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"})
    assert queries.claim_job(Session, job, "cpu-1", 30) is not None
    assert queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),), ((0.1, 4.9),)), Chunk(1, ((6.0, 9.0),))], 9.0, "cpu-1")
    assert queries.replace_segments(Session, job, 0, [_segment(0, "first"), _segment(1, "second")], "en")
    assert not queries.replace_segments(Session, job, 0, [_segment(0, "again")], "en")  # a redelivered decode
    assert queries.replace_segments(Session, job, 1, [_segment(0, "third", [Word(6.0, 6.5, " third", 0.9)], chunk_idx=1)], "en")
    segments = queries.get_segments(Session, job)
    assert [s.text for s in segments] == ["first", "second", "third"]
    assert segments[2].words == [Word(6.0, 6.5, " third", 0.9)] and segments[0].words is None
    row = queries.get_job(Session, job)
    assert row.chunks_done == 2 and row.n_chunks == 2
    chunks = queries.get_chunks(Session, job)
    assert [c.status for c in chunks] == [ChunkState.decoded, ChunkState.decoded]
    assert [c.speech for c in chunks] == [[[0.1, 4.9]], []]


def test_a_duplicate_prepare_never_plans_a_job_twice_nor_wipes_a_finished_one(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"}, callback_url="https://example.org/hook")
    assert queries.claim_job(Session, job, "cpu-1", 30) is not None
    assert queries.claim_job(Session, job, "cpu-2", 30) is None  # cpu-1's lease is live
    assert not queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),))], 5.0, "cpu-2")  # not its lease
    assert queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),))], 5.0, "cpu-1")
    assert queries.claim_job(Session, job, "cpu-2", 30) is None  # planned: a late duplicate does nothing
    assert queries.replace_segments(Session, job, 0, [_segment(0, "kept")], "en")
    assert queries.finish_job(Session, job) and not queries.finish_job(Session, job)
    assert queries.claim_job(Session, job, "cpu-3", 30) is None
    assert not queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),))], 5.0, "cpu-3")
    assert [s.text for s in queries.get_segments(Session, job)] == ["kept"]
    row = queries.get_job(Session, job)
    assert row.status is JobState.done and row.callback_state is CallbackState.pending


def test_chunk_leases_are_exclusive_while_renewed_and_free_once_lapsed(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"})
    queries.claim_job(Session, job, "cpu-1", 30)
    queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),)), Chunk(1, ((6.0, 9.0),))], 9.0, "cpu-1")
    assert queries.claim_chunks(Session, job, [0, 1], "gpu-1", 0.5) == [0, 1]
    assert queries.claim_chunks(Session, job, [0], "gpu-2", 30) == []  # gpu-1 holds it
    assert queries.claim_chunks(Session, job, [0], "gpu-1", 30) == [0]  # its own again (a redelivery)
    assert queries.renew_leases(Session, "gpu-1", 0.5, [], [(job, 0), (job, 1)]) == 2
    assert queries.renew_leases(Session, "gpu-2", 30, [], [(job, 0)]) == 0  # not its lease
    time.sleep(0.7)
    assert queries.claim_chunks(Session, job, [1], "gpu-2", 30) == [1]  # gpu-1 stopped renewing
    queries.replace_segments(Session, job, 1, [], None, "gpu-2")
    assert queries.claim_chunks(Session, job, [1], "gpu-1", 30) == []  # stored


def _reconciler(Session, **settings):
    return Reconciler(Session, Settings(**{"stall_timeout": 1, "max_attempts": 2, **settings}), lambda kind: 0)


def test_the_reconciler_re_drives_lost_work_and_fails_a_job_past_its_attempts(db):
    Session, _ = db
    lost = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=3)  # its message never came
    dying = queries.create_job(Session, "/audio.wav", {"model": "base"})  # its worker dies in prepare, every time
    planned = queries.create_job(Session, "/audio.wav", {"model": "base"})  # its decode messages were lost
    queries.claim_job(Session, planned, "cpu-1", 30)
    queries.save_chunks(Session, planned, [Chunk(0, ((0.0, 5.0),)), Chunk(1, ((6.0, 9.0),))], 9.0, "cpu-1")
    queries.set_language(Session, planned, "en", None, [])
    queries.replace_segments(Session, planned, 0, [], None, "gpu-1")
    reconciler = _reconciler(Session)
    assert reconciler.tick() == []  # nothing has stalled yet
    queries.claim_job(Session, dying, "cpu-1", 0.1)
    time.sleep(1.2)
    redrives = {(r.step, r.job_id): r for r in reconciler.tick()}
    assert set(redrives) == {("prepare", lost), ("prepare", dying), ("decode", planned)}
    assert redrives["prepare", lost].priority == 3 and redrives["decode", planned].chunks == (1,)
    assert reconciler.tick() == []  # each re-drive restarts the clock
    for attempt in (2, 3):
        queries.claim_job(Session, dying, f"cpu-{attempt}", 0.1)
        time.sleep(0.2)
        redrives = reconciler.tick()
    row = queries.get_job(Session, dying)
    assert row.status is JobState.failed and row.attempts == 2
    assert "gave up after 3 tries" in row.error and "cpu-3 stopped during prepare" in row.error and row.failure is Failure.gave_up
    assert queries.get_job(Session, lost).attempts == 1 and queries.get_job(Session, lost).status is JobState.queued


def test_the_reconciler_leaves_a_job_alone_while_its_queue_holds_work(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {"model": "base"})
    time.sleep(1.1)
    busy = Reconciler(Session, Settings(stall_timeout=1), lambda kind: 5)
    assert busy.tick() == []
    assert [r.step for r in _reconciler(Session).tick()] == ["prepare"]
    assert queries.get_job(Session, job).attempts == 1


def test_a_job_whose_message_was_overtaken_is_re_driven_though_its_queue_never_empties(db):
    """The CPU queue always holds messages. It has started one of priority 5 sent 20 s ago, and one of
    priority 9 (sent long ago) just now. A priority-5 job whose last step was a minute ago would have been
    started before either (lost: re-driven); a priority-0 job whose last step was 30 s ago, before the
    priority-9 one; a priority-5 job whose last step was 2 s ago, or a priority-9 job, waits its turn."""
    Session, _ = db
    now = datetime.now(timezone.utc)
    lost = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=5)
    urgent = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=0)
    recent = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=5)
    patient = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=9)
    for job, ago in ((lost, 60), (urgent, 30), (recent, 2), (patient, 60)):
        queries.update_job(Session, job, progress_at=now - timedelta(seconds=ago))

    def ago(seconds: float) -> float:
        return (now - timedelta(seconds=seconds)).timestamp()

    started = {("murmur.cpu", 5): (ago(20), ago(18)), ("murmur.cpu", 9): (ago(3600), ago(0)),
               ("murmur.gpu", 9): (ago(0), ago(0))}
    busy = Reconciler(Session, Settings(stall_timeout=1), lambda queue: 40, lambda: started)
    assert sorted((r.step, r.job_id) for r in busy.tick()) == sorted([("prepare", lost), ("prepare", urgent)])
    assert busy.tick() == []  # the re-drive is their new last step


def test_handing_a_queued_job_to_prepare_makes_its_send_its_last_step(db):
    """`murmur.transcribe` sends the prepare message to the back of the queue, however long the job's
    first message waited: from then on a newer message started before it no longer means it was lost."""
    Session, _ = db
    now = datetime.now(timezone.utc)
    waited = queries.create_job(Session, "/audio.wav", {"model": "base"}, priority=9)
    queries.update_job(Session, waited, progress_at=now - timedelta(seconds=60))
    started = {("murmur.cpu", 9): (now.timestamp() - 30, now.timestamp())}  # a newer message started
    busy = Reconciler(Session, Settings(stall_timeout=1), lambda queue: 40, lambda: started)
    assert queries.hand_to_prepare(Session, waited).id == waited
    assert busy.tick() == []
    queries.claim_job(Session, waited, "cpu-1", 30)
    assert queries.hand_to_prepare(Session, waited) is None  # running: a duplicate transcribe sends nothing


def test_prune_deletes_only_jobs_that_ended_long_ago(db):
    Session, _ = db
    old, recent, running = (queries.create_job(Session, "/audio.wav", {}) for _ in range(3))
    for job in (old, recent):
        queries.claim_job(Session, job, "cpu-1", 30)
        queries.save_chunks(Session, job, [Chunk(0, ((0.0, 5.0),))], 5.0, "cpu-1")
        queries.replace_segments(Session, job, 0, [_segment(0, "x")], "en")
        queries.finish_job(Session, job)
    queries.update_job(Session, old, finished_at=datetime.now(timezone.utc) - timedelta(days=31))
    assert queries.prune(Session, timedelta(days=30)) == [(old, "/audio.wav")]
    assert queries.get_job(Session, old) is None and queries.get_segments(Session, old) == []
    assert queries.get_chunks(Session, old) == []
    assert queries.get_job(Session, recent) is not None and queries.get_job(Session, running) is not None


def test_states_are_enums_that_read_back_as_enums(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {})
    assert queries.get_job(Session, job).status is JobState.queued
    assert queries.fail_job(Session, job, "broken", Failure.input) and not queries.fail_job(Session, job, "again", Failure.internal)
    row = queries.get_job(Session, job)
    assert row.status is JobState.failed and row.error == "broken" and row.failure is Failure.input


def test_segment_position_is_unique(db):
    Session, _ = db
    job = queries.create_job(Session, "/audio.wav", {})
    with pytest.raises(IntegrityError):
        with Session.begin() as s:
            for text in ("a", "b"):
                segment = _segment(0, text)
                segment.job_id = job
                s.add(segment)


def test_a_keys_job_limit_holds_when_its_submits_race(db):
    """Eight submits of one key at once, its limit 1, five rounds: exactly one is admitted each round
    (the count and the insert were two steps that two submits could interleave: 2 admitted on SQLite)."""
    import threading

    Session, _ = db
    for round_ in range(5):
        owner = f"{round_:032x}"
        start, admitted, refused = threading.Barrier(8), [], []

        def submit() -> None:
            start.wait()
            try:
                admitted.append(queries.create_job(Session, "/audio.wav", {}, owner=owner, max_active=1))
            except queries.TooManyJobs:
                refused.append(1)

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (len(admitted), len(refused)) == (1, 7), round_
