"""Where the API's jobs run: the worker fleet, or this process (`murmur serve --embedded`).

Both check a request with `tasks.jobs.check`, as every door does, and write the
same job rows, so everything the API reads (status, progress, transcript) is
one set of queries over `runner.db`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.settings import Settings
from murmur.tasks import jobs
from murmur.workers.errors import Failure, MurmurError

log = logging.getLogger("murmur")


class Runner(Protocol):
    db: sessionmaker[Session]
    database_url: str
    on_end: Callable[[str], None]  # told of each job that ends, where the runner knows (any thread)
    on_release: Callable[[str], None]  # told when a job released more of its transcript, where the runner knows (any thread)

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int, request_key: str | None = None) -> str:
        """Create job `job_id` and start it; the id of the job (an earlier one's, for a `request_key` seen
        before). A MurmurError means it was refused (bad options; ServiceUnavailable: nothing answered),
        queries.TooManyJobs that the owner has `max_active` jobs queued or running."""

    def close(self) -> None: ...


class FleetRunner:
    """Jobs go to the Celery workers through the broker, as `murmur submit` sends them."""

    def __init__(self, settings: Settings) -> None:
        from murmur.tasks.fleet.client import Client

        self.settings = settings
        self.client = Client()
        self.db = self.client.db
        self.database_url = settings.fleet_database_url
        self.on_end: Callable[[str], None] = lambda job_id: None  # Postgres notifies the watcher itself
        self.on_release: Callable[[str], None] = lambda job_id: None  # and of each decoded chunk (migration 0011)

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int, request_key: str | None = None) -> str:
        submission = jobs.check(source, options, self.settings, callback_url, priority, public=True)
        return self.client.enqueue(submission, job_id, owner, max_active, request_key)

    def close(self) -> None:
        pass


class EmbeddedRunner:
    """Jobs run in this process one after another, on the embedded database (SQLite by default).

    For one machine with no broker; webhooks need the fleet and are refused.
    A job that was queued or running when the server stopped is failed at the
    next start, with that reason. With MURMUR_RETENTION, jobs that ended longer
    ago are pruned as the fleet's reconciler prunes them (every minute here, or
    sooner when the retention is shorter).
    """

    PRUNE_EVERY_SECONDS = 60

    def __init__(self, settings: Settings, device: str | None = None, compute_type: str | None = None,
                 threads: int = 0) -> None:
        from murmur.db.session import sessions, upgrade
        from murmur.tasks.context import Context

        url = settings.embedded_database_url
        upgrade(url)
        self.settings = settings
        self.db = sessions(url)
        self.database_url = url
        self.on_end: Callable[[str], None] = lambda job_id: None
        self.on_release: Callable[[str], None] = lambda job_id: None
        self.ctx = Context.from_settings(settings, self.db, device=device or settings.device,
                                         compute_type=compute_type or settings.compute_type, threads=threads)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="murmur-embedded")
        self._closed = threading.Event()
        for job_id in queries.unended_jobs(self.db):
            queries.fail_job(self.db, job_id, "interrupted: murmur serve stopped while the job was queued or running",
                             Failure.internal)
        if settings.retention:
            threading.Thread(target=self._prune, name="murmur-retention", daemon=True).start()

    def _prune(self) -> None:
        from murmur.tasks.outputs import retention

        while not self._closed.wait(min(self.PRUNE_EVERY_SECONDS, self.settings.retention)):
            try:
                removed = retention.prune(self.db, self.settings, timedelta(seconds=self.settings.retention))
                if removed:
                    log.info("pruned %d job(s) older than MURMUR_RETENTION", removed)
            except Exception:  # noqa: BLE001 - the database is busy or away: next round
                log.warning("pruning failed", exc_info=True)

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int, request_key: str | None = None) -> str:
        if callback_url:
            raise MurmurError("callback_url needs the worker fleet: murmur serve --embedded sends no webhooks")
        created = jobs.create(self.db, jobs.check(source, options, self.settings, None, priority, public=True), job_id,
                              owner, max_active, request_key)
        if created == job_id:
            self._pool.submit(self._run, job_id)
        return created

    def _run(self, job_id: str) -> None:
        from murmur.tasks.embedded.runner import run_job

        try:
            run_job(self.ctx, job_id, on_release=lambda segments: self.on_release(job_id))
        except MurmurError:
            pass  # the job is failed with its reason
        except Exception:  # noqa: BLE001 - the job is failed with it; the server goes on
            log.exception("job %s: internal error", job_id)
        finally:
            self.on_end(job_id)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
