"""Model names resolve to real CTranslate2 directories, or fail with a reason."""

from __future__ import annotations

import hashlib

import pytest

from workers.errors import ModelError
from workers.gpu.model import _BASE_SHA256, load_model, resolve_compute_type, resolve_model


def test_bundled_base_is_reassembled_and_verified():
    path = resolve_model("base")
    digest = hashlib.sha256((path / "model.bin").read_bytes()).hexdigest()
    assert digest == _BASE_SHA256
    assert resolve_model("base") == path  # once: the second call reuses the cache


def test_bundled_tiny_en_and_local_directories():
    tiny = resolve_model("tiny.en")
    assert (tiny / "model.bin").is_file()
    assert resolve_model(str(tiny)) == tiny
    model = load_model(str(tiny), "cpu", "int8", 1)
    assert not model.multilingual and model.n_mels == 80


def test_unusable_names_fail_with_a_reason(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("whisper-gigantic")
    with pytest.raises(ModelError, match="no model.bin"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="not supported on cpu"):
        resolve_compute_type("float16", "cpu")
