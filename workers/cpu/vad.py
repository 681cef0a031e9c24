"""Voice activity: silero's v6 networks in numpy, run as a whole-file batch.

Silero's network is a stateless convolutional encoder per 32 ms step
(an STFT as a strided projection, then four small convolutions) followed by
one LSTM cell. The package runs it step by step (≈150x real time here);
here the encoder runs once over blocks of thousands of steps as plain
matrix products and only the LSTM cell steps through the sequence, with
silero's probabilities (the tests hold each network to 1e-4 of its ONNX
model). Two releases listen side by side (`silero_weights` says why): the
surer one decides what is speech, their mean where it starts and stops. Their
LSTMs step together, so the second costs little. The weights are read from the wheels' files, and a process that only
transcribes never imports torch (≈2.5 s and ≈180 MB here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from murmur.workers.cores import one_blas_thread
from murmur.workers.cpu.silero_weights import SileroWeights, silero_v60, silero_v62
from murmur.workers.window import SAMPLE_RATE

# One speech probability per step of audio (silero calls it a window; here a window is Whisper's 30 s)
STEP = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous step the model sees
STEP_S = STEP / SAMPLE_RATE
_ENCODER_BATCH = 4096  # steps per encoder group: ≈9 MB of input, 131 s of audio
_FILTER = 256  # the STFT's frame length; frames hop by half of it


@dataclass(frozen=True)
class VadOptions:
    """Silero's hysteresis: speech starts above `threshold`, ends below `neg_threshold`."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # default threshold - 0.15
    min_speech_s: float = 0.25
    min_silence_s: float = 0.5


