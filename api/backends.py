"""Where the API's jobs run: the worker fleet, or this process (`murmur serve --embedded`).

Both write the same job rows, so everything the API reads (status, progress,
transcript) is one set of queries over `backend.db`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.settings import Settings
from murmur.workers.errors import MurmurError

log = logging.getLogger("murmur")


class Backend(Protocol):
    db: sessionmaker[Session]
    database_url: str
    on_end: Callable[[str], None]  # told of each job that ends, where the backend knows (any thread)

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int) -> None:
        """Create job `job_id` and start it; a MurmurError means it was refused (bad options),
        queries.TooManyJobs that the owner has `max_active` jobs queued or running."""

    def close(self) -> None: ...


class FleetBackend:
    """Jobs go to the Celery workers through the broker, as `murmur submit` sends them."""

    def __init__(self, settings: Settings) -> None:
        from murmur.tasks.client import Client

        self.settings = settings
        self.client = Client()
        self.db = self.client.db
        self.database_url = settings.fleet_database_url
        self.on_end: Callable[[str], None] = lambda job_id: None  # Postgres notifies the watcher itself

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int) -> None:
        from murmur.tasks.webhook import check_callback_url

        check_callback_url(callback_url)
        self.client.submit(source, callback_url=callback_url, priority=priority, job_id=job_id, owner=owner,
                           max_active=max_active, **options)

    def close(self) -> None:
        pass


class EmbeddedBackend:
    """Jobs run in this process one after another, on the embedded database (SQLite by default).

    For one machine with no broker; webhooks need the fleet and are refused.
    A job that was queued or running when the server stopped is failed at the
    next start, with that reason.
    """

    def __init__(self, settings: Settings, device: str | None = None, compute_type: str | None = None,
                 threads: int = 0) -> None:
        from murmur.db.session import sessions, upgrade
        from murmur.tasks import stages

        url = settings.embedded_database_url
        upgrade(url)
        self.settings = settings
        self.db = sessions(url)
        self.database_url = url
        self.on_end: Callable[[str], None] = lambda job_id: None
        self.ctx = stages.Context(db=self.db, device=device or settings.device,
                                  compute_type=compute_type or settings.compute_type, threads=threads,
                                  max_duration=settings.max_duration)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="murmur-embedded")
        for job_id in queries.unended_jobs(self.db):
            queries.fail_job(self.db, job_id, "interrupted: murmur serve stopped while the job was queued or running")

    def submit(self, job_id: str, source: str, options: dict, callback_url: str | None, priority: int | None,
               owner: str | None, max_active: int) -> None:
        if callback_url:
            raise MurmurError("callback_url needs the worker fleet: murmur serve --embedded sends no webhooks")
        job_options = self.settings.job_options(**options)
        queries.create_job(self.db, source, job_options.to_json(), job_id, None, priority, owner, max_active)
        self._pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        from murmur.tasks.embedded import run_job

        try:
            run_job(self.ctx, job_id)
        except MurmurError:
            pass  # the job is failed with its reason
        except Exception:  # noqa: BLE001 - the job is failed with it; the server goes on
            log.exception("job %s: internal error", job_id)
        finally:
            self.on_end(job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
