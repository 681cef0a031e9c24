"""Job-level language detection over chunks spread across the whole file."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

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
