"""The four stages of a job (prepare, detect language, decode, assemble), as both runners call them.

Each stage loads its inputs (job rows, tensors), calls the compute in
`workers/`, and stores its outputs (rows, tensors). The embedded runner calls
them in a loop; the Celery tasks call the same functions one message at a time,
and a GPU worker hands `decode_chunks` chunks of many jobs at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from murmur.db import queries
from murmur.db.models import ChunkRow, ChunkState, JobState
from murmur.tasks.context import Context
from murmur.tasks.tensors.store import TensorRef
from murmur.workers.cpu import edges, speakers
from murmur.workers.cpu.audio import SAMPLE_RATE, stream_audio
from murmur.workers.cpu.chunking import Chunk, cut_chunks, plan_heard
from murmur.workers.cpu.diarization import speaker_turns
from murmur.workers.cpu.features import iter_log_mel, log_mel
from murmur.workers.cpu.sources import local_file
from murmur.workers.errors import MurmurError, failure_of
from murmur.workers.gpu.decode import decode_batch, encode, encoded_pieces, host_array, joined, one_batch
from murmur.workers.gpu.language import detection_chunks, needs_vote, settled, top_languages, vote, voters_wanted
from murmur.workers.gpu.model import LoadedModel, resolve_device
from murmur.workers.options import JobOptions
from murmur.workers.prompt import Prompt

log = logging.getLogger("murmur")
T = TypeVar("T")


def prepare(ctx: Context, job_id: str) -> list[TensorRef] | None:
    """Decode, VAD, chunk and featurize the job's source; one tensor per chunk.

    None when the job has already ended (a redelivered message): nothing to do.
    """
    started = time.perf_counter()
    job = queries.claim_job(ctx.db, job_id, ctx.lease_holder, ctx.lease_seconds)
    if job is None:
        return None  # ended, planned already, or in another live worker's hands: a duplicate message
    with ctx.held.holding(jobs=[job_id]):
        return _prepare(ctx, job, started)


def _prepare(ctx: Context, job, started: float) -> list[TensorRef] | None:
    job_id = job.id
    options = job.job_options()
    n_mels = ctx.n_mels(options.model)
    if options.language:
        queries.update_job(ctx.db, job_id, language=options.language)
    known = _known_voices(ctx, options)  # before the file: a bad reference clip fails the job at once
    with local_file(job.source, ctx.allowed_roots, ctx.max_bytes, ctx.s3_allow) as path:
        # the file is read twice as a stream (for the VAD, then for the chunks): hours of audio are never held whole
        decoded = _Counted(stream_audio(path, max_seconds=ctx.max_duration))
        each = ctx.vad.each(decoded)
        duration = decoded.samples / SAMPLE_RATE
        chunks = plan_heard(each, duration, merge=not options.multilingual)
        refs = []
        held = 0  # bytes of this job's tensors put so far: they drain only once its plan is saved
        voices: list | None = [] if options.diarize else None
        fitted_chunks: list[Chunk] = []  # their stretches' ends fitted to the audio (`edges`)
        with closing(stream_audio(path)) as blocks:
            pieces = edges.fitted(chunks, cut_chunks(blocks, chunks), into=fitted_chunks)
            if voices is not None:  # the same audio, embedded on its way to the features
                pieces = speakers.listen(chunks, pieces, into=voices, threads=ctx.threads)
            for chunk, array in zip(chunks, iter_log_mel(pieces, n_mels)):
                ctx.store.wait_for_room(held)  # backpressure: the GPU workers must drain other jobs' tensors first
                refs.append(ctx.store.put(job_id, chunk.idx, array))
                held += array.nbytes
    prints = None if voices is None else speakers.voiceprints(voices, known).to_bytes()
    if not queries.save_chunks(ctx.db, job_id, fitted_chunks, duration, ctx.lease_holder, prints=prints):
        ctx.store.delete(refs)  # another delivery planned it after our lease lapsed: its plan stands
        return None
    queries.add_timing(ctx.db, job_id, "prepare", time.perf_counter() - started)
    return refs


def _known_voices(ctx: Context, options: JobOptions) -> dict[str, np.ndarray]:
    """Each known speaker's print, from their reference clip, read as a source is."""
    known = {}
    for name, reference in zip(options.known_speaker_names, options.known_speaker_references):
        try:
            with local_file(reference, ctx.allowed_roots, ctx.max_bytes, ctx.s3_allow) as path:
                known[name] = speakers.reference_print(_opening(path, speakers.MAX_REFERENCE_S + 1), name)
        except MurmurError as exc:
            raise type(exc)(f"known speaker {name!r}: {exc}") from None
    return known


