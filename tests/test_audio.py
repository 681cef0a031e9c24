"""Decoding real files of many containers to 16 kHz mono float32, and refusing bad ones."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tests.conftest import DATA
from murmur.workers.cpu.audio import SAMPLE_RATE, decode_audio
from murmur.workers.errors import LimitError, MurmurError


@pytest.mark.parametrize(
    "name, seconds",
    [
        ("jfk_inaugural_1961.flac", 11.0),
        ("stereo_two_speakers.wav", 5.0),
        ("mls_spanish_13697_11991_000000.opus", 14.85),
        ("librivox_grimmelshausen_simplicissimus_title.mp3", 68.0),
    ],
)
def test_real_files_decode_to_16k_mono_float32(name, seconds):
    audio = decode_audio(DATA / name)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / SAMPLE_RATE - seconds) < 0.1
    assert 0.01 < np.abs(audio).max() < 1.5  # resampling may overshoot a clipped source a little


def _transcode(src, dst, codec, rate, layout):
    """Write `src` again with another container, codec, rate and channel layout."""
    audio = decode_audio(src)
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return audio


@pytest.mark.parametrize(
    "suffix, codec, rate, layout",
    [("m4a", "aac", 44100, "stereo"), ("aiff", "pcm_s16be", 22050, "mono"), ("wav", "pcm_s16le", 48000, "5.1")],
)
def test_other_containers_rates_and_channel_counts(tmp_path, suffix, codec, rate, layout):
    original = _transcode(DATA / "jfk_inaugural_1961.flac", tmp_path / f"clip.{suffix}", codec, rate, layout)
    again = decode_audio(tmp_path / f"clip.{suffix}")
    assert abs(again.size - original.size) < 0.1 * SAMPLE_RATE
    # the same speech comes back, strongly correlated after the round trip (codecs may add delay)
    lag = int(np.argmax(np.correlate(again[16000:26000], original[16000:18000], "valid")))
    n = min(again.size - lag, original.size)
    a, b = again[lag : lag + n], original[:n]
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_bad_inputs_raise_readable_errors(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(20000))
    mp3 = (DATA / "librivox_grimmelshausen_simplicissimus_title.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])
    cases = {  # the message, and the class of failure a job records with it
        tmp_path / "missing.wav": ("no such file", "source"),
        tmp_path: ("is a directory", "input"),
        tmp_path / "empty.wav": ("file is empty", "input"),
        tmp_path / "noise.mp3": ("not a readable audio file", "input"),
        tmp_path / "cut.mp3": ("truncated", "input"),
    }
    for path, (message, failure) in cases.items():
        with pytest.raises(MurmurError, match=message) as raised:
            decode_audio(path)
        assert raised.value.failure == failure, path


def test_audio_past_the_duration_limit_is_refused_from_the_stream(tmp_path):
    # a header that claims 1 s over 60 s of audio: the limit holds on what decodes, not on the claim
    audio = decode_audio(DATA / "librivox_grimmelshausen_simplicissimus_title.mp3", max_seconds=70)
    assert abs(audio.size / SAMPLE_RATE - 68.0) < 0.1
    with pytest.raises(LimitError, match=r"longer than the limit of 60 s \(MURMUR_MAX_DURATION\)"):
        decode_audio(DATA / "librivox_grimmelshausen_simplicissimus_title.mp3", max_seconds=60)
