"""Voice activity: silero-vad's v6 model, run as a whole-file batch.

Silero's network is a stateless convolutional encoder per 32 ms window followed
by one LSTM cell. Run window by window (the package's own loop) that is ≈150x
real time here; run as one batched encoder call over every window plus a single
`nn.LSTM` pass over the sequence it is ≈750x on one thread, with the same
probabilities (max difference ≈5e-6 against the ONNX model). The weights are
the package's TorchScript file, so this is silero's model, not a re-training.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from murmur.workers.cpu.audio import SAMPLE_RATE

WINDOW = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees
WINDOW_S = WINDOW / SAMPLE_RATE
_ENCODER_BATCH = 4096  # windows per encoder call: ≈9 MB of input, 131 s of audio


@dataclass(frozen=True)
class VadOptions:
    """Silero's hysteresis: speech starts above `threshold`, ends below `neg_threshold`."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # default threshold - 0.15
    min_speech_s: float = 0.25
    min_silence_s: float = 0.5


# Where speech starts and stops, to the window: pauses of 100 ms count, as between
# sentences, and speech ends at the first window below the threshold (no hysteresis,
# which kept ends ≈0.1 s late); the defaults above bridge pauses shorter than 0.5 s,
# as chunking wants.
EDGES = VadOptions(neg_threshold=0.5, min_speech_s=0.064, min_silence_s=0.1)


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of speech in source seconds."""

    start: float
    end: float


class SileroVad:
    """Speech probabilities for a whole file in a few batched calls."""

    def __init__(self) -> None:
        source = resources.files("silero_vad.data").joinpath("silero_vad.jit")
        with resources.as_file(source) as path:
            scripted = torch.jit.load(str(path), map_location="cpu")
        net = scripted._model  # the 16 kHz network
        self._stft = net.stft
        self._encoder = net.encoder
        self._head = net.decoder.decoder  # dropout, relu, 1x1 conv, sigmoid
        cell = net.decoder.rnn
        self._lstm = torch.nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self._lstm, f"{name}_l0").copy_(getattr(cell, name))
        self._lstm.eval()

    @torch.inference_mode()
    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """One speech probability per 32 ms window of 16 kHz `audio`.

        The encoder runs on blocks of windows cut straight from `audio`, so a
        long file is never copied whole; only the LSTM sees the full sequence.
        """
        n = -(-audio.size // WINDOW)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        encoded = torch.cat([self._encode_block(audio, first, min(n, first + _ENCODER_BATCH)) for first in range(0, n, _ENCODER_BATCH)])
        hidden, _ = self._lstm(encoded.unsqueeze(0))
        return self._head(hidden[0].unsqueeze(-1)).reshape(n).numpy()

    def _encode_block(self, audio: np.ndarray, first: int, last: int) -> torch.Tensor:
        """Encoder features of windows [first, last): each window with the 64 samples before it."""
        start = first * WINDOW - CONTEXT  # the first window's context lies before the file: zeros
        samples = torch.zeros(CONTEXT + (last - first) * WINDOW)
        piece = audio[max(start, 0) : last * WINDOW]
        offset = max(-start, 0)
        samples[offset : offset + piece.size] = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))
        windows = samples.unfold(0, CONTEXT + WINDOW, WINDOW)  # a view: [last - first, 576]
        return self._encoder(self._stft(windows)).squeeze(-1)


def speech_spans(probs: np.ndarray, options: VadOptions = VadOptions()) -> list[SpeechSpan]:
    """Turn window probabilities into speech spans (seconds) with hysteresis.

    A span opens at the first window above `threshold` and closes once the
    probability has stayed below `neg_threshold` for `min_silence_s`; spans
    shorter than `min_speech_s` are dropped.
    """
    neg = options.neg_threshold if options.neg_threshold is not None else max(options.threshold - 0.15, 0.01)
    min_silence = max(1, round(options.min_silence_s / WINDOW_S))
    min_speech = max(1, round(options.min_speech_s / WINDOW_S))
    spans: list[tuple[int, int]] = []
    start: int | None = None
    quiet_since: int | None = None
    for i, p in enumerate(probs):
        if start is None:
            if p >= options.threshold:
                start, quiet_since = i, None
            continue
        if p >= options.threshold:
            quiet_since = None
        elif p < neg:
            if quiet_since is None:
                quiet_since = i
            if i + 1 - quiet_since >= min_silence:
                spans.append((start, quiet_since))
                start, quiet_since = None, None
    if start is not None:
        spans.append((start, quiet_since if quiet_since is not None else len(probs)))
    return [SpeechSpan(a * WINDOW_S, b * WINDOW_S) for a, b in spans if b - a >= min_speech]
