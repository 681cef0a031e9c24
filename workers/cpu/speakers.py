"""Voiceprints: a speaker embedding for each short slice of a job's speech, taken while prepare holds the audio.

The encoder is GE2E's (a 3-layer LSTM over 40 mel bands, 256-d output), with the
weights that the `resemblyzer` wheel carries: they install from PyPI and load
with no network. Only the weights file is read; its package (and the librosa it
imports) is never imported. A slice is 1.5 s of speech every 0.75 s inside the
VAD's spans, so a turn of a second or more is seen whole at least once; a span
shorter than a slice is one slice of its own length. The prints are small
(256 half floats per slice: 0.6 MB per hour of speech) and go to the database
with the job; `diarization` clusters them at assembly.
"""

from __future__ import annotations

import importlib.util
import io
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from murmur.workers.errors import MurmurError
from murmur.workers.window import SAMPLE_RATE

SLICE_S = 1.5
SLICE_HOP_S = 0.75
MIN_SLICE_S = 0.4  # shorter speech holds too few frames for the encoder to say whose it is
MIN_REFERENCE_S, MAX_REFERENCE_S = 2.0, 10.0  # a known speaker's clip: enough to know them by, short enough to be them alone
_N_FFT = 400  # 25 ms
_HOP = 160  # 10 ms
_N_MELS = 40
_LOUDNESS_DBFS = -30.0  # the level the encoder's training audio was brought to
_BATCH = 16  # measured: 16 slices a call ran twice as fast as 64 on 2 cores


@dataclass
class Voiceprints:
    """Slices of speech in source time and their embeddings (unit length), and the known speakers' prints by name."""

    times: np.ndarray  # (n, 2) float32: start, end in seconds
    vectors: np.ndarray  # (n, 256) float32
    known: dict[str, np.ndarray] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        names = list(self.known)
        np.savez(out, times=self.times.astype(np.float32), vectors=self.vectors.astype(np.float16),
                 known_names=np.array(names, dtype=str),
                 known_vectors=np.stack([self.known[n] for n in names]).astype(np.float16) if names else np.zeros((0, 256), np.float16))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Voiceprints:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            vectors = _unit(stored["vectors"].astype(np.float32))
            known = _unit(stored["known_vectors"].astype(np.float32)) if "known_vectors" in stored else np.zeros((0, 256))
            names = [str(n) for n in stored["known_names"]] if "known_names" in stored else []
            return cls(stored["times"].astype(np.float32), vectors, dict(zip(names, known)))

    @classmethod
    def empty(cls) -> Voiceprints:
        return cls(*_nothing())

    def __len__(self) -> int:
        return len(self.times)


