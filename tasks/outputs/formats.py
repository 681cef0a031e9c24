"""Renderings of a transcript: txt, srt, vtt and README's json object.

With speakers (a diarized job), VTT marks each cue with its voice (`<v S1>`), and
TXT and SRT name the speaker where the speaker changes ("S2: ..."); without them
every rendering is what it always was."""

from __future__ import annotations

import json
from collections.abc import Iterable

from murmur.workers.transcript import Segment, Transcript

FORMATS = ("txt", "srt", "vtt", "json")


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(transcript.to_json(), ensure_ascii=False)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    lines = Lines(fmt)
    return "\n".join([*lines.feed(transcript.segments), *lines.finish()])


class Lines:
    """A txt, srt or vtt rendering written as the transcript is released, a stretch at a time.

    Each piece is printed as a line of its own, and the pieces joined by newlines are
    `render`'s text exactly. A subtitle cue ends before the next begins, so no two are
    on screen at once: the newest cue waits for the next segment (or the end).
    """

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._held: Segment | None = None  # a cue's segment, until its end is known
        self._cues = 0
        self._speaker: str | None = None
        self._started = False

    def feed(self, segments: Iterable[Segment]) -> list[str]:
        out = self._header()
        for segment in segments:
            if self._fmt == "txt":
                out.append(self._said(segment))
                self._cues += 1
                continue
            if self._held is not None:
                out.append(self._cue(self._held, min(self._held.end, segment.start)))
            self._held = segment
        return out

    def finish(self) -> list[str]:
        out = self._header()
        if self._held is not None:
            out.append(self._cue(self._held, self._held.end))
            self._held = None
        if self._cues == 0:
            out.append("")  # an empty transcript is still one (empty) line
        return out

    def _header(self) -> list[str]:
        if self._started:
            return []
        self._started = True
        return ["WEBVTT\n"] if self._fmt == "vtt" else []

    def _cue(self, segment: Segment, end: float) -> str:
        self._cues += 1
        if self._fmt == "srt":
            return f"{self._cues}\n{clock(segment.start, ',')} --> {clock(end, ',')}\n{self._said(segment)}\n"
        return f"{clock(segment.start, '.')} --> {clock(end, '.')}\n{_voiced(segment.text, segment.speaker)}\n"

    def _said(self, segment: Segment) -> str:
        """The segment's text, led by its speaker's label where the speaker changes."""
        changed = segment.speaker is not None and segment.speaker != self._speaker
        self._speaker = segment.speaker
        return f"{segment.speaker}: {segment.text}" if changed else segment.text


def _voiced(text: str, speaker: str | None) -> str:
    """A VTT cue's text in its speaker's voice span; the cue text may not hold "<", "&" or "-->" as they are."""
    if speaker is None:
        return text
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    label = speaker.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<v {label}>{escaped}</v>"


def clock(seconds: float, decimal_mark: str) -> str:
    """HH:MM:SS plus milliseconds, rounded to the nearest millisecond; negative times read as zero."""
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"
