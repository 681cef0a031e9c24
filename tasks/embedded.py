"""The embedded runner: one process, no broker, the same stages as the workers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

from murmur.db import queries
from murmur.db.session import sessions, upgrade
from murmur.settings import get_settings
from murmur.tasks import stages
from murmur.tasks.batching import job_decoders, plan_batches
from murmur.tasks.store import TensorRef
from murmur.workers.errors import MurmurError
from murmur.workers.gpu.language import DETECT_CHUNKS, detection_chunks
from murmur.workers.options import JobOptions
from murmur.workers.transcript import Transcript

Progress = Callable[[int, int], None]


def transcribe(
    source: str,
    *,
    device: str | None = None,
    compute_type: str | None = None,
    threads: int = 0,
    on_progress: Progress | None = None,
    **options,
) -> Transcript:
    """Transcribe a file in this process and return its transcript.

    The job is recorded in MURMUR_DATABASE_URL, or a local SQLite file; job
    options default to MURMUR_MODEL and MURMUR_BATCH_SIZE, the device and
    compute type to MURMUR_DEVICE and MURMUR_COMPUTE_TYPE.
    """
    settings = get_settings()
    job_options = settings.job_options(**options)
    url = settings.embedded_database_url
    upgrade(url)
    ctx = stages.Context(db=sessions(url), device=device or settings.device,
                         compute_type=compute_type or settings.compute_type, threads=threads,
                         max_duration=settings.max_duration)
    return run(ctx, os.path.abspath(source), job_options, on_progress)


def run(ctx: stages.Context, source: str, options: JobOptions, on_progress: Progress | None = None) -> Transcript:
    """Prepare → detect → decode → assemble `source` with a context the caller keeps.

    On any failure the job is marked failed with a readable reason and the
    error is raised again, carrying the job id.
    """
    return run_job(ctx, queries.create_job(ctx.db, str(source), options.to_json()), on_progress)


def run_job(ctx: stages.Context, job_id: str, on_progress: Progress | None = None) -> Transcript:
    """Run a queued job of `ctx.db` to its end, as `run` does; the HTTP API's embedded mode queues them."""
    job = queries.get_job(ctx.db, job_id)
    options = job.job_options()
    concurrent = job_decoders(job.source, ctx.decoders())
    try:
        if concurrent == 1:
            # a short file: the model is loaded before it is prepared. Loading holds the float16 weights and a
            # float32 copy of the largest for a moment, and on an 11 s clip the peak memory is lower (345 MB
            # against 370-384) when prepare's buffers do not coincide. Decoders side by side hold more than that
            # at once later, so a longer file is prepared while the model loads (`murmur transcribe` starts the
            # load while it imports): en_5min took 10.0 s against 10.3, medians of four alternating runs.
            ctx.model(options.model, concurrent)
        with ThreadPoolExecutor(max_workers=concurrent) as pool:
            refs = stages.prepare(ctx, job_id)
            if refs is None:  # cancelled before it started
                raise MurmurError(queries.get_job(ctx.db, job_id).error or "the job ended before it was prepared")
            refs = list(refs)
            # the batch size counts windows in flight in all: each of N decoders side by side takes 1/N of it
            # (two full batches of 16 held twice the memory, 2.25 GB on 30 min, and were slower: 60 s against 54 s)
            batches = plan_batches(len(refs), max(1, options.batch_size // concurrent), concurrent)
            ballot, picks, lent, borrowed, voters = None, set(), {}, {}, None
            first = _first_batches(refs, batches, concurrent) if refs and stages.detects_in_decode(ctx, job_id, concurrent) else None
            if first is None:
                voters = stages.detect_language(ctx, job_id, refs, concurrent)  # decode reuses their encoder output
            else:  # the language is voted from the first batches' encoder output, which their decode then reuses
                refs, picks = first
                ballot = _Ballot(ctx, job_id, min(concurrent, len(batches)))
            for borrower, (lender, ref) in _lending(refs, batches[:concurrent], picks).items():
                lent[lender] = (ref, Future())
                borrowed[borrower] = lent[lender][1]
            futures = {pool.submit(_decode, ctx, job_id, refs[b], concurrent, ballot,
                                   picks if i < concurrent and (ballot or i in lent or i in borrowed) else None,
                                   lent.get(i), borrowed.get(i), voters): b
                       for i, b in enumerate(batches)}
            done = 0
            if on_progress:
                on_progress(done, len(refs))
            for future in as_completed(futures):
                future.result()
                done += len(refs[futures[future]])
                if on_progress:
                    on_progress(done, len(refs))
        if not stages.assemble(ctx, job_id):
            job = queries.get_job(ctx.db, job_id)
            raise MurmurError(job.error or f"job ended as {job.status} before it was assembled")
        return queries.get_transcript(ctx.db, job_id)
    except MurmurError as exc:
        queries.fail_job(ctx.db, job_id, str(exc))
        exc.job_id = job_id
        raise
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"internal error: {type(exc).__name__}: {exc}"
        queries.fail_job(ctx.db, job_id, reason)
        raise


def _decode(ctx: stages.Context, job_id: str, refs: list[TensorRef], concurrent: int, ballot: _Ballot | None,
            picks: set[int] | None, lend: tuple[TensorRef, Future] | None = None, borrow: Future | None = None,
            voters: stages.Encoded | None = None) -> None:
    """One batch. A batch of the first round (`picks` given) encodes before it decodes: with a ballot it
    casts its votes first, and every batch of a job whose language is voted waits for the count before it
    generates. `lend`: a chunk of another first-round batch that this one encodes first, for that batch;
    `borrow`: this batch's last chunk, so encoded. `voters`: the chunks a vote before decode encoded
    (multilingual, or too many voters for the first batches), reused where this batch holds them."""
    encoded = None
    try:
        if lend is not None:
            ref, slot = lend
            slot.set_result(stages.encode_batch(ctx, job_id, [ref], set(), concurrent).output)
        if picks is not None:
            encoded = stages.encode_batch(ctx, job_id, refs, picks, concurrent, ballot.cast if ballot else lambda w: None,
                                          last=borrow.result if borrow is not None else None)
        if ballot is not None:
            ballot.wait()
    except BaseException as exc:
        if ballot is not None:
            ballot.fail(exc)  # the other decoders must not wait for votes that will not come
        if lend is not None and not lend[1].done():
            lend[1].set_exception(exc)  # nor for a chunk that will not come
        raise
    stages.decode(ctx, [(job_id, r) for r in refs], concurrent, [e for e in (encoded, voters) if e is not None])


def _lending(refs: list[TensorRef], first: list[slice], picks: set[int]) -> dict[int, tuple[int, TensorRef]]:
    """{borrower: (lender, chunk)} among the first batches: a batch one chunk larger than another has its
    last chunk encoded by the smaller batch's decoder, so nine chunks on two decoders are 4 + 5 encoded and
    5 + 4 decoded, and neither decoder finishes a window's work after the other (the odd chunk is not a voter).
    Whether or not the language is voted: a given language has the same odd window."""
    sizes = [b.stop - b.start for b in first]
    larger = [j for j, n in enumerate(sizes) if n == max(sizes)]
    smaller = [k for k, n in enumerate(sizes) if n < max(sizes)]
    return {j: (k, refs[first[j]][-1]) for j, k in zip(larger, smaller) if refs[first[j]][-1].chunk_idx not in picks}


class _Ballot:
    """The first batches' votes on a job's language, counted when the last of them is cast."""

    def __init__(self, ctx: stages.Context, job_id: str, voters: int) -> None:
        self._ctx, self._job_id, self._left = ctx, job_id, voters
        self._windows: list[tuple[str, float]] = []
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        self._cond = threading.Condition()

    def cast(self, windows: list[tuple[str, float]]) -> None:
        with self._cond:
            self._windows += windows
            self._left -= 1
            if self._left == 0:
                try:
                    stages.vote_language(self._ctx, self._job_id, self._windows, time.perf_counter() - self._started)
                except BaseException as exc:
                    self._error = exc
                    raise
                finally:
                    self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = self._error or exc
            self._cond.notify_all()

    def wait(self) -> None:
        """Until the language is recorded; raises what kept it from being counted."""
        with self._cond:
            self._cond.wait_for(lambda: self._left <= 0 or self._error is not None)
            if self._error is not None:
                raise self._error


def _first_batches(refs: list[TensorRef], batches: list[slice], concurrent: int) -> tuple[list[TensorRef], set[int]] | None:
    """The chunks reordered so that those that vote on the language (spread over the file) lie in the
    first `concurrent` batches, shared between them; with the picked chunk indices. None if they do not fit."""
    picked = [refs[i] for i in detection_chunks(len(refs), DETECT_CHUNKS)]
    shares = [picked[j::concurrent] for j in range(concurrent)]
    if any(len(share) > b.stop - b.start for share, b in zip(shares, batches)):
        return None
    rest = iter([r for r in refs if r not in picked])
    ordered = []
    for j, b in enumerate(batches):
        share = shares[j] if j < concurrent else []
        ordered += share + [next(rest) for _ in range(b.stop - b.start - len(share))]
    return ordered, {r.chunk_idx for r in picked}
