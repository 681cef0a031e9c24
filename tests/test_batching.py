"""Batching as pure units: a job's chunks over parallel decoders, and chunks from many threads (no broker)."""

from __future__ import annotations

import threading
import time

import pytest

from murmur.tasks.embedded.planning import plan_batches
from murmur.tasks.fleet.batcher import Batcher


def test_items_from_many_threads_share_batches_up_to_the_size():
    batches = []
    release = threading.Event()

    def run(items):
        release.wait(5)  # the first batch blocks, so the others pile up meanwhile
        batches.append(list(items))
        return [item * 10 for item in items]

    batcher = Batcher(run, size=4, flush_seconds=0.05)
    futures = [batcher.submit(i) for i in range(9)]
    time.sleep(0.1)
    release.set()
    assert [f.result(5) for f in futures] == [i * 10 for i in range(9)]
    assert all(len(b) <= 4 for b in batches) and sorted(sum(batches, [])) == list(range(9))
    assert len(batches) <= 4  # not nine batches of one


def test_waits_for_more_only_while_the_queue_holds_work():
    sizes = []
    batcher = Batcher(lambda items: sizes.append(len(items)) or items, size=8, flush_seconds=0.3, backlog=lambda: 0)
    started = time.monotonic()
    assert batcher.submit("a").result(5) == "a"
    assert time.monotonic() - started < 0.2  # nothing queued: no flush wait
    queued = [3]
    waiting = Batcher(lambda items: sizes.append(len(items)) or items, size=2, flush_seconds=5, backlog=lambda: queued[0])
    first = waiting.submit("x")
    time.sleep(0.1)
    assert not first.done()  # more is queued: it waits for a partner
    waiting.submit("y")
    assert first.result(5) == "x" and sizes[-1] == 2


def test_an_error_reaches_every_item_of_the_batch_and_the_batcher_goes_on():
    batches = []
    release = threading.Event()

    def run(items):
        if items == ["hold"]:
            release.wait(5)  # while this first batch runs, the next three pile up together
            return items
        batches.append(list(items))
        if "bad" in items:
            raise RuntimeError("model crashed")
        return items

    batcher = Batcher(run, size=4, flush_seconds=0.05)
    first = batcher.submit("hold")
    time.sleep(0.05)
    shared = [batcher.submit(item) for item in ("ok-1", "bad", "ok-2")]
    time.sleep(0.05)
    release.set()
    assert first.result(5) == "hold"
    for future in shared:
        with pytest.raises(RuntimeError, match="model crashed"):
            future.result(5)
    assert batches == [["ok-1", "bad", "ok-2"]]  # one batch of three: all three heard of the error
    assert batcher.submit("good").result(5) == "good"


def test_batches_are_balanced_over_parallel_decoders():
    sizes = lambda n, bs, d: [s.stop - s.start for s in plan_batches(n, bs, d)]  # noqa: E731
    assert sizes(0, 8, 2) == []
    assert sizes(1, 8, 2) == [1]
    assert sizes(9, 8, 1) == [5, 4]
    assert sizes(9, 8, 2) == [5, 4]
    assert sizes(20, 8, 2) == [5, 5, 5, 5]
    assert sizes(3, 8, 4) == [1, 1, 1]
    assert all(s <= 8 for s in sizes(100, 8, 3)) and sum(sizes(100, 8, 3)) == 100


def test_a_job_keeps_as_many_decoders_busy_as_its_declared_length_fills(tmp_path):
    """Chosen before the file is prepared, so the model loads meanwhile in the shape decoding uses."""
    from murmur.tasks.embedded.planning import job_decoders
    from tests.conftest import DATA

    assert job_decoders(str(DATA / "jfk_inaugural_1961.flac"), "cpu", 2) == 1  # 11 s: one window, every thread on it
    assert job_decoders(str(DATA / "en_5min.flac"), "cpu", 2) == 2
    assert job_decoders(str(DATA / "librivox_grimmelshausen_simplicissimus_title.mp3"), "cpu", 8) == 3  # 68 s
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    for unknown in ("s3://bucket/talk.flac", str(bogus), str(tmp_path / "missing.flac")):
        assert job_decoders(unknown, "cpu", 2) == 2  # no length known: preparing the file reports what is wrong


def test_a_gpu_workers_batch_metrics_listen_where_they_are_told(tmp_path):
    """MURMUR_METRICS_ADDRESS: 127.0.0.1 by default, so the batch metrics are not open on every interface."""
    import socket
    import urllib.request

    from murmur.settings import Settings
    from murmur.tasks.fleet.batcher import BatchMetrics
    from tests.test_distributed import _free_port

    port = _free_port()
    BatchMetrics(8).serve(port, Settings().metrics_address)
    assert Settings().metrics_address == "127.0.0.1"
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "murmur_batch_fill_ratio_bucket" in body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # this machine's address on its network
        probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
        outward = probe.getsockname()[0]
    if outward != "127.0.0.1":
        with pytest.raises(OSError):
            socket.create_connection((outward, port), timeout=2)


def test_of_more_than_a_batch_waiting_those_first_by_order_go_first():
    """A GPU worker orders by chunk index: a job's earlier chunks, whose segments are released first, go first."""
    batches = []
    release = threading.Event()

    def run(items):
        if items == [-1]:
            release.wait(5)  # while this first batch runs, the rest pile up in the order they arrive
        batches.append(list(items))
        return items

    batcher = Batcher(run, size=3, flush_seconds=0.05, order=lambda chunk: chunk)
    first = batcher.submit(-1)
    time.sleep(0.05)
    rest = [batcher.submit(chunk) for chunk in (7, 2, 9, 0, 5, 1)]
    time.sleep(0.05)
    release.set()
    assert first.result(5) == -1 and [f.result(5) for f in rest] == [7, 2, 9, 0, 5, 1]
    assert batches == [[-1], [0, 1, 2], [5, 7, 9]]
