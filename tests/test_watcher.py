"""How `murmur serve` hears that a job ended or released more of its transcript: Postgres's notifications on a
real database, or the embedded runner's word."""

from __future__ import annotations

import asyncio
import threading

import pytest

from murmur.api import watcher as watcher_module
from murmur.api.runners import EmbeddedRunner
from murmur.api.watcher import JobWatcher
from murmur.db import queries
from murmur.db.models import JobState, new_job_id
from murmur.db.session import sessions, upgrade
from murmur.settings import Settings
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.errors import Failure
from murmur.workers.transcript import Segment
from tests.conftest import DATA, fresh_postgres

pytestmark = pytest.mark.services


@pytest.fixture()
def counted(monkeypatch):
    """A fresh Postgres database at the newest schema, and the job-state questions the watcher puts to it."""
    url = fresh_postgres("murmur_watcher_test")
    upgrade(url)
    asked: list[list[str]] = []
    real = queries.job_states
    monkeypatch.setattr(queries, "job_states", lambda db, ids: asked.append(sorted(ids)) or real(db, ids))
    monkeypatch.setattr(watcher_module, "SAFETY_POLL_SECONDS", 60.0)  # only what the test does is asked
    return url, sessions(url), asked


def test_a_job_that_ends_answers_its_waiting_request_with_no_query(counted):
    url, db, asked = counted
    done, failed, early = (queries.create_job(db, f"/audio/{n}.wav", {"model": "base"}) for n in range(3))

    async def scenario() -> tuple[JobState, JobState, JobState]:
        watcher = JobWatcher(db)
        await watcher.start(url)
        try:
            await asyncio.sleep(0.5)  # listening
            queries.update_job(db, early, status=JobState.done)
            await asyncio.sleep(0.5)  # heard before anyone waits on it
            waits = [asyncio.create_task(watcher.wait(job)) for job in (done, failed)]
            await asyncio.sleep(0.1)
            queries.update_job(db, done, status=JobState.done)
            queries.fail_job(db, failed, "unreadable audio", Failure.input)
            states = await asyncio.wait_for(asyncio.gather(*waits), 10)
            return (*states, await asyncio.wait_for(watcher.wait(early), 10))
        finally:
            await watcher.stop()

    assert asyncio.run(scenario()) == (JobState.done, JobState.failed, JobState.done)
    assert asked == []  # each state came with its notification


def test_an_end_told_without_its_state_is_asked_once(counted):
    url, db, asked = counted
    job = queries.create_job(db, "/audio/0.wav", {"model": "base"})

    async def scenario() -> JobState:
        watcher = JobWatcher(db)
        await watcher.start(None)  # not listening: as the embedded backend, which tells the watcher itself
        try:
            waiting = asyncio.create_task(watcher.wait(job))
            await asyncio.sleep(0.1)
            queries.update_job(db, job, status=JobState.done)
            watcher.ended(job)
            return await asyncio.wait_for(waiting, 10)
        finally:
            await watcher.stop()

    assert asyncio.run(scenario()) == JobState.done
    assert asked == [[job]]



def test_a_stream_following_a_job_hears_each_decoded_chunk_and_its_end(counted):
    url, db, asked = counted
    job = queries.create_job(db, "/audio/0.wav", {"model": "base"})
    assert queries.claim_job(db, job, "w", 60) is not None
    plan = [Chunk(idx=i, spans=((30.0 * i, 30.0 * i + 20),), speech=((30.0 * i, 30.0 * i + 20),)) for i in range(2)]
    assert queries.save_chunks(db, job, plan, 60.0, "w")
    segment = Segment(chunk_idx=1, idx=0, start=30.0, end=32.0, text=" hello", language="en", avg_logprob=-0.1,
                      no_speech_prob=0.01, compression_ratio=1.1)

    async def heard(news: asyncio.Event) -> bool:
        try:
            await asyncio.wait_for(news.wait(), 5)  # only the watcher sets it, on news: no poll does
            return True
        except TimeoutError:
            return False

    async def scenario() -> list[bool]:
        watcher = JobWatcher(db)
        await watcher.start(url)
        try:
            await asyncio.sleep(0.5)  # listening
            with watcher.following(job) as news:
                queries.update_job(db, job, progress_at=None)  # a change that is not a decoded chunk
                seen = [await heard(news)]
                queries.replace_segments(db, job, 1, [segment], "en", "w")
                seen.append(await heard(news))
                news.clear()
                queries.update_job(db, job, status=JobState.done)
                seen.append(await heard(news))
            return seen
        finally:
            await watcher.stop()

    assert asyncio.run(scenario()) == [False, True, True]
    assert asked == []  # the decoded chunk and the end came with their notifications


def test_a_release_told_from_another_thread_wakes_that_jobs_streams_alone():
    async def scenario() -> tuple[bool, bool]:
        watcher = JobWatcher(None)
        await watcher.start(None)
        try:
            with watcher.following("a") as a, watcher.following("b") as b:
                threading.Thread(target=watcher.released, args=("a",)).start()
                await asyncio.wait_for(a.wait(), 5)
                await asyncio.sleep(0.1)
                return a.is_set(), b.is_set()
        finally:
            await watcher.stop()

    assert asyncio.run(scenario()) == (True, False)


@pytest.mark.weights
def test_the_embedded_runner_tells_of_each_release_before_the_job_ends(tmp_path):
    """`murmur serve --embedded` has no Postgres to announce decoded chunks: its runner says so itself."""
    runner = EmbeddedRunner(Settings(database_url=f"sqlite:///{tmp_path / 'murmur.db'}"), device="cpu", compute_type="int8")
    heard, ended = [], threading.Event()
    runner.on_release = lambda job_id: heard.append((job_id, ended.is_set()))
    runner.on_end = lambda job_id: ended.set()
    try:
        job_id = runner.submit(new_job_id(), str(DATA / "jfk_inaugural_1961.flac"), {"language": "en"}, None, None, None, 10)
        assert ended.wait(120)
    finally:
        runner.close()
    assert queries.get_job(runner.db, job_id).status == JobState.done
    assert heard and heard == [(job_id, False)] * len(heard)
