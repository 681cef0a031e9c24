"""Chunking: speech spans → chunks of at most 30 s, each a concatenation of spans.

Whisper sees 30 s windows. Spans get ~100 ms of padding each side (so onsets
and word tails are not clipped), a span that still runs past 30 s is cut at
its quietest point (lowest speech probability) in the second half of the
window, and consecutive pieces are greedily packed into chunks. Silence
between spans is left out of a chunk, so a chunk keeps the list of source
spans it was built from to map its own time back to source time, and the
finer stretches of speech inside them, so that decode can snap words to where
speech really is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from murmur.workers.cpu.vad import EDGES, STEP_S, SpeechSpan, agreed, speech_spans, surest
from murmur.workers.window import SAMPLE_RATE, WINDOW_S

PAD_S = 0.1


@dataclass(frozen=True)
class Chunk:
    """One Whisper window's worth of audio: source spans played back to back."""

    idx: int
    spans: tuple[tuple[float, float], ...]
    speech: tuple[tuple[float, float], ...] = ()  # where the VAD hears speech inside the spans, source time

    @property
    def start(self) -> float:
        return self.spans[0][0]

    @property
    def end(self) -> float:
        return self.spans[-1][1]

    @property
    def duration(self) -> float:
        return sum(b - a for a, b in self.spans)

    def to_source(self, t: float) -> float:
        """Map a time inside the chunk (seconds from its start) to source time."""
        offset = 0.0
        for a, b in self.spans:
            length = b - a
            if t <= offset + length:
                return a + max(t - offset, 0.0)
            offset += length
        return self.spans[-1][1]

    def word_to_source(self, start: float, end: float) -> tuple[float, float]:
        """A word's chunk times in source time, the word kept within the span it overlaps most.

        Spans play back to back, so a word aligned a little early or late
        straddles the seam between two of them; mapped point by point it would
        begin in the earlier span's tail, seconds before it was said.
        """
        offset, best, most = 0.0, None, 0.0
        for a, b in self.spans:
            overlap = min(end, offset + b - a) - max(start, offset)
            if overlap > most:
                best, most = (a, b, offset), overlap
            offset += b - a
        if best is None:
            return self.to_source(start), self.to_source(end)
        a, b, offset = best
        return a + max(start - offset, 0.0), min(a + end - offset, b)

    def to_chunk(self, t: float) -> float:
        """Map a source time to the chunk's own time (a time between spans goes to the next span's start)."""
        offset = 0.0
        for a, b in self.spans:
            if t <= b:
                return offset + max(t - a, 0.0)
            offset += b - a
        return offset

    def tail(self, t: float) -> Chunk:
        """The part of the chunk from source time `t` on, as a chunk of its own (same index)."""
        spans = tuple((max(a, t), b) for a, b in self.spans if b > t)
        return Chunk(self.idx, spans, tuple((max(a, t), b) for a, b in self.speech if b > t))

    def pauses(self, min_s: float = 0.0) -> list[tuple[float, float]]:
        """The silences between its stretches of speech (source time), those of `min_s` or longer."""
        return [(a[1], b[0]) for a, b in zip(self.speech, self.speech[1:]) if b[0] - a[1] >= max(min_s, 1e-9)]

    def pause_near(self, t: float, reach: float) -> tuple[float, float] | None:
        """The longest pause that comes within `reach` seconds of `t`."""
        near = [p for p in self.pauses() if p[0] - reach <= t <= p[1] + reach]
        return max(near, key=lambda p: p[1] - p[0], default=None)

    def snap(self, start: float, end: float) -> tuple[float, float]:
        """A word's source times trimmed to the stretch of speech it starts in.

        The alignment ends a word where the next token starts; at the end of a
        sentence that is after the pause, so the word would cover the silence.
        A word never spans a pause the VAD heard; its start is taken as it is,
        unless it lies in a pause, when it moves to the stretch the word reaches
        furthest into, or else the nearest one.
        """
        if not self.speech:
            return start, end
        a, b = self.stretch_at(start)
        if not a <= start <= b:
            reached = max(self.speech, key=lambda s: min(end, s[1]) - max(start, s[0]))
            if min(end, reached[1]) > max(start, reached[0]):
                a, b = reached
        start = min(max(start, a), b)
        return start, min(max(end, start), b)

    def stretch_at(self, t: float) -> tuple[float, float]:
        """The stretch of speech `t` lies in, or the nearest one (a chunk with `speech` only)."""
        return min(self.speech, key=lambda s: max(s[0] - t, t - s[1], 0.0))


