"""The four stages of a job, as both runners call them.

Each stage loads its inputs (job row, tensors), calls the compute in
`workers/`, and stores its outputs (rows, tensors). The embedded runner calls
them in a loop; Celery tasks will call the same functions one message at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import utcnow
from tasks.formats import Transcript
from tasks.options import JobOptions
from tasks.store import LocalTensorStore, TensorRef
from workers.cpu.audio import SAMPLE_RATE, decode_audio
from workers.cpu.chunking import Chunk, chunk_audio, plan_chunks
from workers.cpu.features import iter_log_mel
from workers.cpu.vad import SileroVad, speech_spans
from workers.gpu.decode import Segment, decode_batch, encode, top_languages
from workers.gpu.language import DETECT_CHUNKS, detection_chunks, vote
from workers.gpu.model import LoadedModel, load_model, resolve_device

MULTILINGUAL_DETECT_CHUNKS = 8  # more voters: the file is expected to hold several languages


@dataclass
class Context:
    """What the stages share in one process: the database, the tensor store, models."""

    db: sessionmaker[Session]
    store: LocalTensorStore = field(default_factory=LocalTensorStore)
    device: str = "auto"
    compute_type: str = "auto"
    threads: int = 0  # CPU threads for the model in all; 0: every core

    @cached_property
    def vad(self) -> SileroVad:
        return SileroVad()

    @property
    def cpu_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def decoders(self) -> int:
        """How many batches may decode at once: one per CPU thread on CPU; one on a GPU."""
        return 1 if resolve_device(self.device) == "cuda" else self.cpu_threads

    def model(self, name: str, concurrent: int = 1) -> LoadedModel:
        """The model for `concurrent` simultaneous calls, sharing the CPU threads between them."""
        if concurrent > 1 and resolve_device(self.device) == "cpu":
            return load_model(name, self.device, self.compute_type, max(1, self.cpu_threads // concurrent), concurrent)
        return load_model(name, self.device, self.compute_type, self.cpu_threads, 1)


def job_options(ctx: Context, job_id: str) -> JobOptions:
    return JobOptions.from_json(queries.get_job(ctx.db, job_id).options)


def prepare(ctx: Context, job_id: str) -> list[TensorRef]:
    """Decode, VAD, chunk and featurize the job's source; one tensor per chunk."""
    started = time.perf_counter()
    job = queries.get_job(ctx.db, job_id)
    options = JobOptions.from_json(job.options)
    n_mels = ctx.model(options.model).n_mels
    queries.update_job(ctx.db, job_id, status="running", started_at=utcnow())
    audio = decode_audio(job.source)
    duration = audio.size / SAMPLE_RATE
    probs = ctx.vad.probabilities(audio)
    chunks = plan_chunks(speech_spans(probs), probs, duration, merge=not options.multilingual)
    # chunk audio is cut lazily, a block at a time, so the file is not held twice
    features = iter_log_mel((chunk_audio(audio, c) for c in chunks), n_mels)
    refs = [ctx.store.put(job_id, c.idx, f) for c, f in zip(chunks, features)]
    del audio
    queries.save_chunks(ctx.db, job_id, [c.to_json() for c in chunks], duration)
    queries.add_timing(ctx.db, job_id, "prepare", time.perf_counter() - started)
    return refs


def detect_language(ctx: Context, job_id: str, refs: Sequence[TensorRef]) -> str | None:
    """The job's language, voted over chunks spread across the file.

    Skipped (returns what is known) when the job names a language or the model
    is English-only. In multilingual mode each chunk is detected again when it
    is decoded, among the languages this vote found spoken in the file.
    """
    started = time.perf_counter()
    options = job_options(ctx, job_id)
    model = ctx.model(options.model)
    spoken: list[str] = []
    if options.language:
        language, probability = options.language, None
    elif not model.multilingual:
        language, probability = "en", None
    else:
        picked = [refs[i] for i in detection_chunks(len(refs), MULTILINGUAL_DETECT_CHUNKS if options.multilingual else DETECT_CHUNKS)]
        windows = top_languages(model, encode(model, _load_features(ctx, job_id, picked))) if picked else []
        guess = vote(windows)
        language, probability = guess.language, guess.probability
        if options.multilingual:
            spoken = list(guess.spoken())
    queries.update_job(ctx.db, job_id, language=language, language_probability=probability, spoken_languages=spoken)
    queries.add_timing(ctx.db, job_id, "detect", time.perf_counter() - started)
    return language


def decode(ctx: Context, job_id: str, refs: Sequence[TensorRef], concurrent: int = 1) -> int:
    """Decode one batch of a job's chunks and store each chunk's segments.

    `concurrent` is how many batches the caller runs at the same time.
    """
    started = time.perf_counter()
    job = queries.get_job(ctx.db, job_id)
    options = JobOptions.from_json(job.options)
    model = ctx.model(options.model, concurrent)
    indices = [_chunk_idx(ref) for ref in refs]
    rows = {row.idx: row for row in queries.get_chunks(ctx.db, job_id, indices)}
    chunks = [Chunk.from_json({"idx": i, "spans": rows[i].spans}) for i in indices]  # in the order of the tensors
    features = _load_features(ctx, job_id, refs)
    results = decode_batch(model, features, chunks, options.decode_options(job.language, job.spoken_languages))
    for chunk, segments in zip(chunks, results):
        language = segments[0].language if segments else None
        queries.replace_segments(ctx.db, job_id, chunk.idx, [_segment_row(s) for s in segments], language)
    ctx.store.delete(list(refs))
    queries.add_timing(ctx.db, job_id, "decode", time.perf_counter() - started)
    return len(chunks)


def assemble(ctx: Context, job_id: str) -> Transcript:
    """Mark the job done and return its ordered transcript."""
    queries.update_job(ctx.db, job_id, status="done", finished_at=utcnow())
    return transcript(ctx.db, job_id)


def transcript(db: sessionmaker[Session], job_id: str) -> Transcript:
    job = queries.get_job(db, job_id)
    return Transcript.from_rows(job, queries.get_segments(db, job_id))


def _load_features(ctx: Context, job_id: str, refs: Sequence[TensorRef]) -> np.ndarray:
    arrays = []
    for ref in refs:
        array = ctx.store.get(ref)
        if array is None:
            raise RuntimeError(f"features {ref.key} are missing from the tensor store")
        arrays.append(array)
    return np.stack(arrays)


def _chunk_idx(ref: TensorRef) -> int:
    return int(ref.key.rsplit(":", 1)[1])


def _segment_row(segment: Segment) -> dict:
    return {
        "idx": segment.idx,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "language": segment.language,
        "avg_logprob": segment.avg_logprob,
        "no_speech_prob": segment.no_speech_prob,
        "compression_ratio": segment.compression_ratio,
        "words": [vars(w) for w in segment.words] if segment.words is not None else None,
    }
