"""Hallucination filters: drop text Whisper made up rather than heard."""

from __future__ import annotations

import zlib

COMPRESSION_RATIO_THRESHOLD = 2.4
NO_SPEECH_THRESHOLD = 0.6
# Whisper's own rule pairs no_speech > 0.6 with avg_logprob < -1.0, and murmur keeps it for
# windows the VAD heard speech in: real speech that is quiet, distant or in an unusual voice
# often has a high no_speech (0.86 at -0.71 for a real sentence at -34 dB) and comes out.
WHISPER_LOGPROB_THRESHOLD = -1.0
# A window without the VAD's word for speech (decoded from no VAD spans) needs more confidence:
# on a recording of a quiet room base says "Thank you." at no_speech 0.75 and avg_logprob -0.98.
UNHEARD_LOGPROB_THRESHOLD = -0.5


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: loops like "the the the…" compress well."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_repetitive(text: str, threshold: float = COMPRESSION_RATIO_THRESHOLD) -> bool:
    return compression_ratio(text) > threshold


def is_silence(no_speech_prob: float, avg_logprob: float, heard: bool) -> bool:
    """The model says "no speech" and is not sure of its text: drop the window.

    `heard`: the VAD found speech in the window. Where it did, Whisper's own
    rule applies, so quiet or unusual real speech is kept; where it did not,
    the stricter one keeps a quiet room from becoming "Thank you."
    """
    threshold = WHISPER_LOGPROB_THRESHOLD if heard else UNHEARD_LOGPROB_THRESHOLD
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < threshold
