"""The embedded runner's tensor store: features wait on disk, not in memory."""

from __future__ import annotations

import gc

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
