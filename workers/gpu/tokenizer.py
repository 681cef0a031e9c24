"""Whisper's token vocabulary: prompts, decoding, and grouping tokens into words."""

from __future__ import annotations

import json
from pathlib import Path

import tokenizers

from murmur.workers.errors import ModelError

# Scripts written without spaces between words: every token is its own unit.
_UNSPACED = {"zh", "ja", "th", "lo", "my", "yue"}


class Tokenizer:
    """The special tokens murmur needs and text ↔ token conversion."""

    def __init__(self, model_dir: Path, multilingual: bool) -> None:
        self._tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.multilingual = multilingual
        self.sot = self._special("<|startoftranscript|>")
        self.eot = self._special("<|endoftext|>")
        self.no_timestamps = self._special("<|notimestamps|>")
        self.previous = self._special("<|startofprev|>")
        self.transcribe = self._special("<|transcribe|>")
        self.translate = self._special("<|translate|>")
        lang_ids = json.loads((model_dir / "config.json").read_text()).get("lang_ids", []) if multilingual else []
        self.languages: dict[str, int] = {self._tok.id_to_token(i)[2:-2]: i for i in lang_ids}

    def _special(self, text: str) -> int:
        token = self._tok.token_to_id(text)
        if token is None:
            raise ModelError(f"the model's tokenizer lacks {text}")
        return token

    def language_token(self, language: str) -> int:
        if language not in self.languages:
            raise ModelError(f"unknown language {language!r} for this model")
        return self.languages[language]

    def start_sequence(self, language: str | None, whisper_task: str) -> list[int]:
        """<|startoftranscript|> plus language and task (transcribe or translate) for multilingual models."""
        if not self.multilingual:
            return [self.sot]
        return [self.sot, self.language_token(language or "en"), self.translate if whisper_task == "translate" else self.transcribe]

    def encode(self, text: str) -> list[int]:
        """The tokens of plain text, no special token added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def text(self, tokens: list[int]) -> str:
        """The text of `tokens`, special tokens left out."""
        return self._tok.decode([t for t in tokens if t < self.eot])

    def words(self, tokens: list[int], language: str | None) -> list[tuple[str, list[int]]]:
        """Group text tokens into words (text with its leading space, and its tokens).

        A word starts at a token whose text begins with a space; punctuation
        stays on the word before it, so a word that ends a sentence ends with its
        mark (`segmentation.ends_sentence`). Tokens that split a UTF-8 character
        are kept together.
        """
        units: list[tuple[str, list[int]]] = []
        pending: list[int] = []
        for token in tokens:
            pending.append(token)
            text = self._tok.decode(pending)
            if "\ufffd" in text:
                continue
            units.append((text, pending))
            pending = []
        if pending:
            units.append((self._tok.decode(pending), pending))
        if language in _UNSPACED:
            return units
        words: list[tuple[str, list[int]]] = []
        for text, toks in units:
            if words and not text.startswith(" "):
                prev_text, prev_toks = words[-1]
                words[-1] = (prev_text + text, prev_toks + toks)
            else:
                words.append((text, list(toks)))
        return words
