"""Hallucination filters: drop text Whisper made up rather than heard."""

from __future__ import annotations

import zlib

COMPRESSION_RATIO_THRESHOLD = 2.4
NO_SPEECH_THRESHOLD = 0.6
# Whisper's own rule pairs no_speech > 0.6 with avg_logprob < -1.0. On a recording of
# a quiet room base says "Thank you." at no_speech 0.75 and avg_logprob -0.98, so murmur
# asks for more confidence before it keeps text from a window the model calls silent.
# Real speech in the test and bench sets stays below no_speech 0.08.
LOGPROB_THRESHOLD = -0.5


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: loops like "the the the…" compress well."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_repetitive(text: str, threshold: float = COMPRESSION_RATIO_THRESHOLD) -> bool:
    return compression_ratio(text) > threshold


def is_silence(no_speech_prob: float, avg_logprob: float,
               no_speech_threshold: float = NO_SPEECH_THRESHOLD,
               logprob_threshold: float = LOGPROB_THRESHOLD) -> bool:
    """The model says "no speech" and is not sure of its text: drop the window.

    This is what keeps a quiet room from becoming "Thank you."
    """
    return no_speech_prob > no_speech_threshold and avg_logprob < logprob_threshold
