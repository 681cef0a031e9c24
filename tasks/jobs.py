"""Submitting a job: its request checked once and its row created, whichever door it came through.

The `Client` (`murmur submit`, the API over the fleet), the `murmur.transcribe`
task a raw Celery producer sends, `murmur serve --embedded` and the embedded
runner (`murmur transcribe`) all check a request with `check` and record it
with `create`: one set of rules, and one reason for each refusal.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from murmur.db import queries
from murmur.db.models import new_job_id
from murmur.settings import Settings
from murmur.tasks.outputs.webhook import check_callback_url
from murmur.workers.cpu.sources import check_source
from murmur.workers.errors import MurmurError, failure_of
from murmur.workers.options import JobOptions

MAX_PRIORITY = 9  # a job's priority: 0, the default, is the most urgent


@dataclass(frozen=True)
class Submission:
    """A request that passed `check`: what a job row is made from."""

    source: str
    options: JobOptions
    callback_url: str | None = None
    priority: int | None = None


def check(source: str, options: Mapping, settings: Settings, callback_url: str | None = None,
          priority: int | None = None, public: bool = False) -> Submission:
    """The request as a `Submission`, or MurmurError with the reason it is refused.

    Options not given take the settings' defaults (MURMUR_MODEL, MURMUR_BATCH_SIZE);
    the source must be an absolute path inside MURMUR_ALLOWED_ROOTS, or an object
    in the buckets MURMUR_S3_ALLOW lists. `public`: the request came through the
    HTTP API, where an unset MURMUR_S3_ALLOW opens no bucket (a trusted producer's
    may name any).
    """
    check_callback_url(callback_url)
    job_options = settings.job_options(**options)
    for where in (source, *job_options.known_speaker_references):  # a reference clip is read as the source is
        check_source(where, settings.allowed_roots, settings.s3_allow if not public else settings.s3_allow or ())
    check_priority(priority)
    return Submission(source, job_options, callback_url, priority)


def check_priority(priority) -> None:
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)
                                 or not 0 <= priority <= MAX_PRIORITY):
        raise MurmurError(f"invalid priority {priority!r}: use 0 (most urgent) to {MAX_PRIORITY}")


def create(db: sessionmaker[Session], submission: Submission, job_id: str | None = None, owner: str | None = None,
           max_active: int | None = None, request_key: str | None = None) -> str:
    """The queued job's row; its id. With `job_id`, creating it again is a no-op (a redelivered submit),
    and with the `request_key` of an earlier job, that job's id comes back (a request sent again).
    `owner` is the API key's id, `max_active` its limit of jobs queued or running (queries.TooManyJobs)."""
    return queries.create_job(db, submission.source, submission.options.to_json(), job_id or new_job_id(),
                              submission.callback_url, submission.priority, owner, max_active, request_key)


def refuse(db: sessionmaker[Session], job_id: str, source, options: Mapping, callback_url, priority,
           error: Exception) -> bool:
    """Record a request `check` refused as a job failed with the reason, for a producer that reads
    it from the row (a raw Celery client); True when the job's webhook is due."""
    hook = callback_url
    try:
        check_callback_url(callback_url)
    except MurmurError:
        hook = None  # a URL that is itself refused is never called
    # the record keeps what was sent, in a form the database takes
    queries.create_job(db, str(source).replace("\x00", "\\x00"), dict(options), job_id, hook,
                       priority if isinstance(priority, int) and not isinstance(priority, bool) else None)
    reason, failure = failure_of(error)
    return queries.fail_job(db, job_id, reason, failure) and hook is not None


def job_id_of(task_id: str | None) -> str:
    """The job id is its submit's Celery task id (as hex): a redelivered submit finds its own job."""
    try:
        return uuid.UUID(task_id).hex
    except (TypeError, ValueError):
        return new_job_id()


def task_id_of(job_id: str) -> str:
    """The Celery task id of a job's submit (see `job_id_of`)."""
    return str(uuid.UUID(job_id))
