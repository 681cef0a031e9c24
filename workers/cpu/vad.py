"""Voice activity: silero-vad's v6 model in numpy, run as a whole-file batch.

Silero's network is a stateless convolutional encoder per 32 ms step
(an STFT as a strided projection, then four small convolutions) followed by
one LSTM cell. The package runs it step by step (≈150x real time here);
here the encoder runs once over blocks of thousands of steps as plain
matrix products and only the LSTM cell steps through the sequence, with
silero's probabilities (the test holds it to 1e-4 of the package's ONNX
model). The weights are read from the package's TorchScript file (a zip of
pickled tensors), so this is silero's model, and a process that only transcribes never imports torch
(≈2.5 s and ≈180 MB here).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """Speech probabilities for a whole file in a few batched calls."""

    def __init__(self) -> None:
        weights = _silero_weights()
        self._basis = weights["stft.forward_basis_buffer"][:, 0, :].T.copy()  # [256, 258]: real then imaginary parts
        self._convs = [(_as_matrix(weights[f"encoder.{i}.reparam_conv.weight"]), weights[f"encoder.{i}.reparam_conv.bias"], stride)
                       for i, stride in enumerate((1, 2, 2, 1))]
        self._input_gates = weights["decoder.rnn.weight_ih"].T.copy()
        self._gate_bias = weights["decoder.rnn.bias_ih"] + weights["decoder.rnn.bias_hh"]
        self._hidden_gates = weights["decoder.rnn.weight_hh"].T.copy()
        self._head = weights["decoder.decoder.2.weight"][0, :, 0].copy()
        self._head_bias = float(weights["decoder.decoder.2.bias"][0])

    def probabilities(self, audio: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """One speech probability per 32 ms step of 16 kHz `audio`: an array, or blocks
        of one as they decode (see `audio.stream_audio`), so a long file is never held whole.

        The encoder runs on groups of `_ENCODER_BATCH` steps; the LSTM's state
        is carried from one group to the next, so where groups are cut does not matter.
        """
        blocks = [audio] if isinstance(audio, np.ndarray) else audio
        state = self._initial_state()
        out: list[np.ndarray] = []
        group = CONTEXT + _ENCODER_BATCH * STEP
        pending = [np.zeros(CONTEXT, dtype=np.float32)]  # the first step's context lies before the file
        held = CONTEXT
        for block in blocks:
            pending.append(np.asarray(block, dtype=np.float32))
            held += block.size
            while held >= group:
                samples = np.concatenate(pending)
                out.append(self._group(samples[:group], state))
                pending, held = [samples[group - CONTEXT :]], samples.size - group + CONTEXT
        if held > CONTEXT:
            samples = np.concatenate(pending)
            n = -(-(samples.size - CONTEXT) // STEP)
            out.append(self._group(np.pad(samples, (0, CONTEXT + n * STEP - samples.size)), state))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _initial_state(self) -> list[np.ndarray]:
        size = self._hidden_gates.shape[0]
        return [np.zeros(size, dtype=np.float32), np.zeros(size, dtype=np.float32)]

    def _group(self, samples: np.ndarray, state: list[np.ndarray]) -> np.ndarray:
        """Probabilities of the steps of `samples` (64 samples of context, then whole steps); updates `state`."""
        gates = self._encode(samples) @ self._input_gates
        gates += self._gate_bias
        hidden = self._lstm(gates, state)
        return _sigmoid(np.maximum(hidden, 0.0) @ self._head + self._head_bias).astype(np.float32)

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        """Encoder features [n, 128] of the n steps of `samples`, each with the 64 samples before it."""
        steps = np.lib.stride_tricks.sliding_window_view(samples, CONTEXT + STEP)[::STEP]
        steps = np.pad(steps, ((0, 0), (0, CONTEXT)), mode="reflect")  # [n, 640], as silero pads
        hop = _FILTER // 2
        frames = np.stack([steps[:, i * hop : i * hop + _FILTER] for i in range(steps.shape[1] // hop - 1)], axis=1)
        spectrum = _matmul(frames, self._basis)  # [n, 4, 258]
        half = spectrum.shape[-1] // 2
        x = np.sqrt(np.square(spectrum[..., :half]) + np.square(spectrum[..., half:]))  # magnitudes [n, 4, 129]
        for matrix, bias, stride in self._convs:
            x = np.maximum(_matmul(_conv3(x, stride), matrix) + bias, 0.0)
        return x[:, 0, :]  # one time step is left

    def _lstm(self, gates: np.ndarray, state: list[np.ndarray]) -> np.ndarray:
        """Silero's LSTM cell stepped over the sequence from `state` (h, c), which it leaves at the end;
        `gates` holds each step's input share."""
        size = self._hidden_gates.shape[0]
        h, c = state
        out = np.empty((gates.shape[0], size), dtype=np.float32)
        for t in range(gates.shape[0]):
            g = gates[t] + h @ self._hidden_gates
            s = _sigmoid(g)
            c = s[size : 2 * size] * c + s[:size] * np.tanh(g[2 * size : 3 * size])
            h = s[3 * size :] * np.tanh(c)
            out[t] = h
        state[:] = [h, c]
        return out


