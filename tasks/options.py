"""A job's options: validated once, stored on the job row as JSON."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from workers.errors import MurmurError
from workers.gpu.decode import DecodeOptions
from workers.gpu.model import DEFAULT_MODEL

TASKS = ("transcribe", "translate")
OUTPUT_LANGUAGES = ("hybrid", "en")


@dataclass(frozen=True)
class JobOptions:
    model: str = DEFAULT_MODEL
    language: str | None = None
    task: str = "transcribe"
    multilingual: bool = False
    output_language: str = "hybrid"
    batch_size: int = 8
    beam_size: int = 5
    word_timestamps: bool = False
    seed: int = 0

    @classmethod
    def from_env(cls, **overrides) -> JobOptions:
        """Defaults from MURMUR_MODEL / MURMUR_BATCH_SIZE, then explicit values."""
        base = {"model": os.environ.get("MURMUR_MODEL") or DEFAULT_MODEL}
        if os.environ.get("MURMUR_BATCH_SIZE"):
            base["batch_size"] = _int("MURMUR_BATCH_SIZE", os.environ["MURMUR_BATCH_SIZE"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_json(base)

    @classmethod
    def from_json(cls, data: dict) -> JobOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MurmurError(f"unknown option(s): {', '.join(unknown)}")
        options = cls(**data)
        options.validate()
        return options

    def to_json(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.task not in TASKS:
            raise MurmurError(f"invalid task {self.task!r}: use transcribe or translate")
        if self.output_language not in OUTPUT_LANGUAGES:
            raise MurmurError(f"invalid output language {self.output_language!r}: use hybrid or en")
        for name in ("batch_size", "beam_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
                raise MurmurError(f"invalid {name.replace('_', ' ')} {value!r}: use a whole number from 1 to 256")
        if self.language is not None and (not isinstance(self.language, str) or not self.language.isalpha()):
            raise MurmurError(f"invalid language {self.language!r}: use a code such as en or de")
        if self.multilingual and self.language:
            raise MurmurError("--multilingual detects the language of each chunk: do not also give --language")

    def decode_options(self, language: str | None, candidates: list[str] | None = None) -> DecodeOptions:
        return DecodeOptions(
            task=self.task,
            language=language,
            multilingual=self.multilingual,
            output_language=self.output_language,
            beam_size=self.beam_size,
            word_timestamps=self.word_timestamps,
            seed=self.seed,
            candidates=tuple(candidates or ()),
        )


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MurmurError(f"{name} must be a whole number, not {value!r}") from None
