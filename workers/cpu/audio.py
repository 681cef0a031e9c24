"""Decoding: any container and codec PyAV reads → 16 kHz mono float32.

Decoding is streamed frame by frame through one resampler. A job reads its
file as a stream of blocks, twice (once for the VAD, once to cut its chunks),
so a 3-hour file is never held whole (it would be ≈690 MB); `decode_audio`
gathers the blocks into one buffer sized from the container's declared
duration, for callers that want the whole array.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from murmur.workers.errors import AudioError, LimitError, SourceError
from murmur.workers.window import SAMPLE_RATE

# A decoder may legitimately come up a little short of the declared duration
# (encoder delay, padding); a larger gap means the file was cut off.
_TRUNCATION_TOLERANCE_S = 0.5
_TRUNCATION_TOLERANCE_RATIO = 0.02


def _check_file(path: str | os.PathLike) -> Path:
    """Reject what cannot be audio before any decoder sees it, with a plain reason that names the file,
    not where it lies (a server's directories are its own)."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"no such file: {p.name}")
    if p.is_dir():
        raise AudioError(f"is a directory, not an audio file: {p.name}")
    if p.stat().st_size == 0:
        raise AudioError(f"file is empty: {p.name}")
    return p


def decode_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """The whole file as one float32 array, filled in place as it decodes.

    Raises AudioError for anything PyAV cannot open or decode and for a file
    whose decoded length falls well short of the length its container declares
    (a truncated download or upload); SourceError for a missing file; and, as
    soon as the stream passes it, LimitError for audio longer than `max_seconds`:
    counted from the decoded samples, not the header, so a small file of hours
    of silence cannot fill the memory.
    """
    declared = declared_seconds(path)
    if max_seconds is not None and declared is not None:
        declared = min(declared, max_seconds)  # a header's claim never sizes the buffer beyond the limit
    buffer = np.empty(int((declared or 0.0) * sample_rate) + sample_rate, dtype=np.float32)
    filled = 0
    for block in stream_audio(path, sample_rate, max_seconds):
        if filled + block.size > buffer.size:
            grown = np.empty(max(2 * buffer.size, filled + block.size), dtype=np.float32)
            grown[:filled] = buffer[:filled]
            buffer = grown
        buffer[filled : filled + block.size] = block
        filled += block.size
    # a declared duration far too long would leave the buffer mostly empty: do not keep it
    return buffer[:filled].copy() if filled < buffer.size // 2 else buffer[:filled]


def stream_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """The file's samples as float32 blocks, as they decode; the same errors as `decode_audio`."""
    with _open(path) as (container, stream, declared):
        produced = 0
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        for block in _blocks(container, stream, declared, Path(path).name, sample_rate):
            produced += block.size
            if limit is not None and produced > limit:
                raise LimitError(f"{Path(path).name} is longer than the limit of {_clock(max_seconds)} (MURMUR_MAX_DURATION)")
            yield block


def declared_seconds(path: str | os.PathLike) -> float | None:
    """The duration the file's container claims, if any: a hint, never trusted for limits."""
    with _open(path) as (_, _, declared):
        return declared


@contextmanager
def _open(path: str | os.PathLike):
    p = _check_file(path)
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError(f"not a readable audio file: {p.name} ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"not a readable audio file: {p.name} (no audio stream)")
        stream = container.streams.audio[0]
        yield container, stream, _declared(container, stream)


def _blocks(container, stream, declared: float | None, name: str, sample_rate: int) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    produced = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    produced += block.size
                    yield block
        for out in resampler.resample(None):
            block = out.to_ndarray().reshape(-1)
            produced += block.size
            yield block
    except av.error.FFmpegError as exc:
        raise AudioError(f"audio data is corrupt in {name} ({_reason(exc)})") from None
    if produced == 0:
        raise AudioError(f"not a readable audio file: {name} (no audio could be decoded)")
    got = produced / sample_rate
    if declared and declared - got > max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_RATIO * declared):
        raise AudioError(f"{name} is truncated: it declares {declared:.1f} s but only {got:.1f} s decode")


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{seconds:g} s"


def _declared(container: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
