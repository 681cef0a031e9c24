"""The batcher alone: items from many threads become batches (a pure unit, no broker)."""

from __future__ import annotations

import threading
import time

import pytest

from tasks.batching import Batcher


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
    calls = []

    def run(items):
        calls.append(items)
        if "bad" in items:
            raise RuntimeError("model crashed")
        return items

    batcher = Batcher(run, size=1)
    with pytest.raises(RuntimeError, match="model crashed"):
        batcher.submit("bad").result(5)
    assert batcher.submit("good").result(5) == "good"
