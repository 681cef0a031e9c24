"""The producer's side: submit a file, follow its job, fetch the transcript.

    from murmur import Client
    client = Client()
    job_id = client.submit("/data/talk.mp3", language="en")
    client.wait(job_id)
    print(client.result(job_id).text)

Other apps need none of this: `murmur.transcribe` with JSON kwargs on the
`murmur.cpu` queue is the contract (see README). Importing this module loads
Celery and SQLAlchemy, never torch, CTranslate2 or the VAD.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from murmur.db import queries
from murmur.db.models import JobState, new_job_id
from murmur.db.session import sessions
from murmur.settings import get_settings
from murmur.tasks import jobs
from murmur.tasks.fleet import deliveries
from murmur.tasks.fleet.queues import QUEUE_OF_STEP, message_priority
from murmur.tasks.outputs.webhook import redact
from murmur.workers.errors import MurmurError, ServiceUnavailable
from murmur.workers.transcript import Segment, Transcript


class JobFailed(MurmurError):
    """The job ended failed; the message is its reason."""

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(error or "the job failed")
        self.job_id = job_id


@dataclass(frozen=True)
class JobStatus:
    """A job's state and progress as a producer sees it."""

    job_id: str
    status: JobState
    chunks_done: int
    n_chunks: int | None
    language: str | None
    duration: float | None
    error: str | None
    failure: str | None  # a failed job's class of failure (workers.errors.Failure)
    prepare_seconds: float
    detect_seconds: float
    decode_seconds: float
    created_at: datetime | None
    finished_at: datetime | None

    @property
    def compute_seconds(self) -> float:
        return self.prepare_seconds + self.detect_seconds + self.decode_seconds


class Client:
    def __init__(self, broker_url: str | None = None, database_url: str | None = None, app: Celery | None = None) -> None:
        self.app = app or _app(broker_url)
        self.db = sessions(database_url or get_settings().fleet_database_url)

    def submit(self, source: str, *, callback_url: str | None = None, priority: int | None = None, **options) -> str:
        """Queue a transcription and return its job id at once; MurmurError says why a request is refused."""
        if "://" not in source:
            source = os.path.abspath(source)  # workers do not share our working directory
        return self.enqueue(jobs.check(source, options, get_settings(), callback_url, priority))

    def enqueue(self, submission: jobs.Submission, job_id: str | None = None, owner: str | None = None,
                max_active: int | None = None, request_key: str | None = None) -> str:
        """Queue a checked request (`jobs.check`); its job id.

        The job row exists (queued) before the message is sent, so `status`
        knows the job even while no worker has picked it up yet; should the
        broker not take the message, the row goes again and ServiceUnavailable
        says so (nothing was submitted: a retry makes no duplicate). `job_id`
        (32 hex digits) lets a caller name the job before it exists, as the
        HTTP API does for its upload's file name; `owner` is the API key's id,
        `max_active` its limit of jobs queued or running (db.queries.TooManyJobs);
        `request_key` finds the job an earlier, identical request made.
        """
        job_id = job_id or new_job_id()
        created = jobs.create(self.db, submission, job_id, owner, max_active, request_key)
        if created != job_id:
            return created  # the same request, sent before: its job is queued already
        kwargs = {"source": submission.source, **submission.options.to_json(), "callback_url": submission.callback_url,
                  "priority": submission.priority}
        try:
            # the job id is known here: nobody waits on Celery's result, so none is subscribed to or stored.
            # What Flower and the task events show has the webhook URL without its query (tokens live there).
            self.app.send_task("murmur.transcribe", kwargs=kwargs, task_id=jobs.task_id_of(job_id),
                               queue=QUEUE_OF_STEP["transcribe"], ignore_result=True,
                               priority=message_priority(self.app.conf.broker_url, submission.priority),
                               headers=deliveries.headers(submission.priority),
                               kwargsrepr=repr({**kwargs, "callback_url": redact(submission.callback_url)
                                                if submission.callback_url else None}))
        except (BrokerError, OSError) as exc:
            queries.forget_job(self.db, job_id)
            raise ServiceUnavailable(f"the broker did not answer ({type(exc).__name__}): nothing was submitted, "
                                     "try again") from None
        return job_id

    def status(self, job_id: str) -> JobStatus:
        job = queries.get_job(self.db, job_id)
        if job is None:
            raise MurmurError(f"no job {job_id}")
        return JobStatus(job.id, job.status, job.chunks_done, job.n_chunks, job.language, job.duration, job.error,
                         job.failure, job.prepare_seconds, job.detect_seconds, job.decode_seconds, job.created_at, job.finished_at)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        poll_seconds: float = 0.02,
    ) -> JobStatus:
        """Block until the job ends; raises JobFailed with its reason, TimeoutError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if on_progress and status.n_chunks is not None:
                on_progress(status.chunks_done, status.n_chunks)
            if status.status == JobState.failed:
                raise JobFailed(job_id, status.error)
            if status.status == JobState.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {status.status} after {timeout} s")
            time.sleep(poll_seconds)

    def stream(self, job_id: str, timeout: float | None = None, poll_seconds: float = 0.1) -> Iterator[Segment | Transcript]:
        """The job's segments in source order as soon as every earlier chunk is decoded, then the whole
        transcript once it is done; raises JobFailed where the job failed. A diarized job's segments come
        when it is done, with their speakers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        released = 0
        while True:
            status = self.status(job_id)
            if status.status == JobState.failed:
                raise JobFailed(job_id, status.error)
            segments, released = queries.released_segments(self.db, job_id, released)
            yield from segments
            if status.status == JobState.done:
                yield queries.get_transcript(self.db, job_id)
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {status.status} after {timeout} s")
            time.sleep(poll_seconds)

    def result(self, job_id: str) -> Transcript:
        status = self.status(job_id)
        if status.status == JobState.failed:
            raise JobFailed(job_id, status.error)
        if status.status != JobState.done:
            raise MurmurError(f"job {job_id} is {status.status} ({status.chunks_done}/{status.n_chunks or '?'} chunks): no result yet")
        return queries.get_transcript(self.db, job_id)


def _app(broker_url: str | None) -> Celery:
    """The process's app, or one of its own for another broker."""
    from murmur.tasks.fleet.app import app, create_app

    return create_app(broker_url) if broker_url else app
