"""Silero VAD's weights, read from the wheels that ship them, without torch or onnx.

Two releases of the same network are read. Silero v6.2 (the silero-vad
package) misses less of far-field meeting speech; v6.0 (the file
faster-whisper ships) hears some voices v6.2 misses or cuts short: whispered,
reverberant, pitched up (README, "What the VAD hears"; `make bench-voices`).
`vad.SileroVad` listens with both.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONV_STRIDES = (1, 2, 2, 1)


@dataclass(frozen=True)
class SileroWeights:
    """One silero 16 kHz network as the numpy VAD multiplies it (LSTM gates in torch's i, f, g, o order)."""

    release: str
    basis: np.ndarray  # [256, 258]: the STFT's real then imaginary parts
    convs: tuple[tuple[np.ndarray, np.ndarray, int], ...]  # (matrix [3 * in, out], bias, stride)
    input_gates: np.ndarray  # [128, 512]
    hidden_gates: np.ndarray  # [128, 512]
    gate_bias: np.ndarray  # [512]
    head: np.ndarray  # [128]
    head_bias: float


def silero_v62() -> SileroWeights:
    """Silero v6.2, from the silero-vad package's TorchScript file (a zip of pickled tensors)."""
    with zipfile.ZipFile(_package_file("silero_vad", "data", "silero_vad.jit")) as archive:
        prefix = archive.namelist()[0].split("/")[0] + "/"
        root = _WeightsUnpickler(archive, prefix).load()
    w: dict[str, np.ndarray] = {}

    def collect(module: _Module, name: str) -> None:
        for key, value in module.state.items():
            if isinstance(value, _Module):
                collect(value, f"{name}{key}.")
            elif isinstance(value, np.ndarray):
                w[name + key] = value

    collect(root.state["_model"], "")
    return SileroWeights(
        release="silero v6.2",
        basis=w["stft.forward_basis_buffer"][:, 0, :].T.copy(),
        convs=tuple((_as_matrix(w[f"encoder.{i}.reparam_conv.weight"]), w[f"encoder.{i}.reparam_conv.bias"], stride)
                    for i, stride in enumerate(CONV_STRIDES)),
        input_gates=w["decoder.rnn.weight_ih"].T.copy(),
        hidden_gates=w["decoder.rnn.weight_hh"].T.copy(),
        gate_bias=w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"],
        head=w["decoder.decoder.2.weight"][0, :, 0].copy(),
        head_bias=float(w["decoder.decoder.2.bias"][0]),
    )


def silero_v60() -> SileroWeights:
    """Silero v6.0, from the ONNX file in faster-whisper's wheel (its VAD): read as protobuf by hand."""
    tensors, lstm_inputs = _onnx_graph(_package_file("faster_whisper", "assets", "silero_vad_v6.onnx").read_bytes())
    w_input, w_hidden, bias = (tensors[name][0] for name in lstm_inputs[1:4])
    order = [0, 2, 3, 1]  # ONNX stacks an LSTM's gates i, o, f, c; torch i, f, g, o

    def gates(m: np.ndarray) -> np.ndarray:
        return np.concatenate([m[k * 128 : (k + 1) * 128] for k in order])

    return SileroWeights(
        release="silero v6.0",
        basis=tensors["encoder.feature_extractor.forward_basis_buffer"][:, 0, :].T.copy(),
        convs=tuple((_as_matrix(tensors[f"encoder.conv_layers.{i}.weight"]), tensors[f"encoder.conv_layers.{i}.bias"], stride)
                    for i, stride in enumerate(CONV_STRIDES)),
        input_gates=gates(w_input).T.copy(),
        hidden_gates=gates(w_hidden).T.copy(),
        gate_bias=gates(bias[:512]) + gates(bias[512:]),
        head=tensors["decoder.conv1d.weight"][0, :, 0].copy(),
        head_bias=float(tensors["decoder.conv1d.bias"][0]),
    )


def _as_matrix(weight: np.ndarray) -> np.ndarray:
    """A conv weight [out, in, 3] as the matrix [3 * in, out] that `vad._conv3`'s columns multiply."""
    return weight.transpose(2, 1, 0).reshape(-1, weight.shape[0]).copy()


def _package_file(package: str, *parts: str) -> Path:
    """A file shipped in `package`, found without importing it (both packages' __init__ import heavy modules)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


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


# ONNX is protobuf: ModelProto.graph is field 7; GraphProto.node 1, .initializer 5; NodeProto.input 1,
# .op_type 4; TensorProto.dims 1, .data_type 2 (1: float32), .name 8, .raw_data 9
_FLOAT = 1


def _onnx_graph(model: bytes) -> tuple[dict[str, np.ndarray], list[str]]:
    """The float32 initializers of an ONNX model by name, and the inputs of its one LSTM node."""
    graph = next(value for field, value in _fields(model) if field == 7)
    tensors: dict[str, np.ndarray] = {}
    lstm: list[str] = []
    for field, value in _fields(graph):
        if field == 1:
            node = list(_fields(value))
            if any(f == 4 and v == b"LSTM" for f, v in node):
                lstm = [v.decode() for f, v in node if f == 1]
        elif field == 5:
            dims, name, dtype, raw = [], "", None, b""
            for f, v in _fields(value):
                if f == 1:
                    dims.append(v)
                elif f == 2:
                    dtype = v
                elif f == 8:
                    name = v.decode()
                elif f == 9:
                    raw = v
            if dtype == _FLOAT and raw:
                tensors[name] = np.frombuffer(raw, dtype="<f4").reshape(dims).copy()
    if len(lstm) < 4:
        raise ValueError("the VAD's ONNX file has no LSTM node with its weights")
    return tensors, lstm


def _fields(message: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(message):
        key, i = _varint(message, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(message, i)
        elif wire == 1:
            value, i = message[i : i + 8], i + 8
        elif wire == 5:
            value, i = message[i : i + 4], i + 4
        elif wire == 2:
            size, i = _varint(message, i)
            value, i = message[i : i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not read here")
        yield field, value


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i
