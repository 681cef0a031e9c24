"""Sharing the machine: how many cores a process may use, and how its waiting threads behave.

CTranslate2 runs its CPU threads under GNU OpenMP, whose threads spin while they
wait for the next parallel region. On an idle machine that saves a wake-up; on
a busy one (a Kubernetes node, a host running a CPU worker beside GPU-queue
workers) the spinning threads take the cores the working ones need: with two
other CPU-bound processes on 2 cores, the 11 s JFK clip took 67-86 s wall and
37-43 s of CPU, against 5.9 s with the threads told to sleep while they wait.
And "every core" must mean the cores the process may run on (its affinity and
its cgroup's CPU quota: a pod's CPU limit), not the machine's.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from threadpoolctl import threadpool_limits

# what the operator set wins: any of these and the OpenMP runtime is left as they configured it
_OPENMP_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")


def choose_waiting() -> None:
    """On a busy machine, OpenMP threads sleep while they wait; before CTranslate2 is imported (the
    runtime reads it once). What the operator set is left alone."""
    if not any(knob in os.environ for knob in _OPENMP_KNOBS) and machine_is_busy():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def machine_is_busy(loadavg: Path = Path("/proc/loadavg")) -> bool:
    """Other processes are running now on the cores this one would use, or a CPU quota caps it (spinning
    would spend the quota). The kernel's count of runnable tasks, read once: no sampling delay."""
    if cgroup_quota() is not None:
        return True
    try:
        runnable = int(loadavg.read_text().split()[3].split("/")[0]) - 1  # not counting this process
    except (OSError, ValueError, IndexError):
        return False
    return runnable >= max(1, (os.cpu_count() or 1) - usable_cores() + 1)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 `cpu.max`, or v1's CFS quota); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


_blas = threading.Lock()
_blas_users = 0
_blas_limits = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread while the caller runs threads of its own: BLAS's idle threads spin and
    take the cores the caller's others need. The count is the process's, so the first caller to enter
    lowers it and the last to leave restores it, whichever threads they run on."""
    global _blas_users, _blas_limits
    with _blas:
        if _blas_users == 0:
            _blas_limits = threadpool_limits(1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None
