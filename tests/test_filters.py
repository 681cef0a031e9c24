"""Hallucination filters: the pure rules, the real model on a quiet room, and quiet real speech kept."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from tests.conftest import DATA, words
from murmur.db.session import sessions, upgrade
from murmur.tasks.context import Context
from murmur.tasks.embedded import runner as embedded
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
    for heard in (True, False):
        assert is_silence(0.9, -1.5, heard)
        assert not is_silence(0.9, -0.2, heard)  # the model is sure of its text
        assert not is_silence(0.1, -1.5, heard)  # the model hears speech
    assert is_silence(0.75, -0.98, heard=False)  # base on a quiet room: "Thank you."
    assert not is_silence(0.86, -0.71, heard=True)  # a real sentence at -34 dB the VAD heard


@pytest.mark.weights
def test_quiet_room_decoded_without_vad_is_still_empty(base_model):
    """Even when a noise-only window reaches the decoder, nothing comes out of it."""
    audio = decode_audio(DATA / "nst_quiet_room_4s.wav")
    chunk = Chunk(0, ((0.0, audio.size / SAMPLE_RATE),))
    for language in ("en", "sv"):
        [segments] = decode_batch(base_model, log_mel([audio], base_model.n_mels), [chunk], JobOptions(language=language), language)
        assert segments == [], [s.text for s in segments]


def _write_wav(path, audio: np.ndarray) -> str:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return str(path)


@pytest.mark.weights
def test_quiet_real_speech_comes_out_and_music_and_noise_stay_empty(sqlite_url, tmp_path, base_model):
    """A real sentence 34 dB down (a speaker far from the microphone) is heard by the VAD and
    Whisper calls it 86% silence at avg_logprob -0.71: Whisper's own rule keeps it, as it must;
    the same sentence reverberant across a room comes out whole.
    Music, hum and noise never reach the decoder, and a quiet room stays empty."""
    upgrade(sqlite_url)
    ctx = Context(db=sessions(sqlite_url), device="cpu", compute_type="int8", threads=2)
    sentence = decode_audio(DATA / "mfa_thoughts.flac")  # "I have a thousand thoughts about that thing."
    quiet = embedded.run(ctx, _write_wav(tmp_path / "far.wav", 0.02 * sentence), JobOptions(language="en"))
    assert {"thoughts", "about"} <= set(words(quiet.text)), quiet.text
    across_the_room = embedded.run(ctx, str(DATA / "far_mfa_thoughts.flac"), JobOptions(language="en"))  # see test_vad
    assert {"thousand", "thoughts", "about"} <= set(words(across_the_room.text)), across_the_room.text
    rng = np.random.default_rng(7)
    t = np.arange(12 * SAMPLE_RATE) / SAMPLE_RATE
    notes = rng.choice([220.0, 262.0, 330.0, 392.0, 440.0], size=24)
    music = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 5) for f in notes[(t * 2).astype(int)][None])
    sounds = {
        "music": 0.2 * music / np.abs(music).max(),
        "hum": 0.1 * np.sin(2 * np.pi * 50 * t) + 0.01 * rng.standard_normal(t.size),
        "noise": 0.05 * rng.standard_normal(t.size),
    }
    for name, audio in sounds.items():
        assert embedded.run(ctx, _write_wav(tmp_path / f"{name}.wav", audio), JobOptions()).text == "", name
    assert embedded.run(ctx, str(DATA / "nst_quiet_room_4s.wav"), JobOptions()).text == ""
