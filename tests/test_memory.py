"""The `murmur` command's malloc settings: a freed 70 MB buffer (CTranslate2's per-call size) is reused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from murmur.workers import memory

CHURN = """
import ctypes, resource, sys, threading
from murmur.workers import memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

if sys.argv[1] == "tuned":
    memory.one_arena()
    memory.keep_freed_blocks()

def churn():
    for _ in range(10):
        buffer = libc.malloc(70 << 20)  # as CTranslate2 allocates (numpy asks for huge pages)
        ctypes.memset(buffer, 1, 70 << 20)
        libc.free(buffer)

def faults_of_a_decoder_thread():
    churn()  # the first round may grow the heap
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    churn()
    print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

thread = threading.Thread(target=faults_of_a_decoder_thread)
thread.start()
thread.join()
"""


def _faults(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env={**clean, **env}, capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_thread_reuses_freed_large_buffers_instead_of_faulting_them_in_again():
    assert _faults("default") > 100_000  # ten buffers of 17,920 pages each, mapped afresh every time
    assert _faults("tuned") < 1_000
    assert _faults("tuned", MALLOC_ARENA_MAX="4") > 100_000  # the environment's own malloc settings win


def test_settings_are_left_to_an_environment_that_tunes_malloc(monkeypatch):
    for name in [k for k in os.environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")
    assert memory._glibc_mallopt() is None
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.rtld.nns=2")
    assert (memory._glibc_mallopt() is None) == (not sys.platform.startswith("linux"))