# Where speech starts and stops, to the step: pauses of 100 ms count, as between
# sentences, and speech ends at the first step below the threshold (no hysteresis,
# which kept ends ≈0.1 s late); the defaults above bridge pauses shorter than 0.5 s,
# as chunking wants.
EDGES = VadOptions(neg_threshold=0.5, min_speech_s=0.064, min_silence_s=0.1)


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of speech in source seconds."""

    start: float
    end: float


class SileroVad:
    """Speech probabilities for a whole file in a few batched calls.

    It listens with every network in `networks` (by default silero v6.2 and
    v6.0). A step is speech to transcribe when either network hears it (the
    highest probability): each release hears voices the other misses, and
    neither hears a quiet room, noise or music. Where speech starts and stops
    is read from their mean: each release's ends run late on clips where the
    other's do not (`make bench-subtitles`).
    """

    def __init__(self, networks: Sequence[SileroWeights] | None = None) -> None:
        self.networks = tuple(networks) if networks is not None else (silero_v62(), silero_v60())
        first = self.networks[0]
        if any(not np.array_equal(net.basis, first.basis) or net.convs[0][2] != first.convs[0][2] for net in self.networks):
            raise ValueError("the VAD's networks must share their STFT and first stride")
        # the STFT and the first convolution's columns are computed once for all networks; its matrices side by side
        self._first_conv = np.concatenate([net.convs[0][0] for net in self.networks], axis=1)
        self._first_bias = np.concatenate([net.convs[0][1] for net in self.networks])
        self._hidden_gates = np.stack([net.hidden_gates for net in self.networks])  # [k, 128, 512]: one product steps all
        self._head = np.stack([net.head for net in self.networks])  # [k, 128]
        self._head_bias = np.array([net.head_bias for net in self.networks], dtype=np.float32)

    def probabilities(self, audio: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """One speech probability per 32 ms step of 16 kHz `audio`: the surest network's."""
        return surest(self.each(audio))

    def each(self, audio: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Each network's speech probability [steps, networks] per 32 ms step of 16 kHz `audio`: an array,
        or blocks of one as they decode (see `audio.stream_audio`), so a long file is never held whole.

        The encoder runs on groups of `_ENCODER_BATCH` steps; the LSTM's state
        is carried from one group to the next, so where groups are cut does not matter.
        The next group is encoded in a thread while the LSTM steps through this one
        (the encoder is large products that let go of the GIL, the LSTM small ones
        that hold it), with BLAS on one thread: its idle threads would spin on the
        LSTM's core. On 2 cores ten minutes' VAD took 1.3 s so, against 1.6-1.8 s
        one after the other. And the probabilities are the same to the bit whatever
        BLAS's thread count is elsewhere (a CPU worker's one, `murmur transcribe`'s two).
        """
        state = self._initial_state()
        out: list[np.ndarray] = []
        with one_blas_thread(), ThreadPoolExecutor(1, "murmur-vad") as pool:
            ahead: Future | None = None
            for samples in _groups(audio):
                encoding = pool.submit(self._gates, samples)
                if ahead is not None:
                    out.append(self._probabilities(ahead.result(), state))
                ahead = encoding
            if ahead is not None:
                out.append(self._probabilities(ahead.result(), state))
        return np.concatenate(out) if out else np.zeros((0, len(self.networks)), dtype=np.float32)

    def _initial_state(self) -> list[np.ndarray]:
        shape = (len(self.networks), self.networks[0].hidden_gates.shape[0])
        return [np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)]

    def _gates(self, samples: np.ndarray) -> np.ndarray:
        """Each network's LSTM input share [n, k, 512] for the steps of `samples` (64 samples of context,
        then whole steps): no state, so groups can be encoded ahead."""
        return np.stack([x @ net.input_gates + net.gate_bias for net, x in zip(self.networks, self._encode(samples))], axis=1)

    def _probabilities(self, gates: np.ndarray, state: list[np.ndarray]) -> np.ndarray:
        """Each network's probabilities [n, k] of a group's steps, from its `_gates`; updates `state`."""
        hidden = self._lstm(gates, state)  # [n, k, 128]
        logits = np.einsum("nkh,kh->nk", np.maximum(hidden, 0.0), self._head) + self._head_bias
        return _sigmoid(logits).astype(np.float32)

    def _encode(self, samples: np.ndarray) -> list[np.ndarray]:
        """Each network's encoder features [n, 128] of the n steps of `samples`, each with the 64 samples before it."""
        steps = np.lib.stride_tricks.sliding_window_view(samples, CONTEXT + STEP)[::STEP]
        steps = np.pad(steps, ((0, 0), (0, CONTEXT)), mode="reflect")  # [n, 640], as silero pads
        hop = _FILTER // 2
        frames = np.stack([steps[:, i * hop : i * hop + _FILTER] for i in range(steps.shape[1] // hop - 1)], axis=1)
        spectrum = _matmul(frames, self.networks[0].basis)  # [n, 4, 258]
        half = spectrum.shape[-1] // 2
        x = np.sqrt(np.square(spectrum[..., :half]) + np.square(spectrum[..., half:]))  # magnitudes [n, 4, 129]
        both = np.maximum(_matmul(_conv3(x, self.networks[0].convs[0][2]), self._first_conv) + self._first_bias, 0.0)
        out = []
        for i, net in enumerate(self.networks):
            x = both[..., i * net.convs[0][1].size : (i + 1) * net.convs[0][1].size]
            for matrix, bias, stride in net.convs[1:]:
                x = np.maximum(_matmul(_conv3(x, stride), matrix) + bias, 0.0)
            out.append(x[:, 0, :])  # one time step is left
        return out

    def _lstm(self, gates: np.ndarray, state: list[np.ndarray]) -> np.ndarray:
        """Each network's LSTM cell stepped over the sequence from `state` (h, c), which it leaves at
        the end; `gates` [n, k, 512] holds each step's input share."""
        k, size = state[0].shape
        h, c = state
        out = np.empty((gates.shape[0], k, size), dtype=np.float32)
        for t in range(gates.shape[0]):
            g = gates[t] + np.matmul(h[:, None, :], self._hidden_gates)[:, 0]
            s = _sigmoid(g)
            c = s[:, size : 2 * size] * c + s[:, :size] * np.tanh(g[:, 2 * size : 3 * size])
            h = s[:, 3 * size :] * np.tanh(c)
            out[t] = h
        state[:] = [h, c]
        return out


def _groups(audio: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The audio in groups of `_ENCODER_BATCH` steps, each with the CONTEXT samples before it (zeros before
    the file), the last padded to whole steps."""
    blocks = [audio] if isinstance(audio, np.ndarray) else audio
    group = CONTEXT + _ENCODER_BATCH * STEP
    pending = [np.zeros(CONTEXT, dtype=np.float32)]  # the first step's context lies before the file
    held = CONTEXT
    for block in blocks:
        pending.append(np.asarray(block, dtype=np.float32))
        held += block.size
        while held >= group:
            samples = np.concatenate(pending)
            yield samples[:group]
            pending, held = [samples[group - CONTEXT :]], samples.size - group + CONTEXT
    if held > CONTEXT:
        samples = np.concatenate(pending)
        n = -(-(samples.size - CONTEXT) // STEP)
        yield np.pad(samples, (0, CONTEXT + n * STEP - samples.size))


def surest(each: np.ndarray) -> np.ndarray:
    """The probability that decides what is transcribed: the surest network's, so a voice one of them hears is kept."""
    return each.max(axis=1)


def agreed(each: np.ndarray) -> np.ndarray:
    """The probability edges are read from: the networks' mean, as each one's ends run late on different clips."""
    return each.mean(axis=1)


def _conv3(x: np.ndarray, stride: int) -> np.ndarray:
    """Columns [n, t_out, 3 * channels] for a kernel-3, padding-1 convolution over time of `x` [n, t, channels]."""
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    t_out = (x.shape[1] - 1) // stride + 1
    return np.concatenate([padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], axis=2)


def _matmul(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`x @ matrix` over the last axis as one 2-D product: numpy would otherwise call BLAS once per row of `x`."""
    return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(*x.shape[:-1], matrix.shape[1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def speech_spans(probs: np.ndarray, options: VadOptions = VadOptions()) -> list[SpeechSpan]:
    """Turn step probabilities into speech spans (seconds) with hysteresis.

    A span opens at the first step above `threshold` and closes once the
    probability has stayed below `neg_threshold` for `min_silence_s`; spans
    shorter than `min_speech_s` are dropped.
    """
    neg = options.neg_threshold if options.neg_threshold is not None else max(options.threshold - 0.15, 0.01)
    min_silence = max(1, round(options.min_silence_s / STEP_S))
    min_speech = max(1, round(options.min_speech_s / STEP_S))
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
    return [SpeechSpan(a * STEP_S, b * STEP_S) for a, b in spans if b - a >= min_speech]
