"""The embedded runner: one process, no broker, the same stages as the workers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

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
        batches = plan_batches(len(refs), options.batch_size, ctx.decoders())
        concurrent = max(1, min(ctx.decoders(), len(batches)))
        done = 0
        if on_progress:
            on_progress(done, len(refs))
        with ThreadPoolExecutor(max_workers=concurrent) as pool:
            futures = {pool.submit(pipeline.decode, ctx, [(job_id, r) for r in refs[b]], concurrent): b for b in batches}
            for future in as_completed(futures):
                future.result()
                done += len(refs[futures[future]])
                if on_progress:
                    on_progress(done, len(refs))
        if not pipeline.assemble(ctx, job_id):
            job = queries.get_job(ctx.db, job_id)
            raise MurmurError(job.error or f"job ended as {job.status} before it was assembled")
        return pipeline.transcript(ctx.db, job_id)
    except MurmurError as exc:
        queries.fail_job(ctx.db, job_id, str(exc))
        exc.job_id = job_id
        raise
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"internal error: {type(exc).__name__}: {exc}"
        queries.fail_job(ctx.db, job_id, reason)
        raise


def plan_batches(n_chunks: int, batch_size: int, decoders: int) -> list[slice]:
    """Split a job's chunks into batches of at most `batch_size`, balanced over `decoders`.

    Nine chunks with batch size 8 and two decoders become 5 + 4, not 8 + 1:
    both decoders stay busy and neither waits on a lone straggler batch.
    """
    if n_chunks == 0:
        return []
    count = -(-n_chunks // batch_size)
    if decoders > 1:
        count = min(n_chunks, -(-max(count, decoders) // decoders) * decoders)
    size, extra = divmod(n_chunks, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]
