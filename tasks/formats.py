"""A finished job's transcript and its renderings: txt, srt, vtt, json."""

from __future__ import annotations

import json
from dataclasses import dataclass

FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class Transcript:
    job_id: str
    language: str | None
    language_probability: float | None
    duration: float | None
    segments: list[dict]

    @classmethod
    def from_rows(cls, job, rows) -> Transcript:
        segments = []
        for row in rows:
            segment = {
                "start": row.start,
                "end": row.end,
                "text": row.text,
                "language": row.language,
                "chunk": row.chunk_idx,
                "avg_logprob": round(row.avg_logprob, 4),
                "no_speech_prob": round(row.no_speech_prob, 4),
                "compression_ratio": round(row.compression_ratio, 4),
            }
            if row.words is not None:
                segment["words"] = row.words
            segments.append(segment)
        return cls(job.id, job.language, job.language_probability, job.duration, segments)

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments)

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "language": self.language,
            "language_probability": self.language_probability,
            "duration": self.duration,
            "segments": self.segments,
        }


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(transcript.to_json(), ensure_ascii=False)
    if fmt == "txt":
        return "\n".join(s["text"] for s in transcript.segments)
    if fmt == "srt":
        return "\n".join(
            f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text']}\n"
            for i, s in enumerate(transcript.segments, start=1)
        )
    if fmt == "vtt":
        cues = "\n".join(f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text']}\n" for s in transcript.segments)
        return "WEBVTT\n\n" + cues
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _clock(seconds: float, decimal_mark: str) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"
