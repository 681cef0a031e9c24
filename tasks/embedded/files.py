"""Many files in one process: one model, and their chunks decoded together in shared batches.

A folder of short recordings run one process per file pays each file's start,
model load and mostly empty 30 s windows alone. Here every file is its own job,
prepared and its language voted on its own, and then all their chunks are
decoded together as the fleet's GPU workers decode many jobs' chunks, in
batches across jobs (short chunks of jobs alike share windows where no encoder
output is held for them: `workers.gpu.packing`). Each job is assembled,
and handed on, as soon as its last chunk is decoded; a job that fails fails
alone. The same stages as every other runner.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from murmur.db import queries
from murmur.settings import get_settings
from murmur.tasks import jobs, stages
from murmur.tasks.context import Context
from murmur.tasks.embedded.planning import plan_batches
from murmur.tasks.embedded.runner import embedded_context, streamed
from murmur.tasks.tensors.store import TensorRef
from murmur.workers.errors import MurmurError, failure_of
from murmur.workers.transcript import Transcript

Finished = Callable[[str, Transcript | None, BaseException | None], None]  # (job id, its transcript or why it failed)


def transcribe_files(sources: Sequence[str], *, device: str | None = None, compute_type: str | None = None,
                     threads: int = 0, **options) -> Iterator[tuple[str, Transcript | MurmurError]]:
    """Transcribe files together in this process (`run_jobs`): (source, its transcript or why it failed) for
    each, in the order they finish. The same options for every file, each checked as `transcribe` checks them;
    a file that fails does not stop the others.
    """
    settings = get_settings()
    checked = []
    for source in sources:
        try:
            checked.append((source, jobs.check(os.path.abspath(source), options, settings)))
        except MurmurError as exc:
            yield source, exc
    if not checked:
        return
    ctx = embedded_context(device, compute_type, threads)
    source_of = {jobs.create(ctx.db, submission): source for source, submission in checked}
    for job_id, transcript, error in streamed(lambda put: run_jobs(ctx, list(source_of), lambda *ended: put(ended))):
        yield source_of[job_id], transcript if transcript is not None else _as_murmur_error(error, job_id)


def run_jobs(ctx: Context, job_ids: Sequence[str], on_finished: Finished) -> None:
    """Run queued jobs of `ctx.db` to their ends together; `on_finished` hears of each as it ends, once.

    The jobs go in waves of `WAVE_JOBS`, so that a folder of thousands holds only
    a wave's tensors and encoder outputs at once. In a wave the decoders side by
    side first prepare a job each and vote on its language, keeping the voters'
    encoder output; then the wave's chunks are decoded in batches across jobs,
    `batch_size` chunks per decoder, jobs of the same options and language
    together. A chunk whose vote encoded it is decoded from that output (a short
    clip is encoded once, as a single file's is); where nothing is held, short
    chunks of jobs alike are packed into shared windows. A job whose prepare,
    vote or decode fails is marked failed with its reason and handed on with
    it; the others go on.
    """
    concurrent = ctx.decoders()
    pending = list(job_ids)
    with ThreadPoolExecutor(max_workers=concurrent) as pool:
        while pending:
            wave, pending = pending[:WAVE_JOBS], pending[WAVE_JOBS:]
            _run_wave(ctx, pool, wave, concurrent, on_finished)


WAVE_JOBS = 32  # jobs prepared, then decoded, together: 32 short clips' encoder outputs are ≈ 100 MB (base)


def _run_wave(ctx: Context, pool: ThreadPoolExecutor, job_ids: list[str], concurrent: int, on_finished: Finished) -> None:
    items: list[tuple[int, str, TensorRef]] = []
    held: dict[str, stages.Encoded] = {}
    groups: dict[tuple, int] = {}  # jobs that may share a batch (options and language), in order of appearance
    batch_size = 1
    futures = {pool.submit(_prepared, ctx, job_id, concurrent): job_id for job_id in job_ids}
    prepared = {}
    for future in as_completed(futures):
        job_id = futures[future]
        try:
            prepared[job_id] = future.result()
        except Exception as exc:  # noqa: BLE001 - this job's own failure: the others go on
            _finish(ctx, job_id, on_finished, exc)
    for job_id in [j for j in job_ids if j in prepared]:  # in the order given: the same batches, run after run
        refs, voters = prepared[job_id]
        if not refs:  # no speech: nothing to decode
            _finish(ctx, job_id, on_finished)
            continue
        if voters is not None:
            held[job_id] = voters
        job = queries.get_job(ctx.db, job_id)
        options = job.job_options()
        batch_size = max(batch_size, options.batch_size)
        group = groups.setdefault((options.batch_key(), job.language), len(groups))
        items += [(group, job_id, ref) for ref in refs]
    items.sort(key=lambda item: item[0])  # stable: jobs alike side by side, in the order given; a job's chunks in order
    pairs = [(job_id, ref) for _, job_id, ref in items]
    left = Counter(job_id for job_id, _ in pairs)  # each job's chunks not yet decoded
    batches = {}
    for b in plan_batches(len(pairs), batch_size, concurrent):
        jobs_in = dict.fromkeys(j for j, _ in pairs[b])
        batches[pool.submit(stages.decode_chunks, ctx, pairs[b], concurrent, [held[j] for j in jobs_in if j in held])] = pairs[b]
    for future in as_completed(batches):
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - decode_chunks fails a job for its own faults; this is ours
            for job_id in dict.fromkeys(j for j, _ in batches[future]):
                if left.pop(job_id, None) is not None:
                    _finish(ctx, job_id, on_finished, exc)
            continue
        for job_id, _ in batches[future]:
            if job_id in left:
                left[job_id] -= 1
                if left[job_id] == 0:
                    del left[job_id]
                    _finish(ctx, job_id, on_finished)


def _prepared(ctx: Context, job_id: str, concurrent: int) -> tuple[list[TensorRef], stages.Encoded | None]:
    """The job's chunks, prepared and its language recorded (voted over its own chunks), with the voters'
    encoder output; a failure marks nothing (the caller does)."""
    refs = stages.prepare(ctx, job_id)
    if refs is None:
        raise MurmurError(queries.get_job(ctx.db, job_id).error or "the job ended before it was prepared")
    refs = list(refs)
    return refs, stages.detect_language(ctx, job_id, refs, concurrent)


def _finish(ctx: Context, job_id: str, on_finished: Finished, error: BaseException | None = None) -> None:
    """Assemble a job whose chunks are all decoded, or mark it failed; then hand it on."""
    if error is None:
        try:
            if not stages.assemble(ctx, job_id):
                job = queries.get_job(ctx.db, job_id)
                raise MurmurError(job.error or f"job ended as {job.status} before it was assembled")
            transcript = queries.get_transcript(ctx.db, job_id)
        except Exception as exc:  # noqa: BLE001 - told to the caller, with the job
            error = exc
        else:
            on_finished(job_id, transcript, None)  # outside the try: what the caller raises is not the job's failure
            return
    queries.fail_job(ctx.db, job_id, *failure_of(error))
    if isinstance(error, MurmurError):
        error.job_id = job_id
    on_finished(job_id, None, error)


def _as_murmur_error(error: BaseException | None, job_id: str) -> MurmurError:
    if isinstance(error, MurmurError):
        return error
    wrapped = MurmurError(f"internal error: {type(error).__name__}: {error}")
    wrapped.job_id = job_id
    return wrapped