def _opening(path: str, seconds: float) -> np.ndarray:
    """The file's first `seconds` of audio (all of it if shorter): the rest is never decoded."""
    blocks, have = [], 0
    with closing(stream_audio(path)) as stream:
        for block in stream:
            blocks.append(block)
            have += block.size
            if have > seconds * SAMPLE_RATE:
                break
    return np.concatenate(blocks)[: int(seconds * SAMPLE_RATE)] if blocks else np.zeros(0, np.float32)


def detect_language(ctx: Context, job_id: str, refs: Sequence[TensorRef], concurrent: int = 1) -> Encoded | None:
    """Record the job's language, voted over chunks spread across the file; the encoder output of
    those chunks, for their decode to reuse (None when nothing was encoded). On CPU the voters are
    encoded one at a time and the vote ends once it is settled (`language.settled`), except in
    multilingual mode, which counts every language spoken.

    Nothing is encoded when the job names a language or the model is English-only
    (`language.needs_vote`). In multilingual mode each chunk is detected again when
    it is decoded, among the languages this vote found spoken in the file.
    `concurrent` as for `decode_chunks`, so the model is the one decode loads.
    """
    started = time.perf_counter()
    options = queries.get_job(ctx.db, job_id).job_options()
    if not needs_vote(options, lambda: ctx.model(options.model, concurrent).multilingual):
        record_language(ctx, job_id, options.language or "en", None, (), time.perf_counter() - started)
        return None
    model = ctx.model(options.model, concurrent)
    picked = [refs[i] for i in detection_chunks(len(refs), voters_wanted(options))]
    outputs, windows = [], []
    # in host memory: a GPU worker's batcher may decode them beside other jobs' chunks (see `decode_chunks`)
    for _, output in (encoded_pieces(model, load_features(ctx, [(job_id, r) for r in picked]), to_cpu=True) if picked else ()):
        outputs.append(output)
        windows += top_languages(model, output)
        if not options.multilingual and settled(windows, len(picked) - len(windows)):
            break  # on CPU, a window at a time: the voters not encoded are decoded as any other chunk
    voters = Encoded(picked[:len(windows)], one_batch(outputs)) if outputs else None
    guess = vote(windows)
    record_language(ctx, job_id, guess.language, guess.probability, guess.spoken() if options.multilingual else (),
                    time.perf_counter() - started)
    return voters


def record_language(ctx: Context, job_id: str, language: str | None, probability: float | None,
                    spoken: Sequence[str], seconds: float) -> None:
    """The job's language is known (given, English-only, or voted): recorded with the time detection took."""
    queries.set_language(ctx.db, job_id, language, probability, list(spoken))
    queries.add_timing(ctx.db, job_id, "detect", seconds)


@dataclass
class Encoded:
    """A batch of one job's chunks through the encoder.

    The language is detected from chunks that decode encodes anyway, and their
    encoder output is handed to their decode: no extra pass."""

    refs: list[TensorRef]
    output: object  # ctranslate2.StorageView


def decode_chunks(ctx: Context, items: Sequence[tuple[str, TensorRef]], concurrent: int = 1,
                  encoded: Sequence[Encoded] = ()) -> list[str]:
    """Decode one batch of chunks, from one job or many, and store each chunk's segments.

    Chunks of jobs that have ended and chunks already decoded (a redelivered
    message) are skipped. Chunks are decoded together when their jobs share a
    model and decode options. Returns the jobs that this batch completed, or
    found complete: each is ready for `assemble`. `concurrent` is how many
    batches the caller runs at the same time. `encoded`: encoder outputs the
    caller holds already (language detection's), for some or all of the items.
    """
    started = time.perf_counter()
    jobs = {job_id: queries.get_job(ctx.db, job_id) for job_id, _ in items}
    rows = {key: row for job_id in jobs for key, row in _chunk_rows(ctx, job_id, [r for j, r in items if j == job_id]).items()}
    groups: dict[tuple, list[tuple[str, TensorRef, Chunk]]] = {}
    decoding: dict[tuple, tuple] = {}
    prompts: dict[str, Prompt] = {}  # each job's, read per batch item
    stale: list[TensorRef] = []
    broken: set[str] = set()
    for job_id, ref in items:
        job = jobs[job_id]
        row = rows.get((job_id, ref.chunk_idx))
        if job is None or job.status != JobState.running or row is None or row.status == ChunkState.decoded or job_id in broken:
            stale.append(ref)  # the job ended, or this chunk is stored already
            continue
        try:
            options = job.job_options()
            candidates = tuple(job.spoken_languages or ())
            key = (options.batch_key(), job.language, candidates)
            chunk = _chunk(row)
        except Exception as exc:  # noqa: BLE001 - a row no producer of ours writes: that job alone fails
            _fail_for(ctx, job_id, exc)
            broken.add(job_id)
            stale.append(ref)
            continue
        decoding.setdefault(key, (options, job.language, candidates))
        prompts[job_id] = options.prompting
        groups.setdefault(key, []).append((job_id, ref, chunk))
    counts: dict[str, int] = {}
    for key, group in groups.items():
        group = _with_features(ctx, group)
        if not group:
            continue
        options, language, candidates = decoding[key]
        for part, results in _decode_isolated(ctx, group, options, language, candidates, concurrent, encoded, prompts):
            for (job_id, _, chunk, _), segments in zip(part, results):
                chunk_language = segments[0].language if segments else None
                if queries.replace_segments(ctx.db, job_id, chunk.idx, segments, chunk_language, ctx.worker):
                    counts[job_id] = counts.get(job_id, 0) + 1
        ctx.store.delete([ref for _, ref, _, _ in group])
    ctx.store.delete(stale)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    for job_id, n in counts.items():
        queries.add_timing(ctx.db, job_id, "decode", elapsed * n / total)  # the batch's time, shared by chunks
    return [job_id for job_id in dict.fromkeys(j for j, _ in items) if queries.is_complete(ctx.db, job_id)]