def slices(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Where the slices lie: every SLICE_HOP_S through each span, the last one flush with its end."""
    out: list[tuple[float, float]] = []
    for a, b in spans:
        length = b - a
        if length < MIN_SLICE_S:
            continue
        if length <= SLICE_S:
            out.append((a, b))
            continue
        count = math.ceil((length - SLICE_S) / SLICE_HOP_S) + 1
        step = (length - SLICE_S) / (count - 1)
        out += [(a + i * step, a + i * step + SLICE_S) for i in range(count)]
    return out


class VoiceEncoder:
    """GE2E's speaker encoder on the CPU; `embed` maps slices of audio to unit vectors."""

    def __init__(self, threads: int | None = None) -> None:
        import torch

        self._torch = torch
        self._lstm = torch.nn.LSTM(_N_MELS, 256, 3, batch_first=True)
        self._linear = torch.nn.Linear(256, 256)
        state = torch.load(_weights_path(), map_location="cpu", weights_only=True)["model_state"]
        self._lstm.load_state_dict({k[len("lstm."):]: v for k, v in state.items() if k.startswith("lstm.")})
        self._linear.load_state_dict({k[len("linear."):]: v for k, v in state.items() if k.startswith("linear.")})
        self._lstm.eval()
        self._filters = torch.from_numpy(mel_filters(SAMPLE_RATE, _N_FFT, _N_MELS))
        self._window = torch.hann_window(_N_FFT)
        self._threads = threads
        self._lock = threading.Lock()  # a worker's threads share one encoder; its LSTM state is per call, torch's pool is not

    def embed(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        """One unit vector per piece of 16 kHz audio, pieces of one length batched together."""
        torch = self._torch
        out = np.zeros((len(pieces), 256), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, piece in enumerate(pieces):
            by_length.setdefault(piece.size, []).append(i)
        with self._lock, torch.inference_mode():
            for positions in by_length.values():
                for start in range(0, len(positions), _BATCH):
                    batch = positions[start:start + _BATCH]
                    audio = torch.from_numpy(np.stack([_loudness(pieces[i]) for i in batch]))
                    out[batch] = self._forward(audio).numpy()
        return out

    def _forward(self, audio):
        torch = self._torch
        spectrum = torch.stft(audio, _N_FFT, _HOP, window=self._window, center=True, pad_mode="constant",
                              return_complex=True).abs() ** 2
        mels = (self._filters @ spectrum).transpose(1, 2)  # (batch, frames, bands)
        _, (hidden, _) = self._lstm(mels)
        return torch.nn.functional.normalize(torch.relu(self._linear(hidden[-1])), dim=1)


@cache
def voice_encoder() -> VoiceEncoder:
    """The process's encoder, loaded on first use (a job that asks for no speakers never loads it)."""
    return VoiceEncoder()


def listen(chunks: Sequence, pieces: Iterable[np.ndarray], into: list[tuple[float, float, np.ndarray]]) -> Iterator[np.ndarray]:
    """Each chunk's audio passed on as it is, its speech embedded on the way into `into` (start, end, vector).

    `chunks` are the plan's chunks (their `spans` in source time, played back to back),
    `pieces` the chunks' audio as `chunking.cut_chunks` yields it.
    """
    encoder = voice_encoder()
    for chunk, audio in zip(chunks, pieces):
        found, cuts = [], []
        offset = 0.0  # where the span starts in the chunk's audio, seconds
        for a, b in chunk.spans:
            for start, end in slices([(a, b)]):
                first = int(round((offset + start - a) * SAMPLE_RATE))
                cut = audio[first:first + int(round((end - start) * SAMPLE_RATE))]
                if cut.size >= MIN_SLICE_S * SAMPLE_RATE:
                    found.append((start, end))
                    cuts.append(cut)
            offset += b - a
        if cuts:
            into += [(s, e, v) for (s, e), v in zip(found, encoder.embed(cuts))]
        yield audio


def voiceprints(found: Sequence[tuple[float, float, np.ndarray]], known: dict[str, np.ndarray] | None = None) -> Voiceprints:
    if not found:
        return Voiceprints(*_nothing(), dict(known or {}))
    return Voiceprints(np.array([(s, e) for s, e, _ in found], np.float32), np.stack([v for *_, v in found]), dict(known or {}))


def reference_print(audio: np.ndarray, name: str) -> np.ndarray:
    """A known speaker's voice from a clip of them alone: the mean of its slices, unit length."""
    seconds = audio.size / SAMPLE_RATE
    if not MIN_REFERENCE_S <= seconds <= MAX_REFERENCE_S:
        raise MurmurError(f"the reference clip lasts {'more than ' if seconds > MAX_REFERENCE_S else ''}{seconds:.1f} s: "
                          f"give {MIN_REFERENCE_S:.0f} to {MAX_REFERENCE_S:.0f} s of that speaker alone")
    cuts = [audio[int(s * SAMPLE_RATE):int(e * SAMPLE_RATE)] for s, e in slices([(0.0, seconds)])]
    return _unit(voice_encoder().embed(cuts).mean(axis=0, keepdims=True))[0]


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on Slaney's mel scale, each of unit area (the filters the encoder was trained with)."""
    def to_mel(hz):
        hz = np.asarray(hz, np.float64)
        return np.where(hz < 1000.0, hz * 3.0 / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (np.log(6.4) / 27.0))

    def to_hz(mel):
        return np.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0))

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


def _nothing() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.float32), np.zeros((0, 256), np.float32)


def _loudness(audio: np.ndarray) -> np.ndarray:
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    if power <= 1e-12:
        return audio.astype(np.float32)
    return (audio * 10 ** ((_LOUDNESS_DBFS - 10 * np.log10(power)) / 20)).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _weights_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")  # finds the package without running its __init__ (librosa, webrtcvad)
    if spec is None or not spec.submodule_search_locations:
        raise MurmurError("speaker labels need the resemblyzer package (pip install resemblyzer)")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
