"""Renderings of a transcript: txt, srt, vtt and README's json object.

With speakers (a diarized job), VTT marks each cue with its voice (`<v S1>`), and
TXT and SRT name the speaker where the speaker changes ("S2: ..."); without them
every rendering is what it always was."""

from __future__ import annotations

import json

from murmur.workers.transcript import Transcript

FORMATS = ("txt", "srt", "vtt", "json")


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(transcript.to_json(), ensure_ascii=False)
    if fmt == "txt":
        return "\n".join(said for said in _said(transcript))
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{clock(start, ',')} --> {clock(end, ',')}\n{text}\n"
            for i, ((start, end, _), text) in enumerate(zip(cues(transcript), _said(transcript)), start=1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(
            f"{clock(start, '.')} --> {clock(end, '.')}\n{_voiced(text, segment.speaker)}\n"
            for (start, end, text), segment in zip(cues(transcript), transcript.segments))
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Subtitle cues: one per segment, each ending before the next begins, so no two are on screen at once."""
    segments = transcript.segments
    return [
        (s.start, min(s.end, segments[i + 1].start) if i + 1 < len(segments) else s.end, s.text)
        for i, s in enumerate(segments)
    ]


def _said(transcript: Transcript) -> list[str]:
    """Each segment's text, led by its speaker's label where the speaker changes."""
    out, last = [], None
    for segment in transcript.segments:
        changed = segment.speaker is not None and segment.speaker != last
        out.append(f"{segment.speaker}: {segment.text}" if changed else segment.text)
        last = segment.speaker
    return out


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