def first_chunks_first(items: Sequence[T], chunk_idx: Callable[[T], int], device: str) -> list[Sequence[T]]:
    """A batch as the parts to decode one after another: on CPU, the jobs' first chunks on their own first.

    A CPU's decode time grows with the batch, so a job's first lines are released
    after one window's decode rather than a whole batch's (the language voters'
    batch holds chunk 0). A GPU decodes a batch in about one window's time: it
    keeps the batch whole.
    """
    first = [item for item in items if chunk_idx(item) == 0]
    if resolve_device(device) != "cpu" or not first or len(first) == len(items):
        return [items]
    return [first, [item for item in items if chunk_idx(item) != 0]]


def _decode_isolated(ctx: Context, group: list, options, language, candidates, concurrent: int, encoded: Sequence[Encoded],
                     prompts: dict[str, Prompt]):
    """The group's results; should the batch raise, each job's chunks are decoded on their own and
    only a job whose own chunks fail is failed, with its reason (a prompt too long for the model's
    vocabulary, say). Yields (items, their segments)."""
    model = ctx.model(options.model, concurrent)
    try:
        features = np.stack([f for *_, f in group])
        yield group, decode_batch(model, features, [chunk for _, _, chunk, _ in group], options, language, candidates,
                                  jobs=[job_id for job_id, *_ in group] if ctx.pack_windows else None,
                                  encoded=_held_output(model, [ref for _, ref, _, _ in group], features, encoded),
                                  prompts=[prompts[job_id] for job_id, *_ in group])
        return
    except Exception as exc:  # noqa: BLE001 - sorted out per job below
        jobs = list(dict.fromkeys(job_id for job_id, *_ in group))
        if len(jobs) == 1:
            _fail_for(ctx, jobs[0], exc)
            return
        log.warning("a batch of %d jobs raised (%s); decoding each job on its own", len(jobs), exc)
    for job_id in jobs:
        part = [item for item in group if item[0] == job_id]
        try:
            features = np.stack([f for *_, f in part])
            results = decode_batch(model, features, [chunk for _, _, chunk, _ in part], options, language, candidates,
                                   prompts=[prompts[job_id]] * len(part))
        except Exception as exc:  # noqa: BLE001 - this job's own fault
            _fail_for(ctx, job_id, exc)
            continue
        yield part, results


def _held_output(model: LoadedModel, refs: list[TensorRef], features: np.ndarray, encoded: Sequence[Encoded]):
    """The encoder output of `refs` from what the caller holds: one `Encoded` of exactly these chunks
    as it is, else the held rows (in host memory) with the other chunks encoded now; None if none is held."""
    for e in encoded:
        if list(e.refs) == refs:
            return e.output
    wanted = {ref.key for ref in refs}
    held = {}
    for e in encoded:
        if e.output.device == "cpu" and wanted & {ref.key for ref in e.refs}:
            rows = host_array(e.output)
            held.update({ref.key: rows[i] for i, ref in enumerate(e.refs)})
    if not held:
        return None
    missing = [i for i, ref in enumerate(refs) if ref.key not in held]
    fresh = iter(host_array(encode(model, features[missing], to_cpu=True)) if missing else ())
    return joined([(held[ref.key] if ref.key in held else next(fresh))[None] for ref in refs])


def _fail_for(ctx: Context, job_id: str, exc: Exception) -> None:
    if not isinstance(exc, MurmurError):
        log.exception("job %s: internal error while decoding", job_id, exc_info=exc)
    queries.fail_job(ctx.db, job_id, *failure_of(exc))


