"""Speaker turns and the transcript they label: a diarized job's segments read with their speakers.

No numpy here: the database layer labels a diarized transcript whenever it is
read, and a producer's `murmur status` or `Client` must stay light.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace

from murmur.workers.transcript import Segment, Transcript, Word


@dataclass(frozen=True)
class Turn:
    """Stretch of speech in source time and who spoke it."""

    start: float
    end: float
    speaker: str


def label_segments(segments: Sequence[Segment], turns: Sequence[Turn], keep_words: bool) -> list[Segment]:
    """Segments with their speaker, cut where the speaker changes between words; each word its own speaker.

    A word takes the speaker who holds most of its span, and none if no turn
    overlaps it: a word is never given a voice the VAD did not hear where it
    lies. Such a word stays with the words around it."""
    starts = [t.start for t in turns]
    out: list[Segment] = []
    for segment in segments:
        words = [replace(w, speaker=_speaker_in(turns, starts, w.start, w.end)) for w in segment.words or ()]
        if not words:
            speaker = _speaker_in(turns, starts, segment.start, segment.end) or _nearest_turn(turns, starts, segment.start)
            out.append(replace(segment, speaker=speaker, words=None))
            continue
        for run in _runs(words):
            speaker = next((w.speaker for w in run if w.speaker), None) or _nearest_turn(turns, starts, run[0].start)
            first, last = run[0] is words[0], run[-1] is words[-1]
            out.append(replace(
                segment,
                start=segment.start if first else run[0].start,
                end=segment.end if last else run[-1].end,
                text="".join(w.text for w in run).strip(),
                speaker=speaker,
                words=run if keep_words else None,
            ))
    return out


def _runs(words: list[Word]) -> list[list[Word]]:
    """Consecutive words of one speaker; an unlabelled word joins the run it is in."""
    runs: list[list[Word]] = [[]]
    current = None
    for w in words:
        if w.speaker is not None and current is not None and w.speaker != current and runs[-1]:
            runs.append([])
        if w.speaker is not None:
            current = w.speaker
        runs[-1].append(w)
    return runs


def _speaker_in(turns: Sequence[Turn], starts: list[float], start: float, end: float) -> str | None:
    """Who holds most of [start, end]; None when no turn overlaps it."""
    held: dict[str, float] = {}
    i = max(bisect.bisect_right(starts, start) - 1, 0)
    while i < len(turns) and turns[i].start < end:
        overlap = min(end, turns[i].end) - max(start, turns[i].start)
        if overlap > 0 or (end <= start and turns[i].start <= start <= turns[i].end):
            held[turns[i].speaker] = held.get(turns[i].speaker, 0.0) + max(overlap, 0.0)
        i += 1
    return max(held, key=held.__getitem__) if held else None


def _nearest_turn(turns: Sequence[Turn], starts: list[float], t: float) -> str | None:
    """The speaker of the turn nearest to `t`: a segment with no speech under it still belongs to someone."""
    if not turns:
        return None
    i = bisect.bisect_right(starts, t)
    near = [turns[j] for j in (i - 1, i) if 0 <= j < len(turns)]
    return min(near, key=lambda turn: max(turn.start - t, t - turn.end, 0.0)).speaker


def renamed(transcript: Transcript, names: dict[str, str]) -> Transcript:
    """The transcript with speakers shown by the names given ({"S1": "Ann"}): for downloads a person has labelled."""
    if not names:
        return transcript
    segments = [replace(s, speaker=names.get(s.speaker, s.speaker),
                        words=None if s.words is None else [replace(w, speaker=names.get(w.speaker, w.speaker))
                                                            for w in s.words])
                for s in transcript.segments]
    return replace(transcript, segments=segments)
