"""Model names resolve to real CTranslate2 directories, or fail with a reason."""

from __future__ import annotations

import hashlib

import pytest

from murmur.workers.errors import ModelError
from murmur.workers.gpu.model import _BASE_SHA256, load_model, resolve_compute_type, resolve_model


def test_bundled_base_is_reassembled_once_and_verified(tmp_path):
    path = resolve_model("base", cache_dir=tmp_path)
    model_bin = path / "model.bin"
    assert path.is_relative_to(tmp_path)
    assert hashlib.sha256(model_bin.read_bytes()).hexdigest() == _BASE_SHA256
    written = model_bin.stat()
    assert resolve_model("base", cache_dir=tmp_path) == path
    again = model_bin.stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # reused, not written again
    assert [p.name for p in path.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.weights
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
