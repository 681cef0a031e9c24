"""Small ONNX models written as protobuf bytes by hand, for onnxruntime to run.

The speaker encoder's LSTM runs fastest in onnxruntime (which faster-whisper
already installs), but onnxruntime only runs models: it cannot build one, and
the `onnx` package that can is not worth a dependency for the few messages a
graph of a handful of nodes needs. Field numbers are those of onnx.proto.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IR_VERSION = 8
_ELEMENT_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): 6,
                  np.dtype(np.int64): 7}
_ATTRIBUTE_INT = 2


def model(nodes: Sequence[bytes], initializers: dict[str, np.ndarray], inputs: Sequence[bytes], outputs: Sequence[bytes],
          opsets: dict[str, int]) -> bytes:
    """A ModelProto: one graph of `nodes`, its weights, inputs and outputs (`value`), and the operator sets by domain."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "graph") \
        + b"".join(_bytes(5, _tensor(name, array)) for name, array in initializers.items()) \
        + b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    sets = b"".join(_bytes(8, _bytes(1, domain) + _int(2, version)) for domain, version in opsets.items())
    return _int(1, IR_VERSION) + sets + _bytes(7, graph)


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "", **attributes: int) -> bytes:
    """A NodeProto; an input named "" is an optional one left out. Integer attributes only."""
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op_type) \
        + b"".join(_bytes(5, _bytes(1, k) + _int(3, v) + _int(20, _ATTRIBUTE_INT)) for k, v in attributes.items()) \
        + (_bytes(7, domain) if domain else b"")


def value(name: str, dtype: type, shape: Sequence[int | str]) -> bytes:
    """A ValueInfoProto for a graph's input or output: a tensor whose named dimensions vary from run to run."""
    dims = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, _ELEMENT_TYPES[np.dtype(dtype)]) + _bytes(2, dims)))


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    return b"".join(_int(1, d) for d in array.shape) + _int(2, _ELEMENT_TYPES[array.dtype]) + _bytes(8, name) \
        + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())


def _int(field: int, number: int) -> bytes:
    return _varint(field << 3) + _varint(number)


def _bytes(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
