"""Renderings of a transcript: txt, srt, vtt and README's json object."""

from __future__ import annotations

import json

from murmur.workers.transcript import Transcript

FORMATS = ("txt", "srt", "vtt", "json")


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(transcript.to_json(), ensure_ascii=False)
    if fmt == "txt":
        return "\n".join(s.text for s in transcript.segments)
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{clock(start, ',')} --> {clock(end, ',')}\n{text}\n" for i, (start, end, text) in enumerate(cues(transcript), start=1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(f"{clock(start, '.')} --> {clock(end, '.')}\n{text}\n" for start, end, text in cues(transcript))
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Subtitle cues: one per segment, each ending before the next begins, so no two are on screen at once."""
    segments = transcript.segments
    return [
        (s.start, min(s.end, segments[i + 1].start) if i + 1 < len(segments) else s.end, s.text)
        for i, s in enumerate(segments)
    ]


def clock(seconds: float, decimal_mark: str) -> str:
    """HH:MM:SS plus milliseconds, rounded to the nearest millisecond; negative times read as zero."""
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"
