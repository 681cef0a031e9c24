"""The embedded runner's tensor store: features wait on disk, not in memory."""

from __future__ import annotations

import gc
import subprocess
import time

import numpy as np
import pytest

from murmur.tasks.tensors.local import LocalTensorStore
from murmur.tasks.tensors.store import TensorRef


def test_features_round_trip_through_files_that_go_with_the_store():
    store = LocalTensorStore()
    array = np.random.default_rng(0).standard_normal((80, 3000)).astype(np.float32)
    ref = store.put("job1", 3, array)
    assert ref.chunk_idx == 3 and ref.shape == (80, 3000) and ref.dtype == "float32"
    assert np.array_equal(store.get(ref), array)
    directory = store._dir
    assert [p.name for p in directory.iterdir()] == ["murmur_feat_job1_3.npy"]
    store.delete([ref])
    assert store.get(ref) is None  # gone: the caller recomputes it
    store.put("job1", 4, array)
    del store
    gc.collect()
    assert not directory.exists()


def test_a_key_that_is_not_a_feature_key_is_refused():
    store = LocalTensorStore()
    with pytest.raises(ValueError, match="not a feature key"):
        store.get(TensorRef("murmur:feat:../../etc/passwd:0", (1,), "float32"))


@pytest.mark.services
def test_a_redis_without_config_gets_the_default_budget_and_says_so(tmp_path, caplog):
    """Most managed Redis refuse CONFIG: prepare still runs, on the 2 GiB default, and the log says
    to set MURMUR_TENSOR_BUDGET (it failed every prepare with 'unknown command')."""
    import redis

    from murmur.tasks.tensors.redis import DEFAULT_BUDGET, RedisTensorStore
    from tests.test_distributed import _free_port

    port = _free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path), "--rename-command", "CONFIG", ""], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with pytest.raises(redis.ResponseError):
            client.config_get("maxmemory")
        store = RedisTensorStore(url, 60)
        with caplog.at_level("WARNING", logger="murmur"):
            store.wait_for_room()
            ref = store.put("job1", 0, np.ones((80, 3000), dtype=np.float32))
            store.wait_for_room()
        assert store.budget == DEFAULT_BUDGET and store.get(ref) is not None
        assert sum("MURMUR_TENSOR_BUDGET" in r.getMessage() for r in caplog.records) == 1
    finally:
        server.kill()
        server.wait()
