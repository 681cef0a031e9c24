"""numpy log-mel against faster-whisper's FeatureExtractor on real audio."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from tests.conftest import DATA
from murmur.workers.cpu.audio import decode_audio
from murmur.workers.cpu.features import log_mel, mel_filters
from murmur.workers.window import WINDOW_SAMPLES


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_faster_whisper_within_1e_4(n_mels):
    speech = decode_audio(DATA / "jfk_inaugural_1961.flac")
    spanish = decode_audio(DATA / "mls_spanish_13697_11991_000000.opus")
    chunks = [speech, spanish, speech[16000:80000]]
    ours = log_mel(chunks, n_mels)
    extractor = FeatureExtractor(feature_size=n_mels)
    assert ours.shape == (3, n_mels, 3000)
    for i, chunk in enumerate(chunks):
        padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        padded[: chunk.size] = chunk
        reference = extractor(padded, padding=0)
        assert np.abs(ours[i] - reference).max() <= 1e-4
    np.testing.assert_allclose(mel_filters(n_mels), extractor.mel_filters, atol=1e-7)


def test_each_chunk_is_normalised_on_its_own():
    speech = decode_audio(DATA / "jfk_inaugural_1961.flac")
    together = log_mel([speech, 0.01 * speech])
    alone = log_mel([0.01 * speech])
    np.testing.assert_allclose(together[1], alone[0], atol=1e-6)
