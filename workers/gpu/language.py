"""Language detection: which jobs vote, which chunks vote, how the votes count, and each window's language.

A job with no language given, on a multilingual model, has its language voted
over chunks spread across the whole file (`detection_chunks`, `vote`), from
their encoder output (`top_languages`), which their decode then reuses. In
multilingual mode each window is also detected on its own, among the
languages the file's vote found spoken (`window_languages`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from murmur.workers.options import JobOptions

if TYPE_CHECKING:
    import ctranslate2

    from murmur.workers.gpu.model import LoadedModel

DETECT_CHUNKS = 5
MULTILINGUAL_DETECT_CHUNKS = 8  # more voters: the file is expected to hold several languages
CONFIDENT = 0.5


@dataclass(frozen=True)
class LanguageGuess:
    language: str | None
    probability: float
    votes: dict[str, int]

    def spoken(self, min_share: float = 0.25) -> tuple[str, ...]:
        """The languages with at least `min_share` of the votes: those the file really contains."""
        total = sum(self.votes.values())
        return tuple(sorted(lang for lang, n in self.votes.items() if n >= min_share * total))


def needs_vote(options: JobOptions, multilingual_model: Callable[[], bool]) -> bool:
    """Whether the job's language is to be voted: none given, and a model that knows more than English
    (an English-only model's jobs are English). The model is asked only when no language is given."""
    return not options.language and multilingual_model()


def voters_wanted(options: JobOptions) -> int:
    """How many chunks vote: more in multilingual mode, where the file is expected to hold several languages."""
    return MULTILINGUAL_DETECT_CHUNKS if options.multilingual else DETECT_CHUNKS


def detection_chunks(n_chunks: int, k: int = DETECT_CHUNKS) -> list[int]:
    """Indices of up to `k` chunks spread evenly from first to last."""
    if n_chunks <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n_chunks - 1, min(k, n_chunks))})


def vote(windows: list[tuple[str, float]], confident: float = CONFIDENT) -> LanguageGuess:
    """Pick the language most windows agree on.

    Only windows whose top language reaches `confident` vote (all vote when
    none does); a tie in count goes to the higher mean probability. No windows
    (no speech in the file) means no language.
    """
    if not windows:
        return LanguageGuess(None, 0.0, {})
    voters = [w for w in windows if w[1] >= confident] or windows
    probs: dict[str, list[float]] = defaultdict(list)
    for language, p in voters:
        probs[language].append(p)
    best = max(probs, key=lambda lang: (len(probs[lang]), float(np.mean(probs[lang]))))
    return LanguageGuess(best, float(np.mean(probs[best])), {lang: len(ps) for lang, ps in probs.items()})


def settled(windows: list[tuple[str, float]], uncast: int, confident: float = CONFIDENT) -> bool:
    """Whether `vote` over `windows` already names the language that all the voters would: none is
    left to cast, or one language's confident votes outnumber any other's even if the `uncast`
    windows all went to it. A decoder may then start before the last voters are encoded."""
    if uncast <= 0:
        return True
    first, second = (sorted(Counter(lang for lang, p in windows if p >= confident).values(), reverse=True) + [0, 0])[:2]
    return first > second + uncast


def top_languages(
    model: LoadedModel, encoded: ctranslate2.StorageView, among: tuple[str, ...] = ()
) -> list[tuple[str, float]]:
    """Each batch item's most likely language code (restricted to `among` if given) and its probability."""
    out = []
    for ranked in model.whisper.detect_language(encoded):
        codes = [(token[2:-2], float(p)) for token, p in ranked]
        out.append(next((c for c in codes if c[0] in among), codes[0]) if among else codes[0])
    return out


def window_languages(
    model: LoadedModel, encoded: ctranslate2.StorageView, n: int, options: JobOptions, language: str | None,
    candidates: tuple[str, ...],
) -> list[str | None]:
    """The language each of `n` windows is decoded in: English for an English-only model, each
    window's own (among `candidates`) in multilingual mode, else the job's."""
    if not model.multilingual:
        return ["en"] * n
    if options.multilingual:
        return [lang for lang, _ in top_languages(model, encoded, candidates)]
    return [language or "en"] * n
