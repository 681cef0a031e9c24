"""Batched decoding with CTranslate2: features of many chunks → timed segments.

Why text first, times second: with timestamp tokens on, Whisper ends a window
early when its last sentence runs on, expecting the caller to seek there; a
batch has no next window, so that sentence is lost (WER 5.5 → 12.6 on
en_5min). So each batch is encoded once, the text is generated without
timestamps (complete), and times come from CTranslate2's `align`, one
teacher-forced pass over the same encoder output whose cross-attention gives
every token a time. The timed words go to `segmentation`, which makes them
sentences in source time.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import ctranslate2
import numpy as np

from murmur.workers.cpu.chunking import PAD_S, Chunk
from murmur.workers.gpu import filters
from murmur.workers.gpu.language import window_languages
from murmur.workers.gpu.model import LoadedModel
from murmur.workers.gpu.packing import Window, content_digest, pack_features, plan_windows
from murmur.workers.gpu.segmentation import before_loop, sentences
from murmur.workers.options import JobOptions, OutputLanguage, WhisperTask
from murmur.workers.prompt import Prompt
from murmur.workers.transcript import Segment, Word
from murmur.workers.window import frames, place

ALIGN_STEPS_PER_SECOND = 50  # encoder frames, the unit of alignment times
MAX_LENGTH = 448
CPU_ENCODE_PIECE = 1  # windows per encoder (and align) call on CPU (see `encode`)
# a packed chunk given fewer words than this per second of its speech lost words to a neighbour
# or to Whisper skipping it, and is decoded alone (speech runs at 2-4 words a second)
MIN_PACKED_WORDS_PER_S = 0.5
# speech after a chunk's last word that is decoded again: more than a breath or a word's tail
REST_MIN_SPEECH_S = 1.5
MAX_RESTS = 2
# a window of speech whose text is not trusted is sampled again at these temperatures (Whisper's fallback)
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
# a sampled reading is given this many tokens per second of the speech the VAD heard, and a few more:
# a fast talker in a language of short tokens reads under 10 a second, and a try at temperature 1.0 on a
# cough would otherwise run on for 448 tokens
FALLBACK_TOKENS_PER_S = 15
FALLBACK_MIN_TOKENS = 10
log = logging.getLogger("murmur")


def encode(model: LoadedModel, features: np.ndarray, to_cpu: bool = False) -> ctranslate2.StorageView:
    """Run the encoder once for a batch; generate, align and detect all reuse it.

    `to_cpu`: the output in host memory, for a caller that keeps it past this batch
    (CTranslate2 moves it back to the model's device when it is used).

    On CPU the encoder takes `CPU_ENCODE_PIECE` windows per call: its attention
    holds ≈70 MB per window at once, so a batch of 8 peaked ≈600 MB above the
    model, and on one thread a window alone encodes fastest (0.56–0.60 s per
    window here, against 0.62 in pieces of 2 and 0.72 in pieces of 6).
    """
    return one_batch([output for _, output in encoded_pieces(model, features, to_cpu)])


def encoded_pieces(model: LoadedModel, features: np.ndarray, to_cpu: bool = False) -> Iterator[tuple[slice, ctranslate2.StorageView]]:
    """`encode`'s calls one at a time, each with the windows it covers, for a caller that may have
    enough before the last (a language vote that is settled)."""
    for piece in _pieces(model, len(features)):
        yield piece, model.whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features[piece])), to_cpu=to_cpu)


def one_batch(parts: Sequence[ctranslate2.StorageView]) -> ctranslate2.StorageView:
    """Encoder outputs as one batch: a single one as it is, where it is (a GPU's stays there);
    several `joined`."""
    return parts[0] if len(parts) == 1 else joined(parts)


def joined(parts: Sequence[ctranslate2.StorageView | np.ndarray]) -> ctranslate2.StorageView:
    """Encoder outputs in host memory, one batch after another, as one batch."""
    return ctranslate2.StorageView.from_array(np.concatenate([host_array(p) for p in parts]))


def host_array(output: ctranslate2.StorageView | np.ndarray) -> np.ndarray:
    """An encoder output in host memory as numpy; bfloat16, which numpy lacks, as float32
    (CTranslate2 casts it back to the model's type when it is used)."""
    if isinstance(output, np.ndarray):
        return output
    if output.dtype not in (ctranslate2.DataType.float32, ctranslate2.DataType.float16):
        output = output.to(ctranslate2.DataType.float32)
    return np.asarray(output)


def _pieces(model: LoadedModel, n: int) -> list[slice]:
    """A batch of `n` windows for calls that hold memory per window: whole on a GPU,
    `CPU_ENCODE_PIECE` windows at a time on CPU (see `encode`)."""
    if model.device != "cpu" or n <= CPU_ENCODE_PIECE:
        return [slice(0, n)]
    return [slice(i, i + CPU_ENCODE_PIECE) for i in range(0, n, CPU_ENCODE_PIECE)]


def decode_batch(
    model: LoadedModel,
    features: np.ndarray,
    chunks: list[Chunk],
    options: JobOptions,
    language: str | None = None,
    candidates: tuple[str, ...] = (),
    jobs: Sequence[str] | None = None,
    rests: int = MAX_RESTS,
    encoded: ctranslate2.StorageView | None = None,
    prompts: Sequence[Prompt] | None = None,
) -> list[list[Segment]]:
    """Segments for every chunk of the batch, hallucinations removed.

    `language` is the job's (given or voted). With `options.multilingual`, each
    chunk's language is detected on its own, chosen among `candidates` (the
    languages the whole file voted for) when given, so a short chunk is not
    read as a language nobody speaks in the file. `jobs` (each chunk's job)
    lets short chunks of different jobs share a window (see `packing`); a
    multilingual batch is never packed, as its languages are per window.
    `prompts`: each chunk's job's prompt (default: `options.prompting` for all);
    a window is decoded after its chunks' prompt.
    Speech left after a chunk's last heard word is decoded again, `rests` times at most.
    `encoded` is the encoder output of `features`, when the caller ran it already
    (to detect the language); the chunks then keep a window each.
    """
    ctranslate2.set_random_seed(options.seed)
    durations = [c.duration for c in chunks]
    prompts = list(prompts) if prompts is not None else [options.prompting] * len(chunks)
    if jobs is None or options.multilingual or encoded is not None:
        windows = [Window((i,), ((0.0, d),)) for i, d in enumerate(durations)]
    else:
        windows = plan_windows(durations, jobs, [content_digest(f, d) for f, d in zip(features, durations)], prompts)
        if len(windows) < len(chunks):
            log.info("packed %d chunks of %d jobs into %d windows", len(chunks), len(set(jobs)), len(windows))
    if encoded is None:
        encoded = encode(model, pack_features(features, durations, windows))
    languages = window_languages(model, encoded, len(windows), options, language, candidates)
    whisper_tasks = [_whisper_task(lang, options) for lang in languages]
    tok = model.tokenizer
    starts = [tok.start_sequence(lang, whisper_task) for lang, whisper_task in zip(languages, whisper_tasks)]
    previous = _previous_texts(model, [prompts[w.members[0]] for w in windows])
    heard = [any(chunks[m].speech for m in w.members) for w in windows]
    decoded = _generate(model, encoded, [p + s for p, s in zip(previous, starts)], options, languages, heard)
    lost = [i for i, (d, w) in enumerate(zip(decoded, windows)) if not d.kept and heard[i] and len(w.members) == 1]
    if lost:  # a window of speech that looped from its start or was judged silent: decoded again
        limits = [FALLBACK_MIN_TOKENS + math.ceil(FALLBACK_TOKENS_PER_S * _speech_seconds(chunks[windows[i].members[0]]))
                  for i in lost]
        again = _decode_again(model, _rows(encoded, lost), [previous[i] for i in lost], [starts[i] for i in lost],
                              options, [languages[i] for i in lost], [decoded[i] for i in lost], limits)
        for i, d in zip(lost, again):
            decoded[i] = d
    lengths = [w.length for w in windows]
    timings = _align(model, encoded, lengths, starts, [d.tokens if d.kept else [] for d in decoded])
    out: list[list[Segment]] = [[] for _ in chunks]
    unheard: list[int] = []
    for i, window in enumerate(windows):
        d = decoded[i]
        if not d.kept:
            unheard.extend(window.members if len(window.members) > 1 else ())
            continue
        words = _timed_words(model, lengths[i], d.tokens, timings[i], languages[i])
        for member, member_words in zip(window.members, _split_words(window, words, durations)):
            if len(window.members) == 1 or len(member_words) >= MIN_PACKED_WORDS_PER_S * _speech_seconds(chunks[member]):
                out[member] = sentences(chunks[member], member_words, languages[i], d.avg_logprob,
                                         d.no_speech_prob, options.keeps_words)
            else:
                unheard.append(member)
    if unheard:  # Whisper skipped (part of) a packed chunk, or judged the window silent: each gets its own window
        alone = decode_batch(model, features[unheard], [chunks[m] for m in unheard], options, language, candidates,
                             rests=0, prompts=[prompts[m] for m in unheard])
        for member, segments in zip(unheard, alone):
            out[member] = segments
    if rests:
        _decode_rests(model, features, chunks, out, options, language, candidates, rests, prompts)
    return out


@dataclass
class _Decoded:
    """A window's text (cut before a loop), its scores, and whether it is trusted."""

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    kept: bool


def _previous_texts(model: LoadedModel, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Each window's <|startofprev|> and prompt tokens (none without a prompt), counted against the budget."""
    tok = model.tokenizer
    ids = {prompt: [tok.previous, *prompt.token_ids(tok.encode)] for prompt in set(prompts) if prompt}
    return [ids.get(prompt, []) for prompt in prompts]


def _generate(model, encoded, prefixes, options: JobOptions, languages, heard, temperature: float = 0.0,
              limits: Sequence[int] | None = None) -> list[_Decoded]:
    """One decoder pass over a batch: beam search, or at a temperature one sampled reading each;
    `limits`: the most tokens each item may add (default: as many as the decoder holds)."""
    tok = model.tokenizer
    sampling = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature} if temperature else \
        {"beam_size": options.beam_size}
    # CTranslate2 needs <|startoftranscript|> at one position in a call: one call per length of previous text
    calls: dict[int, list[int]] = defaultdict(list)
    for i, prefix in enumerate(prefixes):
        calls[prefix.index(tok.sot)].append(i)
    results: list = [None] * len(prefixes)
    for rows in calls.values():
        part = encoded if len(calls) == 1 else _rows(encoded, rows)
        longest = MAX_LENGTH if limits is None else min(MAX_LENGTH, max(len(prefixes[i]) + 1 + limits[i] for i in rows))
        for i, result in zip(rows, model.whisper.generate(
            part,
            [prefixes[i] + [tok.no_timestamps] for i in rows],
            max_length=longest,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            **sampling,
        )):
            results[i] = result
    decoded = []
    for result, lang, speech in zip(results, languages, heard):
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]
        # avg log-probability per token with the end token counted, as Whisper reports it
        avg_logprob = result.scores[0] * max(len(tokens), 1) / (len(tokens) + 1)
        # a loop keeps what came before it; the speech after that is decoded again (`_decode_rests`)
        tokens = tokens[: before_loop(tok.words(tokens, lang))]
        kept = (bool(tokens)
                and not filters.is_silence(result.no_speech_prob, avg_logprob, heard=speech)
                # a loop over the whole window: nothing in it can be trusted
                and not filters.is_repetitive(tok.text(tokens)))
        decoded.append(_Decoded(tokens, avg_logprob, result.no_speech_prob, kept))
    return decoded


def _decode_again(model, encoded, previous, starts, options: JobOptions, languages, first: list[_Decoded],
                  limits: Sequence[int]) -> list[_Decoded]:
    """Windows the VAD heard speech in whose text came out empty, a loop from the start, or judged
    silent, decoded again until their text is trusted or every try has failed (then they are noise).

    Sampled at rising temperatures after its own prompt, as Whisper's fallback does, then, for a
    window that had a prompt, by beam search without it (a prompt can start a loop).
    A window's text is CPU- and seed-dependent: one machine's int8 kernels loop where another's do not.
    `limits`: the most tokens each window's reading may hold, from the speech it holds.
    """
    best = list(first)
    tries = [(t, True) for t in FALLBACK_TEMPERATURES] + ([(0.0, False)] if any(previous) else [])
    for temperature, with_prompt in tries:
        todo = [i for i, d in enumerate(best) if not d.kept]
        if not todo:
            break
        log.info("decoding %d window(s) of speech again (%s, temperature %.1f)", len(todo),
                 "with the prompt" if with_prompt else "without a prompt", temperature)
        again = _generate(model, _rows(encoded, todo), [(previous[i] if with_prompt else []) + starts[i] for i in todo],
                          options, [languages[i] for i in todo], [True] * len(todo), temperature, [limits[i] for i in todo])
        for i, d in zip(todo, again):
            if d.kept:
                best[i] = d
    return best


def _rows(encoded: ctranslate2.StorageView, rows: Sequence[int]) -> ctranslate2.StorageView:
    """Some batch items of an encoder output (through host memory: CTranslate2 moves them back to the model's device)."""
    if encoded.device != "cpu":
        encoded = encoded.to_device(ctranslate2.Device.cpu)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(host_array(encoded)[list(rows)]))


def _decode_rests(model, features, chunks, out, options, language, candidates, rests: int, prompts) -> None:
    """Decode again, and add to `out`, the speech each chunk has after its last heard word.

    Whisper sometimes ends a window early (a sentence that sounds like a
    goodbye) or loops; with no next window to seek to, the rest of the chunk
    would be lost. The rest is shifted to the start of a window of its own,
    with the chunk's own silence after it.
    """
    todo = []
    for m, chunk in enumerate(chunks):
        if not out[m]:
            continue  # silent, or nothing trusted: no word to continue from
        heard = out[m][-1].end
        if sum(b - max(a, heard) for a, b in chunk.speech if b > heard) < REST_MIN_SPEECH_S:
            continue
        start = next(max(a - PAD_S, heard) for a, b in chunk.speech if b > heard)
        todo.append((m, chunk.tail(start), frames(chunk.to_chunk(start))))
    if not todo:
        return
    log.info("decoding the unheard rest of %d chunk(s)", len(todo))
    shifted = np.empty((len(todo), *features.shape[1:]), dtype=features.dtype)
    for row, (m, _, offset) in enumerate(todo):
        place(shifted[row], features[m], at=0, begin=offset)
    again = decode_batch(model, shifted, [rest for _, rest, _ in todo], options, language, candidates, rests=rests - 1,
                         prompts=[prompts[m] for m, _, _ in todo])
    for (m, _, _), segments in zip(todo, again):
        out[m] = [replace(s, idx=i) for i, s in enumerate(out[m] + segments)]


def _speech_seconds(chunk: Chunk) -> float:
    return sum(b - a for a, b in chunk.speech) if chunk.speech else chunk.duration


def _split_words(window: Window, words: list[Word], durations: Sequence[float]) -> list[list[Word]]:
    """Each member's words, in its own chunk time."""
    split: list[list[Word]] = [[] for _ in window.members]
    for word in words:
        k = window.member_of(word.start, word.end)
        offset, limit = window.spans[k][0], durations[window.members[k]]
        start = min(max(word.start - offset, 0.0), limit)
        split[k].append(Word(start, min(max(word.end - offset, start), limit), word.text, word.probability))
    return split


def _whisper_task(language: str | None, options: JobOptions) -> WhisperTask:
    if options.task == WhisperTask.translate:
        return WhisperTask.translate
    if options.multilingual and options.output_language == OutputLanguage.en and language != "en":
        return WhisperTask.translate
    return WhisperTask.transcribe


def _align(model, encoded, lengths, starts, texts) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per chunk with text: start time (s) of each text token and of the end token, and token probabilities.

    `align` takes one start sequence per call, so chunks are grouped by theirs
    (more than one group only in multilingual mode); every call gets the whole
    batch's encoder output, with no tokens for the chunks outside its group.
    """
    timings: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(lengths)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (start, tokens) in enumerate(zip(starts, texts)):
        if tokens:
            groups[tuple(start)].append(i)
    window_frames = [frames(length) for length in lengths]
    pieces = _pieces(model, len(lengths))
    array = np.asarray(encoded) if len(pieces) > 1 else None  # a view of the CPU output, sliced per piece
    for start, members in groups.items():
        wanted = set(members)
        tokens = [t if i in wanted else [] for i, t in enumerate(texts)]
        results = []
        for p in pieces:
            piece = encoded if array is None else ctranslate2.StorageView.from_array(array[p])
            results += model.whisper.align(piece, list(start), tokens[p], window_frames[p])
        for i in members:
            pairs = np.asarray(results[i].alignments, dtype=np.int64).reshape(-1, 2)
            n = len(texts[i]) + 1  # text tokens and the end token
            first = np.full(n, -1, dtype=np.int64)
            text_idx, order = np.unique(pairs[:, 0], return_index=True)
            keep = text_idx < n
            first[text_idx[keep]] = pairs[order[keep], 1]
            first = np.maximum.accumulate(np.where(first < 0, 0, first))  # monotone, gaps filled
            timings[i] = (first / ALIGN_STEPS_PER_SECOND, np.asarray(results[i].text_token_probs, dtype=np.float64))
    return timings


def _timed_words(model, limit: float, tokens, timing, language) -> list[Word]:
    starts, probs = timing
    words = []
    position = 0
    for text, word_tokens in model.tokenizer.words(tokens, language):
        begin, end = position, position + len(word_tokens)
        t0, t1 = min(starts[begin], limit), min(starts[end], limit)
        p = float(np.mean(probs[begin:end])) if probs.size >= end else 0.0
        words.append(Word(t0, max(t0, t1), text, p))
        position = end
    return words
