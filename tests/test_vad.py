"""The numpy VAD gives silero's own probabilities, and finds speech where it is."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from importlib import resources

from tests.conftest import DATA
from murmur.workers.cpu.audio import decode_audio
from murmur.workers.cpu.silero_weights import silero_v60, silero_v62
from murmur.workers.cpu.vad import CONTEXT, STEP, SileroVad, speech_spans


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


def _silero_onnx_window_by_window(audio: np.ndarray) -> np.ndarray:
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


def _faster_whisper_onnx(audio: np.ndarray) -> np.ndarray:
    """faster-whisper's VAD model (silero v6.0) as faster-whisper runs it."""
    from faster_whisper.vad import get_vad_model

    return np.asarray(get_vad_model()(np.pad(audio, (0, -audio.size % STEP)))).reshape(-1)


def test_each_network_gives_its_onnx_models_probabilities():
    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    v62 = SileroVad([silero_v62()]).probabilities(audio)
    reference = _silero_onnx_window_by_window(audio)
    assert v62.shape == reference.shape
    assert np.abs(v62 - reference).max() < 1e-4
    v60 = SileroVad([silero_v60()]).probabilities(audio)
    reference = _faster_whisper_onnx(audio)
    assert v60.shape == reference.shape
    assert np.abs(v60 - reference).max() < 1e-4
    assert np.abs(v60 - v62).max() > 0.1  # two releases, not one read twice


def test_a_step_is_as_likely_speech_as_the_surer_network_says(vad):
    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    each = [SileroVad([net]).probabilities(audio) for net in vad.networks]
    assert [net.release for net in vad.networks] == ["silero v6.2", "silero v6.0"]
    np.testing.assert_allclose(vad.probabilities(audio), np.maximum(*each), atol=1e-6)


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


def test_the_probabilities_are_the_same_to_the_bit_whatever_blas_threads_the_process_runs(vad):
    """A CPU worker runs numpy's BLAS on one thread and `murmur transcribe` on every core: the VAD must
    hear the same steps in both, so the fleet and the embedded run cut the same chunks."""
    from threadpoolctl import threadpool_limits

    audio = decode_audio(DATA / "jfk_inaugural_1961.flac")
    with threadpool_limits(1, user_api="blas"):
        one = vad.each(audio)
    with threadpool_limits(2, user_api="blas"):
        assert np.array_equal(vad.each(audio), one)


def test_speech_one_release_cuts_short_is_heard_whole(vad):
    """Far, reverberant speech: silero v6.2 alone ends the sentence early; with v6.0 beside it, it is heard whole."""
    audio = decode_audio(DATA / "far_mfa_thoughts.flac")  # "I have a thousand thoughts about that thing", ends ≈2.2 s
    alone = speech_spans(SileroVad([silero_v62()]).probabilities(audio))
    both = speech_spans(vad.probabilities(audio))
    assert alone and alone[-1].end < 1.6
    assert both and both[0].start < 0.9 and both[-1].end > 2.0

