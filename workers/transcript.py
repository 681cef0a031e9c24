"""What transcription produces: words, sentence segments and a job's transcript.

`Segment` is the one record of a piece of transcript: decode builds it, the
database stores it as it is (db.models maps this very class onto the
`segments` table), and the formats render it. Nothing here imports a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Word:
    start: float
    end: float
    text: str
    probability: float
    speaker: str | None = None  # with diarization: who said it (None where the VAD heard no speech in its span)

    def to_json(self) -> dict:
        out = asdict(self)
        if self.speaker is None:
            del out["speaker"]
        return out


@dataclass
class Segment:
    """A sentence-like piece of transcript in source time."""

    chunk_idx: int
    idx: int  # position within its chunk
    start: float
    end: float
    text: str
    language: str | None = field(metadata={"max_length": 16})  # a language code
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] | None = field(default=None)
    speaker: str | None = field(default=None, metadata={"stored": False})  # given at reading, from the job's turns

    def to_json(self) -> dict:
        """The segment of README's JSON contract."""
        out = {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "language": self.language,
            "chunk": self.chunk_idx,
            "avg_logprob": round(self.avg_logprob, 4),
            "no_speech_prob": round(self.no_speech_prob, 4),
            "compression_ratio": round(self.compression_ratio, 4),
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        if self.words is not None:
            out["words"] = [w.to_json() for w in self.words]
        return out


@dataclass(frozen=True)
class Transcript:
    """A finished job: its language, its duration and its segments in order."""

    job_id: str
    language: str | None
    language_probability: float | None
    duration: float | None
    segments: list[Segment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "language": self.language,
            "language_probability": self.language_probability,
            "duration": self.duration,
            "segments": [s.to_json() for s in self.segments],
        }
