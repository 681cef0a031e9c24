"""Voiceprints: a speaker embedding for each short slice of a job's speech, taken while prepare holds the audio.

The encoder is GE2E's (a 3-layer LSTM over 40 mel bands, 256-d output), with the
weights that the `resemblyzer` wheel carries: they install from PyPI and load
with no network. Only the weights file is read; its package (and the librosa it
imports) is never imported, nor is torch. A slice is 1.5 s of speech every
0.75 s inside the VAD's spans, so a turn of 2.25 s or more holds a slice of its
own; a span shorter than a slice is one slice of its own length. The prints are
small (256 half floats per slice: about 2.5 MB per hour of speech) and go to the
database with the job; `diarization` clusters them at assembly.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import math
import pickle
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from murmur.workers.cores import one_blas_thread, usable_cores
from murmur.workers.cpu import onnx_writer
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
_BATCH = 32  # slices through the LSTM at once, on one thread: 16 to 128 took as long here
_PENDING = 256  # slices `listen` gathers before it embeds them: full batches for every core, 24 MB of audio


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
    """GE2E's speaker encoder; `embed` maps slices of audio to unit vectors.

    The mel bands are numpy's. The LSTM runs in onnxruntime (faster-whisper's
    dependency) from a graph written here (`_lstm_model`): its first layer in
    float32, as its input (power in mel bands) spans too many decades for one
    int8 scale; the other two with int8 weights, a scale per gate unit, and int8
    activations, as DynamicQuantizeLSTM makes them. 400 slices took 0.44-0.55 s
    so on 2 cores, against 1.1-1.4 s in numpy's float32, and the prints are
    torch's float32 ones to a cosine of 0.998 with AVX-512 VNNI (0.996 on a
    Haswell's AVX2, under qemu-user). torch is never imported (its
    import alone costs more than embedding a long file's speech), nor needed to
    read the weights from the wheel's checkpoint (`_checkpoint`).
    """

    def __init__(self) -> None:
        weights = _checkpoint(_weights_path())
        self._lstm = _lstm_model(weights)
        self._linear = (np.ascontiguousarray(weights["linear.weight"].T), weights["linear.bias"])
        self._filters = np.ascontiguousarray(mel_filters(SAMPLE_RATE, _N_FFT, _N_MELS).T)
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)  # periodic Hann

    def embed(self, pieces: Sequence[np.ndarray], threads: int = 0) -> np.ndarray:
        """One unit vector per piece of 16 kHz audio, pieces of one length batched together.

        An activation's int8 scale is its batch's, so a print moves a little (a cosine of 0.999) with the
        pieces beside it. The batches are made from the pieces alone and run side by side in `threads`
        threads (0: one per usable core), each on one: onnxruntime's own threads would split a batch among
        them. So the same pieces give the same prints whatever the number of threads: a job's prints are
        the same in a CPU worker and in the embedded runner, and on a redelivered prepare. (A CPU of
        another kind rounds differently: without VNNI, onnxruntime's int8 products add pairs in 16 bits.)
        """
        by_length: dict[int, list[int]] = {}
        for i, piece in enumerate(pieces):
            by_length.setdefault(piece.size, []).append(i)
        batches = [positions[start:start + _BATCH] for positions in by_length.values()
                   for start in range(0, len(positions), _BATCH)]

        session = self._session  # made before the threads start

        def run(batch: list[int]) -> np.ndarray:
            mels = self._mels(np.stack([_loudness(pieces[i]) for i in batch]))
            return session.run(["last"], {"mels": np.ascontiguousarray(mels.transpose(1, 0, 2))})[0][0]

        last = np.zeros((len(pieces), 256), np.float32)
        with one_blas_thread(), ThreadPoolExecutor(max(1, min(threads or usable_cores(), len(batches))), "murmur-voices") as pool:
            for batch, found in zip(batches, pool.map(run, batches)):
                last[batch] = found
            return _unit(np.maximum(last @ self._linear[0] + self._linear[1], 0.0))

    def _mels(self, audio: np.ndarray) -> np.ndarray:
        """Power mel spectrogram, (batch, frames, bands): 25 ms frames every 10 ms, centred, zero-padded."""
        padded = np.pad(audio, ((0, 0), (_N_FFT // 2, _N_FFT // 2)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT, axis=1)[:, ::_HOP] * self._window
        spectrum = np.fft.rfft(frames, axis=2)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
        return power @ self._filters

    @cached_property
    def _session(self):
        """The LSTM in onnxruntime, each run on the thread that calls it: a batch is never split among threads."""
        import onnxruntime  # here: a job that asks for no speakers never pays for its import

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        return onnxruntime.InferenceSession(self._lstm, options, providers=["CPUExecutionProvider"])


@cache
def voice_encoder() -> VoiceEncoder:
    """The process's encoder, loaded on first use (a job that asks for no speakers never loads it)."""
    return VoiceEncoder()


def listen(chunks: Sequence, pieces: Iterable[np.ndarray], into: list[tuple[float, float, np.ndarray]],
           threads: int = 0) -> Iterator[np.ndarray]:
    """Each chunk's audio passed on as it is, its speech embedded on the way into `into` (start, end, vector).

    `chunks` are the plan's chunks (their `spans` in source time, played back to back),
    `pieces` the chunks' audio as `chunking.cut_chunks` yields it. Slices are gathered
    over chunks and embedded _PENDING at a time, the rest before the last chunk's audio
    is passed on: `into` is whole once that is taken. `threads`: as `VoiceEncoder.embed`.
    """
    encoder = voice_encoder()
    found: list[tuple[float, float]] = []
    cuts: list[np.ndarray] = []
    for n, (chunk, audio) in enumerate(zip(chunks, pieces)):
        offset = 0.0  # where the span starts in the chunk's audio, seconds
        for a, b in chunk.spans:
            for start, end in slices([(a, b)]):
                first = int(round((offset + start - a) * SAMPLE_RATE))
                cut = audio[first:first + int(round((end - start) * SAMPLE_RATE))]
                if cut.size >= MIN_SLICE_S * SAMPLE_RATE:
                    found.append((start, end))
                    cuts.append(cut)
            offset += b - a
        if cuts and (len(cuts) >= _PENDING or n == len(chunks) - 1):
            into += [(s, e, v) for (s, e), v in zip(found, encoder.embed(cuts, threads))]
            found, cuts = [], []
        yield audio


def voiceprints(found: Sequence[tuple[float, float, np.ndarray]], known: dict[str, np.ndarray] | None = None) -> Voiceprints:
    """What `listen` found, with the known speakers' prints, as the job stores them."""
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


def _lstm_model(weights: dict[str, np.ndarray]) -> bytes:
    """The encoder's LSTM as an ONNX model: "mels" (frames, slices, 40) in, "last" (the last layer's final
    hidden state, (1, slices, 256)) out."""
    def gates(rows: np.ndarray) -> np.ndarray:  # torch's i, f, g, o to ONNX's i, o, f, c
        i, f, g, o = np.split(rows, 4, axis=0)
        return np.concatenate([i, o, f, g])

    nodes, tensors, x = [], {"direction_axis": np.array([1], np.int64)}, "mels"
    for n in range(3):
        w, r = gates(weights[f"lstm.weight_ih_l{n}"]), gates(weights[f"lstm.weight_hh_l{n}"])
        tensors[f"b{n}"] = np.concatenate([gates(weights[f"lstm.bias_ih_l{n}"]), gates(weights[f"lstm.bias_hh_l{n}"])])[None]
        outputs = [f"y{n}", ""] if n < 2 else ["", "last"]
        if n == 0:
            tensors |= {"w0": w[None], "r0": r[None]}
            nodes.append(onnx_writer.node("LSTM", [x, "w0", "r0", "b0"], outputs, hidden_size=256))
        else:
            for name, matrix in ((f"w{n}", w), (f"r{n}", r)):
                tensors[name], tensors[f"{name}_scale"] = _int8_columns(matrix.T)
                tensors[f"{name}_zero"] = np.zeros_like(tensors[f"{name}_scale"], np.int8)
            nodes.append(onnx_writer.node("DynamicQuantizeLSTM", [x, f"w{n}", f"r{n}", f"b{n}", "", "", "", "",
                                          f"w{n}_scale", f"w{n}_zero", f"r{n}_scale", f"r{n}_zero"],
                                          outputs, domain="com.microsoft", hidden_size=256))
        if n < 2:  # Y is (frames, directions, slices, 256): the next layer reads (frames, slices, 256)
            nodes.append(onnx_writer.node("Squeeze", [f"y{n}", "direction_axis"], [f"x{n + 1}"]))
            x = f"x{n + 1}"
    return onnx_writer.model(nodes, tensors, [onnx_writer.value("mels", np.float32, ["frames", "slices", _N_MELS])],
                             [onnx_writer.value("last", np.float32, [1, "slices", 256])], {"": 17, "com.microsoft": 1})


def _int8_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (inputs, outputs) matrix as int8 with one scale per output, and those scales, each (1, ...) for one direction."""
    scale = np.maximum(np.abs(matrix).max(axis=0), 1e-12).astype(np.float32) / 127.0
    return np.clip(np.round(matrix / scale), -127, 127).astype(np.int8)[None], scale[None]


class _Storage:
    data: np.ndarray | None = None


class _Tensor:
    """A tensor of the checkpoint, made once its storage has been read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple, *_) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        items = self.storage.data[self.offset:]
        return np.lib.stride_tricks.as_strided(items, self.size, [s * items.itemsize for s in self.stride]).copy()


