"""Sharing the machine: the cores a process may use, and OpenMP threads that sleep while they wait."""

from __future__ import annotations

import os
import subprocess
import sys

from murmur.workers.cores import cgroup_quota, usable_cores, wait_without_spinning


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


def test_threads_are_told_to_sleep_unless_the_operator_said_otherwise(monkeypatch):
    for knob in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(knob, raising=False)
    wait_without_spinning()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    wait_without_spinning()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    wait_without_spinning()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