def plan_heard(each: np.ndarray, duration: float, merge: bool = True) -> list[Chunk]:
    """The chunks of what the VAD heard: `each` holds every network's probability per step (`SileroVad.each`).

    What either network hears is transcribed; where its stretches start and
    stop (for snapping words) is read from what they agree on.
    """
    probs = surest(each)
    return plan_chunks(speech_spans(probs), probs, duration, merge=merge, speech=speech_spans(agreed(each), EDGES))


def plan_chunks(
    spans: Sequence[SpeechSpan],
    probs: np.ndarray,
    duration: float,
    max_s: float = WINDOW_S,
    pad_s: float = PAD_S,
    merge: bool = True,
    speech: Sequence[SpeechSpan] = (),
) -> list[Chunk]:
    """Pad, min-cut and greedily merge speech spans into chunks of at most `max_s`.

    `merge=False` keeps each speech span its own chunk: for code-switched audio,
    where a chunk's language is detected once and must not span two languages.
    `speech` (fine-grained VAD spans) is kept with each chunk where it falls inside.
    """
    pieces = _pad_and_join(spans, duration, pad_s)
    cut: list[tuple[float, float]] = []
    for a, b in pieces:
        cut.extend(_min_cut(a, b, probs, max_s))
    chunks: list[list[tuple[float, float]]] = []
    length = 0.0
    for a, b in cut:
        if merge and chunks and length + (b - a) <= max_s + 1e-6:
            chunks[-1].append((a, b))
            length += b - a
        else:
            chunks.append([(a, b)])
            length = b - a
    planned = []
    for i, c in enumerate(chunks):
        c = _round_spans(c)
        inside = [(max(a, s.start), min(b, s.end)) for a, b in c for s in speech if s.start < b and s.end > a]
        planned.append(Chunk(idx=i, spans=tuple(c), speech=tuple(inside)))
    return planned


def chunk_audio(audio: np.ndarray, chunk: Chunk) -> np.ndarray:
    """The chunk's samples: its source spans back to back."""
    return _cut(audio, chunk, 0)


def cut_chunks(blocks: Iterable[np.ndarray], chunks: Sequence[Chunk]) -> Iterator[np.ndarray]:
    """Each chunk's samples, as `chunk_audio` cuts them, from a file's blocks as they decode.

    `chunks` are in source order; only the audio from the next chunk's start up
    to the newest block is held, so a file of hours never is.
    """
    source = iter(blocks)
    held = np.zeros(0, dtype=np.float32)
    first = 0  # the source sample held[0] is
    for i, chunk in enumerate(chunks):
        end = _sample(chunk.spans[-1][1])
        arriving = []
        have = first + held.size
        while have < end and (block := next(source, None)) is not None:
            arriving.append(block)
            have += block.size
        if arriving:
            held = np.concatenate([held, *arriving])
        yield _cut(held, chunk, first)
        if i + 1 < len(chunks):
            keep_from = min(max(_sample(chunks[i + 1].spans[0][0]) - first, 0), held.size)
            held, first = held[keep_from:], first + keep_from


def _cut(audio: np.ndarray, chunk: Chunk, first: int) -> np.ndarray:
    """The chunk's spans back to back, from `audio` that starts at source sample `first`."""
    parts = [audio[_sample(a) - first : _sample(b) - first] for a, b in chunk.spans]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sample(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _pad_and_join(spans: Sequence[SpeechSpan], duration: float, pad_s: float) -> list[tuple[float, float]]:
    joined: list[tuple[float, float]] = []
    for span in spans:
        a, b = max(0.0, span.start - pad_s), min(duration, span.end + pad_s)
        if b <= a:
            continue
        if joined and a <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], b))
        else:
            joined.append((a, b))
    return joined


def _min_cut(a: float, b: float, probs: np.ndarray, max_s: float) -> list[tuple[float, float]]:
    """Cut [a, b] into pieces of at most max_s at the least speech-like VAD steps."""
    pieces = []
    while b - a > max_s:
        lo = int((a + max_s / 2) / STEP_S)
        hi = int((a + max_s) / STEP_S)  # the step ending by a + max_s
        second_half = probs[lo:hi]
        if second_half.size == 0:
            cut = a + max_s
        else:
            cut = (lo + int(np.argmin(second_half))) * STEP_S
            cut = min(max(cut, a + STEP_S), a + max_s)
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


def _round_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    # Whole samples, so a chunk's audio and its mapping agree exactly.
    return [(round(a * SAMPLE_RATE) / SAMPLE_RATE, round(b * SAMPLE_RATE) / SAMPLE_RATE) for a, b in spans]
