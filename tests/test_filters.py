"""Hallucination filters: the pure rules, and the real model on a quiet room."""

from __future__ import annotations

import pytest

from tests.conftest import DATA
from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.cpu.chunking import Chunk
from murmur.workers.cpu.features import log_mel
from murmur.workers.gpu.decode import decode_batch
from murmur.workers.gpu.filters import compression_ratio, is_repetitive, is_silence
from murmur.workers.options import JobOptions


def test_loops_compress_too_well():
    sentence = "And so my fellow Americans, ask not what your country can do for you."
    assert compression_ratio(sentence) < 2.4 and not is_repetitive(sentence)
    assert is_repetitive("Thank you. " * 20)
    assert compression_ratio("") == 0.0


def test_silence_rule_needs_both_signals():
    assert is_silence(0.9, -1.5)
    assert is_silence(0.75, -0.98)  # base on a quiet room: "Thank you."
    assert not is_silence(0.9, -0.2)  # the model is sure of its text
    assert not is_silence(0.1, -1.5)  # the model hears speech


@pytest.mark.weights
def test_quiet_room_decoded_without_vad_is_still_empty(base_model):
    """Even when a noise-only window reaches the decoder, nothing comes out of it."""
    audio = decode_audio(DATA / "nst_quiet_room_4s.wav")
    chunk = Chunk(0, ((0.0, audio.size / SAMPLE_RATE),))
    for language in ("en", "sv"):
        [segments] = decode_batch(base_model, log_mel([audio], base_model.n_mels), [chunk], JobOptions(language=language), language)
        assert segments == [], [s.text for s in segments]
