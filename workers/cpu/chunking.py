"""Chunking: speech spans → chunks of at most 30 s, each a concatenation of spans.

Whisper sees 30 s windows. Spans get ~100 ms of padding each side (so onsets
and word tails are not clipped), a span that still runs past 30 s is cut at
its quietest point (lowest speech probability) in the second half of the
window, and consecutive pieces are greedily packed into chunks. Silence
between spans is left out of a chunk, so a chunk keeps the list of source
spans it was built from to map its own time back to source time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from murmur.workers.cpu.audio import SAMPLE_RATE
from murmur.workers.cpu.vad import WINDOW_S, SpeechSpan

CHUNK_S = 30.0
PAD_S = 0.1


@dataclass(frozen=True)
class Chunk:
    """One Whisper window's worth of audio: source spans played back to back."""

    idx: int
    spans: tuple[tuple[float, float], ...]

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


def plan_chunks(
    spans: Sequence[SpeechSpan],
    probs: np.ndarray,
    duration: float,
    max_s: float = CHUNK_S,
    pad_s: float = PAD_S,
    merge: bool = True,
) -> list[Chunk]:
    """Pad, min-cut and greedily merge speech spans into chunks of at most `max_s`.

    `merge=False` keeps each speech span its own chunk: for code-switched audio,
    where a chunk's language is detected once and must not span two languages.
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
    return [Chunk(idx=i, spans=tuple(_round_spans(c))) for i, c in enumerate(chunks)]


def chunk_audio(audio: np.ndarray, chunk: Chunk) -> np.ndarray:
    """The chunk's samples: its source spans back to back."""
    parts = [audio[int(round(a * SAMPLE_RATE)) : int(round(b * SAMPLE_RATE))] for a, b in chunk.spans]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
    """Cut [a, b] into pieces of at most max_s at the least speech-like windows."""
    pieces = []
    while b - a > max_s:
        lo = int((a + max_s / 2) / WINDOW_S)
        hi = int((a + max_s) / WINDOW_S)  # the window ending by a + max_s
        window = probs[lo:hi]
        if window.size == 0:
            cut = a + max_s
        else:
            cut = (lo + int(np.argmin(window))) * WINDOW_S
            cut = min(max(cut, a + WINDOW_S), a + max_s)
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


def _round_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    # Whole samples, so a chunk's audio and its mapping agree exactly.
    return [(round(a * SAMPLE_RATE) / SAMPLE_RATE, round(b * SAMPLE_RATE) / SAMPLE_RATE) for a, b in spans]
