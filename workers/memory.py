"""glibc malloc settings for a process that decodes with CTranslate2 on CPU.

CTranslate2 allocates and frees buffers of up to ≈70 MB in every call (the
encoder's attention scores). By default glibc maps a block that large afresh
each time and unmaps it when it is freed, and a thread's arena maps anything
over 64 MB whatever the threshold: every call faults its pages in again. On
en_5min (`murmur transcribe`, 2 threads) that was 1.2-1.3 million page faults
and 2.1-2.3 s of system time in a 5.8-6.2 s run; with one arena and freed
blocks kept, 0.22 million, 0.5 s and 4.9-5.1 s, at the same peak memory.

The settings are the process's: only the `murmur` command applies them, and
not where the environment tunes malloc itself (MALLOC_* variables or
glibc.malloc tunables). Elsewhere than glibc they do nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def one_arena() -> None:
    """Every thread allocates from the main heap, which has no size cap; before any thread starts.

    Freed memory is then reusable by every thread, too: with an arena per thread,
    30 min of audio peaked at 1.7-1.9 GB."""
    _mallopt((_M_ARENA_MAX, 1))


def keep_freed_blocks() -> None:
    """Blocks up to 256 MB come from the heap, and the heap is not trimmed below 1 GB.

    Called once the model is loaded, not before: the load's large temporaries
    (a float32 copy of the biggest weight) would otherwise stay in the heap, and
    an 11 s clip peaked at 405 MB against 371."""
    _mallopt((_M_MMAP_THRESHOLD, 256 << 20), (_M_TRIM_THRESHOLD, 1 << 30))


def _mallopt(*settings: tuple[int, int]) -> None:
    mallopt = _glibc_mallopt()
    if mallopt is not None:
        for option, value in settings:
            mallopt(option, value)


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux") or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") \
            or any(name.startswith("MALLOC_") for name in os.environ):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None  # not glibc
