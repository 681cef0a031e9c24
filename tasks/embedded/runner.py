"""The embedded runner: one job in this process, its batches over decoders side by side, the same stages as the fleet.

On CPU a file longer than a window keeps several one-thread decoders busy (see
`planning`). When the language is to be voted, the voters lead the first
batches: each first batch encodes its share, casts its votes, and every batch
waits for the count before it generates, so detection costs no encoder pass of
its own. The count comes as soon as the votes in settle the language, and the
batch with chunk 0 decodes it then, before it encodes the rest.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TypeVar

from murmur.db import queries
from murmur.db.session import sessions, upgrade
from murmur.settings import get_settings
from murmur.tasks import jobs, stages
from murmur.tasks.context import Context
from murmur.tasks.embedded.planning import first_batches, job_decoders, lending, plan_batches
from murmur.tasks.tensors.store import TensorRef
from murmur.workers.errors import MurmurError, failure_of
from murmur.workers.gpu.decode import encode, joined, one_batch
from murmur.workers.gpu.language import needs_vote, settled, top_languages, vote
from murmur.workers.options import JobOptions
from murmur.workers.transcript import Segment, Transcript

T = TypeVar("T")
Progress = Callable[[int, int], None]
Release = Callable[[list[Segment]], None]  # the next stretch of a job's transcript, in source order


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
    submission = jobs.check(os.path.abspath(source), options, settings)
    return run_submission(submission, device=device, compute_type=compute_type, threads=threads, on_progress=on_progress)


def transcribe_stream(source: str, *, device: str | None = None, compute_type: str | None = None, threads: int = 0,
                      **options) -> Iterator[Segment]:
    """`transcribe`, its segments yielded in source order as soon as every earlier chunk is decoded.

    A diarized job's segments come at the end, with their speakers (assembly tells
    the speakers apart). A failure is raised where the stream stops.
    """
    submission = jobs.check(os.path.abspath(source), options, get_settings())
    for stretch in streamed(lambda put: run_submission(submission, device=device, compute_type=compute_type,
                                                       threads=threads, on_release=put)):
        yield from stretch


def streamed(produce: Callable[[Callable[[T], None]], object]) -> Iterator[T]:
    """What `produce` hands to the callback it is given, yielded here as it comes while `produce` runs in a
    thread of its own; what `produce` raises is raised here, where the items stop."""
    items: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            produce(items.put)
            items.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            items.put(_Raised(exc))

    threading.Thread(target=run, name="murmur-run", daemon=True).start()
    while (item := items.get()) is not _END:
        if isinstance(item, _Raised):
            raise item.exc
        yield item


_END = object()


@dataclass(frozen=True)
class _Raised:
    exc: BaseException


def run_submission(submission: jobs.Submission, *, device: str | None = None, compute_type: str | None = None,
                   threads: int = 0, on_progress: Progress | None = None, on_release: Release | None = None) -> Transcript:
    """A checked request (`jobs.check`) run to its end on the embedded database: `murmur transcribe`."""
    ctx = embedded_context(device, compute_type, threads)
    return run_job(ctx, jobs.create(ctx.db, submission), on_progress, on_release)


def embedded_context(device: str | None = None, compute_type: str | None = None, threads: int = 0) -> Context:
    """A context on the embedded database (MURMUR_DATABASE_URL, or a local SQLite file), its schema current."""
    settings = get_settings()
    url = settings.embedded_database_url
    upgrade(url)
    return Context.from_settings(settings, sessions(url), device=device or settings.device,
                                 compute_type=compute_type or settings.compute_type, threads=threads)


def run(ctx: Context, source: str, options: JobOptions, on_progress: Progress | None = None) -> Transcript:
    """Prepare → detect → decode → assemble `source` with a context the caller keeps (tests, benches)."""
    return run_job(ctx, jobs.create(ctx.db, jobs.Submission(str(source), options)), on_progress)


def run_job(ctx: Context, job_id: str, on_progress: Progress | None = None, on_release: Release | None = None) -> Transcript:
    """Run a queued job of `ctx.db` to its end; the HTTP API's embedded mode queues them.

    `on_release` is handed the transcript in order, a stretch at a time, as soon as
    every earlier chunk is decoded (a diarized job's all at once, labelled, at the end).
    On any failure the job is marked failed with a readable reason and the
    error is raised again, carrying the job id.
    """
    job = queries.get_job(ctx.db, job_id)
    options = job.job_options()
    concurrent = job_decoders(job.source, ctx.device, ctx.threads)
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
            first = first_batches(refs, batches, concurrent) if refs and _votes_in_decode(ctx, options, concurrent) else None
            if first is None:
                voters = stages.detect_language(ctx, job_id, refs, concurrent)  # decode reuses their encoder output
            else:  # the language is voted from the first batches' encoder output, which their decode then reuses
                refs, picks = first
                ballot = _Ballot(ctx, job_id, [sum(r.chunk_idx in picks for r in refs[b]) for b in batches[:concurrent]])
            for borrower, (lender, ref) in lending(refs, batches[:concurrent], picks).items():
                lent[lender] = (ref, Future())
                borrowed[borrower] = lent[lender][1]
            release = _Release(ctx, job_id, on_release)
            futures = {pool.submit(_run_batch, ctx, job_id, refs[b], concurrent, ballot and ballot.seat(i),
                                   picks if i < concurrent and (ballot or i in lent or i in borrowed) else None,
                                   lent.get(i), borrowed.get(i), voters, release): b
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
        release()  # a diarized job's segments, labelled
        return queries.get_transcript(ctx.db, job_id)
    except BaseException as exc:
        queries.fail_job(ctx.db, job_id, *failure_of(exc))
        if isinstance(exc, MurmurError):
            exc.job_id = job_id
        raise


class _Release:
    """Hands `to` what the job has released since the last call (`queries.released_segments`), in order;
    called by each decoder as it stores a part of its batch."""

    def __init__(self, ctx: Context, job_id: str, to: Release | None) -> None:
        self._ctx, self._job_id, self._to = ctx, job_id, to
        self._since = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self._to is None:
            return
        with self._lock:
            segments, self._since = queries.released_segments(self._ctx.db, self._job_id, self._since)
            if segments:
                self._to(segments)


def _votes_in_decode(ctx: Context, options: JobOptions, concurrent: int) -> bool:
    """Whether the job's language is voted from decode's first batches: it is to be voted, and for
    the whole file (a multilingual job's vote runs before decode, with more voters)."""
    return not options.multilingual and needs_vote(options, lambda: ctx.model(options.model, concurrent).multilingual)


def _run_batch(ctx: Context, job_id: str, refs: list[TensorRef], concurrent: int, ballot: _Seat | None,
               picks: set[int] | None, lend: tuple[TensorRef, Future] | None = None, borrow: Future | None = None,
               voters: stages.Encoded | None = None, release: Callable[[], None] = lambda: None) -> None:
    """One batch. A batch of the first round (`picks` given) encodes before it decodes: with a ballot it
    casts its votes first, and every batch of a job whose language is voted waits for the count before it
    generates. `lend`: a chunk of another first-round batch that this one encodes first, for that batch;
    `borrow`: this batch's last chunk, so encoded. `voters`: the chunks a vote before decode encoded
    (multilingual, or too many voters for the first batches), reused where this batch holds them.
    `release` is called as each part of the batch is stored."""
    encoded = None
    try:
        if lend is not None:
            ref, slot = lend
            slot.set_result(_encode_batch(ctx, job_id, [ref], set(), concurrent).output)
        if picks is not None:
            encoded = _encode_batch(ctx, job_id, refs, picks, concurrent, ballot,
                                    last=borrow.result if borrow is not None else None)
        if ballot is not None:
            ballot.wait()
    except BaseException as exc:
        if ballot is not None:
            ballot.fail(exc)  # the other decoders must not wait for votes that will not come
        if lend is not None and not lend[1].done():
            lend[1].set_exception(exc)  # nor for a chunk that will not come
        raise
    held = [e for e in (encoded, voters) if e is not None]
    for part in stages.first_chunks_first(refs, lambda ref: ref.chunk_idx, ctx.device):
        stages.decode_chunks(ctx, [(job_id, r) for r in part], concurrent, held)
        release()


def _encode_batch(
    ctx: Context, job_id: str, refs: list[TensorRef], picks: set[int], concurrent: int = 1,
    ballot: _Seat | None = None, last: Callable[[], object] | None = None,
) -> stages.Encoded:
    """Encode the chunks of `refs` and cast on `ballot` the top language of those whose index is in `picks`.

    The picked chunks lead the batch. With other decoders beside this one (they
    wait for the vote before they generate), each is encoded and cast on its own,
    then the rest: no decoder idles while the one with the larger batch finishes
    encoding, and the votes may be counted before the last voter is in. The batch
    that holds chunk 0 stops encoding once they are, so the job's first lines are
    decoded at once; decode encodes what it left. `last`, when given, returns the
    encoder output of the batch's last chunk, encoded by another decoder (see
    `planning.lending`): it is waited for after the rest.
    """
    model = ctx.model(queries.get_job(ctx.db, job_id).job_options().model, concurrent)
    own = refs[:-1] if last is not None else refs
    features = stages.load_features(ctx, [(job_id, r) for r in own])
    k = next((i for i, ref in enumerate(own) if ref.chunk_idx not in picks), len(own))
    parts = []
    if concurrent > 1 and k and ballot is not None:
        for i in range(k):
            started = time.perf_counter()
            parts.append(encode(model, features[i:i + 1]))
            ballot.cast(top_languages(model, parts[-1]))
            # the others cast theirs at the same pace: a quarter of a window's encoding is long enough to wait
            if own[0].chunk_idx == 0 and ballot.counted_by(i + 1, (time.perf_counter() - started) / 4):
                own = own[:i + 1]
                break
        else:
            if k < len(own):
                parts.append(encode(model, features[k:]))
    else:
        parts.append(encode(model, features))
        if ballot is not None:
            ballot.cast(top_languages(model, parts[-1])[:k] if k else [])
    output = one_batch(parts)
    return stages.Encoded(own, output) if last is None else stages.Encoded(own + refs[-1:], joined([output, last()]))


class _Ballot:
    """The first batches' votes on a job's language, cast a window at a time and counted in rounds (every
    batch's first voter, then every batch's second, ...) as soon as the rounds so far settle the language
    (`language.settled`): the windows counted, and so the probability recorded, do not depend on which
    decoder was quicker. One batch's votes (one decoder: a GPU's) are all counted, as no other decoder
    waits for them. `shares`: how many voters each first batch holds."""

    def __init__(self, ctx: Context, job_id: str, shares: list[int]) -> None:
        self._ctx, self._job_id, self._shares = ctx, job_id, shares
        self._cast: list[list[tuple[str, float]]] = [[] for _ in shares]
        self._rounds = 0  # rounds that every batch has cast
        self._counted = False
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        self._cond = threading.Condition()

    def seat(self, batch: int) -> _Seat:
        return _Seat(self, batch)

    def cast(self, batch: int, windows: list[tuple[str, float]]) -> None:
        with self._cond:
            self._cast[batch] += windows
            try:
                while not self._counted and all(len(c) >= min(self._rounds + 1, n) for c, n in zip(self._cast, self._shares)):
                    self._rounds += 1
                    counted = [w for c in self._cast for w in c[:self._rounds]]
                    uncast = sum(self._shares) - len(counted)
                    if settled(counted, uncast) and (len(self._shares) > 1 or not uncast):  # one batch: nobody waits for it
                        guess = vote(counted)
                        stages.record_language(self._ctx, self._job_id, guess.language, guess.probability, (),
                                               time.perf_counter() - self._started)
                        self._counted = True
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._cond.notify_all()

    def counted_by(self, rounds: int, timeout: float) -> bool:
        """Whether the votes are counted once every batch has cast `rounds` voters, waiting `timeout` at most
        for them (True too when counting failed: `wait` raises why)."""
        with self._cond:
            self._cond.wait_for(lambda: self._counted or self._error is not None or self._rounds >= rounds, timeout)
            return self._counted or self._error is not None

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = self._error or exc
            self._cond.notify_all()

    def wait(self) -> None:
        """Until the language is recorded; raises what kept it from being counted."""
        with self._cond:
            self._cond.wait_for(lambda: self._counted or self._error is not None)
            if self._error is not None:
                raise self._error


@dataclass(frozen=True)
class _Seat:
    """A first batch's place on the ballot: what it casts counts as that batch's (a later batch only waits)."""

    ballot: _Ballot
    batch: int

    def cast(self, windows: list[tuple[str, float]]) -> None:
        self.ballot.cast(self.batch, windows)

    def counted_by(self, rounds: int, timeout: float) -> bool:
        return self.ballot.counted_by(rounds, timeout)

    def wait(self) -> None:
        self.ballot.wait()

    def fail(self, exc: BaseException) -> None:
        self.ballot.fail(exc)