def assemble(ctx: Context, job_id: str) -> bool:
    """Mark a fully decoded job done, its speakers told apart and its transcript files written first;
    True only for the one call that did it."""
    job = queries.get_job(ctx.db, job_id)
    complete = job and job.status == JobState.running and job.n_chunks is not None and job.chunks_done >= job.n_chunks
    if complete and job.job_options().diarize:
        _diarize(ctx, job)
    if ctx.output_uri:
        if complete:
            from murmur.tasks.outputs.s3 import write_outputs

            written = write_outputs(ctx.output_uri, queries.get_transcript(ctx.db, job_id))
            log.info("job %s: transcript written to %s", job_id, ", ".join(written))
    return queries.finish_job(ctx.db, job_id)


def _diarize(ctx: Context, job) -> None:
    """The job's speaker turns from its voiceprints, over the speech its chunks hold."""
    started = time.perf_counter()
    options = job.job_options()
    prints = queries.get_voiceprints(ctx.db, job.id)
    speech = [tuple(s) for row in queries.get_chunks(ctx.db, job.id) for s in (row.speech or row.spans)]
    voices = speakers.Voiceprints.from_bytes(prints) if prints else speakers.Voiceprints.empty()
    turns = speaker_turns(voices, speech, options.speakers, options.min_speakers, options.max_speakers, voices.known)
    queries.save_turns(ctx.db, job.id, turns)
    log.info("job %s: %d speaker(s) in %d turns (%.2f s)", job.id, len({t.speaker for t in turns}), len(turns),
             time.perf_counter() - started)


def load_features(ctx: Context, items: Sequence[tuple[str, TensorRef]]) -> np.ndarray:
    """Features of the chunks, from the store or recomputed; detection needs them all."""
    rows = {key: row for job_id in dict.fromkeys(j for j, _ in items)
            for key, row in _chunk_rows(ctx, job_id, [r for j, r in items if j == job_id]).items()}
    group = [(j, r, _chunk(rows[j, r.chunk_idx])) for j, r in items]
    loaded = _with_features(ctx, group)
    if len(loaded) != len(group):
        raise MurmurError("the job's features could not be recomputed")
    return np.stack([f for *_, f in loaded])


def _with_features(ctx: Context, group: list[tuple[str, TensorRef, Chunk]]) -> list[tuple[str, TensorRef, Chunk, np.ndarray]]:
    """Each item with its features. A tensor gone from the store (evicted, Redis
    restarted) is recomputed from the source; a job whose source cannot be read
    any more is failed, and only its items are dropped."""
    arrays = [ctx.store.get(ref) for _, ref, _ in group]
    missing: dict[str, list[int]] = {}
    for i, array in enumerate(arrays):
        if array is None:
            missing.setdefault(group[i][0], []).append(i)
    failed = set()
    for job_id, positions in missing.items():
        log.warning("job %s: %d tensor(s) missing from the store, recomputing from the source", job_id, len(positions))
        try:
            recomputed = _recompute(ctx, job_id, [group[i][2] for i in positions])
        except MurmurError as exc:
            queries.fail_job(ctx.db, job_id, f"features were lost and could not be recomputed: {exc}", exc.failure)
            failed.add(job_id)
            continue
        for i, array in zip(positions, recomputed):
            arrays[i] = array
    return [(*item, array) for item, array in zip(group, arrays) if item[0] not in failed]


def _recompute(ctx: Context, job_id: str, chunks: list[Chunk]) -> np.ndarray:
    job = queries.get_job(ctx.db, job_id)
    ordered = sorted(chunks, key=lambda c: c.spans[0][0])
    with local_file(job.source, ctx.allowed_roots, ctx.max_bytes, ctx.s3_allow) as path, closing(stream_audio(path)) as blocks:
        cut = dict(zip((c.idx for c in ordered), cut_chunks(blocks, ordered)))
    return log_mel([cut[c.idx] for c in chunks], ctx.n_mels(job.job_options().model))


class _Counted:
    """Blocks passed through, counting their samples: a stream's length is known once it has been read."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self.samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            self.samples += block.size
            yield block


def _chunk_rows(ctx: Context, job_id: str, refs: Sequence[TensorRef]) -> dict[tuple[str, int], ChunkRow]:
    """The job's chunk rows for these tensors, in one query, keyed by (job, chunk index)."""
    return {(job_id, row.idx): row for row in queries.get_chunks(ctx.db, job_id, [r.chunk_idx for r in refs])}


def _chunk(row: ChunkRow) -> Chunk:
    return Chunk(row.idx, tuple((a, b) for a, b in row.spans), tuple((a, b) for a, b in row.speech or ()))