def _conv3(x: np.ndarray, stride: int) -> np.ndarray:
    """Columns [n, t_out, 3 * channels] for a kernel-3, padding-1 convolution over time of `x` [n, t, channels]."""
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    t_out = (x.shape[1] - 1) // stride + 1
    return np.concatenate([padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], axis=2)


def _matmul(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`x @ matrix` over the last axis as one 2-D product: numpy would otherwise call BLAS once per row of `x`."""
    return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(*x.shape[:-1], matrix.shape[1])


def _as_matrix(weight: np.ndarray) -> np.ndarray:
    """A conv weight [out, in, 3] as the matrix [3 * in, out] that `_conv3`'s columns multiply."""
    return weight.transpose(2, 1, 0).reshape(-1, weight.shape[0]).copy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


class _Module:
    """A TorchScript module's pickled attributes, for reading its weights without torch."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's data.pkl into `_Module`s holding numpy arrays.

    Only what a module tree of float32 tensors needs is resolved; any other
    global is refused, so the archive cannot run code."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__."):
            return _Module
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._tensor
        if (module, name) == ("torch", "FloatStorage"):
            return np.float32
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the VAD weights")

    def persistent_load(self, pid: tuple) -> tuple:
        _, dtype, key, _location, _numel = pid
        if dtype is not np.float32:
            raise pickle.UnpicklingError("the VAD weights hold a tensor that is not float32")
        return np.frombuffer(self._archive.read(f"{self._prefix}data/{key}"), dtype="<f4")

    @staticmethod
    def _tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_) -> np.ndarray:
        items = storage[offset:]
        return np.lib.stride_tricks.as_strided(items, size, [s * items.itemsize for s in stride]).copy()


def _package_file(package: str, *parts: str) -> Path:
    """A file shipped in `package`, found without importing it (silero_vad's __init__ imports torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _silero_weights() -> dict[str, np.ndarray]:
    """The 16 kHz network's tensors from the package's TorchScript file, by their dotted names."""
    with zipfile.ZipFile(_package_file("silero_vad", "data", "silero_vad.jit")) as archive:
        prefix = archive.namelist()[0].split("/")[0] + "/"
        root = _WeightsUnpickler(archive, prefix).load()
    weights: dict[str, np.ndarray] = {}

    def collect(module: _Module, name: str) -> None:
        for key, value in module.state.items():
            if isinstance(value, _Module):
                collect(value, f"{name}{key}.")
            elif isinstance(value, np.ndarray):
                weights[name + key] = value

    collect(root.state["_model"], "")
    return weights


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
