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


def test_bundled_base_asked_for_by_two_threads_at_once_is_reassembled_once(tmp_path):
    """`murmur transcribe` on a fresh machine: the early load and the job both ask for `base` at the start."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda _: resolve_model("base", cache_dir=tmp_path), range(2)))
    assert paths[0] == paths[1]
    assert hashlib.sha256((paths[0] / "model.bin").read_bytes()).hexdigest() == _BASE_SHA256
    assert [p.name for p in paths[0].iterdir() if p.name.endswith(".partial")] == []


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


@pytest.mark.weights
def test_a_fleet_loads_only_bundled_models_and_those_under_its_model_dirs(tmp_path, monkeypatch):
    tiny = resolve_model("tiny.en")
    for name in (str(tiny), "/etc", "/no/such/dir", "../../etc", str(tmp_path)):
        with pytest.raises(ModelError) as refused:
            resolve_model(name, model_dirs=())
        assert str(refused.value).startswith(f"model {name!r} is not available: use base, tiny.en")  # exists or not: same words
    assert resolve_model(str(tiny), model_dirs=(tiny.parent,)) == tiny
    assert resolve_model(tiny.name, model_dirs=(tiny.parent,)) == tiny  # a name inside a model directory
    with pytest.raises(ModelError, match="is not available"):
        resolve_model(f"{tiny.name}/../../..", model_dirs=(tiny.parent,))
    (tmp_path / "base").mkdir()  # a folder named like a bundled model in the working directory
    monkeypatch.chdir(tmp_path)
    assert resolve_model("base").name.startswith("base-")  # the bundled one, not ./base


@pytest.mark.weights
@pytest.mark.parametrize("name", ["base", "tiny.en"])
def test_mel_bins_are_read_from_the_header_without_a_load(name, tmp_path):
    """A transcription loads its model once, in the shape decode uses: n_mels comes from model.bin."""
    from murmur.workers.gpu.model import model_n_mels, variable_shapes

    model_n_mels.cache_clear()
    loads = load_model.cache_info().misses
    n_mels = model_n_mels(name)
    assert load_model.cache_info().misses == loads
    shapes = variable_shapes(resolve_model(name) / "model.bin")
    assert shapes["encoder/conv1/weight"][1] == n_mels == load_model(name, "cpu", "int8", 1).n_mels == 80
    assert shapes["decoder/embeddings/weight"][0] in (51864, 51865)  # the vocabulary: tiny.en, base
    broken = tmp_path / "model.bin"
    broken.write_bytes(b"\x06\x00\x00\x00\xff")
    assert variable_shapes(broken) == {}
