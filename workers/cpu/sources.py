"""Where a job's audio comes from: a local path inside the allowed roots, or s3://.

Workers read whatever path a producer names, so MURMUR_ALLOWED_ROOTS (paths
separated by ':') fences them in; unset, any local path is readable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from murmur.settings import get_settings
from murmur.workers.errors import AudioError


def check_source(source: str, allowed_roots: tuple[Path, ...] | None = None) -> None:
    """Reject what a worker must not or cannot read, before any work is queued.

    `allowed_roots` defaults to MURMUR_ALLOWED_ROOTS; empty allows any absolute path.
    """
    if not isinstance(source, str) or not source:
        raise AudioError("the job names no source: give a file path or an s3:// URI")
    if "\x00" in source:
        raise AudioError("the source contains a NUL byte: give a file path or an s3:// URI")
    if source.startswith("s3://"):
        _split_s3(source)
        return
    if "://" in source:
        raise AudioError(f"unsupported source {source!r}: give a local file path or an s3:// URI")
    path = Path(source)
    if not path.is_absolute():
        raise AudioError(f"source path {source!r} is relative: workers need an absolute path")
    roots = get_settings().allowed_roots if allowed_roots is None else allowed_roots
    resolved = path.resolve()
    if roots and not any(resolved.is_relative_to(root) for root in roots):
        raise AudioError(f"{source} is outside MURMUR_ALLOWED_ROOTS ({os.pathsep.join(map(str, roots))})")


@contextmanager
def local_file(source: str, allowed_roots: tuple[Path, ...] | None = None) -> Iterator[str]:
    """A path PyAV can open: the file itself, or a temporary download of an s3:// object."""
    check_source(source, allowed_roots)
    limit = get_settings().max_bytes
    if not source.startswith("s3://"):
        path = Path(source)
        if path.is_file() and path.stat().st_size > limit:
            raise AudioError(f"{path.name} is larger than the limit of {_size(limit)} (MURMUR_MAX_BYTES)")
        yield source
        return
    bucket, key = _split_s3(source)
    try:
        import boto3
    except ImportError:
        raise AudioError("reading s3:// sources needs boto3: pip install 'murmur[s3]'") from None
    with tempfile.NamedTemporaryFile(suffix=Path(key).suffix) as tmp:
        try:
            client = boto3.client("s3")
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] > limit:
                raise _TooLarge
            client.download_fileobj(bucket, key, _Capped(tmp, limit))
        except _TooLarge:
            raise AudioError(f"{source} is larger than the limit of {_size(limit)} (MURMUR_MAX_BYTES)") from None
        except Exception as exc:  # botocore raises many kinds; the job needs the reason, not the type
            raise AudioError(f"cannot download {source}: {exc}") from None
        tmp.flush()
        yield tmp.name


class _TooLarge(Exception):
    pass


class _Capped:
    """A file that refuses to grow past `limit` bytes: the object may change after its size was read."""

    def __init__(self, file, limit: int) -> None:
        self._file, self._limit, self._written = file, limit, 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > self._limit:
            raise _TooLarge
        return self._file.write(data)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return f"{n} B"


def _split_s3(source: str) -> tuple[str, str]:
    bucket, _, key = source[len("s3://"):].partition("/")
    if not bucket or not key:
        raise AudioError(f"invalid S3 URI {source!r}: use s3://bucket/key")
    return bucket, key
