"""Sharing the machine: the cores a process may use, and OpenMP threads that sleep while they wait."""

from __future__ import annotations

import os
import subprocess
import sys

from murmur.workers import cores
from murmur.workers.cores import cgroup_quota, choose_waiting, machine_is_busy, usable_cores


def test_a_cgroup_quota_is_read_from_v2_or_v1_and_unlimited_reads_as_none(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None
    assert cgroup_quota(tmp_path / "absent") is None


def test_every_core_means_the_cores_this_process_may_run_on():
    """Pinned to one core (taskset's affinity, as a container runtime pins one), a process counts one."""
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                             "from murmur.workers.cores import usable_cores; print(usable_cores())"],
                            capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "1"


def test_a_machine_is_busy_when_others_run_on_its_cores_now(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "cgroup_quota", lambda root=None: None)
    loadavg = tmp_path / "loadavg"
    spare = (os.cpu_count() or 1) - usable_cores() + 1  # others runnable that leave this process no core of its own
    loadavg.write_text("0.50 0.40 0.30 1/300 4242\n")  # this process alone
    assert not machine_is_busy(loadavg)
    loadavg.write_text(f"2.10 1.90 1.50 {1 + max(1, spare)}/300 4242\n")
    assert machine_is_busy(loadavg)
    monkeypatch.setattr(cores, "cgroup_quota", lambda root=None: 2.0)
    loadavg.write_text("0.50 0.40 0.30 1/300 4242\n")
    assert machine_is_busy(loadavg)  # a CPU limit: spinning would spend the quota


def test_threads_sleep_on_a_busy_machine_unless_the_operator_said_otherwise(monkeypatch):
    for knob in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(knob, raising=False)
    monkeypatch.setattr(cores, "machine_is_busy", lambda: False)
    choose_waiting()
    assert "OMP_WAIT_POLICY" not in os.environ  # idle: spinning is faster
    monkeypatch.setattr(cores, "machine_is_busy", lambda: True)
    choose_waiting()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    choose_waiting()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    choose_waiting()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_process_started_beside_busy_loops_sees_a_busy_machine():
    """The real kernel count: beside as many busy loops as there are cores, a new process finds it busy."""
    probe = [sys.executable, "-c", "from murmur.workers.cores import machine_is_busy; print(machine_is_busy())"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        import time

        time.sleep(0.5)
        seen = [subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() for _ in range(3)]
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert "True" in seen


def test_one_blas_thread_holds_while_any_caller_is_inside_and_the_last_to_leave_restores_the_count():
    """Callers on different threads leave in any order (the VAD's and the speaker encoder's, two prepares at once):
    the count stays one until the last has left, then is what it was, not what some caller saw on entering."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from murmur.workers.cores import one_blas_thread

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    with threadpool_limits(2, user_api="blas"):
        assert blas_threads() == {2}
        first, second = one_blas_thread(), one_blas_thread()
        first.__enter__()
        second.__enter__()
        assert blas_threads() == {1}
        first.__exit__(None, None, None)
        assert blas_threads() == {1}
        second.__exit__(None, None, None)
        assert blas_threads() == {2}
