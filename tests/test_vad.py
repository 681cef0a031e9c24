"""The numpy VAD gives silero's own probabilities, and finds speech where it is."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from importlib import resources

from tests.conftest import DATA
from murmur.workers.cpu.audio import decode_audio
from murmur.workers.cpu.vad import CONTEXT, STEP, SileroVad, speech_spans


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


def _onnx_window_by_window(audio: np.ndarray) -> np.ndarray:
    """silero's ONNX model the package's way: one window at a time, state carried."""
    path = resources.files("silero_vad.data").joinpath("silero_vad.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = -(-audio.size // STEP)
    padded = np.zeros(CONTEXT + n * STEP, dtype=np.float32)
    padded[CONTEXT : CONTEXT + audio.size] = audio
    state = np.zeros((2, 1, 128), dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        window = padded[i * STEP : i * STEP + CONTEXT + STEP][None, :]
        prob, state = session.run(None, {"input": window, "state": state, "sr": np.array(16000, dtype=np.int64)})
        out[i] = prob[0, 0]
    return out


def test_probabilities_match_silero_onnx(vad):
    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    ours = vad.probabilities(audio)
    reference = _onnx_window_by_window(audio)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-4


def test_speech_is_found_and_silence_is_not(vad):
    speech = decode_audio(DATA / "jfk_inaugural_1961.flac")
    spans = speech_spans(vad.probabilities(speech))
    assert spans and spans[0].start < 1.0 and spans[-1].end > 9.5
    assert sum(s.end - s.start for s in spans) > 6.0
    quiet = decode_audio(DATA / "nst_quiet_room_4s.wav")
    assert speech_spans(vad.probabilities(quiet)) == []


def test_empty_audio_has_no_windows(vad):
    assert vad.probabilities(np.zeros(0, dtype=np.float32)).size == 0


def test_encoder_blocks_leave_no_seams(vad, monkeypatch):
    """Blocks are cut straight from the audio; where they are cut must not matter."""
    import murmur.workers.cpu.vad as module

    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    whole = vad.probabilities(audio)
    monkeypatch.setattr(module, "_ENCODER_BATCH", 37)
    np.testing.assert_allclose(vad.probabilities(audio), whole, atol=1e-5)  # BLAS sums in another order, no more


def test_blocks_as_they_decode_give_the_probabilities_of_the_whole_array(vad, monkeypatch):
    """A job streams its file through the VAD; block sizes and group cuts must not matter."""
    import murmur.workers.cpu.vad as module
    from murmur.workers.cpu.audio import stream_audio

    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    whole = vad.probabilities(audio)
    np.testing.assert_allclose(vad.probabilities(stream_audio(DATA / "jfk_inaugural_1961.flac")), whole, atol=1e-5)
    monkeypatch.setattr(module, "_ENCODER_BATCH", 50)
    odd = np.split(audio, [1, 700, 5000, 5001, 90000, 90000])
    np.testing.assert_allclose(vad.probabilities(iter(odd)), whole, atol=1e-5)
