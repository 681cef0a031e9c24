"""Features: Whisper's log-mel spectrogram of a chunk, in numpy.

Each chunk is zero-padded to a 30 s window in the audio domain, as Whisper was trained,
and framed as a strided view of that audio, so a chunk costs one real FFT
call. The numbers match faster-whisper's FeatureExtractor to ≈2e-7 (the test
allows 1e-4). No torch or torchaudio is needed; `n_mels` comes from the model
(80, or 128 for large-v3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

import numpy as np

from murmur.workers.window import HOP, N_FRAMES, SAMPLE_RATE, WINDOW_SAMPLES

N_FFT = 400


def log_mel(chunks: Sequence[np.ndarray], n_mels: int = 80) -> np.ndarray:
    """Features for every chunk: float32 array [len(chunks), n_mels, 3000]."""
    out = np.empty((len(chunks), n_mels, N_FRAMES), dtype=np.float32)
    for i, features in enumerate(iter_log_mel(chunks, n_mels)):
        out[i] = features
    return out


def iter_log_mel(chunks: Iterable[np.ndarray], n_mels: int = 80) -> Iterator[np.ndarray]:
    """Each chunk's features [n_mels, 3000] in order, one chunk at a time.

    Takes the chunks lazily, so a long file never has all its chunk audio cut at once.
    """
    for samples in chunks:
        yield chunk_log_mel(samples, n_mels)


def chunk_log_mel(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """One chunk's features [n_mels, 3000], normalised on its own as Whisper's are."""
    audio = np.zeros(WINDOW_SAMPLES + N_FFT, dtype=np.float32)  # centred frames: N_FFT // 2 of reflection each side
    samples = np.asarray(samples[:WINDOW_SAMPLES], dtype=np.float32)
    half = N_FFT // 2
    audio[half : half + samples.size] = samples
    audio[:half] = audio[N_FFT:half:-1]  # reflect about the first sample
    audio[-half:] = audio[-half - 2 : -N_FFT - 2 : -1]  # and about the last one (a zero unless 30 s of audio)
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP][:N_FRAMES] * _window()
    spectrum = np.fft.rfft(frames, axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    # in float64, rounded once: the product's float32 sums change in the last bit with BLAS's thread
    # count, and a CPU worker (one thread) must give the features the embedded runner gives
    mel = (_mel_filters(n_mels) @ power.T.astype(np.float64)).astype(np.float32)
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32, copy=False)


@lru_cache(maxsize=None)
def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


@lru_cache(maxsize=None)
def _mel_filters(n_mels: int) -> np.ndarray:
    return mel_filters(n_mels).astype(np.float64)  # for the float64 product above


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters [n_mels, n_fft // 2 + 1].

    Whisper's filters are librosa's defaults (htk=False, norm="slaney"):
    linear below 1 kHz, logarithmic above.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    rising = (fft_hz[None, :] - edges_hz[:-2, None]) / widths[:-1, None]
    falling = (edges_hz[2:, None] - fft_hz[None, :]) / widths[1:, None]
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    area = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    return (triangles * area[:, None]).astype(np.float32)


_LINEAR_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, logarithmic, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_HZ * np.exp(_LOG_STEP * (mel - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, logarithmic, linear)
