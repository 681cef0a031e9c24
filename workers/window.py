"""Whisper's input: 16 kHz audio, heard in windows of 30 s as 3000 log-mel frames; and a window's silence.

Chunking cuts speech to fit a window, features frame a chunk in one, packing
lays several short chunks side by side in one, and decode shifts a chunk's
unheard rest to the start of one: all with these numbers and `place`.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW_S = 30.0
WINDOW_SAMPLES = int(WINDOW_S * SAMPLE_RATE)
HOP = 160  # samples per log-mel frame: 10 ms
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
N_FRAMES = WINDOW_SAMPLES // HOP  # 3000


def frames(duration: float) -> int:
    """The frames that hold `duration` seconds, at most a window's."""
    return min(int(np.ceil(duration * FRAMES_PER_SECOND)), N_FRAMES)


def place(out: np.ndarray, features: np.ndarray, at: int, begin: int = 0) -> None:
    """Fill `out[:, at:]` with a chunk's frames from its frame `begin` on, and where the chunk has
    no frames left, with its silence: the floor of its own log-mel, the value of its padding.

    Each chunk's features are normalised on their own, so silence at another chunk's
    level would be louder or quieter than this one's: no chunk's loudness spills
    onto another's speech, or onto its own shifted rest.
    """
    n = min(out.shape[-1] - at, features.shape[-1] - begin)
    out[:, at : at + n] = features[:, begin : begin + n]
    if at + n < out.shape[-1]:
        out[:, at + n :] = features.min()
