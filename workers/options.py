"""A job's options: the one definition behind the CLI flags, the task's kwargs, the HTTP API's fields and the job row.

A `JobOptions` is valid once built: every field is type-checked and range-checked
on construction, so a bad value from any door fails with the same readable reason.
Each field's metadata (help, the CLI commands that offer it, its choices or range)
is what the CLI's flags and the API's schema are made from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from functools import cache
from typing import get_type_hints

from murmur.workers.errors import MurmurError
from murmur.workers.prompt import Prompt, check_budget, checked_text

DEFAULT_MODEL = "base"
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 256
MAX_BEAM_SIZE = 16  # Whisper's default is 5; a wider beam multiplies a worker's memory and time per chunk
MAX_SPEAKERS = 20  # a count of speakers past this is no longer a conversation that clustering voices can tell apart
MAX_KNOWN_SPEAKERS = 8
# read by the decoder per batch item: jobs with different prompts share a batch, never a window
PROMPT_OPTIONS = ("prompt", "hotwords")
# read at prepare and assembly, never by a decoder
SPEAKER_OPTIONS = ("diarize", "speakers", "min_speakers", "max_speakers", "known_speaker_names", "known_speaker_references")

# The language codes Whisper models know (large-v3 adds Cantonese, yue); a test
# checks the list against the bundled tokenizer, so a typo never reaches a decoder.
LANGUAGES = frozenset("""
af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy id
is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si
sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo yue zh
""".split())


class WhisperTask(StrEnum):
    """What Whisper is asked to do with the speech."""

    transcribe = "transcribe"
    translate = "translate"  # into English


class OutputLanguage(StrEnum):
    """With `multilingual`: keep each chunk's own language, or translate non-English chunks."""

    hybrid = "hybrid"
    en = "en"


BOTH = ("transcribe", "submit")  # the CLI commands a flag appears on; "submit" options are the fleet's and the API's too


def _option(default, help: str, commands: tuple[str, ...] = BOTH, choices: type[StrEnum] | None = None,
            range: tuple[int, int] | None = None):
    return field(default=default, metadata={"help": help, "commands": commands, "choices": choices, "range": range})


