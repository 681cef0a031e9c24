"""Packing: several short chunks of different jobs in one Whisper window.

Whisper pads every window to 30 s, so a 6 s clip costs the encoder and the
cross-attention as much as 30 s of speech. Chunks of different jobs that
share a model, options, language and prompt are laid side by side in one window,
`GAP_S` of silence apart, decoded once, and each word goes back to the chunk
whose stretch of the window its time overlaps most.
A job's own chunks are never packed together: the chunker already merged
them as far as its cuts allow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from murmur.workers.window import FRAMES_PER_SECOND, N_FRAMES, WINDOW_S, frames, place

GAP_S = 1.5  # silence between packed chunks: long enough that Whisper ends one speaker's sentence


@dataclass(frozen=True)
class Window:
    """One decoder input: the batch positions of its chunks and where each lies in it (s)."""

    members: tuple[int, ...]
    spans: tuple[tuple[float, float], ...]

    @property
    def length(self) -> float:
        return self.spans[-1][1]

    def member_of(self, start: float, end: float) -> int:
        """Index into `members` of the chunk a word from `start` to `end` belongs to.

        The one its time overlaps most. Not the one it starts in: the alignment
        often starts a chunk's first word in the gap before it, and ends a
        chunk's last word in the gap after it.
        """
        overlaps = [min(end, b) - max(start, a) for a, b in self.spans]
        best = max(range(len(self.spans)), key=overlaps.__getitem__)
        if overlaps[best] > 0:
            return best
        middle = (start + end) / 2  # a word of no length, or one wholly in a gap: the nearest chunk
        return min(range(len(self.spans)), key=lambda k: max(self.spans[k][0] - middle, middle - self.spans[k][1]))


def plan_windows(durations: Sequence[float], jobs: Sequence[str], contents: Sequence[bytes] = (),
                 prompts: Sequence[Hashable] = ()) -> list[Window]:
    """First-fit decreasing: the longest chunks first, each into the first window it fits.

    A chunk fits where the window has room for the gap and the chunk, and holds
    no chunk of the same job, nor one of the same `contents` (a digest of its
    features): Whisper hears the same speech twice as one sentence and the
    alignment spreads it over both. A window is decoded after one prompt, so
    it holds only chunks of equal `prompts`. Windows come back in the order of their first
    member, so a batch of full chunks is returned as it came.
    """
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    packed: list[list[int]] = []
    used: list[float] = []
    for i in order:
        fits = (w for w, members in enumerate(packed)
                if used[w] + GAP_S + _length(durations[i]) <= WINDOW_S and not any(_apart(m, i, jobs, contents, prompts) for m in members))
        w = next(fits, None)
        if w is None:
            packed.append([i])
            used.append(_length(durations[i]))
        else:
            packed[w].append(i)
            used[w] += GAP_S + _length(durations[i])
    windows = []
    for members in packed:
        spans, t = [], 0.0
        for m in members:
            spans.append((t, t + _length(durations[m])))
            t += _length(durations[m]) + GAP_S
        windows.append(Window(tuple(members), tuple(spans)))
    return sorted(windows, key=lambda w: min(w.members))


def pack_features(features: np.ndarray, durations: Sequence[float], windows: Sequence[Window]) -> np.ndarray:
    """The windows' features [len(windows), n_mels, N_FRAMES] from the chunks' own.

    Each chunk's frames fill its stretch and the gap after it (the window's tail,
    for the last): past its end, that is its own silence (`window.place`).
    """
    if all(len(w.members) == 1 for w in windows):
        return features  # nothing packed: the windows are the chunks, in order
    out = np.empty((len(windows), features.shape[1], N_FRAMES), dtype=features.dtype)
    for row, window in enumerate(windows):
        for k, (m, (offset, _)) in enumerate(zip(window.members, window.spans)):
            end = N_FRAMES if k == len(window.members) - 1 else round(window.spans[k + 1][0] * FRAMES_PER_SECOND)
            place(out[row, :, :end], features[m], at=round(offset * FRAMES_PER_SECOND))
    return out


def content_digest(features: np.ndarray, duration: float) -> bytes:
    """Equal for chunks of equal audio: the same clip sent twice."""
    return hashlib.blake2b(np.ascontiguousarray(features[:, : frames(duration)]).tobytes(),
                           digest_size=16).digest()


def _apart(a: int, b: int, jobs: Sequence[str], contents: Sequence[bytes], prompts: Sequence[Hashable]) -> bool:
    """Chunks `a` and `b` may not share a window."""
    return (jobs[a] == jobs[b] or (bool(contents) and contents[a] == contents[b])
            or (bool(prompts) and prompts[a] != prompts[b]))


def _length(duration: float) -> float:
    """A chunk's length in whole frames, so offsets land on frames."""
    return frames(duration) / FRAMES_PER_SECOND
