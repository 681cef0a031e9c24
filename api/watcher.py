"""Waiting for jobs to end without spending the CPU the workers need.

A request waits on a future; the watcher resolves it when it hears that the
job ended. On Postgres it hears it from a trigger (`LISTEN murmur_job_ended`,
migration 0005): every way a job ends (assembled, failed, cancelled,
given up by the reconciler) updates its status, and the notification comes
with the commit and names the state (migration 0006), so the request is
answered with no query at all. The embedded runner tells it directly, without
the state: then one query asks. Either way a slow poll (SAFETY_POLL_SECONDS)
catches what a dropped connection missed. On Postgres a second trigger (migration
0011) announces each decoded chunk, and the embedded runner tells of each release
itself, so an event stream that follows a job (`following`) reads its newly
released segments at once. Polling alone cost the server
~0.24 s of CPU per request on a 2-core machine (a query every 20 ms while
anyone waited), taken from the decoders. A job that ends before its request
starts to wait is remembered (the last RECENT of them), so a burst of new
requests costs no query each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import make_url
from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.db.models import ENDED, JobState

log = logging.getLogger("murmur")
CHANNEL = "murmur_job_ended"
DECODED_CHANNEL = "murmur_chunk_decoded"  # the payload is the job's id
SAFETY_POLL_SECONDS = 1.0
RECENT = 4096


class JobWatcher:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self.db = db
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._recent: dict[str, JobState | None] = {}  # jobs heard to have ended (with the state, if told), oldest first
        self._followers: dict[str, list[asyncio.Event]] = {}  # per job, one event per stream that follows it
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, database_url: str | None) -> None:
        """Begin polling, and listening when the database is Postgres."""
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._poll()))
        if database_url and make_url(database_url).drivername.startswith("postgresql"):
            self._tasks.append(asyncio.create_task(self._listen(database_url)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def ended(self, job_id: str) -> None:
        """A job ended: check it now. Safe from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._heard, job_id)

    def released(self, job_id: str) -> None:
        """A job released more of its transcript (the embedded runner says so): its streams read it now.
        Safe from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._news, job_id)

    @contextmanager
    def following(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job has news: more of it released (heard on Postgres, or told by the
        embedded runner) or its end.
        Clear it before reading the job, and news that comes before the next wait is not missed."""
        news = asyncio.Event()
        self._followers.setdefault(job_id, []).append(news)
        try:
            yield news
        finally:
            followers = self._followers.get(job_id, [])
            followers.remove(news)
            if not followers:
                self._followers.pop(job_id, None)

    def _news(self, job_id: str) -> None:
        for news in self._followers.get(job_id, ()):
            news.set()

    def _heard(self, job_id: str, state: JobState | None = None) -> None:
        self._news(job_id)
        self._recent[job_id] = state
        if len(self._recent) > RECENT:
            del self._recent[next(iter(self._recent))]
        if state is not None:
            self._settle(job_id, state)
        elif job_id in self._waiting:
            self._wake.set()

    def _settle(self, job_id: str, state: JobState) -> None:
        for future in self._waiting.get(job_id, []):
            if not future.done():
                future.set_result(state)

    async def wait(self, job_id: str) -> JobState:
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        if job_id in self._recent:  # it ended before we started to wait
            if self._recent[job_id] is not None:
                future.set_result(self._recent[job_id])
            else:
                self._wake.set()
        try:
            return await future
        finally:
            waiters = self._waiting.get(job_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiting.pop(job_id, None)

    async def _poll(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), SAFETY_POLL_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._waiting:
                continue
            asked = list(self._waiting)  # a request that starts waiting during the query is asked next time
            try:
                states = await asyncio.get_running_loop().run_in_executor(None, queries.job_states, self.db, asked)
            except Exception as exc:  # noqa: BLE001 - the database is away: keep waiting, as the workers do
                log.warning("waiting on jobs: %s", exc)
                continue
            for job_id in asked:
                state = states.get(job_id, JobState.failed)  # deleted meanwhile
                if state in ENDED:
                    self._settle(job_id, state)

    async def _listen(self, database_url: str) -> None:
        import psycopg

        conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {DECODED_CHANNEL}")
                    self._wake.set()  # anything that ended while we were not listening
                    async for notice in conn.notifies():
                        if notice.channel == DECODED_CHANNEL:
                            self._news(notice.payload)
                            continue
                        job_id, _, state = notice.payload.partition(" ")
                        self._heard(job_id, JobState(state) if state in ENDED else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the safety poll covers the gap; try again
                log.warning("listening for ended jobs: %s; polling every %.0f s meanwhile", exc, SAFETY_POLL_SECONDS)
                await asyncio.sleep(5)