@dataclass(frozen=True)
class JobOptions:
    model: str = _option(DEFAULT_MODEL, "bundled name (base, tiny.en), CTranslate2 directory or Hugging Face id; default $MURMUR_MODEL or base")
    language: str | None = _option(None, "language code (e.g. en); default: detected over the whole file")
    task: WhisperTask = _option(WhisperTask.transcribe, "transcribe, or translate into English", choices=WhisperTask)
    multilingual: bool = _option(False, "detect the language of each chunk (code-switched audio)")
    output_language: OutputLanguage = _option(
        OutputLanguage.hybrid, "with --multilingual: keep each language (hybrid) or translate to English (en)", choices=OutputLanguage)
    batch_size: int = _option(DEFAULT_BATCH_SIZE, "chunks decoded together (default $MURMUR_BATCH_SIZE or 8)",
                              commands=("transcribe",), range=(1, MAX_BATCH_SIZE))
    beam_size: int = _option(5, "beam width of the decoder", range=(1, MAX_BEAM_SIZE))
    word_timestamps: bool = _option(False, "include per-word times in json output")
    prompt: str | None = _option(
        None, "text the decoder reads before each window: the names and terms spoken, spelled as they should be, "
              "or the text that came before the recording")
    hotwords: str | None = _option(None, "terms to favour (names, products, jargon), read before the prompt")
    diarize: bool = _option(False, "label who spoke when: segments and words carry a speaker (S1, S2, ... in order of appearance)")
    speakers: int | None = _option(None, "with --diarize: exactly this many speakers", range=(1, MAX_SPEAKERS))
    min_speakers: int | None = _option(None, "with --diarize: at least this many speakers", range=(1, MAX_SPEAKERS))
    max_speakers: int | None = _option(None, "with --diarize: at most this many speakers", range=(1, MAX_SPEAKERS))
    known_speaker_names: tuple[str, ...] = _option((), f"with --diarize: names of up to {MAX_KNOWN_SPEAKERS} known speakers")
    known_speaker_references: tuple[str, ...] = _option(
        (), "with --diarize: a clip of each known speaker alone, 2-10 s, in the order of their names (paths or s3:// URIs)")
    seed: int = _option(0, "random seed of the decoder: the same seed gives the same text", commands=())

    def __post_init__(self) -> None:
        hints = field_types()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("known_speaker_"):
                object.__setattr__(self, f.name, _texts(f.name, value))
                continue
            if f.name in PROMPT_OPTIONS:
                object.__setattr__(self, f.name, checked_text(f.name, value))
                continue
            choices = f.metadata["choices"]
            if choices is not None:
                if not isinstance(value, str) or value not in {c.value for c in choices}:
                    raise MurmurError(f"invalid {_words(f.name)} {value!r}: use {' or '.join(choices)}")
                object.__setattr__(self, f.name, choices(value))
            elif value is None and f.default is None:
                continue  # not given
            elif hints[f.name] is bool and not isinstance(value, bool):
                raise MurmurError(f"invalid {_words(f.name)} {value!r}: use true or false")
            elif option_type(f.name) is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise MurmurError(f"invalid {_words(f.name)} {value!r}: use a whole number")
            elif hints[f.name] is str and (not isinstance(value, str) or not value):
                raise MurmurError(f"invalid {_words(f.name)} {value!r}: use a name")
            bounds = f.metadata["range"]
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise MurmurError(f"invalid {_words(f.name)} {value!r}: use a whole number from {bounds[0]} to {bounds[1]}")
        if self.language is not None and (not isinstance(self.language, str) or self.language not in LANGUAGES):
            raise MurmurError(f"invalid language {repr(self.language)[:40]}: use a Whisper language code such as en or de")
        if self.prompting:
            check_budget(self.prompting)
        if self.multilingual and self.language:
            raise MurmurError("--multilingual detects the language of each chunk: do not also give --language")
        counts = [name for name in ("speakers", "min_speakers", "max_speakers") if getattr(self, name) is not None]
        if counts and not self.diarize:
            raise MurmurError(f"--{counts[0].replace('_', '-')} counts the speakers that --diarize labels: give --diarize too")
        if self.speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise MurmurError("give either --speakers (exact) or --min-speakers/--max-speakers, not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise MurmurError(f"--min-speakers {self.min_speakers} is more than --max-speakers {self.max_speakers}")
        names, references = self.known_speaker_names, self.known_speaker_references
        if (names or references) and not self.diarize:
            raise MurmurError("known speakers name the speakers that --diarize finds: give --diarize too")
        if len(names) != len(references):
            raise MurmurError(f"{len(names)} known speaker name(s) but {len(references)} reference clip(s): give one clip per name")
        if len(names) > MAX_KNOWN_SPEAKERS:
            raise MurmurError(f"{len(names)} known speakers: give at most {MAX_KNOWN_SPEAKERS}")
        if len(set(names)) != len(names) or any(len(n) > 64 or not n.strip() or n != n.strip() for n in names):
            raise MurmurError("known speaker names must be different, 1 to 64 characters, with no space at either end")

    @classmethod
    def from_json(cls, data: dict) -> JobOptions:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise MurmurError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict:
        """Every option; those of a feature left off (the speaker options without `diarize`, a prompt or
        hotwords not given) are left out, so a job row written before the feature existed reads back the same."""
        out = {name: str(value) if isinstance(value, StrEnum) else list(value) if isinstance(value, tuple) else value
               for name, value in asdict(self).items()}
        if not self.diarize:
            for name in SPEAKER_OPTIONS:
                del out[name]
        for name in PROMPT_OPTIONS:
            if out[name] is None:
                del out[name]
        return out

    @property
    def keeps_words(self) -> bool:
        """Decode stores each segment's words: asked for, or needed to give each word its speaker."""
        return self.word_timestamps or self.diarize

    @property
    def prompting(self) -> Prompt:
        return Prompt(self.prompt, self.hotwords)

    def batch_key(self) -> tuple:
        """Jobs whose keys are equal can share a decode batch: what the decoder reads for the whole batch,
        and whether it keeps words (a prompt is read per batch item)."""
        skip = {"batch_size", "word_timestamps", *SPEAKER_OPTIONS, *PROMPT_OPTIONS}
        return (*(getattr(self, f.name) for f in fields(self) if f.name not in skip), self.keeps_words)


@cache
def field_types() -> dict[str, type]:
    """Each option's type, resolved once: the annotations are strings, and resolving them is most of a construction's cost."""
    return get_type_hints(JobOptions)


def option_type(name: str) -> type:
    """The option's value type, `int` for an optional whole number too, `str` for a list of texts:
    what a flag or a form field parses its text (or each of its texts) as."""
    hint = field_types()[name]
    return next((a for a in getattr(hint, "__args__", ()) if a is not type(None) and a is not Ellipsis), hint)


def is_list(name: str) -> bool:
    return getattr(field_types()[name], "__origin__", None) is tuple


def _texts(name: str, value) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MurmurError(f"invalid {_words(name)} {repr(value)[:60]}: use a list of texts")
    return tuple(value)


def _words(name: str) -> str:
    return name.replace("_", " ")