class _CheckpointUnpickler(pickle.Unpickler):
    """torch's legacy (pre-zip) checkpoint pickles, with only float32 tensors and dicts resolved: nothing
    else may be named, so the file cannot run code."""

    def __init__(self, file, storages: dict) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Tensor
        if (module, name) == ("torch", "FloatStorage"):
            return np.float32
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the speaker encoder's weights")

    def persistent_load(self, pid: tuple) -> _Storage:
        kind, dtype, key, *_ = pid
        if kind != "storage" or dtype is not np.float32:
            raise pickle.UnpicklingError("the speaker encoder's weights hold a tensor that is not float32")
        return self._storages.setdefault(key, _Storage())


def _checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The model's tensors by name, from torch's legacy format: a magic number, a version and the system's
    sizes, the pickled object, the list of its storages, then each storage as a count and its floats."""
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        for _ in range(3):
            _CheckpointUnpickler(f, storages).load()
        root = _CheckpointUnpickler(f, storages).load()
        for key in _CheckpointUnpickler(f, storages).load():
            count = int.from_bytes(f.read(8), "little")
            storages[key].data = np.frombuffer(f.read(count * 4), "<f4")
    return {name: tensor.array() for name, tensor in root["model_state"].items()}


def _weights_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")  # finds the package without running its __init__ (librosa, webrtcvad)
    if spec is None or not spec.submodule_search_locations:
        raise MurmurError("--diarize needs the speaker encoder's weights, which the resemblyzer wheel carries: "
                          "pip install --no-deps resemblyzer==0.1.4 (or murmur[speakers]) where the CPU workers run")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
