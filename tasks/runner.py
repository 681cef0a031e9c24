"""The embedded runner: one process, no broker, the same stages as the workers."""

from __future__ import annotations

from collections.abc import Callable

from db import queries
from db.session import sessions, upgrade
from tasks import pipeline
from tasks.formats import Transcript
from tasks.options import JobOptions
from workers.errors import MurmurError


def transcribe(
    source: str,
    options: JobOptions,
    database_url: str | None = None,
    ctx: pipeline.Context | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Transcript:
    """Run prepare → detect → decode → assemble for `source` and return the transcript.

    The job is recorded in the database; on any failure it is marked failed
    with a readable reason and the error is raised again.
    """
    if ctx is None:
        upgrade(database_url)
        ctx = pipeline.Context(db=sessions(database_url))
    job_id = queries.create_job(ctx.db, str(source), options.to_json())
    try:
        refs = pipeline.prepare(ctx, job_id)
        pipeline.detect_language(ctx, job_id, refs)
        done = 0
        if on_progress:
            on_progress(done, len(refs))
        for first in range(0, len(refs), options.batch_size):
            done += pipeline.decode(ctx, job_id, refs[first : first + options.batch_size])
            if on_progress:
                on_progress(done, len(refs))
        return pipeline.assemble(ctx, job_id)
    except MurmurError as exc:
        queries.fail_job(ctx.db, job_id, str(exc))
        exc.job_id = job_id
        raise
    except BaseException as exc:
        queries.fail_job(ctx.db, job_id, f"internal error: {type(exc).__name__}: {exc}")
        raise
