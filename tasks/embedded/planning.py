"""How one job's chunks are shared out among decoders side by side, decided before decoding starts.

Pure functions of counts and chunk lists, so the CLI can choose the model's
shape (`job_decoders`) while it is still importing, and the runner can lay out
its batches (`plan_batches`), put the chunks that vote on the language in the
first of them (`first_batches`) and even out the first round (`lending`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from murmur.tasks.tensors.store import TensorRef
from murmur.workers.cpu.audio import declared_seconds
from murmur.workers.errors import MurmurError
from murmur.workers.gpu.language import DETECT_CHUNKS, detection_chunks
from murmur.workers.gpu.model import decoders
from murmur.workers.window import WINDOW_S


def job_decoders(source: str, device: str, threads: int = 0) -> int:
    """How many decoders a job keeps busy on `device` with `threads` CPU threads (0: every core),
    known before it is prepared: one per 30 s of the length its file declares, at most one per
    thread (one on a GPU); all of them when no length is known.

    Chosen this early so the model loads while the file is prepared, in the shape
    decoding will ask for (`model_for`'s `concurrent`): an 11 s clip gets one model
    on every thread, an hour one one-thread replica per decoder, and neither loads
    the other shape.
    """
    most = decoders(device, threads)
    try:
        seconds = declared_seconds(source) if os.path.isfile(source) else None
    except MurmurError:
        seconds = None  # preparing the file says what is wrong with it
    return most if not seconds else max(1, min(most, math.ceil(seconds / WINDOW_S)))


def plan_batches(n_chunks: int, batch_size: int, decoders: int) -> list[slice]:
    """Split a job's chunks into batches of at most `batch_size`, balanced over `decoders`.

    Nine chunks with batch size 8 and two decoders become 5 + 4, not 8 + 1:
    both decoders stay busy and neither waits on a lone straggler batch.
    """
    if n_chunks == 0:
        return []
    count = -(-n_chunks // batch_size)
    if decoders > 1:
        count = min(n_chunks, -(-max(count, decoders) // decoders) * decoders)
    size, extra = divmod(n_chunks, count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def first_batches(refs: list[TensorRef], batches: list[slice], concurrent: int) -> tuple[list[TensorRef], set[int]] | None:
    """The chunks reordered so that those that vote on the language (spread over the file) lie in the
    first `concurrent` batches, shared between them; with the picked chunk indices. None if they do not fit."""
    picked = [refs[i] for i in detection_chunks(len(refs), DETECT_CHUNKS)]
    shares = [picked[j::concurrent] for j in range(concurrent)]
    if any(len(share) > b.stop - b.start for share, b in zip(shares, batches)):
        return None
    rest = iter([r for r in refs if r not in picked])
    ordered = []
    for j, b in enumerate(batches):
        share = shares[j] if j < concurrent else []
        ordered += share + [next(rest) for _ in range(b.stop - b.start - len(share))]
    return ordered, {r.chunk_idx for r in picked}


def lending(refs: Sequence[TensorRef], first: list[slice], picks: set[int]) -> dict[int, tuple[int, TensorRef]]:
    """{borrower: (lender, chunk)} among the first batches: a batch one chunk larger than another has its
    last chunk encoded by the smaller batch's decoder, so nine chunks on two decoders are 4 + 5 encoded and
    5 + 4 decoded, and neither decoder finishes a window's work after the other (the odd chunk is not a voter).
    Whether or not the language is voted: a given language has the same odd window."""
    sizes = [b.stop - b.start for b in first]
    larger = [j for j, n in enumerate(sizes) if n == max(sizes)]
    smaller = [k for k, n in enumerate(sizes) if n < max(sizes)]
    return {j: (k, refs[first[j]][-1]) for j, k in zip(larger, smaller) if refs[first[j]][-1].chunk_idx not in picks}
