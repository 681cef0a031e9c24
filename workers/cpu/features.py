"""Features: Whisper's log-mel spectrogram for a batch of chunks, with torch.

Each chunk is zero-padded to 30 s in the audio domain, as Whisper was trained,
and all chunks of a job go through one batched `torch.stft`. The numbers match
faster-whisper's FeatureExtractor to ~1e-6 (the test allows 1e-4). torchaudio
is not needed; `n_mels` comes from the model (80, or 128 for large-v3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import islice

import numpy as np
import torch

from murmur.workers.cpu.audio import SAMPLE_RATE

N_FFT = 400
HOP = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE
N_FRAMES = CHUNK_SAMPLES // HOP  # 3000 frames of 10 ms
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
_BLOCK = 16  # chunks per STFT call: bounds the complex spectrum to ≈77 MB


def log_mel(chunks: Sequence[np.ndarray], n_mels: int = 80) -> np.ndarray:
    """Features for every chunk: float32 array [len(chunks), n_mels, 3000]."""
    out = np.empty((len(chunks), n_mels, N_FRAMES), dtype=np.float32)
    for i, features in enumerate(iter_log_mel(chunks, n_mels)):
        out[i] = features
    return out


def iter_log_mel(chunks: Iterable[np.ndarray], n_mels: int = 80) -> Iterator[np.ndarray]:
    """Each chunk's features [n_mels, 3000] in order, computed a batch of chunks at a time.

    Takes the chunks lazily, so a long file never has all its chunk audio cut at once.
    """
    source = iter(chunks)
    while block := list(islice(source, _BLOCK)):
        yield from _log_mel_block(block, n_mels).numpy()


@torch.inference_mode()
def _log_mel_block(chunks: Sequence[np.ndarray], n_mels: int) -> torch.Tensor:
    audio = torch.zeros(len(chunks), CHUNK_SAMPLES)
    for row, samples in enumerate(chunks):
        samples = samples[:CHUNK_SAMPLES]
        audio[row, : samples.size] = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    spectrum = torch.stft(audio, N_FFT, HOP, window=_window(), center=True, pad_mode="reflect", return_complex=True)
    power = spectrum[..., :-1].abs().square_()
    mel = torch.matmul(_mel_filters(n_mels), power)
    logs = mel.clamp_(min=1e-10).log10_()
    floor = logs.amax(dim=(1, 2), keepdim=True) - 8.0
    return logs.maximum(floor).add_(4.0).div_(4.0)


@lru_cache(maxsize=None)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)  # periodic, as numpy.hanning(N+1)[:-1]


@lru_cache(maxsize=None)
def _mel_filters(n_mels: int) -> torch.Tensor:
    return torch.from_numpy(mel_filters(n_mels))


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
